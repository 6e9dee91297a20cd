/**
 * Helpers of the policy engine that stand on their own: the commands that remove one listed key, the
 * check of listed entries before they go back into a batch, the br_netfilter switches, and the error for
 * a VM whose network the driver does not know.
 */
import { readFileSync } from 'node:fs';
import { invalidArgument, TapnetError } from '../errors.js';
import type { NftObject } from '../sys/nftables.js';
import { withNetns } from '../sys/ns.js';
import { canonicalPortValue, validatePortIfname } from './model.js';
import { element } from './nft-json.js';
import { classNames, egressKey, POLICY } from './policy-model.js';
import type { PolicyEntry } from './types.js';

/** Delete one listed key's membership, reference, drop counter (and link-local entry). */
export function entryCommands(e: PolicyEntry): NftObject[] {
  const hash = e.class;
  if (e.direction === 'egress') {
    const key = egressKey(e);
    return [
      element('delete', 'inet', classNames('egress', hash).sets[0]!, [key]),
      element('delete', 'inet', POLICY.refEgress, [key]),
      element('add', 'inet', POLICY.dropEgress, [key]),
      element('delete', 'inet', POLICY.dropEgress, [key]),
      element('add', 'inet', POLICY.linkLocal, [key]),
      element('delete', 'inet', POLICY.linkLocal, [key]),
    ];
  }
  const v6 = e.address.includes(':');
  const n = classNames('ingress', hash);
  const drop = v6 ? POLICY.dropIngress6 : POLICY.dropIngress4;
  return [
    element('delete', 'inet', v6 ? n.sets[1]! : n.sets[0]!, [e.address]),
    element('delete', 'inet', v6 ? POLICY.refIngress6 : POLICY.refIngress4, [e.address]),
    element('add', 'inet', drop, [e.address]),
    element('delete', 'inet', drop, [e.address]),
  ];
}

/** Check a listed entry before it goes back into a batch. */
export function validatePolicyEntry(e: PolicyEntry): PolicyEntry {
  if (!e || typeof e !== 'object') throw invalidArgument('policy entry must be an object');
  if (typeof e.class !== 'string') throw invalidArgument('policy entry class must be a string');
  classNames('egress', e.class);
  if (e.direction === 'egress') {
    return {
      direction: 'egress',
      ifname: validatePortIfname(e.ifname),
      mac: canonicalPortValue('mac', e.mac),
      class: e.class,
    };
  }
  if (e.direction === 'ingress') {
    const v6 = typeof e.address === 'string' && e.address.includes(':');
    return {
      direction: 'ingress',
      address: canonicalPortValue(v6 ? 'ip6' : 'ip4', e.address),
      class: e.class,
    };
  }
  throw invalidArgument('policy entry direction must be "egress" or "ingress"');
}

/** Whether bridged traffic reaches inet's hooks (br_netfilter), where policies are enforced. */
export interface BridgeNetfilter {
  /** br_netfilter is in the kernel (the sysctls exist). */
  available: boolean;
  /** `net.bridge.bridge-nf-call-iptables`: bridged IPv4 goes through inet's hooks. */
  ipv4: boolean;
  /** `net.bridge.bridge-nf-call-ip6tables`: bridged IPv6 too. */
  ipv6: boolean;
}

/**
 * Read the namespace's br_netfilter switches (`sysctl net.bridge.bridge-nf-call-ip{,6}tables`). Policies
 * between VMs on the same bridge are enforced only when they are on (the default in a new namespace
 * when br_netfilter is loaded or built in), or when `nf_call_iptables` is set on the bridge itself
 * (`ip link set BR type bridge nf_call_iptables 1 nf_call_ip6tables 1`, not detected here). Traffic
 * through the host (to it, from it, routed) is policed either way.
 */
export function bridgeNetfilter(nsFd?: number): BridgeNetfilter {
  const read = (name: string): boolean | undefined => {
    try {
      return readFileSync(`/proc/sys/net/bridge/${name}`, 'utf8').trim() === '1';
    } catch {
      return undefined;
    }
  };
  return withNetns(nsFd, () => {
    const v4 = read('bridge-nf-call-iptables');
    const v6 = read('bridge-nf-call-ip6tables');
    return { available: v4 !== undefined, ipv4: v4 === true, ipv6: v6 === true };
  });
}

/** An error for policy operations on a VM whose network this driver has not ensured. */
export function unknownPolicyNetwork(network: unknown): TapnetError {
  return new TapnetError('ERR_NOT_FOUND', `network ${String(network)} was not ensured by this firewall`, {
    details: { network },
  });
}
