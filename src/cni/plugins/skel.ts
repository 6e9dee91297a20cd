/**
 * The plugin side of the CNI protocol for tapnet's own plugins, with the behaviour of Go's pkg/skel
 * (what every reference plugin is built on): environment variables required per verb and validated the
 * same way, the network config checked (name, cniVersion) before the plugin runs, CHECK only from 0.4.0,
 * STATUS and GC only from 1.1.0, VERSION answered without reading stdin, and every failure printed as
 * the spec's error object `{cniVersion, code, msg, details}` with a non-zero exit code.
 *
 * The same `dispatch` serves the in-process path (libcni calls it directly) and the executable (main.ts),
 * so both behave identically. Imports only errors: it stays cheap to load.
 */
import { statSync } from 'node:fs';
import { type ErrorCode, isTapnetError, TapnetError } from '../../errors.js';

/** The spec's well-known error codes (SPEC.md, "Error"), plus Go's ErrInvalidNetNS (8) and ErrInternal (999). */
export const CNI_ERR = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodingFailure: 6,
  invalidNetworkConfig: 7,
  invalidNetns: 8,
  tryAgainLater: 11,
  pluginNotAvailable: 50,
  limitedConnectivity: 51,
  internal: 999,
} as const;

/** The newest spec version; what VERSION reports as its own `cniVersion`. */
export const CNI_SPEC_VERSION = '1.1.0';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/** What a plugin function gets: the CNI_* variables and the parsed config (Go's skel.CmdArgs). */
export interface CmdArgs {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as given (`K=V;K=V`). */
  args: string;
  path: string;
  netnsOverride: string;
  stdin: Buffer;
  /** The network config (stdin) as a JSON object. */
  conf: Record<string, unknown>;
  /** Its cniVersion ("0.1.0" when absent, as Go decodes it). */
  cniVersion: string;
  /** The whole environment the plugin was given. */
  env: Readonly<Record<string, string | undefined>>;
}

/** A plugin's functions; ADD returns the JSON text to print. A missing STATUS/GC succeeds (as in skel). */
export interface PluginFuncs {
  add(a: CmdArgs): Promise<string> | string;
  del(a: CmdArgs): Promise<void> | void;
  check(a: CmdArgs): Promise<void> | void;
  status?(a: CmdArgs): Promise<void> | void;
  gc?(a: CmdArgs): Promise<void> | void;
}

export interface PluginInfo {
  supportedVersions: readonly string[];
}

/** What the executable would have printed and its exit code. */
export interface PluginOutput {
  stdout: Buffer;
  exitCode: number;
}

/** tapnet's code for a CNI code, when the caller names none. */
function tapnetCodeFor(cniCode: number): ErrorCode {
  if (cniCode === CNI_ERR.unknownContainer) return 'ERR_NOT_FOUND';
  if (cniCode === CNI_ERR.invalidNetns) return 'ERR_CONFLICT';
  if (cniCode === CNI_ERR.pluginNotAvailable || cniCode === CNI_ERR.limitedConnectivity) {
    return 'ERR_UNSUPPORTED_PLATFORM';
  }
  return cniCode < 100 ? 'ERR_INVALID_ARGUMENT' : 'ERR_INTERNAL';
}

/**
 * A failure that carries its CNI error code (`details.cniCode`) and the spec's `details` text
 * (`details.cniDetails`). Plain TapnetErrors without one are reported as code 999 (internal).
 */
export function cniFailure(
  cniCode: number,
  msg: string,
  cniDetails = '',
  cause?: unknown,
  code: ErrorCode = tapnetCodeFor(cniCode),
): TapnetError {
  return new TapnetError(code, msg, { cause, details: { cniCode, cniDetails } });
}

/** The CNI code and texts for any thrown value. */
export function toCniError(e: unknown): { code: number; msg: string; details: string } {
  if (isTapnetError(e)) {
    const c = e.details.cniCode;
    if (typeof c === 'number') {
      const d = e.details.cniDetails;
      return { code: c, msg: e.message, details: typeof d === 'string' ? d : '' };
    }
    const parts: string[] = [e.code];
    if (e.syscall) parts.push(`syscall ${e.syscall}`);
    if (e.errno) parts.push(`errno ${e.errno}`);
    if (e.extack) parts.push(`kernel: ${e.extack}`);
    return { code: CNI_ERR.internal, msg: e.message, details: parts.join('; ') };
  }
  return { code: CNI_ERR.internal, msg: e instanceof Error ? e.message : String(e), details: '' };
}

/** The spec's error object as a plugin prints it (indented by 4, like Go's skel). */
export function encodeCniError(cniVersion: string, code: number, msg: string, details = ''): string {
  const o: Record<string, unknown> = { cniVersion, code, msg };
  if (details) o.details = details;
  return JSON.stringify(o, null, 4);
}

