/**
 * rtnetlink address messages (struct ifaddrmsg + IFA_* attributes). Pure.
 */
import { TapnetError } from '../errors.js';
import { type Family, ipToBytes, parseCidr } from '../ip.js';
import { AttrMap, ipText, NlWriter } from './attr.js';
import {
  AF_INET,
  AF_INET6,
  IFA_ADDRESS,
  IFA_BROADCAST,
  IFA_FLAGS,
  IFA_LABEL,
  IFA_LOCAL,
  RTM_GETADDR,
} from './constants.js';
import { beginMessage, finishMessage, type NlMessage } from './message.js';

export const IFADDRMSG_LEN = 8;

/** An interface address as the kernel reports it. */
export interface Address {
  family: Family;
  index: number;
  /** `addr/prefix`, canonical text. */
  cidr: string;
  address: string;
  prefix: number;
  scope: number;
  flags: number;
  /** For point-to-point links: the peer (IFA_ADDRESS when it differs from IFA_LOCAL). */
  peer?: string;
  broadcast?: string;
  label?: string;
}

export interface AddressRequest {
  index: number;
  /** `addr/prefix` (validated here). */
  cidr: string;
  /** Point-to-point peer address (`ip addr add A peer P`). */
  peer?: string;
  /** IFA_F_* flags, e.g. IFA_F_NODAD | IFA_F_NOPREFIXROUTE. */
  flags?: number;
  scope?: number;
  /** IPv4 broadcast: true computes it from the prefix (`brd +`). */
  broadcast?: boolean;
}

const familyCode = (f: Family): number => (f === 4 ? AF_INET : AF_INET6);

/** Encode RTM_NEWADDR/RTM_DELADDR. */
export function encodeAddressRequest(type: number, nlFlags: number, r: AddressRequest): Buffer {
  const c = parseCidr(r.cidr, 'interface address');
  const w = new NlWriter(96);
  const at = beginMessage(w, type, nlFlags);
  const flags = r.flags ?? 0;
  w.u8(familyCode(c.family))
    .u8(c.prefix)
    .u8(flags & 0xff)
    .u8(r.scope ?? 0)
    .u32(r.index);
  const local = ipToBytes(c.family, c.addr);
  if (c.family === 4) w.attr(IFA_LOCAL, local);
  if (r.peer !== undefined) {
    const p = parseCidr(
      r.peer.includes('/') ? r.peer : `${r.peer}/${c.family === 4 ? 32 : 128}`,
      'peer address',
    );
    w.attr(IFA_ADDRESS, ipToBytes(p.family, p.addr));
  } else {
    w.attr(IFA_ADDRESS, local);
  }
  if (r.broadcast && c.family === 4 && c.prefix < 31) {
    const hostBits = (1n << BigInt(32 - c.prefix)) - 1n;
    w.attr(IFA_BROADCAST, ipToBytes(4, c.network | hostBits));
  }
  if (flags > 0xff) w.attrU32(IFA_FLAGS, flags);
  finishMessage(w, at);
  return w.toBuffer();
}

/** Encode a RTM_GETADDR dump, optionally for one family. */
export function encodeGetAddr(family?: Family): Buffer {
  const w = new NlWriter(32);
  const at = beginMessage(w, RTM_GETADDR, 0);
  w.u8(family ? familyCode(family) : 0)
    .u8(0)
    .u8(0)
    .u8(0)
    .u32(0);
  finishMessage(w, at);
  return w.toBuffer();
}

/** Decode a RTM_NEWADDR message. */
export function decodeAddress(m: NlMessage): Address {
  const p = m.payload;
  if (p.length < IFADDRMSG_LEN) throw new TapnetError('ERR_NETLINK_DECODE', 'truncated ifaddrmsg');
  const fam = p.readUInt8(0);
  if (fam !== AF_INET && fam !== AF_INET6) {
    throw new TapnetError('ERR_NETLINK_DECODE', `address family ${fam} is not IPv4 or IPv6`);
  }
  const family: Family = fam === AF_INET ? 4 : 6;
  const a = AttrMap.parse(p, IFADDRMSG_LEN);
  const localRaw = a.raw(IFA_LOCAL);
  const addrRaw = a.raw(IFA_ADDRESS);
  const mine = localRaw ?? addrRaw;
  if (!mine) throw new TapnetError('ERR_NETLINK_DECODE', 'address message without IFA_LOCAL/IFA_ADDRESS');
  const address = ipText(mine);
  const prefix = p.readUInt8(1);
  const out: Address = {
    family,
    index: p.readUInt32LE(4),
    address,
    prefix,
    cidr: `${address}/${prefix}`,
    scope: p.readUInt8(3),
    flags: a.u32(IFA_FLAGS) ?? p.readUInt8(2),
  };
  if (localRaw && addrRaw && !localRaw.equals(addrRaw)) out.peer = ipText(addrRaw);
  const brd = a.raw(IFA_BROADCAST);
  if (brd) out.broadcast = ipText(brd);
  const label = a.str(IFA_LABEL);
  if (label) out.label = label;
  return out;
}
