/**
 * rtnetlink neighbour messages (struct ndmsg + NDA_* attributes): ARP/NDP entries, proxy entries
 * (NTF_PROXY) and bridge/VXLAN forwarding-database entries (family AF_BRIDGE). Pure.
 */
import { TapnetError } from '../errors.js';
import { formatIp, formatMac, ipToBytes, parseIp, parseMac } from '../ip.js';
import { validateInt } from '../validate.js';
import { AttrMap, NlWriter } from './attr.js';
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  AF_UNSPEC,
  NDA_CACHEINFO,
  NDA_DST,
  NDA_IFINDEX,
  NDA_LLADDR,
  NDA_MASTER,
  NDA_PORT,
  NDA_PROBES,
  NDA_VLAN,
  NDA_VNI,
  NTF_PROXY,
  NUD_DELAY,
  NUD_FAILED,
  NUD_INCOMPLETE,
  NUD_NOARP,
  NUD_PERMANENT,
  NUD_PROBE,
  NUD_REACHABLE,
  NUD_STALE,
  RTM_GETNEIGH,
} from './constants.js';
import { beginMessage, finishMessage, type NlMessage } from './message.js';

/** sizeof(struct ndmsg): family u8, pad u8, pad u16, ifindex s32, state u16, flags u8, type u8. */
export const NDMSG_LEN = 12;
/** NDA_SRC_VNI (linux/neighbour.h), for VXLAN collect-metadata devices. */
export const NDA_SRC_VNI = 11;
/** NDA_PROTOCOL: who installed the entry (RTPROT_*). */
export const NDA_PROTOCOL = 12;
/** NUD_NONE: proxy entries and "no state". */
export const NUD_NONE = 0x00;

/** A neighbour or FDB request. Addresses are text and validated here. */
export interface NeighRequest {
  /** AF_INET/AF_INET6 (default: from `dst`) or AF_BRIDGE for FDB entries. */
  family?: number;
  ifindex: number;
  /** NUD_* (default NUD_PERMANENT, as `ip neigh add`). */
  state?: number;
  /** NTF_* (NTF_PROXY, NTF_SELF, NTF_MASTER, NTF_ROUTER…). */
  flags?: number;
  /** ndm_type (RTN_*); 0 unless needed. */
  type?: number;
  /** The IP address: the neighbour's, or the VXLAN remote of an FDB entry. */
  dst?: string;
  /** The link-layer address `aa:bb:cc:dd:ee:ff`. */
  lladdr?: string;
  vlan?: number;
  /** VXLAN remote UDP port. */
  port?: number;
  /** VXLAN network identifier of the remote. */
  vni?: number;
  /** NDA_IFINDEX: outgoing device towards a VXLAN remote (`via`). */
  via?: number;
  /** NDA_MASTER. */
  master?: number;
}

function familyOf(r: NeighRequest): number {
  if (r.family !== undefined) {
    if (r.family !== AF_INET && r.family !== AF_INET6 && r.family !== AF_BRIDGE && r.family !== AF_UNSPEC) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `neighbour family ${r.family} is not AF_INET, AF_INET6 or AF_BRIDGE`,
      );
    }
    return r.family;
  }
  if (r.dst === undefined)
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'a neighbour needs an address (or an explicit family)');
  return parseIp(r.dst, 'neighbour address').family === 4 ? AF_INET : AF_INET6;
}

function writeNdmsg(
  w: NlWriter,
  family: number,
  ifindex: number,
  state: number,
  flags: number,
  type: number,
): void {
  w.u8(family).u8(0).u16(0).i32(ifindex).u16(state).u8(flags).u8(type);
}

/** Encode RTM_NEWNEIGH / RTM_DELNEIGH (`ip neigh add|replace|del …`, `bridge fdb add|replace|append|del …`). */
export function encodeNeighRequest(type: number, nlFlags: number, r: NeighRequest): Buffer {
  const family = familyOf(r);
  const ifindex = validateInt(r.ifindex, 'ifindex', 1, 0x7fffffff);
  const state = validateInt(r.state ?? NUD_PERMANENT, 'neighbour state', 0, 0xffff);
  const flags = validateInt(r.flags ?? 0, 'neighbour flags', 0, 0xff);
  const ndType = validateInt(r.type ?? 0, 'neighbour type', 0, 0xff);
  const dst = r.dst === undefined ? undefined : parseIp(r.dst, 'neighbour address');
  if (dst && family !== AF_BRIDGE && (dst.family === 4) !== (family === AF_INET)) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `address ${r.dst} does not match the neighbour family`);
  }
  const lladdr = r.lladdr === undefined ? undefined : parseMac(r.lladdr, 'link-layer address');
  const w = new NlWriter(80);
  const at = beginMessage(w, type, nlFlags);
  writeNdmsg(w, family, ifindex, state, flags, ndType);
  const writeDst = () => {
    if (dst) w.attr(NDA_DST, ipToBytes(dst.family, dst.value));
  };
  // Attribute order as iproute2: `ip neigh` sends DST then LLADDR, `bridge fdb` LLADDR, DST, VLAN, PORT, VNI.
  if (family === AF_BRIDGE) {
    if (lladdr) w.attr(NDA_LLADDR, lladdr);
    writeDst();
  } else {
    writeDst();
    if (lladdr) w.attr(NDA_LLADDR, lladdr);
  }
  if (r.vlan !== undefined) w.attrU16(NDA_VLAN, validateInt(r.vlan, 'VLAN id', 1, 4094));
  if (r.port !== undefined) w.attrU16be(NDA_PORT, validateInt(r.port, 'VXLAN port', 1, 0xffff));
  if (r.vni !== undefined) w.attrU32(NDA_VNI, validateInt(r.vni, 'VNI', 0, 0xffffff));
  if (r.via !== undefined) w.attrU32(NDA_IFINDEX, validateInt(r.via, 'via ifindex', 1, 0x7fffffff));
  if (r.master !== undefined) w.attrU32(NDA_MASTER, validateInt(r.master, 'master ifindex', 1, 0x7fffffff));
  finishMessage(w, at);
  return w.toBuffer();
}

