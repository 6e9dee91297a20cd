/**
 * Loading the configuration: a file (YAML or JSON; `--config`, `TAPNET_CONFIG`, or the first of
 * DEFAULT_CONFIG_FILES that exists), then `TAPNET_*` environment variables, then flags — later wins.
 * The merge is validated by one zod schema; errors name the key, the bad value and where it came from.
 * Every value's origin is kept for `tapnet config --print`.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { z } from 'zod';
import { TapnetError } from '../errors.js';
import { type ResolvedConfig, resolveConfig } from '../manager/config.js';
import { DEFAULT_CONFIG_FILES, managerPart, type TapnetConfig, tapnetConfigSchema } from './schema.js';
import { parseYaml } from './yaml.js';

/** One value set on the command line. `key` is a dotted path (`api.socket`); `flag` names it (`--socket`). */
export interface FlagValue {
  key: string;
  value: unknown;
  flag: string;
}

export interface LoadOptions {
  /** `--config FILE`. */
  configFile?: string;
  /** Values from flags, highest precedence. */
  flags?: FlagValue[];
  env?: NodeJS.ProcessEnv;
  /** Files tried when none is named (default DEFAULT_CONFIG_FILES). */
  defaultFiles?: readonly string[];
}

export interface LoadedConfig {
  /** Validated, defaults filled in. */
  config: TapnetConfig;
  /** The manager's networks with every derived value (gateway, bridge, MAC) resolved and checked. */
  resolved: ResolvedConfig;
  /** The file read, if any. */
  file?: string;
  /** Origin of every value not left at its default: dotted path → `file PATH`, `env NAME`, `flag --x`. */
  sources: Map<string, string>;
  /** How to load it again (SIGHUP). */
  options: LoadOptions;
}

/** Environment variables for nested keys; top-level scalar keys map by name (stateDir → TAPNET_STATE_DIR). */
const NESTED_ENV: Record<string, string> = {
  TAPNET_SOCKET: 'api.socket',
  TAPNET_API_TCP: 'api.tcp',
  TAPNET_API_TOKEN: 'api.token',
  TAPNET_API_TOKEN_FILE: 'api.tokenFile',
  TAPNET_LOG_LEVEL: 'log.level',
  TAPNET_KEEP_NETWORKS_ON_EXIT: 'daemon.keepNetworksOnExit',
  TAPNET_SHUTDOWN_TIMEOUT_MS: 'daemon.shutdownTimeoutMs',
};

/** Keys whose values are secrets: shown as `***`. */
const SECRET_KEYS = new Set(['api.token']);

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

type Kind = 'string' | 'number' | 'boolean' | 'json';

interface ZodLike {
  _zod: { def: { type: string; innerType?: ZodLike; shape?: Record<string, ZodLike> } };
}

function kindOf(s: ZodLike): Kind {
  let t: ZodLike = s;
  while (t._zod.def.innerType) t = t._zod.def.innerType;
  const type = t._zod.def.type;
  if (type === 'number' || type === 'int' || type === 'bigint') return 'number';
  if (type === 'boolean') return 'boolean';
  if (type === 'string' || type === 'enum' || type === 'literal') return 'string';
  return 'json';
}

function shapeOf(s: ZodLike): Record<string, ZodLike> {
  let t: ZodLike = s;
  while (!t._zod.def.shape && t._zod.def.innerType) t = t._zod.def.innerType;
  return t._zod.def.shape ?? {};
}

/** Every environment variable tapnet reads, with its dotted key and kind. */
export function envVariables(): { name: string; key: string; kind: Kind }[] {
  const top = shapeOf(tapnetConfigSchema as unknown as ZodLike);
  const out: { name: string; key: string; kind: Kind }[] = [];
  for (const [k, s] of Object.entries(top)) {
    if (k === 'api' || k === 'log' || k === 'daemon') continue;
    out.push({ name: `TAPNET_${snake(k)}`, key: k, kind: kindOf(s) });
  }
  for (const [name, key] of Object.entries(NESTED_ENV)) {
    const [a, b] = key.split('.') as [string, string];
    out.push({ name, key, kind: kindOf(shapeOf(top[a]!)[b]!) });
  }
  return out;
}

