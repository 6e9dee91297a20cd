/**
 * The attachment operations of the CNI runtime (libcni's CNIConfig): ADD runs a configuration's plugins
 * in order, chaining results, and caches the final one; CHECK runs them with the cached result; DEL
 * runs them in reverse with the cached result as prevResult. The request configuration each plugin gets
 * is built as libcni builds it (name, cniVersion, prevResult, runtimeConfig from declared capabilities).
 * Every call records how long it spent inside plugins.
 */
import { performance } from 'node:perf_hooks';
import { invalidArgument, TapnetError } from '../errors.js';
import { DEFAULT_CACHE_DIR, ResultCache } from './cache.js';
import { injectConf } from './conf.js';
import { CNI_ERROR, CniError, wrapCniError } from './errors.js';
import type { PluginExecutor } from './exec.js';
import { type InProcessPlugin, InProcessRegistry } from './inprocess.js';
import {
  type CallContext,
  type InvokeArgs,
  Invoker,
  type PluginInvocation,
  type PluginRef,
} from './invoke.js';
import { resultToGo } from './result.js';
import { defaultPluginExecutor } from './spawn-executor.js';
import type {
  CniCommand,
  CniResult,
  GcAttachment,
  NetworkConfigList,
  PluginConf,
  PluginConfig,
  RuntimeConf,
} from './types.js';
import {
  validateCniArgs,
  validateContainerId,
  validateInterfaceName,
  validateNetworkName,
} from './validate.js';
import { versionAtLeast } from './version.js';

/** Where plugins are looked for by default: the CNI convention, then Debian's package. */
export const DEFAULT_PLUGIN_PATHS: readonly string[] = ['/opt/cni/bin', '/usr/lib/cni'];

/** How a runtime finds, runs and times plugins, and where it caches results. */
export interface CniRuntimeOptions {
  /** Directories searched for plugin executables, in order (CNI_PATH). Default DEFAULT_PLUGIN_PATHS. */
  pluginPaths?: readonly string[];
  /** The result cache directory. Default /var/lib/cni, as libcni. */
  cacheDir?: string;
  /** How executables are found and run. Default: SpawnPluginExecutor (posix_spawn, stderr to process.stderr). */
  executor?: PluginExecutor;
  /** Plugins run in-process instead of exec'd, chosen by `type`. */
  inProcessPlugins?: InProcessRegistry | Iterable<InProcessPlugin>;
  /** Default time limit per plugin invocation, in ms (0: none). Default 0. */
  timeoutMs?: number;
  /** Plugins inherit this process's environment, as with libcni. Default true. */
  inheritEnv?: boolean;
  /** Extra environment for every plugin (under the CNI_* parameters). */
  env?: Readonly<Record<string, string>>;
}

/** Per-call options. */
export interface CallOptions {
  signal?: AbortSignal;
  /** Time limit per plugin invocation, in ms; overrides the runtime's default. */
  timeoutMs?: number;
  /** Filled in when the call ends (successfully or not): where the time went. */
  timing?: CallTiming;
}

/** Where one API call's time went: tapnet's own overhead is `overheadMs = totalMs − pluginMs`. */
export interface CallTiming {
  totalMs: number;
  /** Time inside plugins (exec'd: spawn to exit; in-process: the run() call). */
  pluginMs: number;
  overheadMs: number;
  /** The part of pluginMs spent creating plugin processes (fork + exec inside spawn()). */
  spawnMs: number;
  invocations: PluginInvocation[];
}

/** Arguments of GC: the attachments that are still valid (everything else is collected). */
export interface GcArgs {
  validAttachments: GcAttachment[];
}

function describePlugin(net: PluginConf): string {
  return net.name ? `type="${net.type}" name="${net.name}"` : `type="${net.type}"`;
}

/** libcni's `fmt.Errorf("plugin %s failed (%s): %w")`, keeping the error's code and spec code. */
export function pluginFailed(e: unknown, net: PluginConf, verb: string): TapnetError {
  const prefix = `plugin ${describePlugin(net)} failed (${verb})`;
  const details = { plugin: net.type, command: verb };
  if (e instanceof CniError) return wrapCniError(prefix, e, details);
  if (e instanceof TapnetError) {
    return new TapnetError(e.code, `${prefix}: ${e.message}`, {
      cause: e,
      ...(e.errno ? { errno: e.errno } : {}),
      details: { ...e.details, ...details },
    });
  }
  return new CniError(CNI_ERROR.INTERNAL, `${prefix}: ${String(e)}`, '', { cause: e, details });
}

/**
 * The attachment half of the runtime (ADD, CHECK, DEL of lists and single configurations); CniRuntime
 * adds GC, STATUS, validation and the cache queries.
 */
export class CniRuntimeBase {
  readonly pluginPaths: readonly string[];
  readonly cache: ResultCache;
  readonly invoker: Invoker;
  protected readonly timeoutMs: number;

