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

/** One address pool: leases (address → owner) and the round-robin cursor, with the seq of their lines. */
export interface PoolState {
  network: string;
  subnet: string;
  leases: Map<string, string>;
  leaseSeqs: Map<string, number>;
  cursor: string | undefined;
  cursorSeq: number;
}

/** One live entry, for compaction: the seq and op of the line that made it, and a fresh line for it. */
export interface LiveEntry {
  seq: number;
  op: string;
  encode(): string;
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
      p = { network, subnet, leases: new Map(), leaseSeqs: new Map(), cursor: undefined, cursorSeq: 0 };
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

  private setLease(p: PoolState, addr: string, owner: string | undefined, seq: number): void {
    const size = (o: string): number =>
      LEASE_OVERHEAD + p.network.length + p.subnet.length + addr.length + o.length;
    const old = p.leases.get(addr);
    if (old !== undefined) this.liveBytes -= size(old);
    if (owner === undefined) {
      p.leases.delete(addr);
      p.leaseSeqs.delete(addr);
    } else {
      p.leases.set(addr, owner);
      p.leaseSeqs.set(addr, seq);
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
        this.setLease(this.pool(e.net, e.sub, true), e.addr, e.owner, e.seq);
        return;
      case 'release': {
        const p = this.pool(e.net, e.sub);
        if (p) this.setLease(p, e.addr, undefined, e.seq);
        return;
      }
      case 'cursor': {
        const p = this.pool(e.net, e.sub, true);
        if (p.cursor === undefined)
          this.liveBytes += LEASE_OVERHEAD + p.network.length + p.subnet.length + 40;
        p.cursor = e.addr;
        p.cursorSeq = e.seq;
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
   * Every live entry: records, set-aside records, leases, cursors, and the locks for which `keepLock`
   * says true (false: its holder is dead). Compaction copies their lines, or writes `encode()`.
   */
  liveEntries(keepLock: (h: LockHolder) => boolean): LiveEntry[] {
    const out: LiveEntry[] = [];
    for (const [vm, r] of this.records) {
      out.push({
        seq: r.seq,
        op: 'put',
        encode: () => encodeEntry({ op: 'put', seq: r.seq, vm, gen: r.gen, ver: r.ver, recText: r.text }),
      });
    }
    for (const [vm, q] of this.quarantined) {
      out.push({
        seq: q.seq,
        op: 'quarantine',
        encode: () => encodeEntry({ op: 'quarantine', seq: q.seq, vm, reason: q.reason, text: q.text }),
      });
    }
    for (const p of this.pools.values()) {
      const { network: net, subnet: sub } = p;
      for (const [addr, owner] of p.leases) {
        const seq = p.leaseSeqs.get(addr) ?? 0;
        out.push({
          seq,
          op: 'claim',
          encode: () => encodeEntry({ op: 'claim', seq, net, sub, addr, owner }),
        });
      }
      const { cursor, cursorSeq: seq } = p;
      if (cursor !== undefined) {
        out.push({
          seq,
          op: 'cursor',
          encode: () => encodeEntry({ op: 'cursor', seq, net, sub, addr: cursor }),
        });
      }
    }
    for (const h of this.locks.values()) {
      if (!keepLock(h)) continue;
      const { scope, name, seat, nonce, n, pid, seq } = h;
      out.push({
        seq,
        op: 'lock',
        encode: () => encodeEntry({ op: 'lock', seq, scope, name, seat, nonce, n, pid }),
      });
    }
    return out;
  }
}