function coerce(raw: string, kind: Kind): unknown {
  if (kind === 'number' && /^-?\d+(\.\d+)?$/.test(raw)) return Number(raw);
  if (kind === 'boolean') {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
  }
  if (kind === 'json') {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return raw;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function setPath(root: Obj, key: string, value: unknown): void {
  const parts = key.split('.');
  let o = root;
  for (const p of parts.slice(0, -1)) {
    if (!isObj(o[p])) o[p] = {};
    o = o[p] as Obj;
  }
  o[parts.at(-1)!] = value;
}

function getPath(root: unknown, path: readonly PropertyKey[]): unknown {
  let o = root;
  for (const p of path) {
    if (!isObj(o) && !Array.isArray(o)) return undefined;
    o = (o as Obj)[p as string];
  }
  return o;
}

/** Record `source` for every leaf under `value` at `prefix` (arrays are leaves). */
function recordLeaves(sources: Map<string, string>, prefix: string, value: unknown, source: string): void {
  for (const k of [...sources.keys()]) if (k === prefix || k.startsWith(`${prefix}.`)) sources.delete(k);
  if (isObj(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value))
      recordLeaves(sources, prefix ? `${prefix}.${k}` : k, v, source);
  } else if (prefix) sources.set(prefix, source);
}

/** The origin of a dotted key: its own, an ancestor's, or `default`. */
export function sourceOf(sources: Map<string, string>, key: string): string {
  for (let k = key; k; k = k.includes('.') ? k.slice(0, k.lastIndexOf('.')) : '') {
    const s = sources.get(k);
    if (s) return s;
  }
  return 'default';
}

function readConfigFile(file: string): Obj {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TapnetError('ERR_CONFIG', `cannot read config file ${file}: ${(e as Error).message}`, {
      cause: e,
      details: { file },
    });
  }
  const json = /\.json$/i.test(file) || (!/\.ya?ml$/i.test(file) && text.trimStart().startsWith('{'));
  let v: unknown;
  if (json) {
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new TapnetError('ERR_CONFIG', `config file ${file} is not valid JSON: ${(e as Error).message}`, {
        cause: e,
        details: { file },
      });
    }
  } else v = parseYaml(text, file);
  if (v === null) return {};
  if (!isObj(v))
    throw new TapnetError('ERR_CONFIG', `config file ${file} must hold a mapping of keys to values`, {
      details: { file },
    });
  return v;
}

function show(key: string, v: unknown): string {
  if (SECRET_KEYS.has(key)) return '***';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function zodError(e: z.ZodError, merged: Obj, sources: Map<string, string>): TapnetError {
  const parts: string[] = [];
  let first: Record<string, unknown> | undefined;
  for (const i of e.issues) {
    const keys = i.code === 'unrecognized_keys' ? i.keys.map((k) => [...i.path, k]) : [i.path];
    for (const path of keys) {
      const key = path.map(String).join('.') || '(top level)';
      const value = getPath(merged, path);
      const source = sourceOf(sources, key);
      const what = i.code === 'unrecognized_keys' ? 'unknown key' : i.message;
      const shown =
        value === undefined
          ? ''
          : ` (value ${show(key, value)}${source === 'default' ? '' : `, from ${source}`})`;
      parts.push(`${key}: ${what}${shown}`);
      first ??= { key, value: SECRET_KEYS.has(key) ? '***' : value, source };
    }
  }
  return new TapnetError('ERR_CONFIG', `invalid configuration: ${parts.join('; ')}`, {
    details: first ?? {},
  });
}

/**
 * Load, merge and validate the configuration. Throws ERR_CONFIG naming the file (and line, for YAML),
 * or the key, the value and its origin.
 */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const sources = new Map<string, string>();
  const explicit = options.configFile ?? (env.TAPNET_CONFIG || undefined);
  const file = explicit ?? (options.defaultFiles ?? DEFAULT_CONFIG_FILES).find((f) => existsSync(f));
  const merged: Obj = file ? readConfigFile(file) : {};
  if (file) recordLeaves(sources, '', merged, `file ${file}`);
  for (const { name, key, kind } of envVariables()) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const value = coerce(raw, kind);
    setPath(merged, key, value);
    recordLeaves(sources, key, value, `env ${name}`);
  }
  for (const f of options.flags ?? []) {
    if (f.value === undefined) continue;
    setPath(merged, f.key, f.value);
    recordLeaves(sources, f.key, f.value, `flag ${f.flag}`);
  }
  const parsed = tapnetConfigSchema.safeParse(merged);
  if (!parsed.success) throw zodError(parsed.error, merged, sources);
  const resolved = resolveConfig(managerPart(parsed.data));
  return { config: parsed.data, resolved, ...(file ? { file } : {}), sources, options };
}

