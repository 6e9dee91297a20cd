/**
 * Address leases in etcd, seen from one host. A lease is `ipam/<network>/<subnet>/leases/<addr>` →
 * `{owner, host}`; the claim is `Txn(If(create_revision(key) == 0)).Then(Put(key, {owner, host}))`, so of
 * any number of concurrent claims on any hosts exactly one wins, and nobody can take an address while
 * etcd is unreachable (the claim fails with ERR_UNAVAILABLE). Leases are not attached to any etcd lease:
 * they outlive their host's agent, because its VMs may still run (see membership.ts for reclaiming).
 *
 * Owners are VM IDs of this host. Other hosts' leases are reported with owner `<vmId>@<host>` — never a
 * valid VM ID, so reconcile on this host never takes them for orphans, and release() refuses them.
 *
 * The round-robin cursor is per host (`cursor/<host>`), cached in memory and written behind (it is a
 * hint: last writer wins) by the next claim's transaction, so an allocation costs one round trip. A host new to a pool starts
 * in its own stripe of it, so hosts do not all race for the same first addresses.
 */
import { createHash } from 'node:crypto';
import { TapnetError } from '../errors.js';
import { formatIp, parseCidr } from '../ip.js';
import type { LeaseStore, PoolRef } from '../store/types.js';
import { validateVmId } from '../validate.js';
import type { EtcdClient, KeyValue, TxnOp } from './etcd-client.js';
import { type ClusterKeys, segmentSubnet, validateHostName } from './keys.js';

/** How long a cursor change waits for a claim to carry it before it is written on its own. */
const CURSOR_FLUSH_MS = 200;

/** The value of a lease key. */
export interface LeaseValue {
  owner: string;
  host: string;
}

/** Encode a lease value (deterministic text, so a value compare can match it). */
export function leaseText(owner: string, host: string): string {
  return JSON.stringify({ owner, host });
}

/** Decode a lease value; undefined when it is not one. */
export function parseLease(text: string): LeaseValue | undefined {
  try {
    const v = JSON.parse(text) as Partial<LeaseValue>;
    if (typeof v.owner === 'string' && typeof v.host === 'string') return { owner: v.owner, host: v.host };
  } catch {
    // not JSON
  }
  return undefined;
}

/** LeaseStore over etcd for one host. */
export class EtcdLeaseStore implements LeaseStore {
  private readonly cursors = new Map<string, string | undefined>();
  /** Cursor values not yet in etcd, by key. */
  private readonly pending = new Map<string, string>();
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly marked = new Set<string>();
  /** Cursor writes that failed (they are hints; the next allocation writes again). */
  cursorWriteFailures = 0;

  constructor(
    private readonly client: EtcdClient,
    private readonly keys: ClusterKeys,
    readonly host: string,
  ) {
    validateHostName(host);
  }

  /** How an owner of `v` looks from this host. */
  private ownerText(v: LeaseValue): string {
    return v.host === this.host ? v.owner : `${v.owner}@${v.host}`;
  }

  private ownerOfKv(kv: KeyValue | undefined): string | undefined {
    if (!kv) return undefined;
    const v = parseLease(kv.value);
    return v ? this.ownerText(v) : `?@${kv.value.slice(0, 32)}`;
  }

  async claim(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    validateVmId(owner);
    const key = this.keys.lease(pool, addr);
    const marker = this.keys.poolMarker(pool);
    const success: Parameters<EtcdClient['txn']>[0]['success'] = [
      { put: { key, value: leaseText(owner, this.host) } },
    ];
    if (!this.marked.has(marker))
      success.push({
        put: { key: marker, value: JSON.stringify({ network: pool.network, subnet: pool.subnet }) },
      });
    const { ops, sent } = this.pendingOps();
    success.push(...ops);
    // Idempotent: a retried claim that had in fact succeeded finds its own value in the failure branch.
    const r = await this.client.txn(
      { compare: [{ key, target: 'CREATE', number: 0 }], success, failure: [{ range: { key } }] },
      { idempotent: true },
    );
    if (r.succeeded) {
      this.marked.add(marker);
      this.settled(sent);
      return true;
    }
    const v = parseLease(r.responses[0]?.range?.kvs[0]?.value ?? '');
    return v !== undefined && v.owner === owner && v.host === this.host;
  }

