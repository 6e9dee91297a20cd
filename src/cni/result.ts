/**
 * Results from and to JSON, as Go's libcni decodes and encodes them: each version's typed structure
 * (unknown fields dropped, field names matched case-insensitively, wrong types rejected, addresses
 * canonical) and each version's encoder (field order, omitempty, the 1.x result's sorted keys). Pure.
 */
import { formatIp, parseIp } from '../ip.js';
import { CNI_ERROR, CniError } from './errors.js';
import { type GoStruct, goMarshal, goRemarshal, goStruct } from './json.js';
import type {
  CniResult,
  Dns,
  Interface,
  Interface040,
  IpConfig,
  IpConfig020,
  IpConfig040,
  Result020,
  Result040,
  Result100,
  Route,
} from './types.js';

/** A decoding failure (spec code 6), as libcni reports results it cannot parse. */
export function decodeError(msg: string, details: Record<string, unknown> = {}): CniError {
  return new CniError(CNI_ERROR.DECODING_FAILURE, msg, '', { details });
}

type Obj = Record<string, unknown>;

/**
 * The members of a JSON object that fill the given Go struct fields: exact name or, as Go does,
 * case-insensitive; the last matching key wins; null leaves the field unset.
 */
export function goFields(v: unknown, names: readonly string[], where: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (v === null || v === undefined) return out;
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw decodeError(`json: cannot unmarshal ${jsonKind(v)} into Go value of type ${where}`);
  }
  const lower = names.map((n) => n.toLowerCase());
  for (const [k, x] of Object.entries(v as Obj)) {
    let i = names.indexOf(k);
    if (i < 0) i = lower.indexOf(k.toLowerCase());
    if (i < 0) continue;
    if (x === null) out.delete(names[i]!);
    else out.set(names[i]!, x);
  }
  return out;
}

function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  return typeof v === 'object' ? 'object' : typeof v;
}

function typeError(v: unknown, where: string, goType: string): CniError {
  return decodeError(`json: cannot unmarshal ${jsonKind(v)} into Go struct field ${where} of type ${goType}`);
}

/** A Go `string` field: a JSON string, or absent. */
export function goString(v: unknown, where: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw typeError(v, where, 'string');
  return v;
}

/** A Go `int` field: a JSON integer, or absent. */
export function goInt(v: unknown, where: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw typeError(v, where, 'int');
  return v;
}

/** A Go `[]string` field: an array of strings, or absent. */
export function goStrings(v: unknown, where: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw typeError(v, where, '[]string');
  return v.map((x) => {
    if (typeof x !== 'string') throw typeError(x, where, 'string');
    return x;
  });
}

function goArray<T>(v: unknown, where: string, each: (x: unknown) => T): T[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw typeError(v, where, 'slice');
  return v.map((x) => {
    if (x === null) throw decodeError(`null element in ${where}`);
    return each(x);
  });
}

/** Text of an address as Go's net.IP prints it (IPv4-mapped IPv6 as dotted quad). */
function goIpText(family: 4 | 6, value: bigint): string {
  if (family === 6 && value >> 32n === 0xffffn) return formatIp(4, value & 0xffffffffn);
  return formatIp(family, value);
}

/** An address as Go's net.IP decodes and re-encodes it; "" is no address. */
export function goIp(v: unknown, where: string): string | undefined {
  const s = goString(v, where);
  if (s === undefined || s === '') return undefined;
  try {
    const ip = parseIp(s);
    return goIpText(ip.family, ip.value);
  } catch {
    throw decodeError(`invalid IP address: ${s}`, { field: where });
  }
}

