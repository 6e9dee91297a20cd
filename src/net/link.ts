/**
 * Typed link operations over a NetlinkSocket: look up, list, create (bridge, veth), change, delete.
 * Each names the iproute2 command it equals. Names are validated before anything reaches the kernel.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { parseMac } from '../ip.js';
import { NLM_F_CREATE, NLM_F_EXCL, RTM_DELLINK, RTM_NEWLINK } from '../netlink/constants.js';
import {
  type BridgeInfo,
  bridgeInfoData,
  decodeLink,
  encodeGetLink,
  encodeLinkRequest,
  type Link,
  type LinkRequest,
} from '../netlink/link.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import { validateIfname, validateInt } from '../validate.js';

export type { Link };

/** A link named by name or index. */
export type LinkRef = string | number;

function refRequest(ref: LinkRef): { index?: number; name?: string } {
  if (typeof ref === 'number') return { index: validateInt(ref, 'ifindex', 1, 0x7fffffff) };
  return { name: validateIfname(ref) };
}

function notFound(ref: LinkRef, cause?: unknown): TapnetError {
  return new TapnetError(
    'ERR_LINK_NOT_FOUND',
    `no link ${typeof ref === 'number' ? `with index ${ref}` : ref}`,
    {
      cause,
      errno: 'ENODEV',
      details: { link: ref },
    },
  );
}

/** `ip link show DEV`. Throws ERR_LINK_NOT_FOUND. */
export function getLink(nl: NetlinkSocket, ref: LinkRef): Link {
  const msg = encodeGetLink(refRequest(ref));
  try {
    const replies = nl.request(msg, typeof ref === 'number' ? `ifindex ${ref}` : ref);
    const m = replies.find((r) => r.type === RTM_NEWLINK);
    if (!m) throw notFound(ref);
    return decodeLink(m);
  } catch (e) {
    if (isTapnetError(e, 'ERR_LINK_NOT_FOUND') || (isTapnetError(e) && e.errno === 'ENODEV'))
      throw notFound(ref, e);
    throw e;
  }
}

/** Like getLink, but undefined when the link does not exist. */
export function findLink(nl: NetlinkSocket, ref: LinkRef): Link | undefined {
  try {
    return getLink(nl, ref);
  } catch (e) {
    if (isTapnetError(e, 'ERR_LINK_NOT_FOUND')) return undefined;
    throw e;
  }
}

/** `ip link show [type KIND]`: every link in the socket's namespace. */
export function listLinks(
  nl: NetlinkSocket,
  filter: { kind?: string; master?: number; withStats?: boolean } = {},
): Link[] {
  const msgs = nl.dump(encodeGetLink({}, filter.withStats ?? false), 'link dump');
  const links = msgs.filter((m) => m.type === RTM_NEWLINK).map(decodeLink);
  return links.filter(
    (l) =>
      (filter.kind === undefined || l.kind === filter.kind) &&
      (filter.master === undefined || l.master === filter.master),
  );
}

export interface BridgeOptions {
  name: string;
  /** A fixed MAC (strongly advised: otherwise the bridge takes a port's MAC and changes it when that port goes). */
  mac?: string;
  mtu?: number;
  up?: boolean;
  bridge?: BridgeInfo;
}

/**
 * `ip link add NAME type bridge [address MAC] [mtu N]; ip link set NAME up` — idempotent: an existing
 * bridge of that name is adopted and brought to the requested MAC/MTU/state. An existing link of that name
 * that is not a bridge is ERR_CONFLICT.
 */