  constructor(opts: CniRuntimeOptions = {}) {
    this.pluginPaths = [...(opts.pluginPaths ?? DEFAULT_PLUGIN_PATHS)];
    this.cache = new ResultCache(opts.cacheDir ?? DEFAULT_CACHE_DIR);
    const registry =
      opts.inProcessPlugins instanceof InProcessRegistry
        ? opts.inProcessPlugins
        : new InProcessRegistry(opts.inProcessPlugins ?? []);
    const base = { ...(opts.inheritEnv === false ? {} : process.env), ...opts.env };
    this.invoker = new Invoker(opts.executor ?? defaultPluginExecutor(), registry, base);
    this.timeoutMs = opts.timeoutMs ?? 0;
  }

  /** Run `fn` with a call context; fill `opts.timing` however it ends. */
  protected async call<T>(
    opts: CallOptions | undefined,
    network: string | undefined,
    fn: (ctx: CallContext) => Promise<T>,
  ): Promise<T> {
    const t0 = performance.now();
    const ctx: CallContext = { invocations: [] };
    if (network) ctx.network = network;
    if (opts?.signal) ctx.signal = opts.signal;
    const timeout = opts?.timeoutMs ?? this.timeoutMs;
    if (timeout) ctx.timeoutMs = timeout;
    try {
      return await fn(ctx);
    } finally {
      if (opts?.timing) {
        const totalMs = performance.now() - t0;
        const pluginMs = ctx.invocations.reduce((s, i) => s + i.ms, 0);
        Object.assign(opts.timing, {
          totalMs,
          pluginMs,
          overheadMs: totalMs - pluginMs,
          spawnMs: ctx.invocations.reduce((s, i) => s + (i.spawnMs ?? 0), 0),
          invocations: ctx.invocations,
        });
      }
    }
  }

  protected args(command: CniCommand, rt: RuntimeConf | undefined): InvokeArgs {
    return {
      command,
      containerId: rt?.containerId ?? '',
      netns: rt?.netns ?? '',
      ifName: rt?.ifName ?? '',
      pluginArgs: rt?.args ?? [],
      path: this.pluginPaths.join(':'),
    };
  }

  /** The request configuration for one plugin (buildOneConfig + injectRuntimeConfig). */
  protected requestConfig(
    name: string,
    cniVersion: string,
    net: PluginConfig,
    prev: CniResult | undefined,
    rt: RuntimeConf,
  ): Buffer {
    const inject: Record<string, unknown> = { name, cniVersion };
    if (prev) inject.prevResult = resultToGo(prev);
    let conf = injectConf(net, inject);
    const rc: Record<string, unknown> = {};
    for (const [cap, supported] of Object.entries(conf.network.capabilities)) {
      if (supported && rt.capabilityArgs && Object.hasOwn(rt.capabilityArgs, cap))
        rc[cap] = rt.capabilityArgs[cap];
    }
    if (Object.keys(rc).length > 0) conf = injectConf(conf, { runtimeConfig: rc });
    return conf.bytes;
  }

  protected checkRuntimeConf(rt: RuntimeConf): void {
    if (!rt || typeof rt !== 'object') throw invalidArgument('runtime configuration must be an object');
    validateContainerId(rt.containerId);
    validateInterfaceName(rt.ifName);
    if (typeof rt.netns !== 'string' || rt.netns.includes('\0'))
      throw invalidArgument('netns must be a path string');
    if (rt.args) validateCniArgs(rt.args);
    if (
      rt.capabilityArgs !== undefined &&
      (typeof rt.capabilityArgs !== 'object' || Array.isArray(rt.capabilityArgs))
    ) {
      throw invalidArgument('capabilityArgs must be an object keyed by capability');
    }
  }

  protected checkList(list: NetworkConfigList): void {
    validateNetworkName(list.name);
    if (!Array.isArray(list.plugins) || list.plugins.length === 0) {
      throw new TapnetError('ERR_CONFIG', `network "${list.name}" has no plugins`, {
        details: { network: list.name },
      });
    }
  }

  protected async invoke(
    ctx: CallContext,
    command: 'ADD' | 'DEL' | 'CHECK',
    name: string,
    version: string,
    net: PluginConfig,
    prev: CniResult | undefined,
    rt: RuntimeConf,
  ): Promise<CniResult | undefined> {
    const ref: PluginRef = this.invoker.find(net.network.type, this.pluginPaths);
    const stdin = this.requestConfig(name, version, net, prev, rt);
    const env = this.invoker.env(this.args(command, rt));
    if (command === 'ADD') return this.invoker.runWithResult(ref, stdin, env, ctx);
    await this.invoker.run(ref, command, stdin, env, ctx);
    return undefined;
  }

  /** ADD the attachment: run each plugin in order, chaining results; cache the final result. */
  addNetworkList(list: NetworkConfigList, rt: RuntimeConf, opts?: CallOptions): Promise<CniResult> {
    return this.call(opts, list.name, async (ctx) => {
      this.checkList(list);
      this.checkRuntimeConf(rt);
      let result: CniResult | undefined;
      const entry = this.cache.prepare(list.name, rt);
      for (const net of list.plugins) {
        try {
          result = await this.invoke(ctx, 'ADD', list.name, list.cniVersion, net, result, rt);
        } catch (e) {
          await entry.discard();
          throw pluginFailed(e, net.network, 'add');
        }
      }
      await this.cache.commit(entry, result, list.bytes, list.name, rt);
      return result!;
    });
  }

