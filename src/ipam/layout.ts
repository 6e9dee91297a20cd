/**
 * Pool specifications and their resolved layout: which addresses of a subnet may ever be handed out.
 * The network address, the gateway and (IPv4) the broadcast address never are; for an IPv6 prefix of
 * /64 or shorter neither are the top 128 interface IDs (RFC 2526 subnet anycast). Pure.
 */
import { TapnetError } from '../errors.js';
import { type Cidr, type Family, formatCidr, formatIp, parseCidr, parseIp, prefixSize } from '../ip.js';
import type { PoolRef } from '../store/types.js';
import { validateName } from '../validate.js';

/** One address pool of a network, as configured. */
export interface PoolSpec {
  /** The network's name (validateName). */
  network: string;
  /** The pool's subnet in canonical network form: `198.18.0.0/22`, `fd00:0:0:1::/64`. */
  subnet: string;
  /** The gateway (never handed out). Default: the first host address. */
  gateway?: string;
  /** First address of the dynamic range. Default: the first host address. */
  rangeStart?: string;
  /** Last address of the dynamic range. Default: the last host address. */
  rangeEnd?: string;
}

/** A validated pool: bounds as bigints. */
export interface PoolLayout {
  ref: PoolRef;
  family: Family;
  prefix: number;
  cidr: Cidr;
  /** The subnet's last address (IPv4 broadcast). */
  lastAddress: bigint;
  /** Lowest and highest address that may ever be leased (statics included). */
  firstHost: bigint;
  lastHost: bigint;
  gateway: bigint;
  /** The dynamic range, inside [firstHost, lastHost]. */
  rangeStart: bigint;
  rangeEnd: bigint;
  /** How many addresses dynamic allocation can hand out (the range less the gateway). */
  dynamicSize: bigint;
}

/** Shortest host part we accept: /30 for IPv4 (one usable address), /126 for IPv6. */
const MAX_PREFIX: Record<Family, number> = { 4: 30, 6: 126 };

function invalid(spec: PoolSpec, msg: string): TapnetError {
  return new TapnetError('ERR_INVALID_ARGUMENT', `pool ${spec.network}/${spec.subnet}: ${msg}`, {
    details: { network: spec.network, subnet: spec.subnet },
  });
}

/** Parse and check `subnet`: a canonical network prefix (no host bits), returned as its canonical text. */
export function canonicalSubnet(subnet: string): { cidr: Cidr; text: string } {
  const cidr = parseCidr(subnet, 'subnet');
  if (cidr.addr !== cidr.network) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `subnet ${subnet} has host bits set; did you mean ${formatCidr(cidr)}?`,
      { details: { value: subnet } },
    );
  }
  return { cidr, text: formatCidr(cidr) };
}

/** Validate a pool specification and compute its layout. Throws ERR_INVALID_ARGUMENT. */
export function resolvePool(spec: PoolSpec): PoolLayout {
  if (typeof spec !== 'object' || spec === null)
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'pool must be an object');
  validateName(spec.network, 'network name');
  const { cidr, text } = canonicalSubnet(spec.subnet);
  const family = cidr.family;
  if (cidr.prefix > MAX_PREFIX[family]) {
    throw invalid(
      spec,
      `prefix /${cidr.prefix} leaves no address to hand out (at most /${MAX_PREFIX[family]})`,
    );
  }
  const last = cidr.network + prefixSize(family, cidr.prefix) - 1n;
  const firstHost = cidr.network + 1n;
  let lastHost = last;
  if (family === 4)
    lastHost = last - 1n; // broadcast
  else if (cidr.prefix <= 64) lastHost = last - 128n; // RFC 2526 reserved anycast IDs
  const addrIn = (what: string, s: string | undefined, dflt: bigint): bigint => {
    if (s === undefined) return dflt;
    const ip = parseIp(s, `${what} of ${text}`);
    if (ip.family !== family) throw invalid(spec, `${what} ${s} is not IPv${family}`);
    if (ip.value < firstHost || ip.value > lastHost) {
      throw invalid(spec, `${what} ${s} is not a usable host address of ${text}`);
    }
    return ip.value;
  };
  const gateway = addrIn('gateway', spec.gateway, firstHost);
  const rangeStart = addrIn('rangeStart', spec.rangeStart, firstHost);
  const rangeEnd = addrIn('rangeEnd', spec.rangeEnd, lastHost);
  if (rangeStart > rangeEnd)
    throw invalid(spec, `rangeStart ${spec.rangeStart} is after rangeEnd ${spec.rangeEnd}`);
  const gwInRange = gateway >= rangeStart && gateway <= rangeEnd;
  const dynamicSize = rangeEnd - rangeStart + 1n - (gwInRange ? 1n : 0n);
  if (dynamicSize <= 0n) throw invalid(spec, 'the dynamic range holds only the gateway');
  return {
    ref: { network: spec.network, subnet: text },
    family,
    prefix: cidr.prefix,
    cidr,
    lastAddress: last,
    firstHost,
    lastHost,
    gateway,
    rangeStart,
    rangeEnd,
    dynamicSize,
  };
}

/** A stable key for a pool reference (`network|subnet`). */
export function poolKey(ref: PoolRef): string {
  return `${ref.network}|${ref.subnet}`;
}

/** Canonical text of an address of `layout`'s family. */
export function fmt(layout: PoolLayout, v: bigint): string {
  return formatIp(layout.family, v);
}