// libcni's utils: container IDs and network names are [a-zA-Z0-9][a-zA-Z0-9_.-]*.
const CNI_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const IFNAME_MAX = 15;

/** Go's utils.ValidateInterfaceName: non-empty, ≤ 15 bytes, not `.`/`..`, no `/`, `:` or white space. */
export function validateCniIfname(name: string): void {
  if (name.length === 0) throw cniFailure(CNI_ERR.invalidEnvironment, 'interface name is empty');
  if (Buffer.byteLength(name) > IFNAME_MAX) {
    throw cniFailure(
      CNI_ERR.invalidEnvironment,
      'interface name is too long',
      `interface name should be less than ${IFNAME_MAX + 1} characters`,
    );
  }
  if (name === '.' || name === '..')
    throw cniFailure(CNI_ERR.invalidEnvironment, 'interface name is . or ..');
  if (/[/:\s]/u.test(name)) {
    throw cniFailure(CNI_ERR.invalidEnvironment, 'interface name contains / or : or whitespace characters');
  }
}

function validateContainerId(id: string): void {
  if (!CNI_NAME_RE.test(id))
    throw cniFailure(CNI_ERR.invalidEnvironment, 'invalid characters in containerID', id);
}

type Req = Partial<Record<CniCommand, boolean>>;
const ALL: Req = { ADD: true, CHECK: true, DEL: true, GC: true, STATUS: true };
const ATTACH: Req = { ADD: true, CHECK: true, DEL: true };
/** skel's table, in skel's order: which variables each verb requires, and their validators. */
const VARS: { name: string; req: Req; validate?: (v: string) => void }[] = [
  { name: 'CNI_COMMAND', req: ALL },
  { name: 'CNI_CONTAINERID', req: ATTACH, validate: validateContainerId },
  { name: 'CNI_NETNS', req: { ADD: true, CHECK: true } },
  { name: 'CNI_IFNAME', req: ATTACH, validate: validateCniIfname },
  { name: 'CNI_ARGS', req: {} },
  { name: 'CNI_PATH', req: ALL },
  { name: 'CNI_NETNS_OVERRIDE', req: {} },
];

/** Go's version.ParsePrevResult-compatible version parser ("" is 0.1.0; up to three numeric parts). */
export function parseCniVersion(v: string): [number, number, number] {
  if (v === '') return [0, 1, 0];
  const parts = v.split('.');
  if (parts.length >= 4) throw cniFailure(CNI_ERR.decodingFailure, `invalid version "${v}": too many parts`);
  const nums = parts.map((p, i) => {
    if (!/^[+-]?\d+$/.test(p)) {
      const which = ['major', 'minor', 'micro'][i];
      throw cniFailure(CNI_ERR.decodingFailure, `failed to convert ${which} version part "${p}"`);
    }
    return Number(p);
  });
  return [nums[0] ?? 0, nums[1] ?? 0, nums[2] ?? 0];
}

/** a ≥ b as CNI versions. */
export function versionAtLeast(a: string, b: string): boolean {
  const x = parseCniVersion(a);
  const y = parseCniVersion(b);
  for (let i = 0; i < 3; i++) if (x[i]! !== y[i]!) return x[i]! > y[i]!;
  return true;
}

function decodeConf(stdin: Buffer): Record<string, unknown> {
  let conf: unknown;
  try {
    conf = JSON.parse(stdin.toString('utf8'));
  } catch (e) {
    throw cniFailure(CNI_ERR.decodingFailure, `error unmarshall network config: ${(e as Error).message}`);
  }
  if (conf === null) conf = {};
  if (typeof conf !== 'object' || Array.isArray(conf)) {
    throw cniFailure(CNI_ERR.decodingFailure, 'error unmarshall network config: not a JSON object');
  }
  const o = conf as Record<string, unknown>;
  if (o.name !== undefined && o.name !== null && typeof o.name !== 'string') {
    throw cniFailure(CNI_ERR.decodingFailure, 'error unmarshall network config: "name" is not a string');
  }
  if (!o.name) throw cniFailure(CNI_ERR.invalidNetworkConfig, 'missing network name');
  if (!CNI_NAME_RE.test(o.name as string)) {
    throw cniFailure(
      CNI_ERR.invalidNetworkConfig,
      'invalid characters found in network name',
      o.name as string,
    );
  }
  if (o.cniVersion !== undefined && o.cniVersion !== null && typeof o.cniVersion !== 'string') {
    throw cniFailure(
      CNI_ERR.decodingFailure,
      'decoding version from network config: "cniVersion" is not a string',
    );
  }
  return o;
}

