/**
 * Where a CLI command runs: through the daemon when one answers on the API socket, otherwise in this
 * process over a NetworkManager (the store's cross-process locks make both safe at the same time).
 * `--local` skips the daemon.
 */
import type { Command } from 'commander';
import type { LoadedConfig } from '../config/load.js';
import { managerPart } from '../config/schema.js';
import { DaemonClient, type DaemonState } from '../daemon/client.js';
import { ClusterService, openClusterManager } from '../daemon/cluster.js';
import { ManagerService, type TapnetApi } from '../daemon/service.js';
import { NetworkManager } from '../manager/manager.js';
import { type GlobalFlags, loadCliConfig } from './config.js';

export type Globals = GlobalFlags & { json?: boolean };

export function globals(cmd: Command): Globals {
  return cmd.optsWithGlobals() as Globals;
}

/** An API for one command, and how it is reached. */
export interface CliApi {
  api: TapnetApi;
  via: 'daemon' | 'local';
  loaded: LoadedConfig;
  daemon: DaemonState;
}

/** Open the API for a command: the daemon if it answers (and --local is not given), else in-process. */
export async function openCliApi(cmd: Command, opts: { reconcile?: boolean } = {}): Promise<CliApi> {
  const g = globals(cmd);
  const loaded = loadCliConfig(g);
  const socket = loaded.config.api.socket;
  const daemon = g.local ? 'absent' : await DaemonClient.probe(socket, 2000);
  if (daemon === 'answering') return { api: new DaemonClient({ socket }), via: 'daemon', loaded, daemon };
  const reconcile = opts.reconcile ?? false;
  if (loaded.config.cluster) {
    // Cluster mode without the daemon: the etcd store, but no membership and no overlay agent.
    const { node, manager } = await openClusterManager(
      loaded,
      (input, store) => NetworkManager.open(input, { store, reconcile }),
      false,
    );
    const api = new ClusterService(manager, loaded, node, { daemon: { socket, state: daemon } });
    return { api, via: 'local', loaded, daemon };
  }
  const m = await NetworkManager.open(managerPart(loaded.config), { reconcile });
  return {
    api: new ManagerService(m, loaded, { daemon: { socket, state: daemon } }),
    via: 'local',
    loaded,
    daemon,
  };
}

/** Run `fn` with the API and close it afterwards. */
export async function withApi<T>(cmd: Command, fn: (c: CliApi) => Promise<T>): Promise<T> {
  const c = await openCliApi(cmd);
  try {
    return await fn(c);
  } finally {
    await c.api.close();
  }
}

/** Run `fn` over `items` with at most `limit` at a time; results in input order, never rejects. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]!, i) };
      } catch (e) {
        out[i] = { status: 'rejected', reason: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}
