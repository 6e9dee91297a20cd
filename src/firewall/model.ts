/**
 * Validation at the firewall's boundary and the names of tapnet's nftables objects. Pure.
 *
 * Every string that reaches an nftables document passes a strict character set here. It matters beyond
 * taste: inside libnftables' JSON, a value starting with `@` is a set reference, one starting with `$` a
 * variable, and `*` or `\` in an interface name is a wildcard or an escape. Our set never contains them.
 */
import { invalidArgument, TapnetError } from '../errors.js';
import {
  cidrContains,
  cidrsOverlap,
  formatCidr,
  formatIp,
  formatMac,
  isIp,
  parseCidr,
  parseIp,
  parseMac,
  prefixMask,
  validateUnicastMac,
} from '../ip.js';
import { validateIfname, validateName } from '../validate.js';
import type { FirewallNetwork, FirewallVm, Topology } from './types.js';

/** tapnet's table name, in the `inet` and the `bridge` family. */
export const TABLE = 'tapnet';

/** Shared objects, one of each per table: the per-VM state and the anti-spoofing chains. */
export const VM_MAC_SET = 'vm_mac';
export const VM_IP4_SET = 'vm_ip4';
export const VM_IP6_SET = 'vm_ip6';
export const VM_COUNTER_MAP = 'vm_counter';
export const UNREGISTERED_COUNTER = 'unregistered';
export const ANTISPOOF_CHAIN = 'antispoof';
export const SPOOFED_CHAIN = 'spoofed';
/** The union of all networks' subnets (inet only), for isolation. */
export const SUBNETS4_SET = 'subnets4';
export const SUBNETS6_SET = 'subnets6';

/** The base chain that sends frames from TAPs named `<prefix>…` to anti-spoofing. */
export function guardChainName(tapPrefix: string): string {
  return `guard_${tapPrefix}`;
}

/** Per-network object kinds; an object is named `<kind>_<network>`. */
export const OBJECT_KINDS = ['spoof', 'isolate', 'fwd', 'in', 'post', 'net4', 'net6'] as const;
export type ObjectKind = (typeof OBJECT_KINDS)[number];

/** The nftables name of one network's object, e.g. `spoof_default`. */
export function objectName(kind: ObjectKind, network: string): string {
  return `${kind}_${network}`;
}

const OBJECT_RE = new RegExp(`^(${OBJECT_KINDS.join('|')})_(.+)$`);

/** The kind and network of a per-network object name, or undefined for anything else. */
export function parseObjectName(name: string): { kind: ObjectKind; network: string } | undefined {
  const m = OBJECT_RE.exec(name);
  return m ? { kind: m[1] as ObjectKind, network: m[2]! } : undefined;
}

/** The nftables family holding a topology's anti-spoofing: bridge ports in `bridge`, routed TAPs in `inet`. */
export function topologyFamily(t: Topology): 'bridge' | 'inet' {
  return t === 'bridge' ? 'bridge' : 'inet';
}

/** A subnet as the `address . netmask` pair its network's record set holds. */
export function subnetPair(cidr: string): [string, string] {
  const c = parseCidr(cidr);
  return [formatIp(c.family, c.network), formatIp(c.family, prefixMask(c.family, c.prefix))];
}

/** The subnet of an `address . netmask` pair, or undefined when the mask is not a prefix. */
export function pairSubnet(addr: string, mask: string): string | undefined {
  if (!isIp(addr) || !isIp(mask)) return undefined;
  const a = parseIp(addr);
  const m = parseIp(mask);
  if (a.family !== m.family) return undefined;
  const width = a.family === 4 ? 32 : 128;
  for (let p = 0; p <= width; p++) {
    if (prefixMask(a.family, p) === m.value) return `${formatIp(a.family, a.value & m.value)}/${p}`;
  }
  return undefined;
}

/** Interface names and prefixes tapnet puts in rules: no `*`, `\`, `@`, `$`, quotes or spaces. */
const SAFE_IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const PREFIX_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,13}$/;

