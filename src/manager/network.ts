/**
 * The kernel side of a network and of one VM's attachment to it, for both topologies.
 *
 * bridge: the bridge holds the gateway addresses and a fixed MAC; TAPs are its ports.
 * routed: a port-less bridge (the "gateway holder") holds the gateway addresses as /32 and /128; each TAP
 *   is a point-to-point link with a /32 (/128) route to the VM, proxy ARP (so the guest's on-link
 *   neighbours are answered by the host, which routes) and strict reverse-path filtering (anti-spoofing);
 *   IPv6 guests use fe80::1 on their TAP as gateway.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { parseCidr } from '../ip.js';
import { ensureAddress } from '../net/addr.js';
import { ensureBridge } from '../net/link.js';
import { type Netns, setSysctls } from '../net/netns.js';
import { encodeAddressRequest } from '../netlink/addr.js';
import {
  IFA_F_NODAD,
  NLM_F_CREATE,
  NLM_F_REPLACE,
  RT_SCOPE_LINK,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWROUTE,
} from '../netlink/constants.js';
import { encodeRouteRequest } from '../netlink/route.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import type { ResolvedNetwork } from './config.js';

/** The IPv6 gateway routed guests use: on every TAP, link-local. */
export const ROUTED_GATEWAY6 = 'fe80::1';

/**
 * Make the network's kernel objects exist (idempotent): bridge (or gateway holder) with its fixed MAC,
 * gateway addresses, and forwarding enabled in the namespace. Returns the bridge's ifindex.
 */
export function ensureNetworkKernel(nl: NetlinkSocket, ns: Netns | undefined, net: ResolvedNetwork): number {
  const routed = net.topology === 'routed';
  const br = ensureBridge(nl, { name: net.bridge, mac: net.bridgeMac, mtu: net.mtu, up: true });
  if (net.gateway4)
    ensureAddress(nl, br.index, routed ? `${net.gateway4}/32` : `${net.gateway4}/${net.prefix4}`);
  if (net.gateway6) {
    ensureAddress(nl, br.index, routed ? `${net.gateway6}/128` : `${net.gateway6}/${net.prefix6}`, {
      flags: IFA_F_NODAD,
    });
  }
  const sysctls: [string, string][] = [];
  if (net.subnet4) sysctls.push(['net/ipv4/ip_forward', '1']);
  if (net.subnet6) sysctls.push(['net/ipv6/conf/all/forwarding', '1']);
  setSysctls(ns, sysctls);
  return br.index;
}

/** Addresses of a routed VM, without prefix. */
export interface RoutedVmAddrs {
  ipv4?: string;
  ipv6?: string;
}

function hostOnly(cidr: string): string {
  const c = parseCidr(cidr);
  return `${cidr.slice(0, cidr.indexOf('/'))}/${c.family === 4 ? 32 : 128}`;
}

/**
 * Attach a routed VM's TAP: per-TAP proxy ARP and strict rp_filter, fe80::1 on the TAP (IPv6), and host
 * routes to the VM — the netlink part in one batched datagram. Idempotent.
 */
export function attachRouted(
  nl: NetlinkSocket,
  ns: Netns | undefined,
  tap: string,
  tapIndex: number,
  vm: RoutedVmAddrs,
): void {
  if (vm.ipv4) {
    setSysctls(ns, [
      [`net/ipv4/conf/${tap}/proxy_arp`, '1'],
      [`net/ipv4/conf/${tap}/rp_filter`, '1'],
    ]);
  }
  const msgs: Buffer[] = [];
  if (vm.ipv6) {
    msgs.push(
      encodeAddressRequest(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, {
        index: tapIndex,
        cidr: `${ROUTED_GATEWAY6}/64`,
        flags: IFA_F_NODAD,
      }),
    );
  }
  for (const a of [vm.ipv4, vm.ipv6]) {
    if (a)
      msgs.push(
        encodeRouteRequest(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, {
          dst: hostOnly(a),
          oif: tapIndex,
          scope: RT_SCOPE_LINK,
        }),
      );
  }
  const failures = nl.batch(msgs, (i) => `routed attach ${tap} #${i}`).filter((e) => e !== undefined);
  if (failures.length) throw failures[0]!;
}

/** Remove a routed VM's host routes (they also vanish with the TAP). Already gone is success. */
export function detachRouted(nl: NetlinkSocket, tapIndex: number | undefined, vm: RoutedVmAddrs): void {
  const msgs: Buffer[] = [];
  for (const a of [vm.ipv4, vm.ipv6]) {
    if (a)
      msgs.push(
        encodeRouteRequest(RTM_DELROUTE, 0, {
          dst: hostOnly(a),
          ...(tapIndex ? { oif: tapIndex } : {}),
          scope: RT_SCOPE_LINK,
        }),
      );
  }
  for (const e of nl.batch(msgs)) {
    if (e && !(isTapnetError(e) && (e.errno === 'ESRCH' || e.errno === 'ENODEV' || e.errno === 'ENOENT')))
      throw e;
  }
}

/** A clear error for a network name that is not configured. */
export function unknownNetwork(name: string, known: string[]): TapnetError {
  return new TapnetError('ERR_NOT_FOUND', `no network named ${name} (configured: ${known.join(', ')})`, {
    details: { network: name },
  });
}
