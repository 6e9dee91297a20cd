/**
 * rtnetlink link messages (struct ifinfomsg + IFLA_* attributes): encode requests, decode answers.
 * Pure. Kinds understood in IFLA_LINKINFO: bridge, veth, vxlan, tun (and any other kind by name).
 */
import { TapnetError } from '../errors.js';
import { formatMac, ipToBytes, parseIp } from '../ip.js';
import { AttrMap, ipText, NlWriter } from './attr.js';
import {
  AF_INET6,
  AF_UNSPEC,
  IFF_UP,
  IFLA_ADDRESS,
  IFLA_AF_SPEC,
  IFLA_BR_AGEING_TIME,
  IFLA_BR_FORWARD_DELAY,
  IFLA_BR_MCAST_SNOOPING,
  IFLA_BR_STP_STATE,
  IFLA_BR_VLAN_FILTERING,
  IFLA_BROADCAST,
  IFLA_CARRIER,
  IFLA_EXT_MASK,
  IFLA_GROUP,
  IFLA_IFALIAS,
  IFLA_IFNAME,
  IFLA_INET6_ADDR_GEN_MODE,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_INFO_SLAVE_KIND,
  IFLA_LINK,
  IFLA_LINKINFO,
  IFLA_MASTER,
  IFLA_MAX_MTU,
  IFLA_MIN_MTU,
  IFLA_MTU,
  IFLA_NET_NS_FD,
  IFLA_NUM_RX_QUEUES,
  IFLA_NUM_TX_QUEUES,
  IFLA_OPERSTATE,
  IFLA_PERM_ADDRESS,
  IFLA_PROMISCUITY,
  IFLA_STATS64,
  IFLA_TUN_GROUP,
  IFLA_TUN_MULTI_QUEUE,
  IFLA_TUN_NUM_QUEUES,
  IFLA_TUN_OWNER,
  IFLA_TUN_PERSIST,
  IFLA_TUN_PI,
  IFLA_TUN_TYPE,
  IFLA_TUN_VNET_HDR,
  IFLA_TXQLEN,
  IFLA_VXLAN_GROUP,
  IFLA_VXLAN_GROUP6,
  IFLA_VXLAN_ID,
  IFLA_VXLAN_LEARNING,
  IFLA_VXLAN_LINK,
  IFLA_VXLAN_LOCAL,
  IFLA_VXLAN_LOCAL6,
  IFLA_VXLAN_PORT,
  IFLA_VXLAN_TTL,
  IN6_ADDR_GEN_MODE_NONE,
  VETH_INFO_PEER,
} from './constants.js';
import { beginMessage, finishMessage, type NlMessage } from './message.js';
import { decodeStats64, type LinkStats } from './stats.js';

/** Size of struct ifinfomsg. */
export const IFINFOMSG_LEN = 16;

/** Operational state (IF_OPER_*), as iproute2 prints it. */
export const OPERSTATES = [
  'UNKNOWN',
  'NOTPRESENT',
  'DOWN',
  'LOWERLAYERDOWN',
  'TESTING',
  'DORMANT',
  'UP',
] as const;

export interface TunInfo {
  type: 'tun' | 'tap';
  owner?: number;
  group?: number;
  pi: boolean;
  vnetHdr: boolean;
  persist: boolean;
  multiQueue: boolean;
  numQueues?: number;
}

export interface VxlanInfo {
  id: number;
  local?: string;
  group?: string;
  port?: number;
  learning?: boolean;
  link?: number;
  ttl?: number;
}

export interface BridgeInfo {
  stpState?: number;
  forwardDelay?: number;
  ageingTime?: number;
  vlanFiltering?: boolean;
  mcastSnooping?: boolean;
}

/** A network interface as the kernel reports it. */
export interface Link {
  index: number;
  name: string;
  /** IFF_* flags. */
  flags: number;
  /** ARPHRD_* hardware type. */
  hwType: number;
  up: boolean;
  mtu?: number;
  minMtu?: number;
  maxMtu?: number;
  mac?: string;
  permMac?: string;
  broadcast?: string;
  /** ifindex of the master (bridge), if enslaved. */
  master?: number;
  /** ifindex of the parent (IFLA_LINK, e.g. a veth's peer). */
  parent?: number;
  operstate?: (typeof OPERSTATES)[number];
  txqlen?: number;
  group?: number;
  promiscuity?: number;
  carrier?: boolean;
  numTxQueues?: number;
  numRxQueues?: number;
  alias?: string;
  /** IFLA_INFO_KIND: 'bridge', 'veth', 'vxlan', 'tun', … */
  kind?: string;
  /** IFLA_INFO_SLAVE_KIND: 'bridge' for a bridge port. */
  slaveKind?: string;
  tun?: TunInfo;
  vxlan?: VxlanInfo;
  bridge?: BridgeInfo;
  stats?: LinkStats;
}

