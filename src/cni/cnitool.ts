/**
 * cnitool's conventions, so a tapnet command can stand in for it: the network directory from
 * NETCONFPATH, plugin paths from CNI_PATH, CNI_IFNAME (default eth0), CNI_ARGS, capability arguments
 * as JSON in CAP_ARGS, and a container ID derived from the namespace path. Pure but for reading the
 * configuration directory.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { TapnetError } from '../errors.js';
import { DEFAULT_CONF_DIR, loadNetworkConf } from './conf.js';
import type { NetworkConfigList, RuntimeConf } from './types.js';
import { parseCniArgs } from './validate.js';

/** cnitool's container ID for a namespace: `cnitool-` and the first 10 bytes of SHA-512 of its path, in hex. */
export function cnitoolContainerId(netnsPath: string): string {
  return `cnitool-${createHash('sha512').update(netnsPath).digest('hex').slice(0, 20)}`;
}

/** What cnitool would run for `<network> <netns>` in environment `env`. */
export interface CnitoolSetup {
  confDir: string;
  /** CNI_PATH split on ':' (empty entries dropped). */
  pluginPaths: string[];
  list: NetworkConfigList;
  rt: RuntimeConf;
}

/** Load the network and build the attachment parameters exactly as cnitool does. */
export function cnitoolSetup(
  network: string,
  netnsPath: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
  ifName?: string,
): CnitoolSetup {
  const confDir = env.NETCONFPATH || DEFAULT_CONF_DIR;
  const list = loadNetworkConf(confDir, network);
  let capabilityArgs: Record<string, unknown> | undefined;
  if (env.CAP_ARGS) {
    try {
      capabilityArgs = JSON.parse(env.CAP_ARGS) as Record<string, unknown>;
    } catch (e) {
      throw new TapnetError('ERR_CONFIG', `CAP_ARGS is not valid JSON: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (capabilityArgs === null || typeof capabilityArgs !== 'object' || Array.isArray(capabilityArgs)) {
      throw new TapnetError('ERR_CONFIG', 'CAP_ARGS must be a JSON object keyed by capability');
    }
  }
  const netns = resolve(netnsPath);
  const rt: RuntimeConf = {
    containerId: cnitoolContainerId(netns),
    netns,
    ifName: ifName || env.CNI_IFNAME || 'eth0',
  };
  if (env.CNI_ARGS) rt.args = parseCniArgs(env.CNI_ARGS);
  if (capabilityArgs) rt.capabilityArgs = capabilityArgs;
  return { confDir, pluginPaths: (env.CNI_PATH ?? '').split(':').filter((p) => p !== ''), list, rt };
}
