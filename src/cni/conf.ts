/**
 * Network configuration loading, as libcni 1.3 does it (libcni/conf.go): a conflist from bytes, a file
 * or a directory; `*.conflist` files sorted, first matching name wins, any unparsable one is an error;
 * plugin configurations added from `<dir>/<network>/*.conf` unless `loadOnlyInlinedPlugins`; then the
 * deprecated single-plugin `*.conf`/`*.json` files, up-converted to a list. Synchronous file reads
 * (a handful of small files).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { TapnetError } from '../errors.js';
import { goMarshal, goRemarshal } from './json.js';
import { decodeDns, goFields, goString } from './result.js';
import type { NetworkConfigList, PluginConf, PluginConfig } from './types.js';
import { pickVersion } from './version.js';

/** Where libcni and cnitool look for network configurations. */
export const DEFAULT_CONF_DIR = '/etc/cni/net.d';

function configError(message: string, details: Record<string, unknown> = {}, cause?: unknown): TapnetError {
  return new TapnetError('ERR_CONFIG', message, { details, ...(cause === undefined ? {} : { cause }) });
}

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw configError(`${what}: ${(e as Error).message}`, {}, e);
  }
}

/** Decode types.PluginConf from a plugin configuration (Go's typed decoding of the known fields). */
function decodePluginConf(raw: unknown): PluginConf {
  const where = 'error parsing configuration';
  try {
    const f = goFields(
      raw,
      ['cniVersion', 'name', 'type', 'capabilities', 'ipam', 'dns'],
      'types.PluginConf',
    );
    const caps: Record<string, boolean> = {};
    const rawCaps = f.get('capabilities');
    if (rawCaps !== undefined) {
      if (typeof rawCaps !== 'object' || Array.isArray(rawCaps))
        throw new Error('capabilities must be an object');
      for (const [k, v] of Object.entries(rawCaps as Record<string, unknown>)) {
        if (v === null) continue;
        if (typeof v !== 'boolean') throw new Error(`capability ${JSON.stringify(k)} must be true or false`);
        caps[k] = v;
      }
    }
    const ipam = goFields(f.get('ipam'), ['type'], 'types.IPAM');
    return {
      cniVersion: goString(f.get('cniVersion'), 'cniVersion') ?? '',
      name: goString(f.get('name'), 'name') ?? '',
      type: goString(f.get('type'), 'type') ?? '',
      capabilities: caps,
      ipam: { type: goString(ipam.get('type'), 'ipam.type') ?? '' },
      dns: decodeDns(f.get('dns')),
    };
  } catch (e) {
    throw configError(`${where}: ${(e as Error).message}`, {}, e);
  }
}

/** One plugin configuration from its bytes (NetworkPluginConfFromBytes); `type` is required. */
export function pluginConfFromBytes(bytes: Buffer): PluginConfig {
  const network = decodePluginConf(parseJson(bytes, 'error parsing configuration'));
  if (network.type === '') throw configError("error parsing configuration: missing 'type'");
  return { network, bytes };
}

/** A boolean the way libcni reads disableCheck & co: true/false, or the strings "true"/"false". */
function readBool(raw: Record<string, unknown>, key: string): boolean {
  if (!(key in raw)) return false;
  const v = raw[key];
  if (typeof v === 'boolean') return v;
  if (typeof v !== 'string')
    throw configError(`error parsing configuration list: invalid type ${typeof v} for ${key}`);
  const s = v.toLowerCase();
  if (s === 'true') return true;
  if (s === 'false') return false;
  throw configError(`error parsing configuration list: invalid value "${s}" for ${key}`);
}

/**
 * A network configuration list from its bytes (NetworkConfFromBytes). `plugins` may be absent (then
 * the list has none, and file loading adds `<dir>/<name>/*.conf`). Each inlined plugin is handed on
 * as Go re-encodes it.
 */
export function confListFromBytes(bytes: Buffer): NetworkConfigList {
  const parsed = parseJson(bytes, 'error parsing configuration list');
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    if (parsed !== null) throw configError('error parsing configuration list: not a JSON object');
  }
  const raw = (parsed ?? {}) as Record<string, unknown>;
  if (!('name' in raw)) throw configError('error parsing configuration list: no name');
  const name = raw.name;
  if (typeof name !== 'string')
    throw configError(`error parsing configuration list: invalid name type ${typeof name}`);
  let cniVersion = '';
  if ('cniVersion' in raw) {
    if (typeof raw.cniVersion !== 'string') {
      throw configError(`error parsing configuration list: invalid cniVersion type ${typeof raw.cniVersion}`);
    }
    cniVersion = raw.cniVersion;
  }
  if ('cniVersions' in raw) {
    const vs = raw.cniVersions;
    if (!Array.isArray(vs))
      throw configError(`error parsing configuration list: invalid type for cniVersions: ${typeof vs}`);
    vs.forEach((v, i) => {
      if (typeof v !== 'string') {
        throw configError(
          `error parsing configuration list: invalid type for cniVersions index ${i}: ${typeof v}`,
        );
      }
    });
    try {
      cniVersion = pickVersion(cniVersion, vs as string[]);
    } catch (e) {
      throw configError((e as Error).message, {}, e);
    }
  }
  const list: NetworkConfigList = {
    name,
    cniVersion,
    disableCheck: readBool(raw, 'disableCheck'),
    disableGC: readBool(raw, 'disableGC'),
    loadOnlyInlinedPlugins: readBool(raw, 'loadOnlyInlinedPlugins'),
    plugins: [],
    bytes,
  };
  if (!('plugins' in raw)) {
    if (list.loadOnlyInlinedPlugins) {
      throw configError(
        "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key",
      );
    }
    return list;
  }
  const plugins = raw.plugins;
  if (!Array.isArray(plugins))
    throw configError(`error parsing configuration list: invalid 'plugins' type ${typeof plugins}`);
  if (plugins.length === 0) throw configError('error parsing configuration list: no plugins in list');
  plugins.forEach((p, i) => {
    try {
      list.plugins.push(pluginConfFromBytes(Buffer.from(goMarshal(p))));
    } catch (e) {
      throw configError(`failed to parse plugin config ${i}: ${(e as Error).message}`, { index: i }, e);
    }
  });
  return list;
}

