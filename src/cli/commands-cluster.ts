/**
 * `tapnet cluster status|reclaim`: read straight from etcd (the configuration's cluster.endpoints), so
 * they work on any host of the cluster, with or without a daemon. See docs/CLUSTER.md.
 */
import type { Command } from 'commander';
import { EtcdClient } from '../cluster/etcd-client.js';
import { clusterStatus, reclaimHost } from '../cluster/membership.js';
import { formatClusterStatus } from '../cluster/status-text.js';
import type { ClusterConfig } from '../config/schema.js';
import { requireCluster } from '../daemon/cluster.js';
import { loadCliConfig } from './config.js';
import { globals } from './context.js';
import { printJson } from './output.js';

const help = (examples: string) => `\nExamples:\n${examples}`;

/** Run `fn` with a client of the configured etcd, closed afterwards. */
async function withEtcd<T>(
  cmd: Command,
  fn: (client: EtcdClient, cfg: ClusterConfig) => Promise<T>,
): Promise<T> {
  const cfg = requireCluster(loadCliConfig(globals(cmd)).config);
  const client = new EtcdClient({ endpoints: cfg.endpoints });
  try {
    return await fn(client, cfg);
  } finally {
    client.close();
  }
}

const prefixOf = (cfg: ClusterConfig) => (cfg.prefix !== undefined ? { prefix: cfg.prefix } : {});

export function addClusterCommand(program: Command): void {
  const cluster = program
    .command('cluster')
    .description('cluster mode (etcd + VXLAN): the hosts, their lease state and VMs; reclaim a dead host');

  cluster
    .command('status')
    .description('every host of the cluster: VTEP, lease state (alive, expired, left), TTL and VM count')
    .option('--json', 'print the status as JSON')
    .addHelpText(
      'after',
      help(`  tapnet cluster status
  tapnet cluster status --json | jq '.hosts[] | select(.state == "expired") | .name'`),
    )
    .action(async (_o: unknown, cmd: Command) => {
      const s = await withEtcd(cmd, (client, cfg) => clusterStatus(client, prefixOf(cfg)));
      if (globals(cmd).json) printJson(s);
      else process.stdout.write(formatClusterStatus(s));
    });

  cluster
    .command('reclaim')
    .argument('<host>', 'the dead host')
    .description(
      "free a dead host's records, addresses and overlay entries (refused while it is alive; needs --force)",
    )
    .option('--force', 'state that its VMs are gone (machine dead, VMs stopped or moved)')
    .option('--json', 'print what was removed as JSON')
    .addHelpText(
      'after',
      help(`  tapnet cluster reclaim host-b --force
Only after its lease expired (cluster status shows it expired) and its VMs are known to be gone: their
addresses go back to the pool and would be handed to new VMs elsewhere.`),
    )
    .action(async (host: string, o: { force?: boolean }, cmd: Command) => {
      const r = await withEtcd(cmd, (client, cfg) =>
        reclaimHost(client, host, { ...prefixOf(cfg), ...(o.force ? { force: true } : {}) }),
      );
      if (globals(cmd).json) printJson(r);
      else
        process.stdout.write(
          `reclaimed ${r.host}: ${r.records.length} record(s), ${r.leases.length} address(es), ${r.overlayEntries} overlay entr${r.overlayEntries === 1 ? 'y' : 'ies'}, ${r.otherKeys} other key(s)\n`,
        );
    });
}
