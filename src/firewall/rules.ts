/**
 * The rules tapnet installs, as data. Pure: each function returns rule expression lists.
 *
 * Layout, in each of `bridge tapnet` (bridge topology: frames entering a bridge port) and `inet tapnet`
 * (routed topology: packets entering a TAP). The rule count depends on networks and TAP prefixes, never
 * on VMs:
 *
 *   chain guard_<prefix>  base, prerouting     meta iifkind "tun" iifname "<prefix>*" jump antispoof
 *   chain antispoof       source checks        iifname . ether saddr != @vm_mac goto spoofed, …
 *   chain spoofed         count and drop       counter name iifname map @vm_counter drop
 *                                              counter name "unregistered" drop
 *
 * Per-VM state is only elements: `vm_mac`, `vm_ip4`, `vm_ip6` hold `ifname . address` pairs and
 * `vm_counter` maps the TAP to its network's `spoof_<net>` counter. A TAP with a tapnet prefix and no
 * elements sends nothing (counted as `unregistered`). In the bridge family the prerouting hook sees every
 * frame a port receives, so VM→VM and VM→host are both covered. No verdict map is used on purpose: adding
 * an element to a map of jumps makes the kernel re-validate every element of it on each commit.
 *
 * `inet tapnet` also holds, per network, isolation (`fwd_<net>`, `in_<net>`) and NAT (`post_<net>`).
 */

import type { NetworkSpec } from './model.js';
import {
  ANTISPOOF_CHAIN,
  objectName,
  SPOOFED_CHAIN,
  SUBNETS4_SET,
  SUBNETS6_SET,
  UNREGISTERED_COUNTER,
  VM_COUNTER_MAP,
  VM_IP4_SET,
  VM_IP6_SET,
  VM_MAC_SET,
} from './model.js';
import {
  anonSet,
  concat,
  counterRef,
  drop,
  type Expr,
  type Family,
  gotoChain,
  jumpChain,
  masquerade,
  match,
  meta,
  payload,
  prefix,
  ret,
  setRef,
} from './nft-json.js';

/** Base chain priorities: bridge filter; raw in inet (before conntrack sees spoofed packets); filter; srcnat. */
export const PRIO = { bridgePrerouting: -200, inetPrerouting: -300, filter: 0, srcnat: 100 } as const;

const spoofed = gotoChain(SPOOFED_CHAIN);
const etherType = (t: Expr) => match(payload('ether', 'type'), t);
const iifnameDot = (e: Expr) => concat(meta('iifname'), e);
/** ICMPv6 types a VM may send from `::` (duplicate address detection, MLD reports). */
const UNSPECIFIED_SOURCE_ICMPV6 = ['nd-neighbor-solicit', 'mld-listener-report', 'mld2-listener-report'];
/** ICMPv6 types only routers send: a VM sending them is a rogue router. */
const ROUTER_ONLY_ICMPV6 = ['nd-router-advert', 'nd-redirect'];

/** `guard_<prefix>`: frames from TAP devices named `<prefix>…` go through anti-spoofing. */
export function guardRules(tapPrefix: string): Expr[][] {
  return [
    [match(meta('iifkind'), 'tun'), match(meta('iifname'), `${tapPrefix}*`), jumpChain(ANTISPOOF_CHAIN)],
  ];
}

/** `spoofed`: count in the port's network counter (or `unregistered`), then drop. */
export function spoofedRules(): Expr[][] {
  return [
    [{ counter: { map: { key: meta('iifname'), data: setRef(VM_COUNTER_MAP) } } }, drop],
    [counterRef(UNREGISTERED_COUNTER), drop],
  ];
}

/** IPv6 source rules shared by both families; `guard` selects IPv6 packets. */
function ipv6Rules(guard: Expr): Expr[][] {
  return [
    [guard, match(payload('icmpv6', 'type'), anonSet(ROUTER_ONLY_ICMPV6)), spoofed],
    [guard, match(payload('udp', 'sport'), 547), spoofed],
    [
      guard,
      match(payload('ip6', 'saddr'), '::'),
      match(payload('icmpv6', 'type'), anonSet(UNSPECIFIED_SOURCE_ICMPV6)),
      ret,
    ],
    [guard, match(payload('ip6', 'saddr'), prefix('fe80::/10')), ret],
    [guard, match(iifnameDot(payload('ip6', 'saddr')), setRef(VM_IP6_SET), '!='), spoofed],
    [guard, ret],
  ];
}

