/**
 * verify(): before running a configuration, check that every plugin it names can be found (in-process
 * or in a plugin directory) and reports support for the configuration's version, and say everything
 * that is wrong at once: each missing plugin with every directory looked in, each version mismatch
 * with what the plugin does support.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { CNI_ERROR, CniError } from './errors.js';
import type { CallContext, Invoker, PluginRef } from './invoke.js';
import type { NetworkConfigList } from './types.js';

/** One plugin of a verified configuration. */
export interface VerifiedPlugin {
  type: string;
  inProcess: boolean;
  path?: string;
  supportedVersions: string[];
}

/** What verify() found when everything is in order. */
export interface VerifyReport {
  network: string;
  cniVersion: string;
  plugins: VerifiedPlugin[];
  /** The capabilities the configuration declares (sorted). */
  capabilities: string[];
}

/** Check every plugin of `list`; throw one error listing every problem, or return the report. */
export async function verifyNetworkList(
  invoker: Invoker,
  paths: readonly string[],
  list: NetworkConfigList,
  ctx: CallContext,
): Promise<VerifyReport> {
  const version = list.cniVersion || '0.1.0';
  const missing: Array<{ type: string; lookedIn: string[] }> = [];
  const unsupported: Array<{ type: string; path?: string; inProcess: boolean; supportedVersions: string[] }> =
    [];
  const broken: Array<{ type: string; path?: string; error: unknown }> = [];
  const plugins: VerifiedPlugin[] = [];
  const caps = new Set<string>();
  const seen = new Set<string>();
  for (const net of list.plugins) {
    for (const [c, on] of Object.entries(net.network.capabilities)) if (on) caps.add(c);
    const type = net.network.type;
    if (seen.has(type)) continue;
    seen.add(type);
    let ref: PluginRef;
    try {
      ref = invoker.find(type, paths);
    } catch (e) {
      if (isTapnetError(e, 'ERR_NOT_FOUND', 'ERR_INVALID_ARGUMENT')) {
        missing.push({ type, lookedIn: [...paths] });
        continue;
      }
      throw e;
    }
    const where = ref.path ? { path: ref.path } : {};
    try {
      const info = await invoker.versionInfo(ref, ctx);
      const entry = { type, inProcess: !!ref.inProcess, ...where, supportedVersions: info.supportedVersions };
      if (info.supportedVersions.includes(version)) plugins.push(entry);
      else unsupported.push(entry);
    } catch (e) {
      if (isTapnetError(e, 'ERR_ABORTED', 'ERR_TIMEOUT') && ctx.signal?.aborted) throw e;
      broken.push({ type, ...where, error: e });
    }
  }
  if (missing.length === 0 && unsupported.length === 0 && broken.length === 0) {
    return { network: list.name, cniVersion: version, plugins, capabilities: [...caps].sort() };
  }
  const problems = [
    ...missing.map(
      (m) =>
        `plugin "${m.type}" not found in ${m.lookedIn.length ? m.lookedIn.join(', ') : '(no plugin paths)'}`,
    ),
    ...unsupported.map(
      (u) =>
        `plugin "${u.type}" (${u.inProcess ? 'in-process' : u.path}) does not support config version "${version}" (supports ${u.supportedVersions.join(', ')})`,
    ),
    ...broken.map(
      (b) =>
        `plugin "${b.type}" (${b.path ?? 'in-process'}) did not answer VERSION: ${(b.error as Error).message}`,
    ),
  ];
  const message = `network "${list.name}" cannot run: ${problems.join('; ')}`;
  const details = {
    network: list.name,
    cniVersion: version,
    pluginPaths: [...paths],
    missing,
    unsupported,
    failed: broken.map((b) => ({
      type: b.type,
      path: b.path,
      error: b.error instanceof TapnetError ? b.error.toJSON() : String(b.error),
    })),
  };
  if (missing.length > 0) throw new TapnetError('ERR_NOT_FOUND', message, { details });
  throw new CniError(CNI_ERROR.INCOMPATIBLE_CNI_VERSION, message, '', { details });
}
