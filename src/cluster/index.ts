/**
 * Cluster mode: the state store on etcd (records, leases, locks shared by every host), membership with
 * liveness on etcd leases, and the VXLAN overlay of `scope: cluster` networks. See docs/CLUSTER.md.
 */
export {
  type CallOptions,
  type Compare,
  EtcdClient,
  type EtcdClientOptions,
  type KeyValue,
  type RangeOptions,
  type RangeResult,
  type TxnOp,
  type TxnRequest,
  type TxnResult,
} from './etcd-client.js';
export { type LeaseValue, leaseText, parseLease } from './etcd-leases.js';
export {
  EtcdLeaseStore,
  EtcdLockService,
  EtcdRecordStore,
  EtcdStore,
  type EtcdStoreOptions,
  type OpenEtcdStoreOptions,
  type OverlayPublication,
  type OverlayPublisher,
  openEtcdStore,
} from './etcd-store.js';
export { EtcdWatch, type WatchEvent, type WatchOptions } from './etcd-watch.js';
export { ClusterKeys, DEFAULT_PREFIX, validateHostName } from './keys.js';
export {
  ClusterMember,
  type ClusterStatus,
  clusterStatus,
  type HostInfo,
  type HostState,
  type HostStatus,
  type JoinOptions,
  type ReclaimReport,
  reclaimHost,
} from './membership.js';
export {
  type ClusterNetwork,
  isRetryable,
  OverlayAgent,
  type OverlayEntry,
  type OverlayNetworkStatus,
  type OverlayOptions,
  type OverlayVmRecord,
  parseOverlayEntry,
  vmOverlayPublisher,
} from './overlay.js';
export {
  deriveVni,
  ensureVxlanDevice,
  overlayMtu,
  type RemoteVm,
  RTPROT_TAPNET,
  VXLAN_PORT,
  vxlanName,
} from './overlay-kernel.js';
export { EtcdSession, type SessionOptions, type SessionState } from './session.js';
export { formatClusterStatus } from './status-text.js';