  /**
   * CHECK the attachment (spec ≥ 0.4.0): each plugin in order, with the cached ADD result. A no-op when
   * the list sets disableCheck.
   */
  checkNetworkList(list: NetworkConfigList, rt: RuntimeConf, opts?: CallOptions): Promise<void> {
    return this.call(opts, list.name, async (ctx) => {
      this.checkList(list);
      this.checkRuntimeConf(rt);
      this.requireCheck(list.cniVersion);
      if (list.disableCheck) return;
      const cached = this.cachedOrFail(list.name, list.cniVersion, rt);
      for (const net of list.plugins) {
        try {
          await this.invoke(ctx, 'CHECK', list.name, list.cniVersion, net, cached, rt);
        } catch (e) {
          throw pluginFailed(e, net.network, 'check');
        }
      }
    });
  }

  /**
   * DEL the attachment: each plugin in reverse order, with the cached ADD result as prevResult (≥ 0.4.0;
   * an unreadable cache entry is dropped). Plugins treat what is already gone as success.
   */
  delNetworkList(list: NetworkConfigList, rt: RuntimeConf, opts?: CallOptions): Promise<void> {
    return this.call(opts, list.name, (ctx) => this.delList(ctx, list, rt));
  }

  protected async delList(ctx: CallContext, list: NetworkConfigList, rt: RuntimeConf): Promise<void> {
    this.checkList(list);
    this.checkRuntimeConf(rt);
    const cached = this.cachedForDel(list.name, list.cniVersion, rt);
    for (const net of [...list.plugins].reverse()) {
      try {
        await this.invoke(ctx, 'DEL', list.name, list.cniVersion, net, cached, rt);
      } catch (e) {
        throw pluginFailed(e, net.network, 'delete');
      }
    }
    this.cache.del(list.name, rt);
  }

  protected requireCheck(cniVersion: string): void {
    if (!versionAtLeast(cniVersion, '0.4.0')) {
      throw new CniError(
        CNI_ERROR.INCOMPATIBLE_CNI_VERSION,
        `configuration version "${cniVersion}" does not support the CHECK command`,
      );
    }
  }

  protected cachedOrFail(name: string, cniVersion: string, rt: RuntimeConf): CniResult | undefined {
    try {
      return this.cache.getResult(name, cniVersion, rt);
    } catch (e) {
      const c = e as CniError;
      throw new CniError(
        c.cniCode ?? CNI_ERROR.DECODING_FAILURE,
        `failed to get network "${name}" cached result: ${c.message}`,
        '',
        {
          cause: e,
        },
      );
    }
  }

  protected cachedForDel(name: string, cniVersion: string, rt: RuntimeConf): CniResult | undefined {
    if (!versionAtLeast(cniVersion, '0.4.0')) return undefined;
    try {
      return this.cache.getResult(name, cniVersion, rt);
    } catch {
      this.cache.del(name, rt);
      return undefined;
    }
  }

  /** ADD a single plugin configuration (libcni's AddNetwork); cached under its own name. */
  addNetwork(net: PluginConfig, rt: RuntimeConf, opts?: CallOptions): Promise<CniResult> {
    return this.call(opts, net.network.name, async (ctx) => {
      validateNetworkName(net.network.name);
      this.checkRuntimeConf(rt);
      const entry = this.cache.prepare(net.network.name, rt);
      let result: CniResult | undefined;
      try {
        result = await this.invoke(ctx, 'ADD', net.network.name, net.network.cniVersion, net, undefined, rt);
      } catch (e) {
        await entry.discard();
        throw e;
      }
      await this.cache.commit(entry, result, net.bytes, net.network.name, rt);
      return result!;
    });
  }

  /** CHECK a single plugin configuration (≥ 0.4.0) against its cached result. */
  checkNetwork(net: PluginConfig, rt: RuntimeConf, opts?: CallOptions): Promise<void> {
    return this.call(opts, net.network.name, async (ctx) => {
      validateNetworkName(net.network.name);
      this.checkRuntimeConf(rt);
      this.requireCheck(net.network.cniVersion);
      const cached = this.cachedOrFail(net.network.name, net.network.cniVersion, rt);
      await this.invoke(ctx, 'CHECK', net.network.name, net.network.cniVersion, net, cached, rt);
    });
  }

  /** DEL a single plugin configuration, with its cached result as prevResult (≥ 0.4.0). */
  delNetwork(net: PluginConfig, rt: RuntimeConf, opts?: CallOptions): Promise<void> {
    return this.call(opts, net.network.name, async (ctx) => {
      validateNetworkName(net.network.name);
      this.checkRuntimeConf(rt);
      const cached = this.cachedForDel(net.network.name, net.network.cniVersion, rt);
      await this.invoke(ctx, 'DEL', net.network.name, net.network.cniVersion, net, cached, rt);
      this.cache.del(net.network.name, rt);
    });
  }
}
