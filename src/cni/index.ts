/**
 * tapnet's libcni: the CNI specification's runtime side in TypeScript (configuration loading, plugin
 * invocation with in-process plugins, results of every spec version, the result cache shared with Go
 * tools). Re-exports only.
 */
export {
  type CallOptions,
  type CallTiming,
  CniRuntime,
  type CniRuntimeOptions,
  DEFAULT_PLUGIN_PATHS,
  type GcArgs,
} from './api.js';
export {
  type CachedInfo,
  CNI_CACHE_V1,
  DEFAULT_CACHE_DIR,
  decodeCacheFile,
  encodeCacheFile,
  PendingCacheEntry,
  ResultCache,
} from './cache.js';
export { type CnitoolSetup, cnitoolContainerId, cnitoolSetup } from './cnitool.js';
export {
  confFiles,
  confListFromBytes,
  confListFromConf,
  confListFromFile,
  DEFAULT_CONF_DIR,
  injectConf,
  listNetworkNames,
  loadNetworkConf,
  pluginConfFromBytes,
  pluginConfsFromDir,
} from './conf.js';
export {
  CNI_ERROR,
  CNI_ERROR_MEANINGS,
  CniError,
  isCniError,
  parseSpecError,
  pluginErrorFrom,
  toCniErrorJSON,
} from './errors.js';
export {
  type ExecExecutorOptions,
  type ExecOptions,
  ExecPluginExecutor,
  findInPath,
  type PluginExecutor,
  type StderrSink,
} from './exec.js';
export { type CniCommand, type InProcessPlugin, InProcessRegistry } from './inprocess.js';
export { buildEnv, type InvokeArgs, type PluginInvocation, resultFromStdout } from './invoke.js';
export { goMarshal, goMarshalIndent } from './json.js';
export { createResult, createResultFromJSON, marshalResult, resultToMap } from './result.js';
export * from './types.js';
export { parseCniArgs, validateContainerId, validateInterfaceName, validateNetworkName } from './validate.js';
export type { VerifiedPlugin, VerifyReport } from './verify.js';
export {
  compareVersions,
  convertResult,
  decodePluginInfo,
  parseVersion,
  pickVersion,
  toCurrentResult,
  versionAtLeast,
} from './version.js';