/** IPv4 source rules shared by both families; `guard` selects IPv4 packets. */
function ipv4Rules(guard: Expr): Expr[][] {
  return [
    // No DHCP server answers from VMs; DHCP requests from 0.0.0.0; otherwise the port's address.
    [guard, match(payload('udp', 'sport'), 67), spoofed],
    [
      guard,
      match(payload('ip', 'saddr'), '0.0.0.0'),
      match(payload('udp', 'sport'), 68),
      match(payload('udp', 'dport'), 67),
      ret,
    ],
    [guard, match(iifnameDot(payload('ip', 'saddr')), setRef(VM_IP4_SET), '!='), spoofed],
    [guard, ret],
  ];
}

/**
 * `antispoof` in `bridge tapnet`: every frame from a VM port carries the port's MAC; ARP's sender MAC and
 * IP are the port's (0.0.0.0 for RFC 5227 probes); IPv4 and IPv6 sources are the port's (link-local and
 * `::` for DAD/MLD allowed); no rogue RA, redirect or DHCP server; other ethertypes (VLAN tags…) dropped.
 * `return` accepts (the guard chain ends with policy accept).
 */
export function bridgeAntispoofRules(): Expr[][] {
  return [
    [match(iifnameDot(payload('ether', 'saddr')), setRef(VM_MAC_SET), '!='), spoofed],
    [etherType('arp'), match(iifnameDot(payload('arp', 'saddr ether')), setRef(VM_MAC_SET), '!='), spoofed],
    [
      etherType('arp'),
      match(payload('arp', 'saddr ip'), '0.0.0.0', '!='),
      match(iifnameDot(payload('arp', 'saddr ip')), setRef(VM_IP4_SET), '!='),
      spoofed,
    ],
    [etherType('arp'), ret],
    ...ipv4Rules(etherType('ip')),
    ...ipv6Rules(etherType('ip6')),
    [spoofed],
  ];
}

/** `antispoof` in `inet tapnet` (routed TAPs): the same checks at layer 3 (ARP never reaches inet). */
export function inetAntispoofRules(): Expr[][] {
  return [
    [match(iifnameDot(payload('ether', 'saddr')), setRef(VM_MAC_SET), '!='), spoofed],
    ...ipv4Rules(match(meta('nfproto'), 'ipv4')),
    ...ipv6Rules(match(meta('nfproto'), 'ipv6')),
  ];
}

/** The anti-spoofing rules of a family. */
export function antispoofRules(family: Family): Expr[][] {
  return family === 'bridge' ? bridgeAntispoofRules() : inetAntispoofRules();
}

/**
 * Isolation, in `inet tapnet fwd_<net>` (forward) and `in_<net>` (input): traffic from this subnet to any
 * other tapnet subnet, and (forward) from another tapnet subnet into this one, is dropped and counted in
 * `isolate_<net>`. Sources can be trusted because anti-spoofing ran first.
 */
export function isolationRules(net: NetworkSpec, hook: 'forward' | 'input'): Expr[][] {
  const counter = counterRef(objectName('isolate', net.name));
  const rules: Expr[][] = [];
  const fams: Array<[string, string | undefined, string]> = [
    ['ip', net.subnet4, SUBNETS4_SET],
    ['ip6', net.subnet6, SUBNETS6_SET],
  ];
  for (const [proto, subnet, all] of fams) {
    if (!subnet) continue;
    const own = prefix(subnet);
    rules.push([
      match(payload(proto, 'saddr'), own),
      match(payload(proto, 'daddr'), setRef(all)),
      match(payload(proto, 'daddr'), own, '!='),
      counter,
      drop,
    ]);
    if (hook === 'forward') {
      rules.push([
        match(payload(proto, 'daddr'), own),
        match(payload(proto, 'saddr'), setRef(all)),
        match(payload(proto, 'saddr'), own, '!='),
        counter,
        drop,
      ]);
    }
  }
  return rules;
}

/** NAT, in `inet tapnet post_<net>` (nat, postrouting): masquerade from the subnet to outside it. */
export function natRules(net: NetworkSpec): Expr[][] {
  const rules: Expr[][] = [];
  if (net.subnet4) {
    const own = prefix(net.subnet4);
    rules.push([match(payload('ip', 'saddr'), own), match(payload('ip', 'daddr'), own, '!='), masquerade]);
  }
  if (net.subnet6) {
    const own = prefix(net.subnet6);
    rules.push([match(payload('ip6', 'saddr'), own), match(payload('ip6', 'daddr'), own, '!='), masquerade]);
  }
  return rules;
}
