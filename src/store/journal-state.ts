/**
 * The journal's in-memory state: what replaying its lines gives. Records are kept as their JSON text
 * (parsed on each read, so callers always get a fresh object and replay never parses a record); leases
 * and cursors per pool; held locks. Also writes the state back out as snapshot lines for compaction.
 * Pure: no I/O.
 */
import { encodeEntry, type JournalEntry, type LockKeyScope } from './journal-format.js';

/** A live record: its JSON text as written, with its generation and schema version. */
export interface LiveRecord {
  text: string;
  gen: number;
  ver: number;
  /** Sequence number of the line that wrote it. */
  seq: number;
}

/** A record set aside because it could not be read; kept until a new put or a resolve. */
export interface SetAsideRecord {
  text: string;
  reason: string;
  seq: number;
}

/** One address pool: leases (address → owner) and the round-robin cursor. */
export interface PoolState {
  network: string;
  subnet: string;
  leases: Map<string, string>;
  cursor: string | undefined;
}

/** Who holds a lock: the seat and nonce of the process (journal-seats.ts) and its acquisition number. */
export interface LockHolder {
  scope: LockKeyScope;
  name: string;
  seat: number;
  nonce: string;
  n: number;
  pid: number;
  seq: number;
}

/** The key of a pool in maps and snapshots. */
export const poolKeyOf = (network: string, subnet: string): string => `${network}|${subnet}`;

/** The key of a lock. */
export const lockKeyOf = (scope: string, name: string): string => `${scope}/${name}`;

// Rough size of each kind of snapshot line beyond its variable parts (for the compaction trigger).
const RECORD_OVERHEAD = 80;
const LEASE_OVERHEAD = 90;
const LOCK_OVERHEAD = 130;

/** Everything the journal's lines add up to. */
export class JournalState {
  readonly records = new Map<string, LiveRecord>();
  readonly quarantined = new Map<string, SetAsideRecord>();
  readonly pools = new Map<string, PoolState>();
  readonly locks = new Map<string, LockHolder>();
  /** Estimated size in bytes of a snapshot of this state (what a compaction would write). */
  liveBytes = 0;

  /** Forget everything (before a full replay). */
  clear(): void {
    this.records.clear();
    this.quarantined.clear();
    this.pools.clear();
    this.locks.clear();
    this.liveBytes = 0;
  }

  /** The pool (network, subnet), created empty when `create`. */
  pool(network: string, subnet: string, create: true): PoolState;
  pool(network: string, subnet: string, create?: boolean): PoolState | undefined;
  pool(network: string, subnet: string, create = false): PoolState | undefined {
    const key = poolKeyOf(network, subnet);
    let p = this.pools.get(key);
    if (!p && create) {
      p = { network, subnet, leases: new Map(), cursor: undefined };
      this.pools.set(key, p);
    }
    return p;
  }

  private dropRecord(vm: string): void {
    const r = this.records.get(vm);
    if (!r) return;
    this.records.delete(vm);
    this.liveBytes -= r.text.length + vm.length + RECORD_OVERHEAD;
  }

  private dropQuarantined(vm: string): void {
    const q = this.quarantined.get(vm);
    if (!q) return;
    this.quarantined.delete(vm);
    this.liveBytes -= q.text.length + q.reason.length + vm.length + RECORD_OVERHEAD;
  }

  private setLease(p: PoolState, addr: string, owner: string | undefined): void {
    const size = (o: string): number =>
      LEASE_OVERHEAD + p.network.length + p.subnet.length + addr.length + o.length;
    const old = p.leases.get(addr);
    if (old !== undefined) this.liveBytes -= size(old);
    if (owner === undefined) p.leases.delete(addr);
    else {
      p.leases.set(addr, owner);
      this.liveBytes += size(owner);
    }
  }

  /**
   * Apply one entry. Lines are authoritative: their writer checked them against this same state under
   * the journal lock, so replay applies them as they are (an unlock only undoes its own lock).
   */
  apply(e: JournalEntry): void {
    switch (e.op) {
      case 'put':
        this.dropRecord(e.vm);
        this.dropQuarantined(e.vm);
        this.records.set(e.vm, { text: e.recText, gen: e.gen, ver: e.ver, seq: e.seq });
        this.liveBytes += e.recText.length + e.vm.length + RECORD_OVERHEAD;
        return;
      case 'del':
        this.dropRecord(e.vm);
        return;
      case 'quarantine':
        this.dropRecord(e.vm);
        this.dropQuarantined(e.vm);
        this.quarantined.set(e.vm, { text: e.text, reason: e.reason, seq: e.seq });
        this.liveBytes += e.text.length + e.reason.length + e.vm.length + RECORD_OVERHEAD;
        return;
      case 'resolve':
        this.dropQuarantined(e.vm);
        return;
      case 'claim':
        this.setLease(this.pool(e.net, e.sub, true), e.addr, e.owner);
        return;
      case 'release': {
        const p = this.pool(e.net, e.sub);
        if (p) this.setLease(p, e.addr, undefined);
        return;
      }
      case 'cursor': {
        const p = this.pool(e.net, e.sub, true);
        if (p.cursor === undefined)
          this.liveBytes += LEASE_OVERHEAD + p.network.length + p.subnet.length + 40;
        p.cursor = e.addr;
        return;
      }
      case 'lock': {
        const key = lockKeyOf(e.scope, e.name);
        if (!this.locks.has(key)) this.liveBytes += LOCK_OVERHEAD + e.name.length;
        this.locks.set(key, {
          scope: e.scope,
          name: e.name,
          seat: e.seat,
          nonce: e.nonce,
          n: e.n,
          pid: e.pid,
          seq: e.seq,
        });
        return;
      }
      case 'unlock': {
        const key = lockKeyOf(e.scope, e.name);
        const h = this.locks.get(key);
        if (h && h.nonce === e.nonce && h.n === e.n) {
          this.locks.delete(key);
          this.liveBytes -= LOCK_OVERHEAD + e.name.length;
        }
        return;
      }
      case 'header':
      case 'seal':
        return;
    }
  }

  /**
   * The state as journal lines, every one numbered `seq` (a snapshot is the state as of one point).
   * Locks for which `keepLock` says false (their holder is dead) are left out.
   */
  snapshotLines(seq: number, keepLock: (h: LockHolder) => boolean): string[] {
    const out: string[] = [];
    for (const [vm, r] of this.records) {
      out.push(encodeEntry({ op: 'put', seq, vm, gen: r.gen, ver: r.ver, recText: r.text }));
    }
    for (const [vm, q] of this.quarantined) {
      out.push(encodeEntry({ op: 'quarantine', seq, vm, reason: q.reason, text: q.text }));
    }
    for (const p of this.pools.values()) {
      for (const [addr, owner] of p.leases) {
        out.push(encodeEntry({ op: 'claim', seq, net: p.network, sub: p.subnet, addr, owner }));
      }
      if (p.cursor !== undefined) {
        out.push(encodeEntry({ op: 'cursor', seq, net: p.network, sub: p.subnet, addr: p.cursor }));
      }
    }
    for (const h of this.locks.values()) {
      if (!keepLock(h)) continue;
      out.push(
        encodeEntry({
          op: 'lock',
          seq,
          scope: h.scope,
          name: h.name,
          seat: h.seat,
          nonce: h.nonce,
          n: h.n,
          pid: h.pid,
        }),
      );
    }
    return out;
  }
}