/** `addr/prefix` as Go's types.IPNet decodes (net.ParseCIDR, address kept) and re-encodes it. */
export function goIpNet(v: unknown, where: string): string {
  if (v === undefined) throw decodeError(`missing ${where}`);
  if (typeof v !== 'string') throw typeError(v, where, 'types.IPNet');
  const slash = v.indexOf('/');
  const bad = (): CniError => decodeError(`invalid CIDR address: ${v}`, { field: where });
  if (slash < 0) throw bad();
  let ip: ReturnType<typeof parseIp>;
  try {
    ip = parseIp(v.slice(0, slash));
  } catch {
    throw bad();
  }
  const p = v.slice(slash + 1);
  if (!/^\d+$/.test(p) || Number(p) > (ip.family === 4 ? 32 : 128)) throw bad();
  let prefix = Number(p);
  if (ip.family === 6 && ip.value >> 32n === 0xffffn) prefix = Math.max(0, prefix - 96); // networkNumberAndMask
  return `${goIpText(ip.family, ip.value)}/${prefix}`;
}

function set<T extends object, K extends keyof T>(o: T, k: K, v: T[K] | undefined): void {
  if (v !== undefined) o[k] = v;
}

/** Decode types.DNS (empty lists and strings left out). */
export function decodeDns(v: unknown, where = 'DNS'): Dns {
  const f = goFields(v, ['nameservers', 'domain', 'search', 'options'], 'types.DNS');
  const d: Dns = {};
  const ns = goStrings(f.get('nameservers'), `${where}.nameservers`);
  if (ns?.length) d.nameservers = ns;
  const domain = goString(f.get('domain'), `${where}.domain`);
  if (domain) d.domain = domain;
  const search = goStrings(f.get('search'), `${where}.search`);
  if (search?.length) d.search = search;
  const options = goStrings(f.get('options'), `${where}.options`);
  if (options?.length) d.options = options;
  return d;
}

/** DNS.IsEmpty(): no nameservers, domain, search or options. */
export function isDnsEmpty(d: Dns | undefined): boolean {
  return !d || (!d.nameservers?.length && !d.domain && !d.search?.length && !d.options?.length);
}

function decodeRoute(v: unknown): Route {
  const f = goFields(v, ['dst', 'gw', 'mtu', 'advmss', 'priority', 'table', 'scope'], 'types.Route');
  const r: Route = { dst: goIpNet(f.get('dst'), 'route.dst') };
  set(r, 'gw', goIp(f.get('gw'), 'route.gw'));
  for (const k of ['mtu', 'advmss', 'priority'] as const) {
    const n = goInt(f.get(k), `route.${k}`);
    if (n) r[k] = n;
  }
  set(r, 'table', goInt(f.get('table'), 'route.table'));
  set(r, 'scope', goInt(f.get('scope'), 'route.scope'));
  return r;
}

function decodeIpConfig020(v: unknown, where: string): IpConfig020 {
  const f = goFields(v, ['ip', 'gateway', 'routes'], 'types020.IPConfig');
  const c: IpConfig020 = { ip: goIpNet(f.get('ip'), `${where}.ip`) };
  set(c, 'gateway', goIp(f.get('gateway'), `${where}.gateway`));
  const routes = goArray(f.get('routes'), `${where}.routes`, decodeRoute);
  if (routes?.length) c.routes = routes;
  return c;
}

function decodeInterface(v: unknown, full: boolean): Interface {
  const names = full ? ['name', 'mac', 'mtu', 'sandbox', 'socketPath', 'pciID'] : ['name', 'mac', 'sandbox'];
  const f = goFields(v, names, 'Interface');
  const i: Interface = { name: goString(f.get('name'), 'Interface.name') ?? '' };
  const mac = goString(f.get('mac'), 'Interface.mac');
  if (mac) i.mac = mac;
  if (full) {
    const mtu = goInt(f.get('mtu'), 'Interface.mtu');
    if (mtu) i.mtu = mtu;
  }
  const sandbox = goString(f.get('sandbox'), 'Interface.sandbox');
  if (sandbox) i.sandbox = sandbox;
  if (full) {
    const sp = goString(f.get('socketPath'), 'Interface.socketPath');
    if (sp) i.socketPath = sp;
    const pci = goString(f.get('pciID'), 'Interface.pciID');
    if (pci) i.pciID = pci;
  }
  return i;
}

