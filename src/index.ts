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
