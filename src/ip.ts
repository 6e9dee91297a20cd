/**
 * IP addresses, CIDRs and MAC addresses: strict parsing at the boundary, canonical formatting, and the
 * arithmetic IPAM needs. Pure; imports only errors. Addresses are bigints so IPv4 and IPv6 share code.
 */
import { invalidArgument } from './errors.js';

export type Family = 4 | 6;

export interface IpAddr {
  family: Family;
  value: bigint;
}

export interface Cidr {
  family: Family;
  /** The address as written (may have host bits set, e.g. a gateway's "198.18.0.1/24"). */
  addr: bigint;
  prefix: number;
  /** The network address (host bits cleared). */
  network: bigint;
}

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export const bits = (family: Family): number => (family === 4 ? 32 : 128);

/** Parse a dotted-quad IPv4 address; undefined when it is not one. No leading zeros, no shorthand. */
function tryParseV4(s: string): bigint | undefined {
  const m = V4_RE.exec(s);
  if (!m) return undefined;
  let v = 0n;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

/** Parse an IPv6 address (with `::` and an embedded IPv4 tail); undefined when it is not one. */
function tryParseV6(s: string): bigint | undefined {
  if (s.length < 2 || s.length > 45 || !/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const groups: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const g = items[i]!;
      if (i === items.length - 1 && g.includes('.')) {
        const v4 = tryParseV4(g);
        if (v4 === undefined) return undefined;
        groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      groups.push(Number.parseInt(g, 16));
    }
    return groups;
  };
  const head = parseGroups(halves[0]!);
  const tail = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

/** Parse an IPv4 or IPv6 address. Throws ERR_INVALID_ARGUMENT with `what` in the message. */
export function parseIp(s: string, what = 'IP address'): IpAddr {
  if (typeof s !== 'string') throw invalidArgument(`${what} must be a string`, { value: s });
  const v4 = tryParseV4(s);
  if (v4 !== undefined) return { family: 4, value: v4 };
  const v6 = tryParseV6(s);
  if (v6 !== undefined) return { family: 6, value: v6 };
  throw invalidArgument(`${what} ${JSON.stringify(s)} is not an IPv4 or IPv6 address`, { value: s });
}

/** True when `s` parses as an IP address. */
export function isIp(s: string): boolean {
  return tryParseV4(s) !== undefined || tryParseV6(s) !== undefined;
}

/** Parse `addr/prefix`. Host bits may be set (kept in `addr`); `network` has them cleared. */
export function parseCidr(s: string, what = 'CIDR'): Cidr {
  if (typeof s !== 'string') throw invalidArgument(`${what} must be a string`, { value: s });
  const slash = s.indexOf('/');
  if (slash < 0) throw invalidArgument(`${what} ${JSON.stringify(s)} needs a /prefix`, { value: s });
  const ip = parseIp(s.slice(0, slash), what);
  const p = s.slice(slash + 1);
  const max = bits(ip.family);
  if (!/^\d{1,3}$/.test(p) || Number(p) > max) {
    throw invalidArgument(`${what} ${JSON.stringify(s)} has a bad prefix length (0-${max})`, { value: s });
  }
  const prefix = Number(p);
  return { family: ip.family, addr: ip.value, prefix, network: ip.value & prefixMask(ip.family, prefix) };
}

/** The netmask for a prefix length, as a bigint. */
export function prefixMask(family: Family, prefix: number): bigint {
  const b = BigInt(bits(family));
  return ((1n << BigInt(prefix)) - 1n) << (b - BigInt(prefix));
}

/** Number of addresses in a prefix. */
export function prefixSize(family: Family, prefix: number): bigint {
  return 1n << BigInt(bits(family) - prefix);
}

/** True when `ip` lies inside `cidr`. */
export function cidrContains(cidr: Cidr, ip: IpAddr): boolean {
  return cidr.family === ip.family && (ip.value & prefixMask(cidr.family, cidr.prefix)) === cidr.network;
}

/** True when two prefixes share any address. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const p = Math.min(a.prefix, b.prefix);
  const m = prefixMask(a.family, p);
  return (a.network & m) === (b.network & m);
}

/** Canonical text of an address (dotted quad; RFC 5952 for IPv6). */
export function formatIp(family: Family, v: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => ((v >> s) & 0xffn).toString()).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (≥ 2) of zero groups, the first one on ties.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Canonical `network/prefix` text. */
export function formatCidr(c: Cidr): string {
  return `${formatIp(c.family, c.network)}/${c.prefix}`;
}

/** Canonical `addr/prefix` text (keeping host bits). */
export function formatIfaceCidr(family: Family, addr: bigint, prefix: number): string {
  return `${formatIp(family, addr)}/${prefix}`;
}

/** Network-order bytes of an address (4 or 16). */
export function ipToBytes(family: Family, v: bigint): Buffer {
  const n = family === 4 ? 4 : 16;
  const b = Buffer.alloc(n);
  for (let i = n - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

/** Address from network-order bytes (4 or 16). */
export function bytesToIp(b: Uint8Array): IpAddr {
  if (b.length !== 4 && b.length !== 16) throw invalidArgument(`address of ${b.length} bytes`);
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return { family: b.length === 4 ? 4 : 6, value: v };
}

/** Text of an address from network-order bytes. */
export function bytesToIpString(b: Uint8Array): string {
  const ip = bytesToIp(b);
  return formatIp(ip.family, ip.value);
}

/** Text of an address string, canonicalized (e.g. `FD00:0::1` → `fd00::1`). */
export function canonicalIp(s: string, what?: string): string {
  const ip = parseIp(s, what);
  return formatIp(ip.family, ip.value);
}

const MAC_RE = /^([0-9a-fA-F]{2})(:[0-9a-fA-F]{2}){5}$/;

/** Parse `aa:bb:cc:dd:ee:ff` (colons only, as iproute2 prints). */
export function parseMac(s: string, what = 'MAC address'): Buffer {
  if (typeof s !== 'string' || !MAC_RE.test(s)) {
    throw invalidArgument(`${what} ${JSON.stringify(s)} is not of the form aa:bb:cc:dd:ee:ff`, { value: s });
  }
  return Buffer.from(s.split(':').map((h) => Number.parseInt(h, 16)));
}

/** Lower-case colon form of a hardware address. */
export function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A unicast MAC usable for a VM or bridge: not multicast (I/G bit clear), not all zeros. */
export function validateUnicastMac(s: string, what = 'MAC address'): string {
  const b = parseMac(s, what);
  if (b[0]! & 1) throw invalidArgument(`${what} ${s} is a multicast address`, { value: s });
  if (b.every((x) => x === 0)) throw invalidArgument(`${what} ${s} is all zeros`, { value: s });
  return formatMac(b);
}
