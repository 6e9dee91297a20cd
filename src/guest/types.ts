/**
 * The input of every guest renderer: one VM network interface as the guest and its VMM must see it, and the
 * boundary check that every renderer runs first. Pure; imports only errors, ip and validate.
 *
 * Direction convention (used everywhere in src/guest): `rx` is traffic the GUEST receives (host → guest),
 * `tx` is traffic the guest sends. This is Firecracker's convention too; it is the opposite of the host TAP's
 * own counters (the TAP transmits what the guest receives).
 */
import { invalidArgument } from '../errors.js';
import { cidrContains, formatIp, parseCidr, parseIp, prefixMask, validateUnicastMac } from '../ip.js';
import { validateIfname, validateInt, validateVmId } from '../validate.js';

/**
 * A token-bucket limit on one direction of one interface. Give a byte rate, an operation (packet) rate, or
 * both; each is a bucket of its own. All values are integers.
 */
export interface TokenBucketSpec {
  /** Sustained bandwidth, bytes per second. */
  bytesPerSec?: number;
  /** Bucket capacity in bytes: the most that may pass at line rate after an idle period. Default: 1 s worth. */
  burstBytes?: number;
  /** Extra one-time credit in bytes, available once at start and never refilled (Firecracker `one_time_burst`). */
  initialBurstBytes?: number;
  /** Sustained operations (packets) per second. */
  opsPerSec?: number;
  /** Bucket capacity in operations. Default: 1 s worth. */
  burstOps?: number;
  /** Extra one-time credit in operations. */
  initialBurstOps?: number;
}

/** Per-direction limits; `rx` = traffic to the guest, `tx` = traffic from the guest. */
export interface GuestRateLimit {
  rx?: TokenBucketSpec;
  tx?: TokenBucketSpec;
}

/** One VM network interface, as the NetworkManager hands it to the renderers. */
export interface GuestNetConfig {
  vmId: string;
  /** Host TAP name, e.g. 'tn3f2a9c01'. */
  ifname: string;
  /** When the VMM gets the TAP as an fd (QEMU `fd=N`), the fd number IN THE VMM process. */
  tapFd?: number;
  /**
   * Multi-queue TAP passed as fds: one fd per queue pair, in the VMM process (QEMU `fds=`, Cloud Hypervisor
   * `fd=[…]`). Its length must equal `queues`. Mutually exclusive with `tapFd`.
   */
  tapFds?: number[];
  /** Guest MAC, lower-case colon form. */
  mac: string;
  /** CIDR form '198.18.0.5/24'. */
  ipv4?: string;
  gateway4?: string;
  /** CIDR form 'fd00::5/64'. */
  ipv6?: string;
  gateway6?: string;
  dns: string[];
  mtu: number;
  hostname?: string;
  /** Interface name inside the guest; default 'eth0'. */
  guestIfname?: string;
  /** Bandwidth limits (bytes/s + burst bytes, optional ops); see TokenBucketSpec. */
  rateLimit?: GuestRateLimit;
  /** Multi-queue count (queue pairs); default 1. */
  queues?: number;
  /** Whether the TAP carries the virtio-net header; undefined = the VMM's default. */
  vnetHdr?: boolean;
}

/** An address with its prefix, checked and in canonical text. */
export interface GuestAddress {
  /** Canonical address text ('198.18.0.5', 'fd00::5'). */
  address: string;
  prefix: number;
  /** Canonical 'address/prefix'. */
  cidr: string;
}

/** A GuestNetConfig after the boundary check: canonical text, defaults filled in. */
export interface ValidGuestNetConfig {
  vmId: string;
  ifname: string;
  tapFd?: number;
  tapFds?: number[];
  mac: string;
  ipv4?: GuestAddress;
  /** Dotted-quad netmask of ipv4. */
  netmask4?: string;
  gateway4?: string;
  ipv6?: GuestAddress;
  gateway6?: string;
  dns: string[];
  mtu: number;
  hostname?: string;
  guestIfname: string;
  rateLimit?: GuestRateLimit;
  queues: number;
  vnetHdr?: boolean;
}

/** Largest integer accepted for rates and bursts: keeps `value × 1000` exact in a double. */
export const MAX_RATE = Math.floor(Number.MAX_SAFE_INTEGER / 1000);
/** Most queue pairs we render (QEMU's MSI-X vectors = 2N+2 must stay well below 2048). */
export const MAX_QUEUES = 256;
/** Most DNS servers accepted. */
export const MAX_DNS = 8;