/** What a RTM_NEWLINK/RTM_SETLINK/RTM_DELLINK request may carry. */
export interface LinkRequest {
  /** Target by index … */
  index?: number;
  /** … or by name (or the name of a link to create). */
  name?: string;
  /** Bring up (true) or down (false); untouched when undefined. */
  up?: boolean;
  mtu?: number;
  /** MAC as bytes (validated by the caller). */
  mac?: Uint8Array;
  /** Master ifindex; 0 detaches (nomaster). */
  master?: number;
  /** New name (rename): only valid together with `index`. */
  rename?: string;
  /** Move into the namespace behind this fd. */
  nsFd?: number;
  txqlen?: number;
  group?: number;
  alias?: string;
  /** IPv6 address generation mode none: no automatic link-local address (saves work when bringing up). */
  noIpv6LinkLocal?: boolean;
  /** Kind of link to create, with its IFLA_INFO_DATA writer. */
  kind?: string;
  infoData?: (w: NlWriter) => void;
  /** For veth: the peer's request (IFLA_INFO_DATA/VETH_INFO_PEER). */
  peer?: Omit<LinkRequest, 'peer' | 'kind' | 'infoData'>;
}

function writeIfinfo(w: NlWriter, index: number, flags: number, change: number): void {
  w.u8(AF_UNSPEC).u8(0).u16(0).i32(index).u32(flags).u32(change);
}

function writeLinkAttrs(w: NlWriter, r: LinkRequest): void {
  const name = r.rename ?? r.name;
  if (name !== undefined) w.attrStr(IFLA_IFNAME, name);
  if (r.mtu !== undefined) w.attrU32(IFLA_MTU, r.mtu);
  if (r.mac !== undefined) w.attr(IFLA_ADDRESS, r.mac);
  if (r.master !== undefined) w.attrU32(IFLA_MASTER, r.master);
  if (r.nsFd !== undefined) w.attrU32(IFLA_NET_NS_FD, r.nsFd);
  if (r.txqlen !== undefined) w.attrU32(IFLA_TXQLEN, r.txqlen);
  if (r.group !== undefined) w.attrU32(IFLA_GROUP, r.group);
  if (r.alias !== undefined) w.attrStr(IFLA_IFALIAS, r.alias);
  if (r.noIpv6LinkLocal) {
    w.nest(IFLA_AF_SPEC, () =>
      w.nest(AF_INET6, () => w.attrU8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE)),
    );
  }
}

/**
 * Encode a link request. `type` is RTM_NEWLINK/RTM_SETLINK/RTM_DELLINK, `nlFlags` e.g.
 * NLM_F_CREATE|NLM_F_EXCL (seq and NLM_F_REQUEST|NLM_F_ACK are set by the socket).
 */
export function encodeLinkRequest(type: number, nlFlags: number, r: LinkRequest): Buffer {
  const w = new NlWriter(128);
  const at = beginMessage(w, type, nlFlags);
  const change = r.up === undefined ? 0 : IFF_UP;
  writeIfinfo(w, r.index ?? 0, r.up ? IFF_UP : 0, change);
  // A rename needs the index; the name attribute is then the new name.
  if (r.rename !== undefined && r.index === undefined) {
    throw new TapnetError('ERR_INTERNAL', 'rename needs the link index');
  }
  writeLinkAttrs(w, r);
  if (r.kind !== undefined) {
    w.nest(IFLA_LINKINFO, () => {
      w.attrStr(IFLA_INFO_KIND, r.kind!);
      if (r.peer) {
        const peer = r.peer;
        w.nest(IFLA_INFO_DATA, () => {
          w.nest(VETH_INFO_PEER, () => {
            writeIfinfo(w, 0, peer.up ? IFF_UP : 0, peer.up === undefined ? 0 : IFF_UP);
            writeLinkAttrs(w, peer);
          });
        });
      } else if (r.infoData) {
        w.nest(IFLA_INFO_DATA, () => r.infoData!(w));
      }
    });
  }
  finishMessage(w, at);
  return w.toBuffer();
}