function decodeIpConfig(v: unknown, withVersion: boolean): IpConfig040 | IpConfig {
  const names = withVersion
    ? ['version', 'interface', 'address', 'gateway']
    : ['interface', 'address', 'gateway'];
  const f = goFields(v, names, 'IPConfig');
  const version = withVersion ? (goString(f.get('version'), 'IPConfig.version') ?? '') : undefined;
  const c: IpConfig040 | IpConfig = version === undefined ? ({} as IpConfig) : ({ version } as IpConfig040);
  set(c, 'interface', goInt(f.get('interface'), 'IPConfig.interface'));
  c.address = goIpNet(f.get('address'), 'IPConfig.address');
  set(c, 'gateway', goIp(f.get('gateway'), 'IPConfig.gateway'));
  return c;
}

const CREATORS: ReadonlyArray<{ versions: readonly string[]; family: '020' | '040' | '100' }> = [
  { versions: ['', '0.1.0', '0.2.0'], family: '020' },
  { versions: ['0.3.0', '0.3.1', '0.4.0'], family: '040' },
  { versions: ['1.0.0', '1.1.0'], family: '100' },
];

/** True when `version` names a result type this library can create. */
export function isResultVersion(version: string): boolean {
  return CREATORS.some((c) => c.versions.includes(version));
}

/**
 * Decode a result of the given version (libcni's create.Create): the JSON must decode into that
 * version's type and declare a cniVersion that type supports.
 */
export function createResult(version: string, raw: unknown): CniResult {
  const creator = CREATORS.find((c) => c.versions.includes(version));
  if (!creator)
    throw new CniError(CNI_ERROR.INCOMPATIBLE_CNI_VERSION, `unsupported CNI result version "${version}"`);
  const top = ['cniVersion', 'interfaces', 'ips', 'routes', 'dns'];
  const f = goFields(raw, creator.family === '020' ? ['cniVersion', 'ip4', 'ip6', 'dns'] : top, 'Result');
  let cniVersion = goString(f.get('cniVersion'), 'Result.cniVersion') ?? '';
  if (!creator.versions.includes(cniVersion)) {
    throw decodeError(
      `result type supports [${creator.versions.join(' ')}] but unmarshalled CNIVersion is "${cniVersion}"`,
    );
  }
  if (creator.family === '020') {
    if (cniVersion === '') cniVersion = '0.1.0';
    const r: Result020 = { cniVersion: cniVersion as Result020['cniVersion'], dns: {} };
    if (f.has('ip4')) r.ip4 = decodeIpConfig020(f.get('ip4'), 'ip4');
    if (f.has('ip6')) r.ip6 = decodeIpConfig020(f.get('ip6'), 'ip6');
    r.dns = decodeDns(f.get('dns'));
    return r;
  }
  const full = creator.family === '100';
  const interfaces = goArray(f.get('interfaces'), 'Result.interfaces', (x) => decodeInterface(x, full));
  const ips = goArray(f.get('ips'), 'Result.ips', (x) => decodeIpConfig(x, !full));
  const routes = goArray(f.get('routes'), 'Result.routes', decodeRoute);
  const dns = decodeDns(f.get('dns'));
  const r = { cniVersion } as Result040 | Result100;
  if (interfaces?.length) r.interfaces = interfaces;
  if (ips?.length) (r as Result100).ips = ips as IpConfig[];
  if (routes?.length) r.routes = routes;
  if (!full || !isDnsEmpty(dns)) r.dns = dns;
  return r;
}

/** The cniVersion a configuration or result declares; "" and absent mean 0.1.0 (create.DecodeVersion). */
export function decodeVersion(raw: unknown): string {
  const f = goFields(raw, ['cniVersion'], 'struct { CNIVersion string }');
  const v = goString(f.get('cniVersion'), 'cniVersion');
  return v ? v : '0.1.0';
}

