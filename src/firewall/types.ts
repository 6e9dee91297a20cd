/**
 * The firewall driver interface the NetworkManager uses: one network's base rules (NAT, isolation,
 * anti-spoofing) and per-VM elements. Drivers are synchronous: the nftables one is a single in-process
 * libnftables call per operation, so nothing ever waits across an `await` in another namespace.
 */

import type { CompiledPolicy } from '../policy/types.js';

export type FirewallKind = 'nftables' | 'none';
export type Topology = 'bridge' | 'routed';

/** What the firewall needs to know about one network. */
export interface FirewallNetwork {
  /** Network name (validateName: 1-63 of A-Z a-z 0-9 _ . -). */
  name: string;
  /** bridge: VMs' TAPs are ports of one bridge; routed: each TAP is a point-to-point link to the host. */
  topology: Topology;
  /** The bridge (bridge topology). Informational: rules match ports and addresses, not the bridge. */
  bridge?: string;
  /**
   * Every TAP of this network's VMs starts with this (1-14 of A-Z a-z 0-9 _ . -). Networks may share a
   * prefix. TAP devices with a tapnet prefix that are not registered with addVm() send nothing, so a TAP
   * must be registered before its VM starts. Guards for a prefix stay until destroy().
   */
  tapPrefix: string;
  /** IPv4 subnet, e.g. 198.18.0.0/24. At least one of subnet4 and subnet6. */
  subnet4?: string;
  /** IPv6 subnet, e.g. fd00::/64. */
  subnet6?: string;
  /** Masquerade traffic from the subnet to anything outside it. */
  nat: boolean;
  /** Drop traffic between this network's subnet and other tapnet networks' subnets (both directions). */
  isolate: boolean;
}

/** One VM port: its TAP and the only source addresses it may use. */
export interface FirewallVm {
  network: string;
  /** The TAP device; must start with the network's tapPrefix. */
  ifname: string;
  /** The guest's MAC (aa:bb:cc:dd:ee:ff, unicast). */
  mac: string;
  /** The guest's IPv4 address, inside subnet4. Without it the VM may not send IPv4 or ARP. */
  ipv4?: string;
  /** The guest's IPv6 address, inside subnet6. Link-local and DAD sources are always allowed. */
  ipv6?: string;
}

/** What the kernel holds for one port, as found (listVms); several values mean leftovers. */
export interface FirewallPort {
  /** The network whose counter the port's drops go to; undefined for addresses without one (leftovers). */
  network: string | undefined;
  ifname: string;
  /** bridge: the elements are in `bridge tapnet`; routed: in `inet tapnet`. */
  topology: Topology;
  macs: string[];
  ipv4: string[];
  ipv6: string[];
}

export interface FirewallCounter {
  packets: number;
  bytes: number;
}

export interface FirewallNetworkStatus {
  name: string;
  /** The expected topology, else the family its ports are registered in (undefined: no ports). */
  topology: Topology | undefined;
  /** Everything ensureNetwork creates for it is present (and matches the definition, when known). */
  ok: boolean;
  /** A masquerade rule is present. */
  nat: boolean;
  /** Isolation rules are present. */
  isolated: boolean;
  /** Ports registered (entries pointing at the network's counter). */
  ports: number;
  /** Dropped by anti-spoofing (wrong MAC/IP, rogue RA/DHCP server, other ethertypes) and by isolation. */
  drops: { spoof: FirewallCounter; isolate: FirewallCounter };
  problems: string[];
}

export interface FirewallStatus {
  kind: FirewallKind;
  ok: boolean;
  tables: { inet: boolean; bridge: boolean };
  /** Frames from TAPs with a tapnet prefix that are not registered, dropped. */
  unregisteredDrops: FirewallCounter;
  networks: FirewallNetworkStatus[];
  problems: string[];
}

export interface EnsureNetworkOptions {
  /** Apply even if this driver already applied the same definition (reconcile, repair). */
  force?: boolean;
}

/**
 * A firewall driver. Every mutating call is one atomic batch. Adding what exists and removing what is
 * gone both succeed. Per-VM state lives only in sets and maps, so the rule count does not grow with VMs.
 */
