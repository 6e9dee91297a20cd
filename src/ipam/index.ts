/** IP address management: pools, allocation and reconcile helpers over a LeaseStore. */
export { Ipam, type PoolRequest } from './ipam.js';
export { canonicalSubnet, type PoolLayout, type PoolSpec, resolvePool } from './layout.js';
export { MemoryLeaseStore } from './memory.js';
export { type AllocateOptions, IpPool, type Lease, type PoolStats, type ReleaseOptions } from './pool.js';
export {
  listAllLeases,
  type OrphanLease,
  type OrphanReport,
  orphanLeases,
  orphansAmong,
  type PoolLeases,
  releaseOrphans,
} from './reconcile.js';
export { AddressRuns } from './runs.js';
