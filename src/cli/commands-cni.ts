/**
 * `tapnet cni add|check|del|gc|status <network> <netns>`: cnitool's command line over tapnet's libcni
 * (src/cni) — NETCONFPATH, CNI_PATH, CNI_IFNAME, CNI_ARGS and CAP_ARGS as cnitool reads them — for
 * trying a conflist by hand, outside any VM.
 */
import type { Command } from 'commander';
import { TapnetError } from '../errors.js';
import { printJson } from './output.js';

const VERBS = ['add', 'check', 'del', 'gc', 'status'] as const;
type Verb = (typeof VERBS)[number];

export function addCniCommand(program: Command): void {
  program
    .command('cni')
    .description('run a CNI network list on a namespace, like cnitool (add, check, del, gc, status)')
    .argument('<verb>', VERBS.join(' | '))
    .argument('<network>', 'the conflist name in NETCONFPATH (default /etc/cni/net.d)')
    .argument('[netns]', 'namespace path (add, check, del)')
    .option('--cache-dir <dir>', 'result cache (default /var/lib/cni, shared with libcni tools)')
    .addHelpText(
      'after',
      `
Environment (as cnitool): NETCONFPATH, CNI_PATH (default /opt/cni/bin:/usr/lib/cni), CNI_IFNAME (eth0),
CNI_ARGS (K=V;K=V), CAP_ARGS (JSON). The container ID is cnitool's, derived from the namespace path.

Examples:
  ip netns add demo
  tapnet cni add vms /run/netns/demo          prints the result
  tapnet cni check vms /run/netns/demo
  tapnet cni del vms /run/netns/demo`,
    )
    .action(async (verb: string, network: string, netns: string | undefined, o: { cacheDir?: string }) => {
      if (!VERBS.includes(verb as Verb))
        throw new TapnetError(
          'ERR_INVALID_ARGUMENT',
          `verb must be one of ${VERBS.join(', ')}, not ${JSON.stringify(verb)}`,
        );
      const v = verb as Verb;
      const needsNetns = v === 'add' || v === 'check' || v === 'del';
      if (needsNetns && !netns)
        throw new TapnetError('ERR_INVALID_ARGUMENT', `cni ${v} needs a namespace path`);
      // Loaded on use: the CLI's other commands do not pay for libcni.
      const cni = await import('../cni/index.js');
      const setup = cni.cnitoolSetup(network, netns ?? '/proc/self/ns/net');
      const runtime = new cni.CniRuntime({
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
