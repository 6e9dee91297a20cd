/**
 * The CNI result as our plugins read it (a chained plugin's `prevResult`) and print it, for spec versions
 * 0.3.0 through 1.1.0, with the semantics of Go's libcni types (pkg/types/040 and pkg/types/100):
 * - `prevResult` is parsed as the *config's* version family (0.3.x/0.4.0 or 1.x); its own `cniVersion`
 *   (the config's when absent) must belong to that family;
 * - held internally in the 1.x shape; printed converted to the config's version: 0.3.x/0.4.0 results give
 *   each IP a `version` ("4"/"6") and lose the 1.1.0 interface fields (mtu, socketPath, pciID);
 * - known fields only, addresses re-formatted canonically, printed indented by 4 like Go's MarshalIndent
 *   (1.x keys sorted, empty `dns` omitted; 0.3.x/0.4.0 in struct order with `dns` always present).
 * Pure: no kernel, no I/O.
 */
import { type Family, formatIp, parseCidr, parseIp } from '../../ip.js';
import { CNI_ERR, cniFailure } from './skel.js';

/** An interface of a result (1.1.0 fields; 0.3.x/0.4.0 have name, mac, sandbox). */
export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

/** An IP configuration: `address` is `addr/prefix` with host bits; `interface` indexes `interfaces`. */
export interface CniIpConfig {
  interface?: number;
  address: string;
  gateway?: string;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A result in the 1.x shape, whatever version it came in. */
export interface CniResult {
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIpConfig[];
  routes: CniRoute[];
  dns: CniDns;
}

const V04X = ['0.3.0', '0.3.1', '0.4.0'];
const V1X = ['1.0.0', '1.1.0'];

/** The result family a config version belongs to, or undefined (0.1.0/0.2.0 and unknown versions). */
export function resultFamily(version: string): '04x' | '1x' | undefined {
  if (V04X.includes(version)) return '04x';
  if (V1X.includes(version)) return '1x';
  return undefined;
}

function bad(path: string, why: string): never {
  throw cniFailure(CNI_ERR.decodingFailure, `failed to parse prevResult: ${path} ${why}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optString(o: Record<string, unknown>, key: string, path: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') bad(`${path}.${key}`, 'is not a string');
  return v;
}

function optInt(o: Record<string, unknown>, key: string, path: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) bad(`${path}.${key}`, 'is not an integer');
  return v;
}

function optStrings(o: Record<string, unknown>, key: string, path: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string'))
    bad(`${path}.${key}`, 'is not a list of strings');
  return v.length ? [...(v as string[])] : undefined;
}

function list(o: Record<string, unknown>, key: string): unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) bad(key, 'is not a list');
  return v;
}

/** `addr/prefix` re-formatted as Go's net.IPNet prints it (host bits kept). */
function canonCidr(s: unknown, path: string): string {
  if (typeof s !== 'string') bad(path, 'is not a string');
  try {
    const c = parseCidr(s);
    return `${formatIp(c.family, c.addr)}/${c.prefix}`;
  } catch {
    bad(path, `${JSON.stringify(s)} is not an address with a prefix length`);
  }
}

function canonIp(s: string | undefined, path: string): string | undefined {
  if (s === undefined) return undefined;
  try {
    const ip = parseIp(s);
    return formatIp(ip.family, ip.value);
  } catch {
    bad(path, `${JSON.stringify(s)} is not an IP address`);
  }
}

function put<T extends object, K extends keyof T>(o: T, k: K, v: T[K] | undefined): void {
  if (v !== undefined) o[k] = v;
}

function parseInterface(v: unknown, i: number, family: '04x' | '1x'): CniInterface {
  const path = `interfaces[${i}]`;
  if (!isObject(v)) bad(path, 'is not an object');
  const name = v.name;
  if (name !== undefined && name !== null && typeof name !== 'string') bad(`${path}.name`, 'is not a string');
  const out: CniInterface = { name: (name as string | undefined) ?? '' };
  put(out, 'mac', optString(v, 'mac', path));
  if (family === '1x') {
    const mtu = optInt(v, 'mtu', path);
    if (mtu) out.mtu = mtu;
  }
  put(out, 'sandbox', optString(v, 'sandbox', path));
  if (family === '1x') {
    put(out, 'socketPath', optString(v, 'socketPath', path));
    put(out, 'pciID', optString(v, 'pciID', path));
  }
  return out;
}

function parseIpConfig(v: unknown, i: number, interfaces: number): CniIpConfig {
  const path = `ips[${i}]`;
  if (!isObject(v)) bad(path, 'is not an object');
  const out: CniIpConfig = { address: canonCidr(v.address, `${path}.address`) };
  const idx = optInt(v, 'interface', path);
  if (idx !== undefined) {
    if (idx < 0 || idx >= interfaces)
      bad(`${path}.interface`, `${idx} is not the index of one of the ${interfaces} interfaces`);
    out.interface = idx;
  }
  put(out, 'gateway', canonIp(optString(v, 'gateway', path), `${path}.gateway`));
  return out;
}

function parseRoute(v: unknown, i: number): CniRoute {
  const path = `routes[${i}]`;
  if (!isObject(v)) bad(path, 'is not an object');
  const out: CniRoute = { dst: canonCidr(v.dst, `${path}.dst`) };
  put(out, 'gw', canonIp(optString(v, 'gw', path), `${path}.gw`));
  for (const k of ['mtu', 'advmss', 'priority'] as const) {
    const n = optInt(v, k, path);
    if (n) out[k] = n;
  }
  put(out, 'table', optInt(v, 'table', path));
  put(out, 'scope', optInt(v, 'scope', path));
  return out;
}

function parseDns(v: unknown): CniDns {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) bad('dns', 'is not an object');
  const out: CniDns = {};
  put(out, 'nameservers', optStrings(v, 'nameservers', 'dns'));
  put(out, 'domain', optString(v, 'domain', 'dns'));
  put(out, 'search', optStrings(v, 'search', 'dns'));
  put(out, 'options', optStrings(v, 'options', 'dns'));
  return out;
}

/**
 * Parse a config's `prevResult` as Go's version.ParsePrevResult + types100.NewResultFromResult do: in the
 * family of `confVersion`, into the 1.x shape (cniVersion 1.1.0). Throws a CNI decoding failure (code 6).
 */
export function parsePrevResult(raw: unknown, confVersion: string): CniResult {
  const family = resultFamily(confVersion);
  if (!family)
    throw cniFailure(CNI_ERR.incompatibleVersion, `unsupported CNI result version "${confVersion}"`);
  if (!isObject(raw)) bad('prevResult', 'is not an object');
  const v = raw.cniVersion;
  if (v !== undefined && v !== null && typeof v !== 'string') bad('cniVersion', 'is not a string');
  const version = (v as string | undefined) || confVersion;
  const supported = family === '04x' ? V04X : V1X;
  if (!supported.includes(version)) {
    throw cniFailure(
      CNI_ERR.decodingFailure,
      `failed to parse prevResult: result type supports [${supported.join(' ')}] but unmarshalled CNIVersion is "${version}"`,
    );
  }
  const interfaces = list(raw, 'interfaces').map((x, i) => parseInterface(x, i, family));
  const ips = list(raw, 'ips').map((x, i) => parseIpConfig(x, i, interfaces.length));
  const routes = list(raw, 'routes').map(parseRoute);
  return { cniVersion: '1.1.0', interfaces, ips, routes, dns: parseDns(raw.dns) };
}

function familyOf(cidr: string): Family {
  return cidr.includes(':') ? 6 : 4;
}

function dnsEmpty(d: CniDns): boolean {
  return !d.nameservers?.length && !d.domain && !d.search?.length && !d.options?.length;
}

/** Deep copy with every object's keys sorted (Go marshals 1.x results through a map). */
function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (!isObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]);
  return out;
}

/** The result as a JSON value in `version`'s shape (0.3.0 … 1.1.0). */
export function resultAsVersion(r: CniResult, version: string): Record<string, unknown> {
  const family = resultFamily(version);
  if (!family)
    throw cniFailure(CNI_ERR.incompatibleVersion, `cannot convert a result to CNI version "${version}"`);
  if (family === '1x') {
    const out: Record<string, unknown> = { cniVersion: version };
    if (r.interfaces.length) out.interfaces = r.interfaces;
    if (r.ips.length) out.ips = r.ips;
    if (r.routes.length) out.routes = r.routes;
    if (!dnsEmpty(r.dns)) out.dns = r.dns;
    return sortKeys(out) as Record<string, unknown>;
  }
  const out: Record<string, unknown> = { cniVersion: version };
  if (r.interfaces.length) {
    out.interfaces = r.interfaces.map((i) => {
      const o: Record<string, unknown> = { name: i.name };
      if (i.mac) o.mac = i.mac;
      if (i.sandbox) o.sandbox = i.sandbox;
      return o;
    });
  }
  if (r.ips.length) {
    out.ips = r.ips.map((ip) => {
      const o: Record<string, unknown> = { version: String(familyOf(ip.address)) };
      if (ip.interface !== undefined) o.interface = ip.interface;
      o.address = ip.address;
      if (ip.gateway) o.gateway = ip.gateway;
      return o;
    });
  }
  if (r.routes.length) out.routes = r.routes;
  out.dns = r.dns;
  return out;
}

/** The result printed as a plugin prints it (Go's MarshalIndent with 4 spaces), in `version`'s shape. */
export function encodeResult(r: CniResult, version: string): string {
  return JSON.stringify(resultAsVersion(r, version), null, 4);
}
