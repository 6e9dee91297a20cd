/** tapnet's public API: re-exports only. */

export * from './cluster/index.js';
export { CniRuntime, type CniRuntimeOptions } from './cni/api.js';
export * from './errors.js';
export {
  createFirewall,
  type Firewall,
  type FirewallNetwork,
  type FirewallStatus,
  type FirewallVm,
} from './firewall/index.js';
export * from './guest/index.js';
export * from './ip.js';
export { firecrackerConflist, writeConflist } from './manager/cni-conflist.js';
export { PodNetwork } from './manager/cni-mode.js';
export {
  DEFAULT_NETWORK,
  type ManagerConfigInput,
  type NetworkConfigInput,
  type ResolvedNetwork,
  resolveConfig,
} from './manager/config.js';
export { type GuestConfigs, renderGuestConfig } from './manager/info.js';
export { type ManagerOptions, NetworkManager } from './manager/manager.js';
export { REPAIR_KINDS, repairCount, repairsByKind } from './manager/report.js';
export type {
  EnsureOptions,
  ManagerMetrics,
  NetworkInfo,
  ReconcileReport,
  ReleaseOptions,
  TapMode,
} from './manager/types.js';
export * from './net/addr.js';
export * from './net/link.js';
export * from './net/neigh.js';
export * from './net/netns.js';
export * from './net/tap.js';
export * from './net/tc.js';
export type { BridgeInfo, Link, TunInfo, VxlanInfo } from './netlink/link.js';
export { NetlinkSocket, type NetlinkSocketOptions } from './netlink/socket.js';
export type { LinkStats } from './netlink/stats.js';
export * from './validate.js';
export { renderFirecrackerVmConfig, validateFirecrackerConfig } from './vm/firecracker.js';
export { type QemuNetwork, QemuVm, type QemuVmOptions } from './vm/qemu.js';