export function ensureBridge(nl: NetlinkSocket, o: BridgeOptions): Link {
  const name = validateIfname(o.name, 'bridge name');
  const mac = o.mac !== undefined ? parseMac(o.mac, 'bridge MAC') : undefined;
  const existing = findLink(nl, name);
  if (existing) {
    if (existing.kind !== 'bridge') {
      throw new TapnetError(
        'ERR_CONFLICT',
        `link ${name} exists and is a ${existing.kind ?? 'device'}, not a bridge`,
        {
          details: { link: name, kind: existing.kind },
        },
      );
    }
    const change: LinkRequest = { index: existing.index };
    let dirty = false;
    if (mac && existing.mac !== o.mac?.toLowerCase()) {
      change.mac = mac;
      dirty = true;
    }
    if (o.mtu !== undefined && existing.mtu !== o.mtu) {
      change.mtu = o.mtu;
      dirty = true;
    }
    if (o.up !== undefined && existing.up !== o.up) {
      change.up = o.up;
      dirty = true;
    }
    if (dirty) nl.request(encodeLinkRequest(RTM_NEWLINK, 0, change), name);
    return dirty ? getLink(nl, existing.index) : existing;
  }
  const req: LinkRequest = {
    name,
    kind: 'bridge',
    infoData: bridgeInfoData(o.bridge ?? { stpState: 0, forwardDelay: 0 }),
  };
  if (mac) req.mac = mac;
  if (o.mtu !== undefined) req.mtu = o.mtu;
  if (o.up !== undefined) req.up = o.up;
  try {
    nl.request(encodeLinkRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, req), name);
  } catch (e) {
    // Lost a race with another creator: adopt it.
    if (isTapnetError(e, 'ERR_CONFLICT')) return ensureBridge(nl, o);
    throw e;
  }
  return getLink(nl, name);
}

export interface VethOptions {
  name: string;
  peer: string;
  /** Put the peer end in this namespace (fd). */
  peerNsFd?: number;
  mtu?: number;
  mac?: string;
  peerMac?: string;
  up?: boolean;
}

/** `ip link add NAME type veth peer name PEER [netns NS]`. Throws ERR_CONFLICT if NAME exists. */
export function createVeth(nl: NetlinkSocket, o: VethOptions): Link {
  const name = validateIfname(o.name, 'veth name');
  const peer = validateIfname(o.peer, 'veth peer name');
  const req: LinkRequest = { name, kind: 'veth', peer: { name: peer } };
  if (o.peerNsFd !== undefined) req.peer!.nsFd = o.peerNsFd;
  if (o.mtu !== undefined) {
    req.mtu = o.mtu;
    req.peer!.mtu = o.mtu;
  }
  if (o.mac) req.mac = parseMac(o.mac);
  if (o.peerMac) req.peer!.mac = parseMac(o.peerMac);
  if (o.up !== undefined) req.up = o.up;
  nl.request(encodeLinkRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, req), name);
  return getLink(nl, name);
}

export interface LinkChange {
  up?: boolean;
  mtu?: number;
  mac?: string;
  /** Bridge (or other master) to enslave to: a name or an index; `null` detaches (`nomaster`). */
  master?: LinkRef | null;
  rename?: string;
  /** Move to the namespace behind this fd (`ip link set DEV netns NS`). */
  nsFd?: number;
  group?: number;
  txqlen?: number;
  alias?: string;
}

/** Build the request for a change (validating everything); exported for batching. */
export function linkChangeRequest(nl: NetlinkSocket, ref: LinkRef, c: LinkChange): Buffer {
  const req: LinkRequest = refRequest(ref);
  if (c.up !== undefined) req.up = c.up;
  if (c.mtu !== undefined) req.mtu = validateInt(c.mtu, 'MTU', 68, 65535);
  if (c.mac !== undefined) req.mac = parseMac(c.mac);
  if (c.master === null) req.master = 0;
  else if (typeof c.master === 'number') req.master = validateInt(c.master, 'master ifindex', 1, 0x7fffffff);
  else if (typeof c.master === 'string') req.master = getLink(nl, c.master).index;
  if (c.rename !== undefined) {
    if (req.index === undefined) req.index = getLink(nl, ref).index;
    delete req.name;
    req.rename = validateIfname(c.rename, 'new name');
  }
  if (c.nsFd !== undefined) req.nsFd = c.nsFd;
  if (c.group !== undefined) req.group = validateInt(c.group, 'link group', 0, 0xffffffff);
  if (c.txqlen !== undefined) req.txqlen = validateInt(c.txqlen, 'txqueuelen', 0, 0xffffffff);
  if (c.alias !== undefined) req.alias = c.alias;
  return encodeLinkRequest(RTM_NEWLINK, 0, req);
}

