/**
 * `tapnet cni add|check|del|gc|status <network> <netns>`: cnitool's command line over tapnet's libcni
 * (src/cni) — NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS and CAP_ARGS as cnitool reads them — for
 * trying a conflist by hand, outside any VM; tapnet's own plugins (tc-redirect-tap) run in-process.
 * `tapnet cni conflist`: prints (or writes) the bridge → tc-redirect-tap conflist Firecracker users need.
 */
import type { Command } from 'commander';
import { TapnetError } from '../errors.js';
import { printJson } from './output.js';

const VERBS = ['add', 'check', 'del', 'gc', 'status', 'conflist'] as const;
type Verb = (typeof VERBS)[number];

export function addCniCommand(program: Command): void {
  program
    .command('cni')
    .description(
      'run a CNI network list on a namespace, like cnitool (add, check, del, gc, status); print a conflist (conflist)',
    )
    .argument('<verb>', VERBS.join(' | '))
    .argument(
      '[network]',
      'the conflist name in NETCONFPATH (default /etc/cni/net.d); for conflist: its name (default fcnet)',
    )
    .argument('[netns]', 'namespace path (add, check, del)')
    .option('--cache-dir <dir>', 'result cache (default /var/lib/cni, shared with libcni tools)')
    .option('--bridge <name>', 'conflist: bridge name (default fcbr0)')
    .option('--subnet <cidr>', 'conflist: subnet (default 10.168.0.0/24)')
    .option('--gateway <ip>', 'conflist: gateway (default: the first address)')
    .option('--write <dir>', 'conflist: write <dir>/<name>.conflist atomically instead of printing')
    .addHelpText(
      'after',
      `
Environment (as cnitool): NETCONFPATH, CNI_PATH (default /opt/cni/bin:/usr/lib/cni), CNI_IFNAME (eth0),
CNI_ARGS (K=V;K=V), CAP_ARGS (JSON). The container ID is cnitool's, derived from the namespace path.

Examples:
  ip netns add demo
  tapnet cni add vms /run/netns/demo          prints the result
  tapnet cni check vms /run/netns/demo
  tapnet cni del vms /run/netns/demo
  tapnet cni conflist                          bridge fcbr0 (10.168.0.0/24) → tc-redirect-tap
  tapnet cni conflist fcnet --subnet 198.18.9.0/24 --write /etc/cni/net.d`,
    )
    .action(async (verb: string, network: string | undefined, netns: string | undefined, o: CniFlags) => {
      if (!VERBS.includes(verb as Verb))
        throw new TapnetError(
          'ERR_INVALID_ARGUMENT',
          `verb must be one of ${VERBS.join(', ')}, not ${JSON.stringify(verb)}`,
        );
      const v = verb as Verb;
      if (v === 'conflist') return conflist(network, o);
      if (!network) throw new TapnetError('ERR_INVALID_ARGUMENT', `cni ${v} needs a network name`);
      const needsNetns = v === 'add' || v === 'check' || v === 'del';
      if (needsNetns && !netns)
        throw new TapnetError('ERR_INVALID_ARGUMENT', `cni ${v} needs a namespace path`);
      // Loaded on use: the CLI's other commands do not pay for libcni.
      const cni = await import('../cni/index.js');
      const setup = cni.cnitoolSetup(network, netns ?? '/proc/self/ns/net');
      const { inProcessPlugins } = await import('../cni/plugins/index.js');
      const runtime = new cni.CniRuntime({
        inProcessPlugins,
        pluginPaths: setup.pluginPaths.length ? setup.pluginPaths : cni.DEFAULT_PLUGIN_PATHS,
        ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
      });
      switch (v) {
        case 'add': {
          const result = await runtime.addNetworkList(setup.list, setup.rt);
          process.stdout.write(`${cni.goMarshalIndent(cni.resultToMap(result))}\n`);
          return;
        }
        case 'check':
          return runtime.checkNetworkList(setup.list, setup.rt);
        case 'del':
          return runtime.delNetworkList(setup.list, setup.rt);
        case 'gc':
          return runtime.gcNetworkList(setup.list, { validAttachments: [] });
        case 'status':
          await runtime.getStatusNetworkList(setup.list);
          printJson({ network: setup.list.name, status: 'ok' });
          return;
      }
    });
}

interface CniFlags {
  cacheDir?: string;
  bridge?: string;
  subnet?: string;
  gateway?: string;
  write?: string;
}

async function conflist(name: string | undefined, o: CniFlags): Promise<void> {
  const { firecrackerConflist, writeConflist } = await import('../manager/cni-conflist.js');
  const doc = firecrackerConflist({
    ...(name ? { name } : {}),
    ...(o.bridge ? { bridge: o.bridge } : {}),
    ...(o.subnet ? { subnet: o.subnet } : {}),
    ...(o.gateway ? { gateway: o.gateway } : {}),
  });
  if (o.write) process.stdout.write(`${writeConflist(o.write, doc)}\n`);
  else printJson(doc);
}
