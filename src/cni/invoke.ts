/**
 * Invoking plugins (libcni's pkg/invoke): the environment the spec prescribes, the choice between an
 * in-process plugin and an executable, results fixed up and decoded in the configuration's version,
 * VERSION probing, and the time spent inside each plugin, recorded per call.
 */
import { performance } from 'node:perf_hooks';
import { TapnetError } from '../errors.js';
import { channels } from '../observe/channels.js';
import { CNI_ERROR, CniError, pluginErrorFrom } from './errors.js';
import { abortedError, type ExecOptions, type PluginExecutor, timeoutError } from './exec.js';
import type { CniCommand, InProcessPlugin, InProcessRegistry } from './inprocess.js';
import { goMarshal } from './json.js';
import { createResult, decodeVersion } from './result.js';
import { type CniResult, CURRENT_VERSION, type PluginInfo } from './types.js';

/** The protocol parameters of one invocation (invoke.Args). */
export interface InvokeArgs {
  command: CniCommand;
  containerId?: string;
  netns?: string;
  ifName?: string;
  /** CNI_ARGS as pairs, joined `K=V;K=V`. */
  pluginArgs?: ReadonlyArray<readonly [string, string]>;
  /** CNI_PATH, already joined with ':'. */
  path?: string;
}

/**
 * The environment of a plugin (Args.AsEnv): the inherited environment, then CNI_COMMAND,
 * CNI_CONTAINERID, CNI_NETNS, CNI_ARGS, CNI_IFNAME and CNI_PATH, always all six, overriding.
 */
export function buildEnv(
  args: InvokeArgs,
  base: Readonly<Record<string, string | undefined>> = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  env.CNI_COMMAND = args.command;
  env.CNI_CONTAINERID = args.containerId ?? '';
  env.CNI_NETNS = args.netns ?? '';
  env.CNI_ARGS = (args.pluginArgs ?? []).map(([k, v]) => `${k}=${v}`).join(';');
  env.CNI_IFNAME = args.ifName ?? '';
  env.CNI_PATH = args.path ?? '';
  return env;
}

/** One plugin invocation, as recorded for timing. */
export interface PluginInvocation {
  type: string;
  command: CniCommand;
  /** True when the plugin ran in-process. */
  inProcess: boolean;
  /** The executable, when exec'd. */
  path?: string;
  /** Wall time inside the plugin (spawn to exit, or run() to its promise settling). */
  ms: number;
  /** Exec'd plugins: the part of `ms` spent creating the process (spawn: fork + exec). */
  spawnMs?: number;
  ok: boolean;
}

/** Per-call context: cancellation, time limit, and where invocations are recorded. */
export interface CallContext {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** The network the call is for (for diagnostics). */
  network?: string;
  invocations: PluginInvocation[];
}

/** A plugin resolved for a call: in-process, or an executable path. */
export type PluginRef =
  | { type: string; inProcess: InProcessPlugin; path?: undefined }
  | { type: string; path: string; inProcess?: undefined };

/** Chooses in-process plugins before executables, runs them, and records the time spent inside. */
export class Invoker {
  constructor(
    readonly executor: PluginExecutor,
    readonly registry: InProcessRegistry | undefined,
    /** The environment plugins inherit (libcni: the runtime's whole environment). */
    readonly baseEnv: Readonly<Record<string, string | undefined>> = process.env,
  ) {}

  /** The environment for one invocation: the inherited one plus the six CNI_* parameters. */
  env(args: InvokeArgs): Record<string, string> {
    return buildEnv(args, this.baseEnv);
  }

  /** Resolve `type`: a registered in-process plugin, else the executable in `paths`. */
  find(type: string, paths: readonly string[]): PluginRef {
    const p = this.registry?.get(type);
    if (p) return { type, inProcess: p };
    return { type, path: this.executor.findInPath(type, paths) };
  }

  /** Run a plugin; resolve to its stdout or throw its error. Records the invocation in `ctx`. */
  async run(
    ref: PluginRef,
    command: CniCommand,
    stdin: Buffer,
    env: Record<string, string>,
    ctx: CallContext,
  ): Promise<Buffer> {
    const t0 = performance.now();
    let ok = false;
    let error: unknown;
    let spawnMs: number | undefined;
    try {
      const out = ref.inProcess
        ? await runInProcess(ref.inProcess, command, stdin, env, ctx)
        : await this.executor.execPlugin(ref.path, stdin, env, {
            ...execOpts(ctx),
            onSpawned: (ms) => {
              spawnMs = (spawnMs ?? 0) + ms;
            },
          });
      ok = true;
      return out;
    } catch (e) {
      error = e;
      throw e;
    } finally {
      const ms = performance.now() - t0;
      ctx.invocations.push({
        type: ref.type,
        command,
        inProcess: ref.inProcess !== undefined,
        ...(ref.path ? { path: ref.path } : {}),
        ms,
        ...(spawnMs !== undefined ? { spawnMs } : {}),
        ok,
      });
      if (channels.cniExec.hasSubscribers) {
        channels.cniExec.publish({
          plugin: ref.type,
          command,
          ...(ctx.network ? { network: ctx.network } : {}),
          outcome: ok ? 'ok' : 'error',
          ...(error instanceof TapnetError ? { code: error.code } : {}),
          durationMs: ms,
        });
      }
    }
  }