/** `ip link set DEV [up|down] [mtu N] [address MAC] [master BR|nomaster] [name NEW] [netns NS] [group G]`. */
export function setLink(nl: NetlinkSocket, ref: LinkRef, c: LinkChange): void {
  try {
    nl.request(linkChangeRequest(nl, ref, c), String(ref));
  } catch (e) {
    if (isTapnetError(e) && e.errno === 'ENODEV') throw notFound(ref, e);
    if (isTapnetError(e) && e.errno === 'EXFULL') {
      throw new TapnetError(
        'ERR_CAPACITY',
        `cannot attach ${ref}: the bridge is full (a Linux bridge takes at most 1,023 ports)`,
        {
          cause: e,
          errno: 'EXFULL',
          details: { link: ref, master: c.master },
        },
      );
    }
    throw e;
  }
}

/** `ip link del DEV`. Already gone is success. Note: the kernel waits for an RCU grace period (~16 ms). */
export function deleteLink(nl: NetlinkSocket, ref: LinkRef): void {
  try {
    nl.request(encodeLinkRequest(RTM_DELLINK, 0, refRequest(ref)), String(ref));
  } catch (e) {
    if (isTapnetError(e) && (e.errno === 'ENODEV' || e.code === 'ERR_LINK_NOT_FOUND')) return;
    throw e;
  }
}

/**
 * `ip link del group G`: delete every link in a group with one request — one RCU grace period for all
 * of them instead of one per link. Already empty is success.
 */
export function deleteLinkGroup(nl: NetlinkSocket, group: number): void {
  try {
    nl.request(deleteGroupRequest(group), `group ${group}`);
  } catch (e) {
    if (isTapnetError(e) && (e.errno === 'ENODEV' || e.code === 'ERR_LINK_NOT_FOUND')) return;
    throw e;
  }
}

/**
 * Move links into a link group with one batched datagram (`ip link set DEV group G` for each). Links
 * already gone are skipped; returns the other failures by link name.
 */
export function moveToGroup(nl: NetlinkSocket, names: string[], group: number): Map<string, TapnetError> {
  const failures = new Map<string, TapnetError>();
  if (names.length === 0) return failures;
  for (const n of names) validateIfname(n);
  validateInt(group, 'link group', 1, 0xffffffff);
  const results = nl.batch(
    names.map((name) => encodeLinkRequest(RTM_NEWLINK, 0, { name, group })),
    (i) => names[i]!,
  );
  results.forEach((r, i) => {
    if (r !== undefined && r.errno !== 'ENODEV') failures.set(names[i]!, r);
  });
  return failures;
}

/** The request that deletes every link of a group (for NetlinkSocket.requestAsync). */
export function deleteGroupRequest(group: number): Buffer {
  return encodeLinkRequest(RTM_DELLINK, 0, { group: validateInt(group, 'link group', 1, 0xffffffff) });
}

/**
 * Delete many links at once: move them all into `scratchGroup` (one batched datagram) and delete the group
 * with one RTM_DELLINK (one RCU grace period for all). Links already gone are skipped. Returns the
 * failures to move (those links are still present), if any.
 */
export function deleteLinks(nl: NetlinkSocket, names: string[], scratchGroup: number): TapnetError[] {
  if (names.length === 0) return [];
  const failures = moveToGroup(nl, names, scratchGroup);
  deleteLinkGroup(nl, scratchGroup);
  return [...failures.values()];
}

/** RTM_GETLINK by name, returning only the index (cheapest lookup). */
export function linkIndex(nl: NetlinkSocket, name: string): number {
  return getLink(nl, name).index;
}