  async release(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    if (owner.includes('@')) return false; // another host's lease: only reclaimHost() frees those
    validateVmId(owner);
    const key = this.keys.lease(pool, addr);
    const mine = leaseText(owner, this.host);
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await this.client.txn(
        {
          compare: [{ key, target: 'VALUE', value: mine }],
          success: [{ delete: { key } }],
          failure: [{ range: { key } }],
        },
        { idempotent: true },
      );
      if (r.succeeded) return true;
      const kv = r.responses[0]?.range?.kvs[0];
      const v = kv ? parseLease(kv.value) : undefined;
      if (!kv || !v || v.owner !== owner || v.host !== this.host) return false;
      // Ours, written in another spelling (e.g. by a newer version): delete by revision instead.
      const byRev = await this.client.txn(
        { compare: [{ key, target: 'MOD', number: kv.modRevision }], success: [{ delete: { key } }] },
        { idempotent: true },
      );
      if (byRev.succeeded) return true;
    }
    throw new TapnetError(
      'ERR_CONFLICT',
      `lease ${addr} in ${pool.subnet} kept changing while being released`,
      {
        details: { network: pool.network, subnet: pool.subnet, address: addr, owner },
      },
    );
  }

  async ownerOf(pool: PoolRef, addr: string): Promise<string | undefined> {
    const r = await this.client.range(this.keys.lease(pool, addr));
    return this.ownerOfKv(r.kvs[0]);
  }

  async leases(pool: PoolRef): Promise<Map<string, string>> {
    const dir = this.keys.leasesDir(pool);
    const out = new Map<string, string>();
    for (const kv of (await this.client.range(dir, { prefix: true })).kvs) {
      const addr = kv.key.slice(dir.length);
      const owner = this.ownerOfKv(kv);
      if (addr && owner !== undefined) out.set(addr, owner);
    }
    return out;
  }

  /** Every lease of a pool with its host, for cluster-wide views (status, reclaim). */
  async leasesWithHosts(pool: PoolRef): Promise<Array<{ address: string; owner: string; host: string }>> {
    const dir = this.keys.leasesDir(pool);
    const out: Array<{ address: string; owner: string; host: string }> = [];
    for (const kv of (await this.client.range(dir, { prefix: true })).kvs) {
      const v = parseLease(kv.value);
      if (v) out.push({ address: kv.key.slice(dir.length), owner: v.owner, host: v.host });
    }
    return out;
  }

  async pools(): Promise<PoolRef[]> {
    const dir = this.keys.poolsDir();
    const out: PoolRef[] = [];
    for (const kv of (await this.client.range(dir, { prefix: true, keysOnly: true })).kvs) {
      const [network, seg] = kv.key.slice(dir.length).split('/');
      try {
        if (network && seg) out.push({ network, subnet: segmentSubnet(seg) });
      } catch {
        // a stray key: not a pool
      }
    }
    return out;
  }

  async getCursor(pool: PoolRef): Promise<string | undefined> {
    const key = this.keys.cursor(pool, this.host);
    if (this.cursors.has(key)) return this.cursors.get(key);
    const r = await this.client.range(key, { serializable: true });
    const v = r.kvs[0]?.value || (await this.startingPoint(pool));
    if (!this.cursors.has(key)) this.cursors.set(key, v);
    return this.cursors.get(key);
  }

  /**
   * Where this host starts in a pool it has never allocated from: its stripe among the live hosts
   * (sorted by name), or a point derived from its name when it is not registered — so hosts that
   * allocate at the same time start apart instead of racing for the same first addresses.
   */
  private async startingPoint(pool: PoolRef): Promise<string> {
    const c = parseCidr(pool.subnet);
    const bits = (c.family === 4 ? 32 : 128) - c.prefix;
    const span = 1n << BigInt(Math.min(bits, 24));
    const dir = this.keys.aliveDir();
    const live = (await this.client.range(dir, { prefix: true, keysOnly: true, serializable: true })).kvs
      .map((kv) => kv.key.slice(dir.length))
      .sort();
    const rank = live.indexOf(this.host);
    let offset: bigint;
    if (rank >= 0) offset = (span * BigInt(rank)) / BigInt(live.length);
    else
      offset =
        BigInt(
          createHash('sha256').update(`${this.host}|${pool.network}|${pool.subnet}`).digest().readUInt32BE(0),
        ) % span;
    return formatIp(c.family, c.network + offset);
  }

  async setCursor(pool: PoolRef, addr: string): Promise<void> {
    const key = this.keys.cursor(pool, this.host);
    this.keys.lease(pool, addr); // validates addr
    this.cursors.set(key, addr);
    this.pending.set(key, addr);
    this.flushTimer ??= setTimeout(() => void this.flush(), CURSOR_FLUSH_MS).unref();
  }

  /** Cursor writes still owed, as transaction operations (they ride along with the next claim). */
  private pendingOps(): { ops: TxnOp[]; sent: Map<string, string> } {
    const sent = new Map(this.pending);
    return { ops: [...sent].map(([key, value]) => ({ put: { key, value } })), sent };
  }

  /** Forget the cursor writes that reached etcd (unless a newer one was set meanwhile). */
  private settled(sent: Map<string, string>): void {
    for (const [k, v] of sent) if (this.pending.get(k) === v) this.pending.delete(k);
  }

  /** Write the cursors still owed now (also done CURSOR_FLUSH_MS after a change when no claim took them). */
  async flush(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending.size === 0) return;
    const { ops, sent } = this.pendingOps();
    try {
      await this.client.txn({ compare: [], success: ops }, { idempotent: true });
      this.settled(sent);
    } catch {
      this.cursorWriteFailures++;
    }
  }
}
