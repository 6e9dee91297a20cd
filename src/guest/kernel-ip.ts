/**
 * The kernel's `ip=` boot argument (Documentation/admin-guide/nfs/nfsroot.rst; parsed by
 * ip_auto_config_setup() in net/ipv4/ipconfig.c):
 *
 *   ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>:<ntp0-ip>
 *
 * IPv4 ONLY: the kernel's boot-time configuration knows no IPv6, so an IPv6 address, gateway or DNS server
 * cannot be passed this way (give the guest cloud-init, or configure it from its /init). It configures ONE
 * interface. Pure.
 */
import { invalidArgument } from '../errors.js';
import { formatIp, parseIp } from '../ip.js';
import { validateIfname } from '../validate.js';
import { assertNoSyntax, type GuestNetConfig, validateGuestNetConfig } from './types.js';

/** Characters the kernel command line treats as syntax inside a parameter value (quotes; blanks are refused earlier). */
const CMDLINE_SYNTAX = '"';

/**
 * Render `ip=<client>::<gw>:<netmask>:<hostname>:<device>:off[:<dns0>[:<dns1>]]` for a static IPv4 setup
 * (autoconf `off`: no DHCP/BOOTP/RARP). The NFS server field is left empty. The host name is cut at its first
 * '.' (the kernel reads what follows as a NIS domain). Only the first two IPv4 DNS servers fit; IPv6 ones are
 * skipped. Throws ERR_INVALID_ARGUMENT when the VM has no IPv4 address.
 *
 * Example: `ip=198.18.0.5::198.18.0.1:255.255.255.0:vm1:eth0:off:198.18.0.1`
 */
export function renderKernelIpArg(cfg: GuestNetConfig): string {
  const v = validateGuestNetConfig(cfg);
  if (!v.ipv4) {
    throw invalidArgument(`VM ${v.vmId} has no IPv4 address: the kernel ip= argument is IPv4 only`, {
      vmId: v.vmId,
    });
  }
  assertNoSyntax(v.guestIfname, 'guest interface name', CMDLINE_SYNTAX, 'the kernel command line');
  const dns4 = v.dns.filter((d) => !d.includes(':')).slice(0, 2);
  const fields = [
    v.ipv4.address,
    '', // server-ip: only NFS root uses it
    v.gateway4 ?? '',
    v.netmask4!,
    // Only the first label: the kernel would set the rest as the NIS domain name.
    v.hostname?.split('.')[0] ?? '',
    v.guestIfname,
    'off',
    ...dns4,
  ];
  return `ip=${fields.join(':')}`;
}

/** What an `ip=` argument says, field by field. Addresses are canonical dotted quads. */
export interface KernelIpConfig {
  /** The autoconf method as written (`off`, `none`, `on`, `any`, `dhcp`, `bootp`, `rarp`, `both`), if any. */
  autoconf?: string;
  clientIp?: string;
  serverIp?: string;
  gatewayIp?: string;
  netmask?: string;
  /** Prefix length of `netmask`. */
  prefix?: number;
  /** `clientIp/prefix`, when both are given. */
  address?: string;
  /** As written; the kernel uses the part before the first '.' as host name and the rest as NIS domain. */
  hostname?: string;
  device?: string;
  /** dns0 and dns1, in order, when given. */
  dns: string[];
  ntp?: string;
}

const PROTO_NAMES = ['on', 'any', 'dhcp', 'bootp', 'rarp', 'both'];
const OFF_NAMES = ['off', 'none'];

function ipv4Field(s: string, what: string): string | undefined {
  const ip = parseIp(s, `ip= ${what}`);
  if (ip.family !== 4) throw invalidArgument(`ip= ${what} ${JSON.stringify(s)} is not an IPv4 address`);
  // The kernel reads 0.0.0.0 (INADDR_ANY) as "not given".
  return ip.value === 0n ? undefined : formatIp(4, ip.value);
}

function netmaskPrefix(mask: string): number {
  const v = parseIp(mask).value;
  const inv = ~v & 0xffffffffn;
  if ((inv & (inv + 1n)) !== 0n) {
    throw invalidArgument(`ip= netmask ${mask} is not contiguous`, { value: mask });
  }
  let prefix = 0;
  for (let b = 31n; b >= 0n && (v >> b) & 1n; b--) prefix++;
  return prefix;
}

/**
 * Parse an `ip=` kernel argument (with or without the leading `ip=`) the way ip_auto_config_setup() does:
 * a lone autoconf method (`dhcp`, `off`, …) or up to ten ':'-separated fields, empty ones meaning "not
 * given" and 0.0.0.0 read as not given. Stricter than the kernel: malformed addresses, a non-contiguous
 * netmask, an unknown autoconf method or extra fields throw ERR_INVALID_ARGUMENT instead of being ignored.
 * Reference for a guest /init that configures its interface from /proc/cmdline.
 */
export function parseKernelIpArg(s: string): KernelIpConfig {
  if (typeof s !== 'string') throw invalidArgument('ip= argument must be a string', { value: s });
  const value = s.startsWith('ip=') ? s.slice(3) : s;
  if (/[\s"]/.test(value)) throw invalidArgument(`ip= argument ${JSON.stringify(s)} holds blanks or quotes`);
  // A lone method: "ip=dhcp" (optionally "dhcp,<client-id-type>,<client-id>"), "ip=on", "ip=off", "ip=".
  const lone = value.startsWith('dhcp,') ? 'dhcp' : value;
  if (PROTO_NAMES.includes(lone)) return { autoconf: lone, dns: [] };
  if (value === '' || OFF_NAMES.includes(value)) return { autoconf: value === '' ? 'off' : value, dns: [] };
  const fields = value.split(':');
  if (fields.length > 10) {
    throw invalidArgument(`ip= argument has ${fields.length} fields; the kernel knows 10`, { value: s });
  }
  const f = (i: number): string => fields[i] ?? '';
  const out: KernelIpConfig = { dns: [] };
  const set = <K extends keyof KernelIpConfig>(k: K, v: KernelIpConfig[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  if (f(0)) set('clientIp', ipv4Field(f(0), 'client-ip'));
  if (f(1)) set('serverIp', ipv4Field(f(1), 'server-ip'));
  if (f(2)) set('gatewayIp', ipv4Field(f(2), 'gw-ip'));
  if (f(3)) {
    const mask = ipv4Field(f(3), 'netmask');
    if (mask !== undefined) {
      out.netmask = mask;
      out.prefix = netmaskPrefix(mask);
    }
  }
  if (f(4)) out.hostname = f(4);
  if (f(5)) out.device = validateIfname(f(5), 'ip= device');
  if (f(6)) {
    if (!PROTO_NAMES.includes(f(6)) && !OFF_NAMES.includes(f(6))) {
      throw invalidArgument(`ip= autoconf ${JSON.stringify(f(6))} is not a known method`, { value: s });
    }
    out.autoconf = f(6);
  }
  for (const i of [7, 8]) {
    const d = f(i) ? ipv4Field(f(i), `dns${i - 7}-ip`) : undefined;
    if (d !== undefined) out.dns.push(d);
  }
  if (f(9)) set('ntp', ipv4Field(f(9), 'ntp0-ip'));
  if (out.clientIp !== undefined && out.prefix !== undefined) out.address = `${out.clientIp}/${out.prefix}`;
  return out;
}
