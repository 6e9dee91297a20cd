/**
 * Neighbour tables and forwarding databases, as typed operations over a NetlinkSocket: static ARP/NDP
 * entries (so a guest's address resolves without a broadcast), proxy ARP/NDP entries (the host answers for
 * a guest's address), and bridge/VXLAN FDB entries (which port or remote VTEP owns a MAC).
 */
import { isAlreadyGone, TapnetError } from '../errors.js';
import { parseIp } from '../ip.js';
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  AF_UNSPEC,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NTF_MASTER,
  NTF_PROXY,
  NTF_ROUTER,
  NTF_SELF,
  NUD_DELAY,
  NUD_NOARP,
  NUD_PERMANENT,
  NUD_PROBE,
  NUD_REACHABLE,
  NUD_STALE,
  RTM_DELNEIGH,
  RTM_NEWNEIGH,
} from '../netlink/constants.js';
import {
  decodeNeighbour,
  encodeGetNeigh,
  encodeNeighRequest,
  type Neighbour,
  type NeighRequest,
} from '../netlink/neigh.js';
import type { NetlinkSocket } from '../netlink/socket.js';

export type { Neighbour };

// ---- ARP / NDP ----

export type NeighState = 'permanent' | 'noarp' | 'reachable' | 'stale' | 'delay' | 'probe';

const NUD: Record<NeighState, number> = {
  permanent: NUD_PERMANENT,
  noarp: NUD_NOARP,
  reachable: NUD_REACHABLE,
  stale: NUD_STALE,
  delay: NUD_DELAY,
  probe: NUD_PROBE,
};

/** A neighbour entry to install. */
export interface NeighbourSpec {
  ifindex: number;
  /** The IPv4 or IPv6 address. */
  address: string;
  /** Its link-layer address. */
  lladdr: string;
  /** Default 'permanent' (never expires, never probed). */
  state?: NeighState;
  /** Mark an IPv6 neighbour as a router (`ip neigh … router`). */
  router?: boolean;
}

function neighRequest(n: NeighbourSpec): NeighRequest {
  const state = NUD[n.state ?? 'permanent'];
  if (state === undefined)
    throw new TapnetError('ERR_INVALID_ARGUMENT', `unknown neighbour state ${JSON.stringify(n.state)}`);
  return { ifindex: n.ifindex, dst: n.address, lladdr: n.lladdr, state, flags: n.router ? NTF_ROUTER : 0 };
}

function neighWhat(ifindex: number, address: string): string {
  return `neighbour ${address} on ifindex ${ifindex}`;
}

/** Add a neighbour; ERR_CONFLICT if the address has one. `ip neigh add ADDR lladdr MAC dev X nud permanent` */
export function addNeighbour(nl: NetlinkSocket, n: NeighbourSpec): void {
  nl.request(
    encodeNeighRequest(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, neighRequest(n)),
    neighWhat(n.ifindex, n.address),
  );
}

/** Add or overwrite a neighbour (idempotent). `ip neigh replace ADDR lladdr MAC dev X nud permanent` */
export function ensureNeighbour(nl: NetlinkSocket, n: NeighbourSpec): void {
  nl.request(
    encodeNeighRequest(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, neighRequest(n)),
    neighWhat(n.ifindex, n.address),
  );
}

/** Delete a neighbour; absent is success. `ip neigh del ADDR dev X` */
export function delNeighbour(nl: NetlinkSocket, ifindex: number, address: string): void {
  try {
    nl.request(encodeNeighRequest(RTM_DELNEIGH, 0, { ifindex, dst: address }), neighWhat(ifindex, address));
  } catch (e) {
    if (!isAlreadyGone(e)) throw e;
  }
}

export interface NeighbourFilter {
  ifindex?: number;
  family?: 4 | 6;
  /** Include NOARP entries (multicast, and those on NOARP devices), which `ip neigh show` hides. Default false. */
  includeNoarp?: boolean;
}

/** ARP and NDP entries. `ip neigh show [dev X]` (`ip neigh show nud all` with includeNoarp) */
export function listNeighbours(nl: NetlinkSocket, f: NeighbourFilter = {}): Neighbour[] {
  const family = f.family === undefined ? AF_UNSPEC : f.family === 4 ? AF_INET : AF_INET6;
  const req = encodeGetNeigh({ family, ...(f.ifindex !== undefined ? { ifindex: f.ifindex } : {}) });
  return nl
    .dump(req, 'neighbour dump')
    .filter((m) => m.type === RTM_NEWNEIGH)
    .map(decodeNeighbour)
    .filter(
      (n) =>
        (n.family === AF_INET || n.family === AF_INET6) &&
        (family === AF_UNSPEC || n.family === family) &&
        (f.ifindex === undefined || n.ifindex === f.ifindex) &&
        !(n.flags & NTF_PROXY) &&
        (f.includeNoarp || !(n.state & NUD_NOARP)),
    );
}

// ---- proxy ARP / NDP ----

/**
 * Answer ARP/NDP for `address` on `ifindex` (idempotent). Needs `proxy_arp`/`proxy_ndp` enabled on the
 * device to take effect for IPv4/IPv6 respectively. `ip neigh add proxy ADDR dev X`
 */
export function addProxyNeighbour(nl: NetlinkSocket, ifindex: number, address: string): void {
  nl.request(
    encodeNeighRequest(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, { ifindex, dst: address, flags: NTF_PROXY }),
    `proxy ${neighWhat(ifindex, address)}`,
  );
}