/** Encode a RTM_GETLINK for one link (by index or name), or a dump when neither is given. */
export function encodeGetLink(target: { index?: number; name?: string } = {}, withStats = true): Buffer {
  const w = new NlWriter(64);
  const at = beginMessage(w, 18 /* RTM_GETLINK */, 0);
  writeIfinfo(w, target.index ?? 0, 0, 0);
  if (target.name !== undefined && !target.index) w.attrStr(IFLA_IFNAME, target.name);
  if (!withStats) w.attrU32(IFLA_EXT_MASK, 1 << 3 /* RTEXT_FILTER_SKIP_STATS */);
  finishMessage(w, at);
  return w.toBuffer();
}

/** IFLA_INFO_DATA writer for a bridge. */
export function bridgeInfoData(b: BridgeInfo): (w: NlWriter) => void {
  return (w) => {
    if (b.stpState !== undefined) w.attrU32(IFLA_BR_STP_STATE, b.stpState);
    if (b.forwardDelay !== undefined) w.attrU32(IFLA_BR_FORWARD_DELAY, b.forwardDelay);
    if (b.ageingTime !== undefined) w.attrU32(IFLA_BR_AGEING_TIME, b.ageingTime);
    if (b.vlanFiltering !== undefined) w.attrU8(IFLA_BR_VLAN_FILTERING, b.vlanFiltering ? 1 : 0);
    if (b.mcastSnooping !== undefined) w.attrU8(IFLA_BR_MCAST_SNOOPING, b.mcastSnooping ? 1 : 0);
  };
}

/** IFLA_INFO_DATA writer for a VXLAN device. */
export function vxlanInfoData(v: VxlanInfo): (w: NlWriter) => void {
  return (w) => {
    w.attrU32(IFLA_VXLAN_ID, v.id);
    if (v.local !== undefined) {
      const ip = parseIp(v.local, 'VXLAN local address');
      w.attr(ip.family === 4 ? IFLA_VXLAN_LOCAL : IFLA_VXLAN_LOCAL6, ipToBytes(ip.family, ip.value));
    }
    if (v.group !== undefined) {
      const ip = parseIp(v.group, 'VXLAN group address');
      w.attr(ip.family === 4 ? IFLA_VXLAN_GROUP : IFLA_VXLAN_GROUP6, ipToBytes(ip.family, ip.value));
    }
    if (v.link !== undefined) w.attrU32(IFLA_VXLAN_LINK, v.link);
    if (v.ttl !== undefined) w.attrU8(IFLA_VXLAN_TTL, v.ttl);
    if (v.learning !== undefined) w.attrU8(IFLA_VXLAN_LEARNING, v.learning ? 1 : 0);
    if (v.port !== undefined) w.attrU16be(IFLA_VXLAN_PORT, v.port);
  };
}

function decodeTun(d: AttrMap): TunInfo {
  const t: TunInfo = {
    type: d.u8(IFLA_TUN_TYPE) === 1 ? 'tun' : 'tap',
    pi: d.u8(IFLA_TUN_PI) === 1,
    vnetHdr: d.u8(IFLA_TUN_VNET_HDR) === 1,
    persist: d.u8(IFLA_TUN_PERSIST) === 1,
    multiQueue: d.u8(IFLA_TUN_MULTI_QUEUE) === 1,
  };
  const owner = d.u32(IFLA_TUN_OWNER);
  if (owner !== undefined && owner !== 0xffffffff) t.owner = owner;
  const group = d.u32(IFLA_TUN_GROUP);
  if (group !== undefined && group !== 0xffffffff) t.group = group;
  const nq = d.u32(IFLA_TUN_NUM_QUEUES);
  if (nq !== undefined) t.numQueues = nq;
  return t;
}