function readFile(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw configError(`error reading ${file}: ${(e as Error).message}`, { file }, e);
  }
}

/** Go's sort.Strings order (bytes), for file names. */
const byBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * The files in `dir` whose extension is one of `extensions`, sorted (libcni's ConfFiles; a missing
 * directory has none; directories are skipped, symlinks are not).
 */
export function confFiles(dir: string, extensions: readonly string[]): string[] {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw configError(`cannot read ${dir}: ${(e as Error).message}`, { dir }, e);
  }
  return entries
    .filter((d) => !d.isDirectory() && extensions.includes(extname(d.name)))
    .map((d) => d.name)
    .sort(byBytes)
    .map((n) => join(dir, n));
}

/** Plugin configurations from `<confDir>/<network>/*.conf`, in name order (NetworkPluginConfsFromFiles). */
export function pluginConfsFromDir(confDir: string, networkName: string): PluginConfig[] {
  return confFiles(join(confDir, networkName), ['.conf']).map((f) => {
    try {
      return pluginConfFromBytes(readFile(f));
    } catch (e) {
      throw configError(`${f}: ${(e as Error).message}`, { file: f }, e);
    }
  });
}

/** A conflist file, with `<dir>/<name>/*.conf` plugins appended unless loadOnlyInlinedPlugins. */
export function confListFromFile(file: string): NetworkConfigList {
  let list: NetworkConfigList;
  try {
    list = confListFromBytes(readFile(file));
  } catch (e) {
    throw configError(`${file}: ${(e as Error).message}`, { file }, e);
  }
  list.file = file;
  if (!list.loadOnlyInlinedPlugins) list.plugins.push(...pluginConfsFromDir(dirname(file), list.name));
  if (list.plugins.length === 0) throw configError(`${file}: no plugin configs found`, { file });
  return list;
}

/**
 * Up-convert a single plugin configuration to a list of one (ConfListFromConf): the list's bytes are
 * `{"cniVersion","name","plugins":[conf]}` as Go encodes them.
 */
export function confListFromConf(conf: PluginConfig): NetworkConfigList {
  const plugin = JSON.parse(goRemarshal(conf.bytes));
  const bytes = Buffer.from(
    goMarshal({ name: conf.network.name, cniVersion: conf.network.cniVersion, plugins: [plugin] }),
  );
  return confListFromBytes(bytes);
}

/**
 * Load the network named `name` from `dir` (libcni's LoadNetworkConf): the first `*.conflist` in name
 * order whose name matches, else the first `*.conf`/`*.json` single-plugin file, up-converted.
 * ERR_NOT_FOUND when none matches; ERR_CONFIG when a file on the way cannot be parsed.
 */
export function loadNetworkConf(dir: string, name: string): NetworkConfigList {
  const lists = confFiles(dir, ['.conflist']);
  for (const f of lists) {
    const list = confListFromFile(f);
    if (list.name === name) return list;
  }
  const singles = confFiles(dir, ['.conf', '.json']);
  for (const f of singles) {
    let conf: PluginConfig;
    try {
      conf = pluginConfFromBytes(readFile(f));
    } catch (e) {
      throw configError(`${f}: ${(e as Error).message}`, { file: f }, e);
    }
    if (conf.network.name === name) {
      const list = confListFromConf(conf);
      list.file = f;
      return list;
    }
  }
  const message =
    lists.length === 0 && singles.length === 0
      ? `no net configurations found in ${dir}`
      : `no net configuration with name "${name}" in ${dir}`;
  throw new TapnetError('ERR_NOT_FOUND', message, { details: { dir, name } });
}

/** The names of every network in `dir`, conflists first then single-plugin files, in load order. */
export function listNetworkNames(dir: string): string[] {
  const names: string[] = [];
  for (const f of confFiles(dir, ['.conflist'])) {
    const raw = parseJson(readFile(f), f) as { name?: unknown };
    if (typeof raw?.name === 'string' && !names.includes(raw.name)) names.push(raw.name);
  }
  for (const f of confFiles(dir, ['.conf', '.json'])) {
    const raw = parseJson(readFile(f), f) as { name?: unknown };
    if (typeof raw?.name === 'string' && !names.includes(raw.name)) names.push(raw.name);
  }
  return names;
}

/**
 * Insert values into a plugin configuration (libcni's InjectConf): decode as a map, set the keys,
 * re-encode as Go does, and re-parse. Values must not be undefined or null.
 */
export function injectConf(conf: PluginConfig, values: Record<string, unknown>): PluginConfig {
  const map = JSON.parse(conf.bytes.toString('utf8')) as Record<string, unknown>;
  for (const [k, v] of Object.entries(values)) {
    if (k === '') throw configError('keys cannot be empty');
    if (v === undefined || v === null) throw configError(`key '${k}' value must not be nil`);
    map[k] = v;
  }
  return pluginConfFromBytes(Buffer.from(goMarshal(map)));
}