/** Remove a proxy entry; absent is success. `ip neigh del proxy ADDR dev X` */
export function delProxyNeighbour(nl: NetlinkSocket, ifindex: number, address: string): void {
  try {
    nl.request(
      encodeNeighRequest(RTM_DELNEIGH, 0, { ifindex, dst: address, flags: NTF_PROXY }),
      `proxy ${neighWhat(ifindex, address)}`,
    );
  } catch (e) {
    if (!isAlreadyGone(e)) throw e;
  }
}

/** Proxy entries, of one device or all. `ip neigh show proxy [dev X]` */
export function listProxyNeighbours(nl: NetlinkSocket, ifindex?: number): Neighbour[] {
  const req = encodeGetNeigh({ proxy: true, ...(ifindex !== undefined ? { ifindex } : {}) });
  return nl
    .dump(req, 'proxy neighbour dump')
    .filter((m) => m.type === RTM_NEWNEIGH)
    .map(decodeNeighbour)
    .filter((n) => (n.flags & NTF_PROXY) !== 0 && (ifindex === undefined || n.ifindex === ifindex));
}

// ---- bridge / VXLAN forwarding database ----

/** An FDB entry. */
export interface FdbSpec {
  /** The device: a VXLAN device (`self`) or a bridge port (`master`). */
  ifindex: number;
  mac: string;
  /** `self`: the device's own table (VXLAN remotes). `master`: the bridge the device is a port of. Default self. */
  target?: 'self' | 'master';
  /** Default `permanent` for self, `static` for master (a permanent bridge entry means "local": delivered to the host). */
  state?: 'permanent' | 'static';
  /** VXLAN remote VTEP address. */
  dst?: string;
  /** VXLAN VNI of the remote (default: the device's). */
  vni?: number;
  /** VXLAN remote UDP port (default: the device's). */
  port?: number;
  /** Outgoing device towards the remote (`via`). */
  via?: number;
  /** Bridge VLAN. */
  vlan?: number;
}

function fdbRequest(e: FdbSpec): NeighRequest {
  const target = e.target ?? 'self';
  if (target !== 'self' && target !== 'master')
    throw new TapnetError('ERR_INVALID_ARGUMENT', `FDB target must be self or master`);
  const state = e.state ?? (target === 'self' ? 'permanent' : 'static');
  if (state !== 'permanent' && state !== 'static')
    throw new TapnetError('ERR_INVALID_ARGUMENT', `FDB state must be permanent or static`);
  if (e.dst !== undefined) parseIp(e.dst, 'FDB remote address');
  const r: NeighRequest = {
    family: AF_BRIDGE,
    ifindex: e.ifindex,
    lladdr: e.mac,
    flags: target === 'self' ? NTF_SELF : NTF_MASTER,
    // As bridge(8): permanent = NOARP|PERMANENT, static = NOARP|REACHABLE.
    state: state === 'permanent' ? NUD_NOARP | NUD_PERMANENT : NUD_NOARP | NUD_REACHABLE,
  };
  if (e.dst !== undefined) r.dst = e.dst;
  if (e.vni !== undefined) r.vni = e.vni;
  if (e.port !== undefined) r.port = e.port;
  if (e.via !== undefined) r.via = e.via;
  if (e.vlan !== undefined) r.vlan = e.vlan;
  return r;
}

function fdbWhat(e: FdbSpec): string {
  return `FDB entry ${e.mac}${e.dst ? ` dst ${e.dst}` : ''} on ifindex ${e.ifindex}`;
}

/** Add an FDB entry; ERR_CONFLICT if the MAC has one. `bridge fdb add MAC dev X [dst IP] [vni N] self permanent` */
export function addFdb(nl: NetlinkSocket, e: FdbSpec): void {
  nl.request(encodeNeighRequest(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, fdbRequest(e)), fdbWhat(e));
}

/** Add or overwrite an FDB entry (idempotent). `bridge fdb replace MAC dev X [dst IP] self permanent` */
export function ensureFdb(nl: NetlinkSocket, e: FdbSpec): void {
  nl.request(encodeNeighRequest(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, fdbRequest(e)), fdbWhat(e));
}

/**
 * Add one more remote for a MAC on a VXLAN device (for 00:00:00:00:00:00: the flood list), idempotently.
 * `bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst IP self permanent`
 */
export function appendFdb(nl: NetlinkSocket, e: FdbSpec): void {
  nl.request(encodeNeighRequest(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, fdbRequest(e)), fdbWhat(e));
}

/** Delete an FDB entry (with `dst`: that one remote); absent is success. `bridge fdb del MAC dev X [dst IP] self` */
export function delFdb(nl: NetlinkSocket, e: FdbSpec): void {
  try {
    nl.request(encodeNeighRequest(RTM_DELNEIGH, 0, fdbRequest(e)), fdbWhat(e));
  } catch (err) {
    if (!isAlreadyGone(err)) throw err;
  }
}

/** FDB entries, optionally of one device or of the ports of one bridge. `bridge fdb show [dev X | br B]` */
export function listFdb(nl: NetlinkSocket, f: { ifindex?: number; master?: number } = {}): Neighbour[] {
  return nl
    .dump(encodeGetNeigh({ family: AF_BRIDGE }), 'FDB dump')
    .filter((m) => m.type === RTM_NEWNEIGH)
    .map(decodeNeighbour)
    .filter(
      (n) =>
        n.family === AF_BRIDGE &&
        (f.ifindex === undefined || n.ifindex === f.ifindex) &&
        (f.master === undefined || n.master === f.master || n.ifindex === f.master),
    );
}
