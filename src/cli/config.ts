/**
 * The CLI's side of configuration: global flags → the loader in src/config (file, then TAPNET_*
 * environment variables, then flags — later wins).
 */
import { type FlagValue, type LoadedConfig, loadConfig } from '../config/load.js';

export interface GlobalFlags {
  config?: string;
  stateDir?: string;
  netns?: string;
  socket?: string;
  local?: boolean;
  json?: boolean;
}

/** Flags that set configuration keys, for the loader (and `tapnet config --print` provenance). */
export function flagValues(
  flags: GlobalFlags & Record<string, unknown>,
  extra: FlagValue[] = [],
): FlagValue[] {
  const out: FlagValue[] = [];
  if (flags.stateDir !== undefined) out.push({ key: 'stateDir', value: flags.stateDir, flag: '--state-dir' });
  if (flags.netns !== undefined) out.push({ key: 'netns', value: flags.netns, flag: '--netns' });
  if (flags.socket !== undefined) out.push({ key: 'api.socket', value: flags.socket, flag: '--socket' });
  return [...out, ...extra];
}

/** Load and validate the configuration; ERR_CONFIG names the file, the key, the value and its origin. */
export function loadCliConfig(
  flags: GlobalFlags,
  env: NodeJS.ProcessEnv = process.env,
  extra: FlagValue[] = [],
): LoadedConfig {
  return loadConfig({
    ...(flags.config !== undefined ? { configFile: flags.config } : {}),
    flags: flagValues(flags as GlobalFlags & Record<string, unknown>, extra),
    env,
  });
}
