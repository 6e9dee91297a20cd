/**
 * The CNI specification's types, as libcni models them: network configurations (lists of plugin
 * configurations), runtime attachment parameters, and the results of every spec version (0.1.0/0.2.0,
 * 0.3.x/0.4.0, 1.0.0/1.1.0). Results are kept in their canonical form: what Go's decoder keeps and its
 * encoder writes (unknown fields dropped, addresses in canonical text, zero numbers left out). Pure.
 */
export type { CniCommand, InProcessPlugin } from './inprocess.js';

/** The spec version this library implements. */
export const CURRENT_VERSION = '1.1.0';

/** Every spec version libcni knows, oldest first. */
export const ALL_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** DNS settings of a result or configuration. */
export interface Dns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A route of a result (the same in every version; 0.2.0 keeps only dst and gw when converting). */
export interface Route {
  /** Destination CIDR, canonical (`10.0.0.0/8`). */
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

/** 1.0.0/1.1.0: an interface created by the attachment. */
export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

/** 1.0.0/1.1.0: an address assigned by the attachment. */
export interface IpConfig {
  /** Index into `interfaces`. */
  interface?: number;
  /** `addr/prefix`, canonical. */
  address: string;
  gateway?: string;
}

/** Result of spec 1.0.0 and 1.1.0 (identical types). */
export interface Result100 {
  cniVersion: '1.0.0' | '1.1.0';
  interfaces?: Interface[];
  ips?: IpConfig[];
  routes?: Route[];
  dns?: Dns;
}

/** 0.3.x/0.4.0: an interface. */
export interface Interface040 {
  name: string;
  mac?: string;
  sandbox?: string;
}

/** 0.3.x/0.4.0: an address, with its IP version ("4" or "6"). */
export interface IpConfig040 {
  version: string;
  interface?: number;
  address: string;
  gateway?: string;
}

/** Result of spec 0.3.0, 0.3.1 and 0.4.0. */
export interface Result040 {
  cniVersion: '0.3.0' | '0.3.1' | '0.4.0';
  interfaces?: Interface040[];
  ips?: IpConfig040[];
  routes?: Route[];
  dns: Dns;
}

/** 0.1.0/0.2.0: one address per family, with its routes. */
export interface IpConfig020 {
  ip: string;
  gateway?: string;
  routes?: Route[];
}

/** Result of spec 0.1.0 and 0.2.0. */
export interface Result020 {
  cniVersion: '0.1.0' | '0.2.0';
  ip4?: IpConfig020;
  ip6?: IpConfig020;
  dns: Dns;
}

/** A plugin's result, in one of the spec's versions. */
export type CniResult = Result020 | Result040 | Result100;

/** A still-valid attachment, as GC is told about it. */
export interface GcAttachment {
  containerID: string;
  ifname: string;
}

/** The fields of a plugin configuration libcni itself reads (types.PluginConf). */
export interface PluginConf {
  cniVersion: string;
  name: string;
  type: string;
  /** Capabilities the plugin declares (`{"portMappings": true}`). */
  capabilities: Record<string, boolean>;
  ipam: { type: string };
  dns: Dns;
}

/** One plugin configuration: its parsed fields and the exact bytes handed on (libcni's PluginConfig). */
export interface PluginConfig {
  network: PluginConf;
  bytes: Buffer;
}

/** A network configuration list (libcni's NetworkConfigList). */
export interface NetworkConfigList {
  name: string;
  /** The version selected (the highest of cniVersion/cniVersions this library supports). */
  cniVersion: string;
  disableCheck: boolean;
  disableGC: boolean;
  loadOnlyInlinedPlugins: boolean;
  plugins: PluginConfig[];
  /** The file's bytes (what the result cache records as `config`). */
  bytes: Buffer;
  /** The file it was loaded from, when it was. */
  file?: string;
}

/** The parameters of one attachment (libcni's RuntimeConf). */
export interface RuntimeConf {
  /** CNI_CONTAINERID. */
  containerId: string;
  /** CNI_NETNS: path of the network namespace. */
  netns: string;
  /** CNI_IFNAME. */
  ifName: string;
  /** CNI_ARGS as key/value pairs (`K1=V1;K2=V2`). */
  args?: Array<[string, string]>;
  /** Capability arguments (portMappings, ipRanges, bandwidth, dns, ips, mac, …), keyed by capability. */
  capabilityArgs?: Record<string, unknown>;
}

/** An attachment recorded in the result cache (libcni's NetworkAttachment). */
export interface NetworkAttachment {
  containerId: string;
  network: string;
  ifName: string;
  config: Buffer;
  netns: string;
  cniArgs?: Array<[string, string]>;
  capabilityArgs?: Record<string, unknown>;
}

/** What a plugin reports for VERSION. */
export interface PluginInfo {
  cniVersion: string;
  supportedVersions: string[];
}