export interface Firewall {
  readonly kind: FirewallKind;
  /**
   * How many times this driver found its tables gone (e.g. `nft flush ruleset`) and rebuilt them while
   * adding a VM. A change tells the caller that other VMs' elements must be added again.
   */
  readonly rebuilds?: number;
  /**
   * Idempotent base setup for one network (tables, chains, sets, NAT, isolation, anti-spoofing). Cheap to
   * call again: an unchanged definition already applied by this driver is a no-op unless `force`. Repairs
   * what is missing (e.g. after `nft flush ruleset`) and removes what the definition no longer wants.
   */
  ensureNetwork(net: FirewallNetwork, opts?: EnsureNetworkOptions): void;
  /** Remove everything of one network, its ports included. Gone already is success. */
  removeNetwork(name: string): void;
  /** Register one VM port (hot path). The network must have been ensured by this driver. */
  addVm(vm: FirewallVm): void;
  /** Register many VM ports in one batch. */
  addVms(vms: readonly FirewallVm[]): void;
  /** Unregister one VM port (hot path); its traffic is then dropped if its TAP still exists. */
  removeVm(vm: FirewallVm): void;
  /** Unregister many VM ports in one batch. */
  removeVms(vms: readonly FirewallVm[]): void;
  /** Remove exactly what listVms() reported for these ports (reconcile of leftovers). */
  removePorts(ports: readonly FirewallPort[]): void;
  /** Every registered port and address, for reconcile. */
  listVms(): FirewallPort[];
  /** What doctor reports; `expected` adds checks against the configured networks. */
  status(expected?: readonly FirewallNetwork[]): FirewallStatus;
  /** Delete tapnet's tables entirely (and nothing else). */
  destroy(): void;
  /**
   * Install or replace a VM's network policy (compilePolicy output) in one atomic batch; the VM's network
   * must have been ensured by this driver. Connections the new policy still allows are not disturbed;
   * those it no longer allows stop at their next packet. A direction that lets everything through is not
   * policed at all. The "none" driver refuses policies that would deny anything (ERR_CONFIG).
   * Cost: flat in the number of VMs (elements only); see src/firewall/policy.ts.
   */
  setPolicy(vm: FirewallVm, policy: CompiledPolicy): PolicyApplied;
  /** Remove a VM's policy and its drop counters. No policy (or no such network) is success. */
  removePolicy(vm: FirewallVm): void;
  /** Packets the VM's policy dropped or rejected, per direction (reads the counter sets: O(VMs)). */
  policyCounters(vm: FirewallVm): PolicyCounters;
  /** The same for many VMs with one read; keyed by the VM's TAP name. */
  policyCountersAll(vms: readonly FirewallVm[]): Map<string, PolicyCounters>;
  /** Every VM key that has a policy in the kernel (reconcile: compare with the VMs that should). */
  listPolicies(): PolicyEntry[];
  /** Remove exactly these keys' policies (leftovers found by listPolicies). */
  removePolicies(entries: readonly PolicyEntry[]): void;
  /** Remove policy classes no VM uses any more (reconcile). */
  gcPolicies(): PolicyGcReport;
  /** Release the driver's resources (not the rules). Idempotent. */
  close(): void;
}

/** What setPolicy installed: the classes (content hashes) per direction; undefined: not policed. */
export interface PolicyApplied {
  egress?: string;
  ingress?: string;
  /** Peers of the compiled policy that resolved to nothing (match nothing). */
  unresolved: string[];
}

/** Packets of one VM dropped or rejected by its policy, per direction (from nftables counters). */
export interface PolicyCounters {
  egress: FirewallCounter;
  ingress: FirewallCounter;
}

/** One VM key with a policy, as found in the kernel (for reconcile). */
export type PolicyEntry =
  | { direction: 'egress'; ifname: string; mac: string; class: string }
  | { direction: 'ingress'; address: string; class: string };

export interface PolicyGcReport {
  /** Class chains removed because no VM uses them any more. */
  removed: string[];
  /** Classes still in use. */
  inUse: number;
}