  /** Run ADD and decode the result (ExecPluginWithResult), in the version the plugin answered with. */
  async runWithResult(
    ref: PluginRef,
    stdin: Buffer,
    env: Record<string, string>,
    ctx: CallContext,
  ): Promise<CniResult> {
    const stdout = await this.run(ref, 'ADD', stdin, env, ctx);
    return resultFromStdout(stdin, stdout);
  }

  /** The versions a plugin supports (GetVersionInfo); a plugin that does not know VERSION is 0.1.0. */
  async versionInfo(ref: PluginRef, ctx: CallContext): Promise<PluginInfo> {
    if (ref.inProcess)
      return { cniVersion: CURRENT_VERSION, supportedVersions: [...ref.inProcess.supportedVersions] };
    // Fake values for plugins built against an old skel, which insists on them.
    const env = this.env({ command: 'VERSION', netns: 'dummy', ifName: 'dummy', path: 'dummy' });
    const stdin = Buffer.from(`{"cniVersion":${JSON.stringify(CURRENT_VERSION)}}`);
    let stdout: Buffer;
    try {
      stdout = await this.run(ref, 'VERSION', stdin, env, ctx);
    } catch (e) {
      if (e instanceof CniError && e.message === 'unknown CNI_COMMAND: VERSION') {
        return { cniVersion: CURRENT_VERSION, supportedVersions: ['0.1.0'] };
      }
      throw e;
    }
    return this.executor.decode(stdout);
  }
}

function execOpts(ctx: CallContext): ExecOptions {
  const o: ExecOptions = {};
  if (ctx.signal) o.signal = ctx.signal;
  if (ctx.timeoutMs) o.timeoutMs = ctx.timeoutMs;
  return o;
}

/**
 * Call an in-process plugin with the executable's contract. A non-zero exit code is parsed like an
 * executable's; the call is raced against the timeout and the AbortSignal (the plugin's own work is
 * not interrupted, only waited for no longer).
 */
async function runInProcess(
  plugin: InProcessPlugin,
  command: CniCommand,
  stdin: Buffer,
  env: Record<string, string>,
  ctx: CallContext,
): Promise<Buffer> {
  const { signal, timeoutMs } = ctx;
  if (signal?.aborted) throw abortedError(signal, { plugin: plugin.type });
  let res: { stdout: Buffer; exitCode: number };
  try {
    res = await raced(plugin.run(command, env, stdin), plugin.type, signal, timeoutMs);
  } catch (e) {
    if (e instanceof TapnetError) throw e;
    throw new CniError(
      CNI_ERROR.INTERNAL,
      `in-process plugin ${plugin.type} failed: ${(e as Error)?.message ?? String(e)}`,
      '',
      {
        cause: e,
        details: { plugin: plugin.type },
      },
    );
  }
  if (res.exitCode !== 0) {
    throw pluginErrorFrom(res.stdout, Buffer.alloc(0), `exit status ${res.exitCode}`, {
      plugin: plugin.type,
      inProcess: true,
    });
  }
  return res.stdout;
}

function raced<T>(
  p: Promise<T>,
  type: string,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): Promise<T> {
  if (!signal && !timeoutMs) return p;
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (): void => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      done();
      reject(abortedError(signal!, { plugin: type }));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs && timeoutMs > 0) {
      timer = setTimeout(() => {
        done();
        reject(timeoutError(timeoutMs, { plugin: type }));
      }, timeoutMs);
    }
    p.then(
      (v) => {
        done();
        resolve(v);
      },
      (e) => {
        done();
        reject(e);
      },
    );
  });
}

/**
 * Decode an ADD result (fixupResultVersion + create): a result without cniVersion is taken to be in
 * the configuration's version (libcni #895); `null` is an empty result.
 */
export function resultFromStdout(netconf: Buffer, stdout: Buffer): CniResult {
  let confVersion: string;
  try {
    confVersion = decodeVersion(JSON.parse(netconf.toString('utf8')));
  } catch (e) {
    if (e instanceof TapnetError) throw e;
    throw new CniError(
      CNI_ERROR.DECODING_FAILURE,
      `decoding version from network config: ${(e as Error).message}`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(stdout.toString('utf8'));
  } catch (e) {
    throw new CniError(
      CNI_ERROR.DECODING_FAILURE,
      `failed to unmarshal raw result: ${(e as Error).message}`,
      '',
      {
        details: { stdout: stdout.toString('utf8').slice(0, 4096) },
      },
    );
  }
  if (raw === null) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new CniError(CNI_ERROR.DECODING_FAILURE, 'failed to unmarshal raw result: not a JSON object', '', {
      details: { stdout: stdout.toString('utf8').slice(0, 4096) },
    });
  }
  const obj = raw as Record<string, unknown>;
  const declared = obj.cniVersion;
  if (typeof declared === 'string' && declared !== '') return createResult(declared, obj);
  // Go re-marshals the map with the version filled in; decoding that is decoding the map.
  obj.cniVersion = confVersion;
  return createResult(confVersion, JSON.parse(goMarshal(obj)));
}
