/**
 * Where the CLI's configuration comes from: a JSON file (--config or TAPNET_CONFIG), then TAPNET_*
 * environment variables, then flags — later wins.
 */
import { readFileSync } from 'node:fs';
import { TapnetError } from '../errors.js';
import { type ManagerConfigInput, parseConfigInput } from '../manager/config.js';

export interface GlobalFlags {
  config?: string;
  stateDir?: string;
  netns?: string;
}

/** Load and merge the configuration; ERR_CONFIG names the file and the bad key. */
export function loadCliConfig(flags: GlobalFlags, env: NodeJS.ProcessEnv = process.env): ManagerConfigInput {
  const file = flags.config ?? env.TAPNET_CONFIG;
  let cfg: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new TapnetError('ERR_CONFIG', `cannot read config file ${file}: ${(e as Error).message}`, { cause: e });
    }
    try {
      cfg = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new TapnetError('ERR_CONFIG', `config file ${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) {
      throw new TapnetError('ERR_CONFIG', `config file ${file} must hold a JSON object`);
    }
  }
  const stateDir = flags.stateDir ?? env.TAPNET_STATE_DIR;
  if (stateDir) cfg.stateDir = stateDir;
  const netns = flags.netns ?? env.TAPNET_NETNS;
  if (netns) cfg.netns = netns;
  return parseConfigInput(cfg);
}
