/**
 * Reconcile helpers: every lease with its owner, and the leases whose owner has no VM record (left by a
 * crash between claiming an address and writing the record, or by a record removed by hand), which
 * can be released. The NetworkManager's reconcile combines these with the kernel's view.
 */
import { isTapnetError, type TapnetError, toTapnetError } from '../errors.js';
import type { LeaseStore, LockService, PoolRef, StoredRecord, VmRecordStore } from '../store/types.js';
import { validateVmId } from '../validate.js';
import type { Ipam } from './ipam.js';

/** The leases of one pool: address → owner. */
export interface PoolLeases {
  pool: PoolRef;
  leases: Map<string, string>;
}

/** A lease whose owner has no record. */
export interface OrphanLease {
  pool: PoolRef;
  address: string;
  owner: string;
}

/** Every lease of every pool in the store, read afresh. */
export async function listAllLeases(store: LeaseStore): Promise<PoolLeases[]> {
  const out: PoolLeases[] = [];
  for (const pool of await store.pools()) out.push({ pool, leases: await store.leases(pool) });
  return out;
}

/**
 * Leases whose owner has no VM record. Owners of unreadable records (reported by list()) are not
 * counted as orphans: their VM may well exist.
 */
export async function orphanLeases(
  leases: LeaseStore,
  records: Pick<VmRecordStore<StoredRecord>, 'list'>,
): Promise<OrphanLease[]> {
  const { records: all, problems } = await records.list();
  return orphansAmong(await listAllLeases(leases), [
    ...all.map((r) => r.vmId),
    ...problems.map((p) => p.vmId),
  ]);
}

/** The leases in `all` whose owner is none of `owners` (the VM ids with a record, readable or not). */
export function orphansAmong(all: PoolLeases[], owners: Iterable<string>): OrphanLease[] {
  const known = new Set(owners);
  const out: OrphanLease[] = [];
  for (const { pool, leases: map } of all) {
    for (const [address, owner] of map) if (!known.has(owner)) out.push({ pool, address, owner });
  }
  return out;
}

/** What releaseOrphans() did. */
export interface OrphanReport {
  released: OrphanLease[];
  /** Orphans that got a record while we waited for their lock: left alone. */
  kept: OrphanLease[];
  failures: TapnetError[];
}

/**
 * Release the given orphans (default: orphanLeases() now). Each is re-checked under its owner's VM lock,
 * so a VM being created right now keeps its address. Keeps going past failures and reports them.
 * Pass `ipam` to drop this process's cached indexes of the pools touched.
 */
export async function releaseOrphans(options: {
  leases: LeaseStore;
  records: Pick<VmRecordStore<StoredRecord>, 'list' | 'get'>;
  locks: LockService;
  ipam?: Ipam;
  orphans?: OrphanLease[];
  signal?: AbortSignal;
}): Promise<OrphanReport> {
  const { leases, records, locks } = options;
  const orphans = options.orphans ?? (await orphanLeases(leases, records));
  const report: OrphanReport = { released: [], kept: [], failures: [] };
  for (const o of orphans) {
    let validOwner = true;
    try {
      validateVmId(o.owner);
    } catch {
      validOwner = false; // garbage owner: no record can ever match it, and it has no lock
    }
    try {
      const lock = validOwner ? await locks.acquire('vm', o.owner, { signal: options.signal }) : undefined;
      try {
        if (validOwner && (await records.get(o.owner)) !== undefined) {
          report.kept.push(o);
          continue;
        }
        if (await leases.release(o.pool, o.address, o.owner)) report.released.push(o);
        options.ipam?.invalidate(o.pool);
      } finally {
        lock?.release();
      }
    } catch (e) {
      if (isTapnetError(e, 'ERR_ABORTED')) throw e;
      report.failures.push(
        toTapnetError(e, 'ERR_IPAM_LEAK', `release orphan lease ${o.address} of ${o.owner}`),
      );
    }
  }
  return report;
}
