/**
 * The IPAM: address pools over one LeaseStore, and all-or-nothing allocation across several pools
 * (dual stack: one IPv4 and one IPv6 pool per network).
 */
import { isTapnetError, TapnetError, teardownError, toTapnetError } from '../errors.js';
import type { LeaseStore, PoolRef } from '../store/types.js';
import { type PoolSpec, poolKey, resolvePool } from './layout.js';
import { type AllocateOptions, IpPool, type Lease } from './pool.js';

/** One pool and, optionally, the static address wanted in it. */
export interface PoolRequest extends AllocateOptions {
  pool: PoolSpec;
}

/** Address management over a LeaseStore (local disk today, etcd later). */
export class Ipam {
  private readonly byKey = new Map<string, { signature: string; pool: IpPool }>();
  /** Spec text → pool, so the hot path skips re-parsing a spec it has seen. */
  private readonly bySpec = new Map<string, IpPool>();

  constructor(readonly store: LeaseStore) {}

  /**
   * The pool for `spec` (validated; ERR_INVALID_ARGUMENT otherwise). The same spec gives the same
   * IpPool, with its index; a changed gateway or range for the same subnet gives a fresh one.
   */
  pool(spec: PoolSpec): IpPool {
    const text = `${spec.network}|${spec.subnet}|${spec.gateway ?? ''}|${spec.rangeStart ?? ''}|${spec.rangeEnd ?? ''}`;
    const seen = this.bySpec.get(text);
    if (seen && this.byKey.get(poolKey(seen.ref))?.pool === seen) return seen;
    const pool = this.resolve(spec);
    this.bySpec.set(text, pool);
    return pool;
  }

  private resolve(spec: PoolSpec): IpPool {
    const layout = resolvePool(spec);
    const key = poolKey(layout.ref);
    const signature = `${layout.gateway}|${layout.rangeStart}|${layout.rangeEnd}`;
    const hit = this.byKey.get(key);
    if (hit && hit.signature === signature) return hit.pool;
    const pool = new IpPool(this.store, layout);
    this.byKey.set(key, { signature, pool });
    return pool;
  }

  /** Pools created so far in this process. */
  pools(): IpPool[] {
    return [...this.byKey.values()].map((e) => e.pool);
  }

  /** Drop the cached index of `ref` (after leases changed behind this process, e.g. reconcile). */
  invalidate(ref: PoolRef): void {
    this.byKey.get(poolKey(ref))?.pool.invalidate();
  }

  /**
   * Allocate in every requested pool for `owner`, all or nothing: when one pool fails (exhausted,
   * conflict, I/O), the leases created by this call are released again and the error is rethrown.
   * Leases `owner` already held are returned and never rolled back.
   */
  async allocateAll(owner: string, requests: PoolRequest[]): Promise<Lease[]> {
    const done: Array<{ pool: IpPool; lease: Lease; created: boolean }> = [];
    try {
      for (const req of requests) {
        const pool = this.pool(req.pool);
        const { lease, created } = await pool.allocateDetailed(owner, {
          address: req.address,
          fresh: req.fresh,
        });
        done.push({ pool, lease, created });
      }
    } catch (e) {
      const failures: TapnetError[] = [];
      for (const d of done.toReversed()) {
        if (!d.created) continue;
        try {
          await d.pool.release(owner, { address: d.lease.address });
        } catch (undoError) {
          failures.push(
            toTapnetError(undoError, 'ERR_IPAM_LEAK', `release ${d.lease.address} after a failed allocation`),
          );
        }
      }
      if (failures.length > 0 && e instanceof TapnetError)
        e.details.rollbackFailures = failures.map((f) => f.toJSON());
      throw e;
    }
    return done.map((d) => d.lease);
  }

  /**
   * Release what `owner` holds in each pool (best effort: every pool is tried; failures are reported
   * together as ERR_TEARDOWN). Give each request the address from the VM's record when known (see
   * IpPool.release). Returns the number of leases removed. Call while holding the VM's lock.
   */
  async releaseAll(owner: string, pools: Array<PoolSpec | PoolRequest>): Promise<number> {
    const failures: TapnetError[] = [];
    let n = 0;
    for (const p of pools) {
      const spec = 'pool' in p ? p.pool : p;
      const options = 'pool' in p ? { address: p.address, fresh: p.fresh } : {};
      try {
        if (await this.pool(spec).release(owner, options)) n++;
      } catch (e) {
        if (isTapnetError(e, 'ERR_INVALID_ARGUMENT')) throw e;
        failures.push(toTapnetError(e, 'ERR_IPAM_LEAK', `release ${owner} in ${spec.subnet}`));
      }
    }
    if (failures.length > 0) throw teardownError(`release addresses of ${owner}`, failures);
    return n;
  }
}
