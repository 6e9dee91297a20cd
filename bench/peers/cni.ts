/**
 * CNI plugins (Debian containernetworking-plugins, /usr/lib/cni) as the peer for per-VM setup, executed
 * exactly as libcni does: env CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/CNI_PATH, the network
 * config on stdin with `name` and `cniVersion` injected, `prevResult` along a chain. Each VM gets its own
 * named namespace (created in-process, as container runtimes do, and timed). The plugins' "host" is a
 * fresh namespace of the run, so the bridge and any iptables chains vanish with it; host-local keeps its
 * leases in a temp dir.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { TapnetError } from '../../src/errors.js';
import { createNetns, deleteNetns, NETNS_RUN_DIR } from '../../src/net/netns.js';
import { validateInt } from '../../src/validate.js';
import { timeSync } from '../lib/stats.js';
import { execPeer, requirePeer, type Scratch, withScratch } from './exec.js';
import type { PeerTimings } from './ip.js';

/** Where Debian installs the reference plugins. */
export const CNI_PATH = '/usr/lib/cni';
const CNI_VERSION = '1.0.0';
const NETWORK_NAME = 'tapnetbench';
const BRIDGE = 'cnibr0';
/** 1,021 usable addresses; a Linux bridge takes at most 1,023 ports anyway. */
const SUBNET = '198.18.0.0/22';
const MAX_VMS = 1000;

/** One plugin's config within a conflist (without name/cniVersion, which are injected). */
export type PluginConf = { type: string } & Record<string, unknown>;

/** Per-VM milliseconds of a CNI run, with the parts setup and teardown are made of. */
export interface CniTimings extends PeerTimings {
  /** Creating the VM's namespace (in-process, like `ip netns add`). */
  netnsAdd: number[];
  /** All plugins' ADD, chained. */
  add: number[];
  /** All plugins' DEL, in reverse. */
  del: number[];
  /** Deleting the VM's namespace (like `ip netns del`). */
  netnsDel: number[];
}

/** The bridge plugin with host-local IPAM on 198.18.0.0/22, leases in `dataDir`. */
export function bridgePlugin(dataDir: string): PluginConf {
  return {
    type: 'bridge',
    bridge: BRIDGE,
    isGateway: true,
    ipMasq: false,
    ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], dataDir },
  };
}

/** The chain the peers README measured: bridge → firewall → tuning. */
export function chainPlugins(dataDir: string): PluginConf[] {
  return [bridgePlugin(dataDir), { type: 'firewall', backend: 'iptables' }, { type: 'tuning', mtu: 1400 }];
}

/** Exec one plugin as libcni does; returns its stdout (the result, for ADD). */
function invoke(
  host: Scratch,
  plugin: PluginConf,
  command: 'ADD' | 'DEL',
  containerId: string,
  netns: string,
  prevResult: unknown,
): string {
  const path = requirePeer(`${CNI_PATH}/${plugin.type}`, 'containernetworking-plugins');
  const conf: Record<string, unknown> = { cniVersion: CNI_VERSION, name: NETWORK_NAME, ...plugin };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return execPeer(path, [], {
    ns: host.ns,
    input: JSON.stringify(conf),
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: netns,
      CNI_IFNAME: 'eth0',
      CNI_PATH,
    },
  }).stdout;
}

/**
 * n VMs, sequentially: per VM create a namespace and run the chain's ADD (setup), then per VM the
 * chain's DEL in reverse with the cached result as prevResult, and delete the namespace (teardown).
 * `plugins` receives the host-local data dir (default: the bridge plugin alone).
 */
export async function cniVms(n: number, plugins: (dataDir: string) => PluginConf[]): Promise<CniTimings> {
  validateInt(n, 'VM count', 1, MAX_VMS);
  return withScratch('bcni', (host) => {
    const chain = plugins(host.dir);
    const out: CniTimings = { setup: [], teardown: [], netnsAdd: [], add: [], del: [], netnsDel: [] };
    const created: string[] = [];
    const results = new Map<string, unknown>();
    const vm = (i: number) => ({ id: `${host.name}-vm${i}`, ns: `${host.name}-vm${i}` });
    try {
      for (let i = 0; i < n; i++) {
        const { id, ns } = vm(i);
        const tNs = timeSync(() => createNetns(ns).close());
        created.push(ns);
        let result: unknown;
        const tAdd = timeSync(() => {
          for (const p of chain) {
            result = JSON.parse(invoke(host, p, 'ADD', id, `${NETNS_RUN_DIR}/${ns}`, result));
          }
        });
        const address = (result as { ips?: { address?: string }[] } | undefined)?.ips?.[0]?.address;
        if (!address)
          throw new TapnetError('ERR_INTERNAL', `CNI ADD for ${id} returned no address`, {
            details: { result },
          });
        results.set(id, result);
        out.netnsAdd.push(tNs);
        out.add.push(tAdd);
        out.setup.push(tNs + tAdd);
      }
      for (let i = 0; i < n; i++) {
        const { id, ns } = vm(i);
        const prev = results.get(id);
        const tDel = timeSync(() => {
          for (const p of chain.toReversed()) invoke(host, p, 'DEL', id, `${NETNS_RUN_DIR}/${ns}`, prev);
        });
        const tNs = timeSync(() => deleteNetns(ns));
        out.del.push(tDel);
        out.netnsDel.push(tNs);
        out.teardown.push(tDel + tNs);
      }
      const leases = readdirSync(join(host.dir, NETWORK_NAME)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
      if (leases.length > 0) {
        throw new TapnetError('ERR_INTERNAL', `host-local kept ${leases.length} leases after DEL`, {
          details: { leases },
        });
      }
      return out;
    } finally {
      for (const ns of created) deleteNetns(ns);
    }
  });
}

/** The bridge plugin with host-local IPAM, n VMs (see cniVms). */
export function cniBridgeVms(n: number): Promise<CniTimings> {
  return cniVms(n, (dir) => [bridgePlugin(dir)]);
}

/** The chain bridge → firewall (iptables) → tuning, n VMs (see cniVms). */
export function cniChainVms(n: number): Promise<CniTimings> {
  return cniVms(n, chainPlugins);
}