/** Load the configuration again from the same places (SIGHUP): the file is re-read, flags kept. */
export function reloadConfig(previous: LoadedConfig): LoadedConfig {
  return loadConfig(previous.options);
}

/** One line of `tapnet config --print`. */
export interface ConfigEntry {
  key: string;
  /** The value (secrets as `***`). */
  value: unknown;
  /** `default`, `derived`, `file PATH`, `env NAME` or `flag --x`. */
  source: string;
}

function leaves(prefix: string, v: unknown, out: [string, unknown][]): void {
  if (isObj(v) && Object.keys(v).length) {
    for (const [k, x] of Object.entries(v)) leaves(prefix ? `${prefix}.${k}` : k, x, out);
  } else out.push([prefix, v]);
}

/**
 * The effective configuration, one entry per value, with its origin. Network values tapnet derives
 * (bridge name and MAC, gateways, the built-in default network) are listed with source `derived`.
 */
export function describeConfig(loaded: LoadedConfig): ConfigEntry[] {
  const flat: [string, unknown][] = [];
  const { networks: _n, ...rest } = loaded.config;
  leaves('', rest, flat);
  const out: ConfigEntry[] = flat.map(([key, value]) => ({
    key,
    value: SECRET_KEYS.has(key) && value !== undefined ? '***' : value,
    source: sourceOf(loaded.sources, key),
  }));
  for (const net of loaded.resolved.networks.values()) {
    const configured = Object.hasOwn(loaded.config.networks, net.name);
    for (const [k, value] of Object.entries(net)) {
      if (k === 'name' || value === undefined) continue;
      const key = `networks.${net.name}.${k}`;
      const given = configured && getPath(loaded.config.networks, [net.name, k]) !== undefined;
      out.push({ key, value, source: given ? sourceOf(loaded.sources, key) : 'derived' });
    }
  }
  return out.sort((a, b) => a.key.localeCompare(b.key));
}

/**
 * The API bearer token: api.token, or the first line of api.tokenFile. undefined when neither is set.
 * ERR_CONFIG when the file cannot be read or holds less than 16 characters.
 */
export function readApiToken(cfg: TapnetConfig): string | undefined {
  if (cfg.api.token) return cfg.api.token;
  if (!cfg.api.tokenFile) return undefined;
  let text: string;
  try {
    text = readFileSync(cfg.api.tokenFile, 'utf8');
  } catch (e) {
    throw new TapnetError(
      'ERR_CONFIG',
      `api.tokenFile: cannot read ${cfg.api.tokenFile}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const token = text.split('\n')[0]!.trim();
  if (token.length < 16)
    throw new TapnetError('ERR_CONFIG', `api.tokenFile: ${cfg.api.tokenFile} holds less than 16 characters`);
  return token;
}