/** True when `path` is the calling thread's own network namespace (skel's ns.CheckNetNS). */
function isOwnNetns(path: string): boolean {
  try {
    const a = statSync(path);
    const b = statSync('/proc/thread-self/ns/net');
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/** The version to put in an error object: the config's when it has one, else the newest. */
function errorVersion(conf: Record<string, unknown> | undefined, stdin: Buffer): string {
  let v = conf?.cniVersion;
  if (conf === undefined && stdin.length > 0) {
    try {
      v = (JSON.parse(stdin.toString('utf8')) as { cniVersion?: unknown } | null)?.cniVersion;
    } catch {}
  }
  return typeof v === 'string' && v !== '' ? v : CNI_SPEC_VERSION;
}

/**
 * Run one CNI command the way a skel-based plugin executable would: returns what it would print on stdout
 * and its exit code. Never throws.
 */
export async function dispatch(
  command: string,
  env: Readonly<Record<string, string | undefined>>,
  stdin: Buffer,
  funcs: PluginFuncs,
  info: PluginInfo,
): Promise<PluginOutput> {
  let conf: Record<string, unknown> | undefined;
  try {
    const out = await dispatchOrThrow(command, env, stdin, funcs, info, (c) => {
      conf = c;
    });
    return { stdout: Buffer.from(out), exitCode: 0 };
  } catch (e) {
    const { code, msg, details } = toCniError(e);
    return {
      stdout: Buffer.from(encodeCniError(errorVersion(conf, stdin), code, msg, details)),
      exitCode: 1,
    };
  }
}

async function dispatchOrThrow(
  command: string,
  env: Readonly<Record<string, string | undefined>>,
  stdin: Buffer,
  funcs: PluginFuncs,
  info: PluginInfo,
  seenConf: (c: Record<string, unknown>) => void,
): Promise<string> {
  const cmd = command as CniCommand;
  const value = (n: string): string => (n === 'CNI_COMMAND' ? command : (env[n] ?? ''));
  const missing: string[] = [];
  for (const v of VARS) {
    const val = value(v.name);
    if (val === '') {
      if (v.req[cmd] || v.name === 'CNI_COMMAND') missing.push(v.name);
    } else if (v.req[cmd] && v.validate) {
      v.validate(val);
    }
  }
  if (missing.length) {
    throw cniFailure(CNI_ERR.invalidEnvironment, `required env variables [${missing.join(',')}] missing`);
  }
  if (cmd === 'VERSION') {
    return `${JSON.stringify({ cniVersion: CNI_SPEC_VERSION, supportedVersions: info.supportedVersions })}\n`;
  }
  const conf = decodeConf(stdin);
  seenConf(conf);
  if (!(cmd in ALL)) throw cniFailure(CNI_ERR.invalidEnvironment, `unknown CNI_COMMAND: ${command}`);
  const cniVersion = (conf.cniVersion as string | undefined) || '0.1.0';
  const args: CmdArgs = {
    command: cmd,
    containerId: value('CNI_CONTAINERID'),
    netns: value('CNI_NETNS'),
    ifname: value('CNI_IFNAME'),
    args: value('CNI_ARGS'),
    path: value('CNI_PATH'),
    netnsOverride: value('CNI_NETNS_OVERRIDE'),
    stdin,
    conf,
    cniVersion,
    env,
  };
  const minimum = { CHECK: '0.4.0', STATUS: '1.1.0', GC: '1.1.0' } as Partial<Record<CniCommand, string>>;
  const min = minimum[cmd];
  if (min) {
    if (!versionAtLeast(cniVersion, min)) {
      throw cniFailure(CNI_ERR.incompatibleVersion, `config version does not allow ${cmd}`);
    }
    if (!info.supportedVersions.some((v) => versionAtLeast(v, cniVersion))) {
      throw cniFailure(CNI_ERR.incompatibleVersion, `plugin version does not allow ${cmd}`);
    }
  }
  if (!info.supportedVersions.includes(cniVersion)) {
    const quoted = info.supportedVersions.map((v) => `"${v}"`).join(' ');
    throw cniFailure(
      CNI_ERR.incompatibleVersion,
      'incompatible CNI versions',
      `config is "${cniVersion}", plugin supports [${quoted}]`,
    );
  }
  // skel refuses to work on its own namespace; it checks after the call, we check before touching anything.
  const override = args.netnsOverride;
  if (
    (cmd === 'ADD' || cmd === 'DEL') &&
    override.toUpperCase() !== 'TRUE' &&
    override !== '1' &&
    isOwnNetns(args.netns)
  ) {
    throw cniFailure(CNI_ERR.invalidNetns, "plugin's netns and netns from CNI_NETNS should not be the same");
  }
  switch (cmd) {
    case 'ADD':
      return await funcs.add(args);
    case 'DEL':
      await funcs.del(args);
      return '';
    case 'CHECK':
      await funcs.check(args);
      return '';
    case 'STATUS':
      await funcs.status?.(args);
      return '';
    case 'GC':
      await funcs.gc?.(args);
      return '';
  }
  throw cniFailure(CNI_ERR.invalidEnvironment, `unknown CNI_COMMAND: ${command}`);
}