function safeIfname(v: unknown, what: string): string {
  const name = validateIfname(v, what);
  if (!SAFE_IFNAME_RE.test(name)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)}: use A-Z a-z 0-9 _ . - starting with a letter or digit`,
      {
        value: name,
      },
    );
  }
  return name;
}

/** A network definition, validated and canonical (subnets with host bits cleared). */
export interface NetworkSpec {
  name: string;
  topology: Topology;
  bridge?: string;
  tapPrefix: string;
  subnet4?: string;
  subnet6?: string;
  nat: boolean;
  isolate: boolean;
}

function subnet(v: unknown, family: 4 | 6, what: string): string {
  if (typeof v !== 'string') throw invalidArgument(`${what} must be a string`, { value: v });
  const c = parseCidr(v, what);
  if (c.family !== family) throw invalidArgument(`${what} ${v} is not an IPv${family} subnet`, { value: v });
  if (c.prefix === 0) throw invalidArgument(`${what} ${v} covers everything`, { value: v });
  return formatCidr(c);
}

/** Validate a FirewallNetwork. Throws ERR_INVALID_ARGUMENT naming the bad field. */
export function normalizeNetwork(net: FirewallNetwork): NetworkSpec {
  if (!net || typeof net !== 'object') throw invalidArgument('network must be an object');
  const name = validateName(net.name, 'network name');
  if (net.topology !== 'bridge' && net.topology !== 'routed') {
    throw invalidArgument(`network ${name}: topology must be "bridge" or "routed"`, { value: net.topology });
  }
  if (typeof net.tapPrefix !== 'string' || !PREFIX_RE.test(net.tapPrefix)) {
    throw invalidArgument(
      `network ${name}: tapPrefix ${JSON.stringify(net.tapPrefix)} must be 1-14 of A-Z a-z 0-9 _ . -`,
      {
        value: net.tapPrefix,
      },
    );
  }
  for (const k of ['nat', 'isolate'] as const) {
    if (typeof net[k] !== 'boolean')
      throw invalidArgument(`network ${name}: ${k} must be a boolean`, { value: net[k] });
  }
  const spec: NetworkSpec = {
    name,
    topology: net.topology,
    tapPrefix: net.tapPrefix,
    nat: net.nat,
    isolate: net.isolate,
  };
  if (net.bridge !== undefined) spec.bridge = safeIfname(net.bridge, `network ${name}: bridge`);
  if (net.subnet4 !== undefined) spec.subnet4 = subnet(net.subnet4, 4, `network ${name}: subnet4`);
  if (net.subnet6 !== undefined) spec.subnet6 = subnet(net.subnet6, 6, `network ${name}: subnet6`);
  if (!spec.subnet4 && !spec.subnet6) throw invalidArgument(`network ${name}: needs subnet4 or subnet6`);
  return spec;
}

/** Refuse a network whose subnets overlap another's (isolation and NAT key on subnets). */
export function checkNoOverlap(spec: NetworkSpec, others: Iterable<NetworkSpec>): void {
  for (const o of others) {
    if (o.name === spec.name) continue;
    for (const k of ['subnet4', 'subnet6'] as const) {
      const a = spec[k];
      const b = o[k];
      if (a && b && cidrsOverlap(parseCidr(a), parseCidr(b))) {
        throw new TapnetError(
          'ERR_CONFLICT',
          `network ${spec.name} (${a}) overlaps network ${o.name} (${b})`,
          {
            details: { network: spec.name, other: o.name },
          },
        );
      }
    }
  }
}

/** A VM port, validated against its network and canonical (lower-case MAC, canonical addresses). */
export interface VmSpec {
  network: string;
  ifname: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
}

function addressIn(v: unknown, subnetText: string | undefined, family: 4 | 6, what: string): string {
  if (typeof v !== 'string') throw invalidArgument(`${what} must be a string`, { value: v });
  const ip = parseIp(v, what);
  if (ip.family !== family)
    throw invalidArgument(`${what} ${v} is not an IPv${family} address`, { value: v });
  if (!subnetText)
    throw invalidArgument(`${what} ${v}: the network has no IPv${family} subnet`, { value: v });
  if (!cidrContains(parseCidr(subnetText), ip)) {
    throw invalidArgument(`${what} ${v} is outside ${subnetText}`, { value: v });
  }
  return formatIp(family, ip.value);
}

/** Validate a FirewallVm against its (validated) network. */
export function normalizeVm(vm: FirewallVm, net: NetworkSpec): VmSpec {
  if (!vm || typeof vm !== 'object') throw invalidArgument('VM must be an object');
  const ifname = safeIfname(vm.ifname, 'VM interface name');
  if (!ifname.startsWith(net.tapPrefix) || ifname === net.tapPrefix) {
    throw invalidArgument(
      `VM interface ${ifname} does not start with network ${net.name}'s prefix ${net.tapPrefix}`,
      {
        value: ifname,
      },
    );
  }
  const out: VmSpec = { network: net.name, ifname, mac: validateUnicastMac(vm.mac, 'VM MAC address') };
  if (vm.ipv4 !== undefined) out.ipv4 = addressIn(vm.ipv4, net.subnet4, 4, 'VM IPv4 address');
  if (vm.ipv6 !== undefined) out.ipv6 = addressIn(vm.ipv6, net.subnet6, 6, 'VM IPv6 address');
  return out;
}

/** A port's interface name as removal accepts it (syntax only). */
export function validatePortIfname(ifname: unknown): string {
  return safeIfname(ifname, 'VM interface name');
}

function canonicalAddress(v: unknown, family: 4 | 6, what: string): string {
  if (typeof v !== 'string') throw invalidArgument(`${what} must be a string`, { value: v });
  const ip = parseIp(v, what);
  if (ip.family !== family)
    throw invalidArgument(`${what} ${v} is not an IPv${family} address`, { value: v });
  return formatIp(family, ip.value);
}

/**
 * Validate a VM for removal when its network's definition is unknown (gone, or never ensured here):
 * syntax only, no prefix or subnet checks.
 */
export function normalizeVmForRemoval(vm: FirewallVm): VmSpec {
  if (!vm || typeof vm !== 'object') throw invalidArgument('VM must be an object');
  const network = validateName(vm.network, 'network name');
  const ifname = safeIfname(vm.ifname, 'VM interface name');
  const out: VmSpec = { network, ifname, mac: validateUnicastMac(vm.mac, 'VM MAC address') };
  if (vm.ipv4 !== undefined) out.ipv4 = canonicalAddress(vm.ipv4, 4, 'VM IPv4 address');
  if (vm.ipv6 !== undefined) out.ipv6 = canonicalAddress(vm.ipv6, 6, 'VM IPv6 address');
  return out;
}

/** Validate one listed value of a port (for removePorts): a MAC or an address of the given family. */
export function canonicalPortValue(kind: 'mac' | 'ip4' | 'ip6', v: unknown): string {
  if (kind === 'mac') {
    if (typeof v !== 'string') throw invalidArgument('MAC address must be a string', { value: v });
    return formatMac(parseMac(v));
  }
  return canonicalAddress(v, kind === 'ip4' ? 4 : 6, kind === 'ip4' ? 'IPv4 address' : 'IPv6 address');
}