const HOST_LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A guest host name: dot-separated RFC 1123 labels, at most 64 characters (the kernel's `nodename` size).
 * Throws ERR_INVALID_ARGUMENT.
 */
export function validateHostname(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 64) {
    throw invalidArgument(`hostname ${JSON.stringify(name)} must be 1-64 characters`, { value: name });
  }
  if (!name.split('.').every((label) => HOST_LABEL_RE.test(label))) {
    throw invalidArgument(
      `hostname ${JSON.stringify(name)} must be dot-separated labels of A-Z a-z 0-9 and inner '-'`,
      { value: name },
    );
  }
  return name;
}

/**
 * Refuse a value that holds any character the target parser treats as syntax. Renderers call this on every
 * piece of text they put into a VMM or kernel argument, after the value's own validation.
 */
export function assertNoSyntax(value: string, what: string, forbidden: string, syntax: string): string {
  for (const ch of value) {
    if (forbidden.includes(ch)) {
      throw invalidArgument(
        `${what} ${JSON.stringify(value)} contains ${JSON.stringify(ch)}, which is syntax in ${syntax}`,
        { value },
      );
    }
  }
  return value;
}

function checkAddress(text: unknown, family: 4 | 6, what: string): GuestAddress {
  if (typeof text !== 'string') {
    throw invalidArgument(`${what} must be a string in CIDR form`, { value: text });
  }
  const c = parseCidr(text, what);
  if (c.family !== family) {
    throw invalidArgument(`${what} ${text} is not an IPv${family} CIDR`, { value: text });
  }
  if (c.prefix === 0) throw invalidArgument(`${what} ${text} has prefix length 0`, { value: text });
  if (family === 4 && c.prefix <= 30) {
    const host = c.addr & ~prefixMask(4, c.prefix) & 0xffffffffn;
    const allOnes = ~prefixMask(4, c.prefix) & 0xffffffffn;
    if (host === 0n || host === allOnes) {
      throw invalidArgument(`${what} ${text} is the network or broadcast address of its subnet`, {
        value: text,
      });
    }
  }
  const address = formatIp(family, c.addr);
  return { address, prefix: c.prefix, cidr: `${address}/${c.prefix}` };
}

function checkGateway(text: unknown, addr: GuestAddress | undefined, family: 4 | 6, what: string): string {
  if (typeof text !== 'string') throw invalidArgument(`${what} must be a string`, { value: text });
  if (!addr) throw invalidArgument(`${what} is set but the VM has no IPv${family} address`, { value: text });
  const gw = parseIp(text, what);
  if (gw.family !== family) {
    throw invalidArgument(`${what} ${text} is not an IPv${family} address`, { value: text });
  }
  const own = parseCidr(addr.cidr);
  if (gw.value === own.addr) {
    throw invalidArgument(`${what} ${text} is the VM's own address`, { value: text });
  }
  // IPv4: the kernel's ip= (ic_setup_routes) refuses a gateway off the subnet; so do we everywhere.
  // IPv6: the gateway may also be link-local (fe80::/10), as router advertisements announce it.
  const linkLocal = family === 6 && gw.value >> 118n === 0x3fan;
  if (!cidrContains(own, gw) && !linkLocal) {
    throw invalidArgument(`${what} ${text} is not inside ${addr.cidr}`, { value: text });
  }
  return formatIp(family, gw.value);
}

function checkBucket(spec: unknown, what: string): TokenBucketSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw invalidArgument(`${what} must be an object`, { value: spec });
  }
  const s = spec as Record<string, unknown>;
  const known = [
    'bytesPerSec',
    'burstBytes',
    'initialBurstBytes',
    'opsPerSec',
    'burstOps',
    'initialBurstOps',
  ];
  for (const k of Object.keys(s)) {
    if (!known.includes(k)) throw invalidArgument(`${what} has unknown field ${JSON.stringify(k)}`);
  }
  const out: TokenBucketSpec = {};
  for (const k of known as (keyof TokenBucketSpec)[]) {
    if (s[k] !== undefined) {
      out[k] = validateInt(s[k], `${what}.${k}`, k.startsWith('initial') ? 0 : 1, MAX_RATE);
    }
  }
  if (out.bytesPerSec === undefined && out.opsPerSec === undefined) {
    throw invalidArgument(`${what} needs bytesPerSec or opsPerSec`);
  }
  if (
    out.bytesPerSec === undefined &&
    (out.burstBytes !== undefined || out.initialBurstBytes !== undefined)
  ) {
    throw invalidArgument(`${what}: a byte burst needs bytesPerSec`);
  }
  if (out.opsPerSec === undefined && (out.burstOps !== undefined || out.initialBurstOps !== undefined)) {
    throw invalidArgument(`${what}: an ops burst needs opsPerSec`);
  }
  return out;
}

function checkFd(v: unknown, what: string): number {
  return validateInt(v, what, 0, 2 ** 31 - 1);
}

