/**
 * Interface addresses and routes over a NetlinkSocket (`ip addr`, `ip route`).
 */
import { isTapnetError } from '../errors.js';
import { canonicalIp, type Family, parseCidr } from '../ip.js';
import { type Address, decodeAddress, encodeAddressRequest, encodeGetAddr } from '../netlink/addr.js';
import {
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RTM_DELADDR,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWROUTE,
} from '../netlink/constants.js';
import {
  decodeRoute,
  encodeGetRoute,
  encodeRouteRequest,
  type Route,
  type RouteRequest,
} from '../netlink/route.js';
import type { NetlinkSocket } from '../netlink/socket.js';

export type { Address, Route, RouteRequest };

export interface AddAddressOptions {
  peer?: string;
  /** IFA_F_* flags, e.g. IFA_F_NODAD for IPv6 addresses that must work at once. */
  flags?: number;
  /** IPv4: set the broadcast address from the prefix (`brd +`). Default true. */
  broadcast?: boolean;
}

/** `ip addr add CIDR dev IFINDEX` — idempotent: an existing identical address is success. */
export function ensureAddress(
  nl: NetlinkSocket,
  index: number,
  cidr: string,
  o: AddAddressOptions = {},
): void {
  parseCidr(cidr, 'interface address');
  const msg = encodeAddressRequest(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, {
    index,
    cidr,
    broadcast: o.broadcast ?? true,
    ...(o.peer !== undefined ? { peer: o.peer } : {}),
    ...(o.flags !== undefined ? { flags: o.flags } : {}),
  });
  nl.request(msg, `${cidr} on ifindex ${index}`);
}

/** `ip addr del CIDR dev IFINDEX` — already gone is success. */
export function deleteAddress(nl: NetlinkSocket, index: number, cidr: string): void {
  try {
    nl.request(encodeAddressRequest(RTM_DELADDR, 0, { index, cidr }), `${cidr} on ifindex ${index}`);
  } catch (e) {
    if (isTapnetError(e) && (e.errno === 'EADDRNOTAVAIL' || e.errno === 'ENODEV' || e.errno === 'ESRCH'))
      return;
    throw e;
  }
}

/** `ip addr show [dev IFINDEX]`. */
export function listAddresses(
  nl: NetlinkSocket,
  filter: { index?: number; family?: Family } = {},
): Address[] {
  return nl
    .dump(encodeGetAddr(filter.family), 'address dump')
    .filter((m) => m.type === RTM_NEWADDR)
    .map(decodeAddress)
    .filter(
      (a) =>
        (filter.index === undefined || a.index === filter.index) &&
        (filter.family === undefined || a.family === filter.family),
    );
}

/** True when `address` (no prefix) is configured on `index`. */
export function hasAddress(nl: NetlinkSocket, index: number, address: string): boolean {
  const want = canonicalIp(address);
  return listAddresses(nl, { index }).some((a) => a.address === want);
}

/** `ip route replace …` — idempotent. */
export function ensureRoute(nl: NetlinkSocket, r: RouteRequest): void {
  nl.request(encodeRouteRequest(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r), `route ${r.dst}`);
}

/** `ip route add …` — ERR_CONFLICT if it exists. */
export function addRoute(nl: NetlinkSocket, r: RouteRequest): void {
  nl.request(encodeRouteRequest(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r), `route ${r.dst}`);
}

/** `ip route del …` — already gone is success. */
export function deleteRoute(nl: NetlinkSocket, r: RouteRequest): void {
  try {
    nl.request(encodeRouteRequest(RTM_DELROUTE, 0, r), `route ${r.dst}`);
  } catch (e) {
    if (isTapnetError(e) && (e.errno === 'ESRCH' || e.errno === 'ENOENT' || e.errno === 'ENODEV')) return;
    throw e;
  }
}

/** `ip route show table all` for a family (main table only unless `table` is given). */
export function listRoutes(
  nl: NetlinkSocket,
  family: Family,
  filter: { table?: number; oif?: number } = {},
): Route[] {
  const table = filter.table ?? 254;
  return nl
    .dump(encodeGetRoute(family), 'route dump')
    .filter((m) => m.type === RTM_NEWROUTE)
    .map(decodeRoute)
    .filter((r) => r.table === table && (filter.oif === undefined || r.oif === filter.oif));
}