function decodeVxlan(d: AttrMap): VxlanInfo {
  const v: VxlanInfo = { id: d.u32(IFLA_VXLAN_ID) ?? 0 };
  const local = d.raw(IFLA_VXLAN_LOCAL) ?? d.raw(IFLA_VXLAN_LOCAL6);
  if (local) v.local = ipText(local);
  const group = d.raw(IFLA_VXLAN_GROUP) ?? d.raw(IFLA_VXLAN_GROUP6);
  if (group) v.group = ipText(group);
  const port = d.u16be(IFLA_VXLAN_PORT);
  if (port !== undefined) v.port = port;
  const learning = d.u8(IFLA_VXLAN_LEARNING);
  if (learning !== undefined) v.learning = learning === 1;
  const link = d.u32(IFLA_VXLAN_LINK);
  if (link !== undefined) v.link = link;
  const ttl = d.u8(IFLA_VXLAN_TTL);
  if (ttl !== undefined) v.ttl = ttl;
  return v;
}

function decodeBridge(d: AttrMap): BridgeInfo {
  const b: BridgeInfo = {};
  const stp = d.u32(IFLA_BR_STP_STATE);
  if (stp !== undefined) b.stpState = stp;
  const fd = d.u32(IFLA_BR_FORWARD_DELAY);
  if (fd !== undefined) b.forwardDelay = fd;
  const age = d.u32(IFLA_BR_AGEING_TIME);
  if (age !== undefined) b.ageingTime = age;
  const vf = d.u8(IFLA_BR_VLAN_FILTERING);
  if (vf !== undefined) b.vlanFiltering = vf === 1;
  const ms = d.u8(IFLA_BR_MCAST_SNOOPING);
  if (ms !== undefined) b.mcastSnooping = ms === 1;
  return b;
}

/** Decode a RTM_NEWLINK message (an answer to GETLINK or a dump entry). */
export function decodeLink(m: NlMessage): Link {
  const p = m.payload;
  if (p.length < IFINFOMSG_LEN) throw new TapnetError('ERR_NETLINK_DECODE', 'truncated ifinfomsg');
  const flags = p.readUInt32LE(8);
  const a = AttrMap.parse(p, IFINFOMSG_LEN);
  const link: Link = {
    index: p.readInt32LE(4),
    name: a.str(IFLA_IFNAME) ?? '',
    flags,
    hwType: p.readUInt16LE(2),
    up: (flags & IFF_UP) !== 0,
  };
  const set = <K extends keyof Link>(k: K, v: Link[K] | undefined): void => {
    if (v !== undefined) link[k] = v;
  };
  set('mtu', a.u32(IFLA_MTU));
  set('minMtu', a.u32(IFLA_MIN_MTU));
  set('maxMtu', a.u32(IFLA_MAX_MTU));
  const mac = a.raw(IFLA_ADDRESS);
  if (mac && mac.length > 0) link.mac = formatMac(mac);
  const perm = a.raw(IFLA_PERM_ADDRESS);
  if (perm && perm.length > 0) link.permMac = formatMac(perm);
  const brd = a.raw(IFLA_BROADCAST);
  if (brd && brd.length > 0) link.broadcast = formatMac(brd);
  set('master', a.u32(IFLA_MASTER));
  set('parent', a.u32(IFLA_LINK));
  const op = a.u8(IFLA_OPERSTATE);
  if (op !== undefined) link.operstate = OPERSTATES[op] ?? 'UNKNOWN';
  set('txqlen', a.u32(IFLA_TXQLEN));
  set('group', a.u32(IFLA_GROUP));
  set('promiscuity', a.u32(IFLA_PROMISCUITY));
  const carrier = a.u8(IFLA_CARRIER);
  if (carrier !== undefined) link.carrier = carrier === 1;
  set('numTxQueues', a.u32(IFLA_NUM_TX_QUEUES));
  set('numRxQueues', a.u32(IFLA_NUM_RX_QUEUES));
  set('alias', a.str(IFLA_IFALIAS));
  const stats = a.raw(IFLA_STATS64);
  if (stats) link.stats = decodeStats64(stats);
  const info = a.nested(IFLA_LINKINFO);
  if (info) {
    const kind = info.str(IFLA_INFO_KIND);
    if (kind) link.kind = kind;
    const slave = info.str(IFLA_INFO_SLAVE_KIND);
    if (slave) link.slaveKind = slave;
    const data = info.has(IFLA_INFO_DATA) ? info.nested(IFLA_INFO_DATA) : undefined;
    if (data) {
      if (kind === 'tun') link.tun = decodeTun(data);
      else if (kind === 'vxlan') link.vxlan = decodeVxlan(data);
      else if (kind === 'bridge') link.bridge = decodeBridge(data);
    }
  }
  return link;
}
