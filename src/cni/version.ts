/**
 * Spec versions: parsing and comparing them as libcni does, picking a conflist's version from
 * `cniVersion`/`cniVersions`, decoding a plugin's VERSION answer, and converting results between every
 * pair of versions 0.1.0 … 1.1.0 with libcni's converters (including what each one drops). Pure.
 */
import { CNI_ERROR, CniError } from './errors.js';
import { decodeError, goFields, goStrings, isDnsEmpty } from './result.js';
import {
  type CniResult,
  CURRENT_VERSION,
  type Dns,
  type IpConfig020,
  type PluginInfo,
  type Result020,
  type Result040,
  type Result100,
  type Route,
} from './types.js';

const GO_INT = /^[+-]?\d+$/;

/** [major, minor, micro] of a version string; "" is 0.1.0 (version.ParseVersion). */
export function parseVersion(version: string): [number, number, number] {
  if (version === '') return [0, 1, 0];
  const parts = version.split('.');
  if (parts.length >= 4)
    throw new CniError(CNI_ERROR.INCOMPATIBLE_CNI_VERSION, `invalid version "${version}": too many parts`);
  const names = ['major', 'minor', 'micro'];
  const out: [number, number, number] = [0, 0, 0];
  parts.forEach((p, i) => {
    if (!GO_INT.test(p)) {
      throw new CniError(
        CNI_ERROR.INCOMPATIBLE_CNI_VERSION,
        `failed to convert ${names[i]} version part "${p}": strconv.Atoi: parsing "${p}": invalid syntax`,
      );
    }
    out[i] = Number(p);
  });
  return out;
}

/** -1, 0 or 1 as `a` is older than, the same as, or newer than `b`. */
export function compareVersions(a: string, b: string): number {
  const x = parseVersion(a);
  const y = parseVersion(b);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
  return 0;
}

/** version.GreaterThanOrEqualTo. */
export function versionAtLeast(version: string, other: string): boolean {
  return compareVersions(version, other) >= 0;
}

/** version.GreaterThan. */
export function versionGreaterThan(version: string, other: string): boolean {
  return compareVersions(version, other) > 0;
}

/**
 * The version a conflist runs at: the highest of `cniVersion` and the `cniVersions` entries that is not
 * newer than this library (1.1.0); without `cniVersions`, `cniVersion` as written.
 */
export function pickVersion(cniVersion: string, cniVersions: readonly string[] | undefined): string {
  if (cniVersions === undefined) return cniVersion;
  const candidates: string[] = [];
  cniVersions.forEach((v, i) => {
    let newer: boolean;
    try {
      newer = versionGreaterThan(v, CURRENT_VERSION);
    } catch (e) {
      throw new CniError(
        CNI_ERROR.INVALID_NETWORK_CONFIG,
        `error parsing configuration list: invalid cniVersions entry ${v} at index ${i}: ${(e as CniError).cniMsg}`,
      );
    }
    if (!newer) candidates.push(v);
  });
  if (cniVersion !== '') {
    let newer: boolean;
    try {
      newer = versionGreaterThan(cniVersion, CURRENT_VERSION);
    } catch (e) {
      throw new CniError(
        CNI_ERROR.INVALID_NETWORK_CONFIG,
        `error parsing configuration list: invalid cniVersion ${cniVersion}: ${(e as CniError).cniMsg}`,
      );
    }
    if (!newer) candidates.push(cniVersion);
  }
  candidates.sort((a, b) => (a === b ? 0 : versionGreaterThan(a, b) ? 1 : -1));
  return candidates.length > 0 ? candidates[candidates.length - 1]! : cniVersion;
}

/** Decode a plugin's VERSION answer (version.PluginDecoder). A 0.2.0 plugin may omit the list. */
export function decodePluginInfo(stdout: Buffer | string): PluginInfo {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof stdout === 'string' ? stdout : stdout.toString('utf8'));
  } catch (e) {
    throw decodeError(`decoding version info: ${(e as Error).message}`);
  }
  const f = goFields(raw, ['cniVersion', 'supportedVersions'], 'version.pluginInfo');
  const cniVersion = f.get('cniVersion');
  if (cniVersion !== undefined && typeof cniVersion !== 'string')
    throw decodeError('decoding version info: cniVersion is not a string');
  const supported = goStrings(f.get('supportedVersions'), 'supportedVersions') ?? [];
  if (!cniVersion) throw decodeError('decoding version info: missing field cniVersion');
  if (supported.length === 0) {
    if (cniVersion === '0.2.0') return { cniVersion: CURRENT_VERSION, supportedVersions: ['0.1.0', '0.2.0'] };
    throw decodeError('decoding version info: missing field supportedVersions');
  }
  return { cniVersion, supportedVersions: supported };
}

const copyDns = (d: Dns | undefined): Dns => {
  const o: Dns = {};
  if (d?.nameservers?.length) o.nameservers = [...d.nameservers];
  if (d?.domain) o.domain = d.domain;
  if (d?.search?.length) o.search = [...d.search];
  if (d?.options?.length) o.options = [...d.options];
  return o;
};
const copyRoute = (r: Route): Route => ({ ...r });
const isV4Cidr = (cidr: string): boolean => !cidr.includes(':');

function family(v: string): '020' | '040' | '100' | undefined {
  if (v === '0.1.0' || v === '0.2.0') return '020';
  if (v === '0.3.0' || v === '0.3.1' || v === '0.4.0') return '040';
  if (v === '1.0.0' || v === '1.1.0') return '100';
  return undefined;
}

