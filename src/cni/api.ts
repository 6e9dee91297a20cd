/**
 * The CNI runtime API (libcni's CNIConfig): attachments (ADD/CHECK/DEL, from CniRuntimeBase), garbage
 * collection and plugin status (spec 1.1.0), validation and verify(), version probing and the result
 * cache. Plugins registered in-process are called directly; all others are exec'd.
 */
import { TapnetError, teardownError } from '../errors.js';
import { injectConf } from './conf.js';
import { CNI_ERROR, CniError, wrapCniError } from './errors.js';
import type { CallOptions, GcArgs } from './runtime-base.js';
import { CniRuntimeBase } from './runtime-base.js';
import type {
  CniResult,
  NetworkAttachment,
  NetworkConfigList,
  PluginConfig,
  PluginInfo,
  RuntimeConf,
} from './types.js';
import { type VerifyReport, verifyNetworkList } from './verify.js';
import { versionAtLeast } from './version.js';

export {
  type CallOptions,
  type CallTiming,
  type CniRuntimeOptions,
  DEFAULT_PLUGIN_PATHS,
  type GcArgs,
} from './runtime-base.js';

/** The runtime: one set of plugin paths, one cache directory, one executor and in-process registry. */
export class CniRuntime extends CniRuntimeBase {
  /**
   * GC the network (libcni's GCNetworkList): DEL every cached attachment of this network that is not in
   * `args.validAttachments` (all of them without `args`), then, at spec ≥ 1.1.0, send GC to every
   * plugin with the valid attachments. Keeps going; every failure is reported together (ERR_TEARDOWN).
   * A no-op when the list sets disableGC.
   */
  gcNetworkList(list: NetworkConfigList, args?: GcArgs, opts?: CallOptions): Promise<void> {
    return this.call(opts, list.name, async (ctx) => {
      if (list.disableGC) return;
      let cached: NetworkAttachment[];
      try {
        cached = this.cache.attachments();
      } catch {
        return; // as libcni: an unreadable cache means nothing to collect
      }
      const valid = new Set((args?.validAttachments ?? []).map((a) => `${a.containerID}\0${a.ifname}`));
      const failures: TapnetError[] = [];
      for (const a of cached) {
        if (a.network !== list.name || valid.has(`${a.containerId}\0${a.ifName}`)) continue;
        const rt: RuntimeConf = { containerId: a.containerId, netns: a.netns, ifName: a.ifName };
        if (a.cniArgs) rt.args = a.cniArgs;
        if (a.capabilityArgs) rt.capabilityArgs = a.capabilityArgs;
        try {
          await this.delList(ctx, list, rt);
        } catch (e) {
          failures.push(asTapnet(e, `failed to delete stale attachment ${a.containerId} ${a.ifName}`));
        }
      }
      if (safeAtLeast(list.cniVersion, '1.1.0')) {
        const inject: Record<string, unknown> = { name: list.name, cniVersion: list.cniVersion };
        if (args) {
          const attachments = args.validAttachments.map((a) => ({
            containerID: a.containerID,
            ifname: a.ifname,
          }));
          inject['cni.dev/valid-attachments'] = attachments;
          inject['cni.dev/attachments'] = attachments; // libcni sends both (spec issue #1101)
        }
        for (const net of list.plugins) {
          try {
            const conf = injectConf(net, inject);
            const ref = this.invoker.find(net.network.type, this.pluginPaths);
            await this.invoker.run(ref, 'GC', conf.bytes, this.invoker.env(this.args('GC', undefined)), ctx);
          } catch (e) {
            failures.push(asTapnet(e, `failed to GC plugin ${net.network.type}`));
          }
        }
      }
      if (failures.length === 1) throw failures[0];
      if (failures.length > 1) throw teardownError(`CNI GC of network "${list.name}"`, failures);
    });
  }

