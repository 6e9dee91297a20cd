/**
 * rtnetlink route messages (struct rtmsg + RTA_* attributes). Pure.
 */
import { TapnetError } from '../errors.js';
import { type Family, ipToBytes, parseCidr, parseIp } from '../ip.js';
import { AttrMap, ipText, NlWriter } from './attr.js';
import {
  AF_INET,
  AF_INET6,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PREFSRC,
  RTA_PRIORITY,
  RTA_TABLE,
  RTM_GETROUTE,
  RTN_UNICAST,
  RTNH_F_ONLINK,
  RTPROT_STATIC,
} from './constants.js';
import { beginMessage, finishMessage, type NlMessage } from './message.js';

export const RTMSG_LEN = 12;

/** A route as the kernel reports it. */
export interface Route {
  family: Family;
  /** `prefix/len`; `default` routes are `0.0.0.0/0` or `::/0`. */
  dst: string;
  gateway?: string;
  oif?: number;
  prefsrc?: string;
  priority?: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  flags: number;
}

export interface RouteRequest {
  /** `prefix/len`, or `default` (needs `family`). */
  dst: string;
  family?: Family;
  gateway?: string;
  oif?: number;
  prefsrc?: string;
  priority?: number;
  table?: number;
  protocol?: number;
  /** Defaults: link scope for a device route without gateway, universe otherwise. */
  scope?: number;
  type?: number;
  /** The gateway is reachable on the link even if no prefix covers it (`onlink`). */
  onlink?: boolean;
}

/** Encode RTM_NEWROUTE/RTM_DELROUTE. */
export function encodeRouteRequest(type: number, nlFlags: number, r: RouteRequest): Buffer {
  let family: Family;
  let prefix: number;
  let dst: bigint;
  if (r.dst === 'default') {
    if (!r.family) throw new TapnetError('ERR_INVALID_ARGUMENT', 'a default route needs a family (4 or 6)');
    family = r.family;
    prefix = 0;
    dst = 0n;
  } else {
    const c = parseCidr(r.dst, 'route destination');
    family = c.family;
    prefix = c.prefix;
    dst = c.network;
  }
  const gw = r.gateway !== undefined ? parseIp(r.gateway, 'gateway') : undefined;
  if (gw && gw.family !== family)
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'gateway family differs from destination');
  const table = r.table ?? RT_TABLE_MAIN;
  const w = new NlWriter(96);
  const at = beginMessage(w, type, nlFlags);
  const scope = r.scope ?? (gw ? RT_SCOPE_UNIVERSE : r.oif !== undefined ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE);
  w.u8(family === 4 ? AF_INET : AF_INET6)
    .u8(prefix)
    .u8(0)
    .u8(0)
    .u8(table < 256 ? table : 0)
    .u8(r.protocol ?? RTPROT_STATIC)
    .u8(scope)
    .u8(r.type ?? RTN_UNICAST)
    .u32(r.onlink ? RTNH_F_ONLINK : 0);
  if (prefix > 0) w.attr(RTA_DST, ipToBytes(family, dst));
  if (gw) w.attr(RTA_GATEWAY, ipToBytes(gw.family, gw.value));
  if (r.oif !== undefined) w.attrU32(RTA_OIF, r.oif);
  if (r.prefsrc !== undefined) {
    const s = parseIp(r.prefsrc, 'preferred source');
    w.attr(RTA_PREFSRC, ipToBytes(s.family, s.value));
  }
  if (r.priority !== undefined) w.attrU32(RTA_PRIORITY, r.priority);
  if (table >= 256) w.attrU32(RTA_TABLE, table);
  finishMessage(w, at);
  return w.toBuffer();
}

/** Encode a RTM_GETROUTE dump for a family. */
export function encodeGetRoute(family: Family): Buffer {
  const w = new NlWriter(32);
  const at = beginMessage(w, RTM_GETROUTE, 0);
  w.u8(family === 4 ? AF_INET : AF_INET6)
    .u8(0)
    .u8(0)
    .u8(0)
    .u8(0)
    .u8(0)
    .u8(0)
    .u8(0)
    .u32(0);
  finishMessage(w, at);
  return w.toBuffer();
}

/** Decode a RTM_NEWROUTE message. */
export function decodeRoute(m: NlMessage): Route {
  const p = m.payload;
  if (p.length < RTMSG_LEN) throw new TapnetError('ERR_NETLINK_DECODE', 'truncated rtmsg');
  const fam = p.readUInt8(0);
  if (fam !== AF_INET && fam !== AF_INET6) throw new TapnetError('ERR_NETLINK_DECODE', `route family ${fam}`);
  const family: Family = fam === AF_INET ? 4 : 6;
  const a = AttrMap.parse(p, RTMSG_LEN);
  const prefix = p.readUInt8(1);
  const dstRaw = a.raw(RTA_DST);
  const dst = dstRaw ? ipText(dstRaw) : family === 4 ? '0.0.0.0' : '::';
  const out: Route = {
    family,
    dst: `${dst}/${prefix}`,
    table: a.u32(RTA_TABLE) ?? p.readUInt8(4),
    protocol: p.readUInt8(5),
    scope: p.readUInt8(6),
    type: p.readUInt8(7),
    flags: p.readUInt32LE(8),
  };
  const gw = a.raw(RTA_GATEWAY);
  if (gw) out.gateway = ipText(gw);
  const oif = a.u32(RTA_OIF);
  if (oif !== undefined) out.oif = oif;
  const src = a.raw(RTA_PREFSRC);
  if (src) out.prefsrc = ipText(src);
  const prio = a.u32(RTA_PRIORITY);
  if (prio !== undefined) out.priority = prio;
  return out;
}
