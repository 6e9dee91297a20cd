/** tapnet's public API: re-exports only. */
export * from './errors.js';
export * from './ip.js';
export * from './validate.js';
export { NetlinkSocket, type NetlinkSocketOptions } from './netlink/socket.js';
export type { Link, TunInfo, VxlanInfo, BridgeInfo } from './netlink/link.js';
export type { LinkStats } from './netlink/stats.js';
export * from './net/netns.js';
export * from './net/link.js';
export * from './net/tap.js';
export * from './net/addr.js';
export * from './net/tc.js';
export * from './net/neigh.js';
export { NetworkManager, type ManagerOptions } from './manager/manager.js';
export { resolveConfig, DEFAULT_NETWORK, type ManagerConfigInput, type NetworkConfigInput, type ResolvedNetwork } from './manager/config.js';
export { renderGuestConfig, type GuestConfigs } from './manager/info.js';
export type { EnsureOptions, NetworkInfo, ReconcileReport, ManagerMetrics, TapMode } from './manager/types.js';
export * from './guest/index.js';
export { createFirewall, type Firewall, type FirewallNetwork, type FirewallVm, type FirewallStatus } from './firewall/index.js';