/**
 * Check a GuestNetConfig at the boundary and return it canonical, with defaults (guestIfname 'eth0',
 * queues 1). Every renderer calls this first. Throws ERR_INVALID_ARGUMENT naming the bad field.
 */
export function validateGuestNetConfig(cfg: GuestNetConfig): ValidGuestNetConfig {
  if (typeof cfg !== 'object' || cfg === null) {
    throw invalidArgument('guest network config must be an object');
  }
  const out: ValidGuestNetConfig = {
    vmId: validateVmId(cfg.vmId),
    ifname: validateIfname(cfg.ifname, 'TAP name'),
    mac: validateUnicastMac(cfg.mac, 'guest MAC'),
    dns: [],
    mtu: 0,
    guestIfname: validateIfname(cfg.guestIfname ?? 'eth0', 'guest interface name'),
    queues: cfg.queues === undefined ? 1 : validateInt(cfg.queues, 'queues', 1, MAX_QUEUES),
  };
  if (cfg.tapFd !== undefined && cfg.tapFds !== undefined) {
    throw invalidArgument('give tapFd or tapFds, not both');
  }
  if (cfg.tapFd !== undefined) out.tapFd = checkFd(cfg.tapFd, 'tapFd');
  if (cfg.tapFds !== undefined) {
    if (!Array.isArray(cfg.tapFds) || cfg.tapFds.length === 0) {
      throw invalidArgument('tapFds must be a non-empty array of fd numbers', { value: cfg.tapFds });
    }
    out.tapFds = cfg.tapFds.map((fd, i) => checkFd(fd, `tapFds[${i}]`));
    if (new Set(out.tapFds).size !== out.tapFds.length) {
      throw invalidArgument('tapFds holds the same fd twice');
    }
    if (out.tapFds.length !== out.queues) {
      throw invalidArgument(
        `tapFds has ${out.tapFds.length} fds but queues is ${out.queues}: one fd per queue`,
      );
    }
  }
  if (cfg.ipv4 !== undefined) {
    out.ipv4 = checkAddress(cfg.ipv4, 4, 'ipv4');
    out.netmask4 = formatIp(4, prefixMask(4, out.ipv4.prefix));
  }
  if (cfg.gateway4 !== undefined) out.gateway4 = checkGateway(cfg.gateway4, out.ipv4, 4, 'gateway4');
  if (cfg.ipv6 !== undefined) out.ipv6 = checkAddress(cfg.ipv6, 6, 'ipv6');
  if (cfg.gateway6 !== undefined) out.gateway6 = checkGateway(cfg.gateway6, out.ipv6, 6, 'gateway6');
  if (!Array.isArray(cfg.dns)) {
    throw invalidArgument('dns must be an array of IP addresses', { value: cfg.dns });
  }
  if (cfg.dns.length > MAX_DNS) {
    throw invalidArgument(`dns holds ${cfg.dns.length} servers; at most ${MAX_DNS}`);
  }
  out.dns = cfg.dns.map((s, i) => {
    if (typeof s !== 'string') throw invalidArgument(`dns[${i}] must be a string`, { value: s });
    const ip = parseIp(s, `dns[${i}]`);
    return formatIp(ip.family, ip.value);
  });
  // 68 is IPv4's minimum MTU (RFC 791); IPv6 needs 1280 (RFC 8200).
  out.mtu = validateInt(cfg.mtu, 'mtu', out.ipv6 ? 1280 : 68, 65535);
  if (cfg.hostname !== undefined) out.hostname = validateHostname(cfg.hostname);
  if (cfg.rateLimit !== undefined) {
    if (typeof cfg.rateLimit !== 'object' || cfg.rateLimit === null) {
      throw invalidArgument('rateLimit must be an object', { value: cfg.rateLimit });
    }
    for (const k of Object.keys(cfg.rateLimit)) {
      if (k !== 'rx' && k !== 'tx') {
        throw invalidArgument(`rateLimit has unknown direction ${JSON.stringify(k)}`);
      }
    }
    out.rateLimit = {};
    if (cfg.rateLimit.rx !== undefined) out.rateLimit.rx = checkBucket(cfg.rateLimit.rx, 'rateLimit.rx');
    if (cfg.rateLimit.tx !== undefined) out.rateLimit.tx = checkBucket(cfg.rateLimit.tx, 'rateLimit.tx');
  }
  if (cfg.vnetHdr !== undefined) {
    if (typeof cfg.vnetHdr !== 'boolean') {
      throw invalidArgument('vnetHdr must be a boolean', { value: cfg.vnetHdr });
    }
    out.vnetHdr = cfg.vnetHdr;
  }
  return out;
}
