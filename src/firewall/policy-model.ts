/**
 * Names of the policy objects in `inet tapnet` and how a VM is identified by them. Pure.
 *
 * A VM is recognised by what inet sees of its packets, whatever the topology:
 * - from the VM (egress): `iifname . ether saddr` — the bridge or the routed TAP, and the guest's MAC,
 *   which anti-spoofing guarantees; this covers IPv4, IPv6 and link-local traffic alike;
 * - to the VM (ingress): `ip daddr` / `ip6 daddr` — the guest's addresses (unique across networks).
 * Bridged VM-to-VM traffic reaches inet only through br_netfilter (`bridge-nf-call-iptables`, on by
 * default on this kernel); see docs/POLICY.md.
 */
import { invalidArgument } from '../errors.js';
import type { NetworkSpec, VmSpec } from './model.js';

/** Shared policy objects (one of each in `inet tapnet`). None matches parseObjectName's kinds. */
export const POLICY = {
  /** Base chains (filter, priority PRIORITY): forward, input (VM → host), output (host → VM). */
  forward: 'pol_fwd',
  input: 'pol_input',
  output: 'pol_output',
  /** Pre-filters: is the source (egress) or destination (ingress) a VM with a policy? */
  egress: 'pol_eg',
  ingress: 'pol_in',
  /** Class dispatch: one rule per class, `<key> @<members> goto <class chain>`, then fail closed. */
  egressDispatch: 'pol_eg_d',
  ingress4Dispatch: 'pol_in4_d',
  ingress6Dispatch: 'pol_in6_d',
  /** Count the drop for the VM, then drop / reject. */
  denyEgress: 'pol_deny_eg',
  denyIngress: 'pol_deny_in',
  rejectEgress: 'pol_rej_eg',
  rejectIngress: 'pol_rej_in',
  /** VM key → its class's counter (objref maps): pre-filter, per-class counters, kernel refcount. */
  refEgress: 'pol_ref_eg',
  refIngress4: 'pol_ref_in4',
  refIngress6: 'pol_ref_in6',
  /** Per-VM drop counters (sets whose elements carry a counter). */
  dropEgress: 'pol_drop_eg',
  dropIngress4: 'pol_drop_in4',
  dropIngress6: 'pol_drop_in6',
  /** Bridged VMs with an ingress policy: link-local IPv6 to them is ICMPv6 only. */
  linkLocal: 'pol_ll',
} as const;

/** After isolation (priority 0), so isolation's drops are not counted as policy drops. */
export const POLICY_PRIORITY = 10;

export type ClassDirection = 'egress' | 'ingress';

/** The objects of one class (a compiled direction shared by every VM with the same one). */
export interface ClassNames {
  chain: string;
  counter: string;
  /** Member sets: egress `[ifname . ether_addr]`, ingress `[ipv4, ipv6]`. */
  sets: string[];
}

const HASH_RE = /^[0-9a-f]{12}$/;

/** The names of a class's objects: `pe_<hash>` / `pi_<hash>` and friends. */
export function classNames(d: ClassDirection, hash: string): ClassNames {
  if (!HASH_RE.test(hash))
    throw invalidArgument(`policy class hash ${JSON.stringify(hash)} is not 12 hex digits`);
  return d === 'egress'
    ? { chain: `pe_${hash}`, counter: `pce_${hash}`, sets: [`pme_${hash}`] }
    : { chain: `pi_${hash}`, counter: `pci_${hash}`, sets: [`pmi4_${hash}`, `pmi6_${hash}`] };
}

const CLASS_RE = /^(pe|pi|pce|pci)_([0-9a-f]{12})$/;

/** The class a chain or counter name belongs to, or undefined. */
export function parseClassName(name: string): { direction: ClassDirection; hash: string } | undefined {
  const m = CLASS_RE.exec(name);
  if (!m) return undefined;
  return { direction: m[1] === 'pe' || m[1] === 'pce' ? 'egress' : 'ingress', hash: m[2]! };
}

/** A VM as its policy identifies it. */
export interface PolicyPort {
  /** The VM's TAP (for messages and state). */
  tap: string;
  /** The input interface inet sees for the VM's packets: the bridge, or the routed TAP. */
  ifname: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
  /** A bridge port: link-local IPv6 to it is limited when it has an ingress policy. */
  bridged: boolean;
}

/** The policy identity of a validated VM on its network. */
export function policyPort(vm: VmSpec, net: NetworkSpec): PolicyPort {
  const bridged = net.topology === 'bridge';
  if (bridged && !net.bridge) {
    throw invalidArgument(`network ${net.name}: a bridge network needs its bridge name for policies`, {
      network: net.name,
    });
  }
  return {
    tap: vm.ifname,
    ifname: bridged ? net.bridge! : vm.ifname,
    mac: vm.mac,
    bridged,
    ...(vm.ipv4 ? { ipv4: vm.ipv4 } : {}),
    ...(vm.ipv6 ? { ipv6: vm.ipv6 } : {}),
  };
}

/** The key of a port in egress sets and maps: `ifname . mac`. */
export function egressKey(p: Pick<PolicyPort, 'ifname' | 'mac'>): { concat: [string, string] } {
  return { concat: [p.ifname, p.mac] };
}