function from02x(r: Result020, to: Result040['cniVersion']): Result040 {
  const out: Result040 = { cniVersion: to, dns: copyDns(r.dns) };
  const ips: Result040['ips'] = [];
  const routes: Route[] = [];
  for (const [c, v] of [
    [r.ip4, '4'],
    [r.ip6, '6'],
  ] as const) {
    if (!c) continue;
    ips.push({ version: v, address: c.ip, ...(c.gateway ? { gateway: c.gateway } : {}) });
    for (const rt of c.routes ?? []) routes.push(copyRoute(rt));
  }
  if (ips.length) out.ips = ips;
  if (routes.length) out.routes = routes;
  return out;
}

function to02x(r: Result040, to: Result020['cniVersion']): Result020 {
  const out: Result020 = { cniVersion: to, dns: copyDns(r.dns) };
  for (const ip of r.ips ?? []) {
    // 0.2.0 holds one address per family: the first of each.
    const c: IpConfig020 = { ip: ip.address, ...(ip.gateway ? { gateway: ip.gateway } : {}) };
    if (ip.version === '4' && !out.ip4) out.ip4 = c;
    else if (ip.version === '6' && !out.ip6) out.ip6 = c;
    if (out.ip4 && out.ip6) break;
  }
  for (const rt of r.routes ?? []) {
    const target = isV4Cidr(rt.dst) ? out.ip4 : out.ip6;
    if (!target) continue;
    if (!target.routes) target.routes = [];
    target.routes.push({ dst: rt.dst, ...(rt.gw ? { gw: rt.gw } : {}) });
  }
  if (!out.ip4 && !out.ip6) {
    throw new CniError(CNI_ERROR.INCOMPATIBLE_CNI_VERSION, 'cannot convert: no valid IP addresses', '', {
      details: { from: r.cniVersion, to },
    });
  }
  return out;
}

function internal040(r: Result040, to: Result040['cniVersion']): Result040 {
  const out: Result040 = { cniVersion: to, dns: copyDns(r.dns) };
  if (r.interfaces?.length) out.interfaces = r.interfaces.map((i) => ({ ...i }));
  if (r.ips?.length) out.ips = r.ips.map((i) => ({ ...i }));
  if (r.routes?.length) out.routes = r.routes.map(copyRoute);
  return out;
}

function from04x(r: Result040, to: Result100['cniVersion']): Result100 {
  const out: Result100 = { cniVersion: to };
  if (r.interfaces?.length) {
    out.interfaces = r.interfaces.map((i) => ({
      name: i.name,
      ...(i.mac ? { mac: i.mac } : {}),
      ...(i.sandbox ? { sandbox: i.sandbox } : {}),
    }));
  }
  if (r.ips?.length) {
    out.ips = r.ips.map((c) => ({
      ...(c.interface !== undefined ? { interface: c.interface } : {}),
      address: c.address,
      ...(c.gateway ? { gateway: c.gateway } : {}),
    }));
  }
  if (r.routes?.length) out.routes = r.routes.map(copyRoute);
  const dns = copyDns(r.dns);
  if (!isDnsEmpty(dns)) out.dns = dns;
  return out;
}

function to04x(r: Result100, to: Result040['cniVersion']): Result040 {
  const out: Result040 = { cniVersion: to, dns: copyDns(r.dns) };
  if (r.interfaces?.length) {
    // 0.4.0 has no mtu, socketPath or pciID: dropped.
    out.interfaces = r.interfaces.map((i) => ({
      name: i.name,
      ...(i.mac ? { mac: i.mac } : {}),
      ...(i.sandbox ? { sandbox: i.sandbox } : {}),
    }));
  }
  if (r.ips?.length) {
    out.ips = r.ips.map((c) => ({
      version: isV4Cidr(c.address) ? '4' : '6',
      ...(c.interface !== undefined ? { interface: c.interface } : {}),
      address: c.address,
      ...(c.gateway ? { gateway: c.gateway } : {}),
    }));
  }
  if (r.routes?.length) out.routes = r.routes.map(copyRoute);
  return out;
}

/**
 * Convert a result to another spec version (libcni's convert.Convert: GetAsVersion). "" means 0.1.0.
 * Down-conversions lose what the older type cannot hold; 0.1.0/0.2.0 need at least one address.
 */
export function convertResult(r: CniResult, toVersion: string): CniResult {
  const to = toVersion === '' ? '0.1.0' : toVersion;
  const from = r.cniVersion || '0.1.0';
  if (from === to) return r;
  const ff = family(from);
  const tf = family(to);
  if (!ff || !tf) {
    throw new CniError(
      CNI_ERROR.INCOMPATIBLE_CNI_VERSION,
      `no converter for CNI result version ${from} to ${to}`,
      '',
      {
        details: { from, to },
      },
    );
  }
  if (ff === '020') {
    const x = r as Result020;
    if (tf === '020') return { ...x, cniVersion: to as Result020['cniVersion'], dns: copyDns(x.dns) };
    const r040 = from02x(x, tf === '040' ? (to as Result040['cniVersion']) : '0.4.0');
    return tf === '040' ? r040 : from04x(r040, to as Result100['cniVersion']);
  }
  if (ff === '040') {
    const x = r as Result040;
    if (tf === '040') return internal040(x, to as Result040['cniVersion']);
    if (tf === '020') return to02x(x, to as Result020['cniVersion']);
    return from04x(x, to as Result100['cniVersion']);
  }
  const x = r as Result100;
  if (tf === '100') return { ...x, cniVersion: to as Result100['cniVersion'] };
  const r040 = to04x(x, tf === '040' ? (to as Result040['cniVersion']) : '0.4.0');
  return tf === '040' ? r040 : to02x(r040, to as Result020['cniVersion']);
}

/** A result in the current spec version (1.1.0): what tapnet's callers consume. */
export function toCurrentResult(r: CniResult): Result100 {
  return convertResult(r, CURRENT_VERSION) as Result100;
}