/** Decode a result from JSON text, its version taken from its own cniVersion (create.CreateFromBytes). */
export function createResultFromJSON(text: string): CniResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw decodeError(`decoding version from network config: ${(e as Error).message}`);
  }
  return createResult(decodeVersion(raw), raw);
}

function routeGo(r: Route): GoStruct {
  return goStruct(
    ['dst', r.dst],
    ['gw', r.gw],
    ['mtu', r.mtu || undefined],
    ['advmss', r.advmss || undefined],
    ['priority', r.priority || undefined],
    ['table', r.table],
    ['scope', r.scope],
  );
}

function dnsGo(d: Dns | undefined): GoStruct {
  return goStruct(
    ['nameservers', d?.nameservers?.length ? d.nameservers : undefined],
    ['domain', d?.domain || undefined],
    ['search', d?.search?.length ? d.search : undefined],
    ['options', d?.options?.length ? d.options : undefined],
  );
}

const nonEmpty = <T>(a: T[] | undefined): T[] | undefined => (a?.length ? a : undefined);

/** The Go value a result marshals as (struct order for 0.x; sorted map for 1.x, by its MarshalJSON). */
export function resultToGo(r: CniResult): unknown {
  if ('ip4' in r || 'ip6' in r || r.cniVersion === '0.1.0' || r.cniVersion === '0.2.0') {
    const ip020 = (c: IpConfig020 | undefined) =>
      c && goStruct(['ip', c.ip], ['gateway', c.gateway], ['routes', nonEmpty(c.routes)?.map(routeGo)]);
    const x = r as Result020;
    return goStruct(
      ['cniVersion', x.cniVersion || undefined],
      ['ip4', ip020(x.ip4)],
      ['ip6', ip020(x.ip6)],
      ['dns', dnsGo(x.dns)],
    );
  }
  if (r.cniVersion === '1.0.0' || r.cniVersion === '1.1.0') {
    // Result100.MarshalJSON marshals the struct, drops an empty dns, and re-marshals as a map.
    const x = r as Result100;
    return JSON.parse(
      goMarshal(
        goStruct(
          ['cniVersion', x.cniVersion],
          [
            'interfaces',
            nonEmpty(x.interfaces)?.map((i) =>
              goStruct(
                ['name', i.name],
                ['mac', i.mac || undefined],
                ['mtu', i.mtu || undefined],
                ['sandbox', i.sandbox || undefined],
                ['socketPath', i.socketPath || undefined],
                ['pciID', i.pciID || undefined],
              ),
            ),
          ],
          [
            'ips',
            nonEmpty(x.ips)?.map((c) =>
              goStruct(['interface', c.interface], ['address', c.address], ['gateway', c.gateway]),
            ),
          ],
          ['routes', nonEmpty(x.routes)?.map(routeGo)],
          ['dns', isDnsEmpty(x.dns) ? undefined : dnsGo(x.dns)],
        ),
      ),
    );
  }
  const x = r as Result040;
  return goStruct(
    ['cniVersion', x.cniVersion || undefined],
    [
      'interfaces',
      nonEmpty(x.interfaces)?.map((i: Interface040) =>
        goStruct(['name', i.name], ['mac', i.mac || undefined], ['sandbox', i.sandbox || undefined]),
      ),
    ],
    [
      'ips',
      nonEmpty(x.ips)?.map((c) =>
        goStruct(
          ['version', c.version],
          ['interface', c.interface],
          ['address', c.address],
          ['gateway', c.gateway],
        ),
      ),
    ],
    ['routes', nonEmpty(x.routes)?.map(routeGo)],
    ['dns', dnsGo(x.dns)],
  );
}

/** A result as Go's json.Marshal writes it (compact). */
export function marshalResult(r: CniResult): string {
  return goMarshal(resultToGo(r));
}

/** A result as a JSON map (json.Marshal, then unmarshal into map[string]interface{}): the cache's form. */
export function resultToMap(r: CniResult): Record<string, unknown> {
  return JSON.parse(goRemarshal(marshalResult(r))) as Record<string, unknown>;
}