/** What a neighbour dump asks the kernel for. */
export interface NeighDumpRequest {
  /** AF_INET, AF_INET6, AF_BRIDGE (the FDB), or AF_UNSPEC (ARP and NDP). Default AF_UNSPEC. */
  family?: number;
  /** Only this device (NDA_IFINDEX; the FDB dump ignores it, filter after). */
  ifindex?: number;
  /** Only devices enslaved to this master (NDA_MASTER). */
  master?: number;
  /** Proxy entries instead of neighbours (`ip neigh show proxy`). */
  proxy?: boolean;
}

/** Encode a RTM_GETNEIGH dump (`ip neigh show [proxy] [dev X]`, `bridge fdb show`). */
export function encodeGetNeigh(d: NeighDumpRequest = {}): Buffer {
  const w = new NlWriter(48);
  const at = beginMessage(w, RTM_GETNEIGH, 0);
  writeNdmsg(w, d.family ?? AF_UNSPEC, 0, 0, d.proxy ? NTF_PROXY : 0, 0);
  if (d.ifindex !== undefined) w.attrU32(NDA_IFINDEX, validateInt(d.ifindex, 'ifindex', 1, 0x7fffffff));
  if (d.master !== undefined) w.attrU32(NDA_MASTER, validateInt(d.master, 'master ifindex', 1, 0x7fffffff));
  finishMessage(w, at);
  return w.toBuffer();
}

/** A neighbour, proxy or FDB entry as the kernel reports it. */
export interface Neighbour {
  family: number;
  ifindex: number;
  state: number;
  flags: number;
  type: number;
  dst?: string;
  lladdr?: string;
  vlan?: number;
  port?: number;
  vni?: number;
  /** NDA_IFINDEX. */
  via?: number;
  master?: number;
  probes?: number;
  /** Ages in milliseconds (the kernel reports 1/100 s) and the reference count. */
  cacheinfo?: { confirmedMs: number; usedMs: number; updatedMs: number; refcnt: number };
}

function decodeError(message: string): TapnetError {
  return new TapnetError('ERR_NETLINK_DECODE', message);
}

/** Decode a RTM_NEWNEIGH message (an element of a dump, or an event). */
export function decodeNeighbour(m: NlMessage): Neighbour {
  const p = m.payload;
  if (p.length < NDMSG_LEN) throw decodeError(`truncated ndmsg (${p.length} bytes)`);
  const out: Neighbour = {
    family: p.readUInt8(0),
    ifindex: p.readInt32LE(4),
    state: p.readUInt16LE(8),
    flags: p.readUInt8(10),
    type: p.readUInt8(11),
  };
  const a = AttrMap.parse(p, NDMSG_LEN);
  const dst = a.raw(NDA_DST);
  if (dst) {
    if (dst.length !== 4 && dst.length !== 16) throw decodeError(`NDA_DST of ${dst.length} bytes`);
    let v = 0n;
    for (const x of dst) v = (v << 8n) | BigInt(x);
    out.dst = formatIp(dst.length === 4 ? 4 : 6, v);
  }
  const ll = a.raw(NDA_LLADDR);
  if (ll) out.lladdr = formatMac(ll);
  const vlan = a.u16(NDA_VLAN);
  if (vlan !== undefined) out.vlan = vlan;
  const port = a.u16be(NDA_PORT);
  if (port !== undefined) out.port = port;
  const vni = a.u32(NDA_VNI);
  if (vni !== undefined) out.vni = vni;
  const via = a.u32(NDA_IFINDEX);
  if (via !== undefined) out.via = via;
  const master = a.u32(NDA_MASTER);
  if (master !== undefined) out.master = master;
  const probes = a.u32(NDA_PROBES);
  if (probes !== undefined) out.probes = probes;
  const ci = a.raw(NDA_CACHEINFO);
  if (ci) {
    if (ci.length < 16) throw decodeError(`NDA_CACHEINFO of ${ci.length} bytes`);
    out.cacheinfo = {
      confirmedMs: ci.readUInt32LE(0) * 10,
      usedMs: ci.readUInt32LE(4) * 10,
      updatedMs: ci.readUInt32LE(8) * 10,
      refcnt: ci.readUInt32LE(12),
    };
  }
  return out;
}

const STATE_NAMES: [number, string][] = [
  [NUD_INCOMPLETE, 'INCOMPLETE'],
  [NUD_REACHABLE, 'REACHABLE'],
  [NUD_STALE, 'STALE'],
  [NUD_DELAY, 'DELAY'],
  [NUD_PROBE, 'PROBE'],
  [NUD_FAILED, 'FAILED'],
  [NUD_NOARP, 'NOARP'],
  [NUD_PERMANENT, 'PERMANENT'],
];

/** The NUD_* bits of a state by name, as `ip -j neigh` prints them (`["PERMANENT"]`). */
export function neighStateNames(state: number): string[] {
  return STATE_NAMES.filter(([bit]) => state & bit).map(([, name]) => name);
}