  /**
   * STATUS of every plugin, in order (spec ≥ 1.1.0; older lists are always ready): throws the first
   * plugin's error, typically spec code 50 (not available) or 51 (limited connectivity).
   */
  getStatusNetworkList(list: NetworkConfigList, opts?: CallOptions): Promise<void> {
    return this.call(opts, list.name, async (ctx) => {
      if (!safeAtLeast(list.cniVersion, '1.1.0')) return;
      for (const net of list.plugins) {
        const conf = injectConf(net, { name: list.name, cniVersion: list.cniVersion });
        const ref = this.invoker.find(net.network.type, this.pluginPaths);
        await this.invoker.run(
          ref,
          'STATUS',
          conf.bytes,
          this.invoker.env(this.args('STATUS', undefined)),
          ctx,
        );
      }
    });
  }

  /**
   * Check that every plugin exists and supports the list's version (libcni's ValidateNetworkList);
   * returns the capabilities the list declares. See verify() for a report of everything missing.
   */
  async validateNetworkList(list: NetworkConfigList, opts?: CallOptions): Promise<string[]> {
    const report = await this.verify(list, opts);
    return report.capabilities;
  }

  /** Validate one plugin configuration (libcni's ValidateNetwork); returns its capabilities. */
  validateNetwork(net: PluginConfig, opts?: CallOptions): Promise<string[]> {
    const list: NetworkConfigList = {
      name: net.network.name,
      cniVersion: net.network.cniVersion,
      disableCheck: false,
      disableGC: false,
      loadOnlyInlinedPlugins: true,
      plugins: [net],
      bytes: net.bytes,
    };
    return this.validateNetworkList(list, opts);
  }

  /**
   * Verify a list before use: every plugin is found (in-process or in a plugin directory) and reports
   * support for the list's version. Throws one error naming everything missing (ERR_NOT_FOUND, with
   * every directory looked in) or unsupported (ERR_CNI, spec code 1); returns the report otherwise.
   */
  verify(list: NetworkConfigList, opts?: CallOptions): Promise<VerifyReport> {
    return this.call(opts, list.name, (ctx) => verifyNetworkList(this.invoker, this.pluginPaths, list, ctx));
  }

  /** The versions plugin `type` supports (VERSION). */
  getVersionInfo(type: string, opts?: CallOptions): Promise<PluginInfo> {
    return this.call(opts, undefined, (ctx) =>
      this.invoker.versionInfo(this.invoker.find(type, this.pluginPaths), ctx),
    );
  }

  /** The cached result of the list's last ADD for `rt`, in the list's version, or undefined. */
  getNetworkListCachedResult(list: NetworkConfigList, rt: RuntimeConf): CniResult | undefined {
    return this.cache.getResult(list.name, list.cniVersion, rt);
  }

  /** The cached config bytes and recorded attachment parameters of the list's last ADD, or undefined. */
  getNetworkListCachedConfig(
    list: NetworkConfigList,
    rt: RuntimeConf,
  ): { config: Buffer; rt: RuntimeConf } | undefined {
    return this.cache.getConfig(list.name, rt);
  }

  /** The cached result of a single-plugin ADD, or undefined. */
  getNetworkCachedResult(net: PluginConfig, rt: RuntimeConf): CniResult | undefined {
    return this.cache.getResult(net.network.name, net.network.cniVersion, rt);
  }

  /** The cached config of a single-plugin ADD, or undefined. */
  getNetworkCachedConfig(
    net: PluginConfig,
    rt: RuntimeConf,
  ): { config: Buffer; rt: RuntimeConf } | undefined {
    return this.cache.getConfig(net.network.name, rt);
  }

  /** Every attachment in the cache (of one container, if given). */
  getCachedAttachments(containerId?: string): NetworkAttachment[] {
    return this.cache.attachments(containerId);
  }
}

function safeAtLeast(v: string, min: string): boolean {
  try {
    return versionAtLeast(v, min);
  } catch {
    return false;
  }
}

function asTapnet(e: unknown, prefix: string): TapnetError {
  if (e instanceof CniError) return wrapCniError(prefix, e);
  if (e instanceof TapnetError)
    return new TapnetError(e.code, `${prefix}: ${e.message}`, { cause: e, details: e.details });
  return new CniError(CNI_ERROR.INTERNAL, `${prefix}: ${String(e)}`, '', { cause: e });
}
