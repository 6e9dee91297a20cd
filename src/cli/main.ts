#!/usr/bin/env node
/**
 * The `tapnet` command: a thin adapter over the NetworkManager. Every read command takes --json; errors
 * are one line on stderr and a meaningful exit code (see EXIT_CODES).
 */
import { Command, CommanderError, Option } from 'commander';
import { TapnetError } from '../errors.js';
import { renderGuestConfig } from '../manager/info.js';
import { NetworkManager } from '../manager/manager.js';
import type { EnsureOptions, NetworkInfo } from '../manager/types.js';
import { type GlobalFlags, loadCliConfig } from './config.js';
import { EXIT_CODES, printJson, reportError, table } from './output.js';

const EXAMPLES = `
Examples:
  tapnet up vm1                          give vm1 a TAP, an address, NAT and anti-spoofing
  tapnet up vm1 --network fleet --ip 198.18.0.10 --json
  tapnet inspect vm1 --json              the same answer again, with guest/VMM configuration
  tapnet ls                              every VM with a network
  tapnet down vm1                        take it all back (no-op when already gone)
  tapnet gc                              repair after a crash: orphans removed, vanished TAPs re-created

Configuration: --config FILE (JSON; or TAPNET_CONFIG), TAPNET_STATE_DIR/--state-dir, TAPNET_NETNS/--netns.
Exit codes: 0 ok, 1 failure, 2 invalid argument or config, 3 not found, 4 conflict, 5 exhausted or
capacity, 6 permission denied, 7 unsupported platform, 8 teardown incomplete, 9 timeout or aborted.`;

function globals(cmd: Command): GlobalFlags & { json?: boolean } {
  return cmd.optsWithGlobals() as GlobalFlags & { json?: boolean };
}

async function withManager<T>(cmd: Command, fn: (m: NetworkManager) => Promise<T>): Promise<T> {
  const m = await NetworkManager.open(loadCliConfig(globals(cmd)));
  try {
    return await fn(m);
  } finally {
    await m.close();
  }
}

const int = (what: string) => (v: string) => {
  if (!/^\d+$/.test(v)) throw new TapnetError('ERR_INVALID_ARGUMENT', `${what} must be a whole number, not ${JSON.stringify(v)}`);
  return Number(v);
};

function infoRows(list: NetworkInfo[]): string[][] {
  return list.map((i) => [i.vmId, i.network, i.tap, i.ipv4 ?? '-', i.ipv6 ?? '-', i.mac, i.bridge ?? i.topology]);
}

export function buildProgram(): Command {
  const program = new Command('tapnet')
    .description('Networking for microVMs: TAP devices, addresses, NAT and anti-spoofing, without leaks.')
    .option('--config <file>', 'configuration file (JSON)')
    .option('--state-dir <dir>', 'state directory (default /var/lib/tapnet)')
    .option('--netns <name|path>', 'manage this network namespace instead of the current one')
    .addHelpText('after', EXAMPLES)
    .showHelpAfterError(false)
    .exitOverride();

  program
    .command('up')
    .description('give a VM its network (idempotent: an existing VM gets what it has)')
    .argument('<vmId>', 'VM id: 1-128 of A-Z a-z 0-9 _ . -')
    .option('--network <name>', 'network (default: the configured default)')
    .option('--ip <addr>', 'static IPv4 address')
    .option('--ip6 <addr>', 'static IPv6 address')
    .option('--mac <mac>', 'guest MAC (default: derived from the VM id)')
    .option('--queues <n>', 'TAP queues (multi-queue)', int('--queues'))
    .option('--uid <uid>', 'owner uid of the TAP (non-root VMMs)', int('--uid'))
    .option('--gid <gid>', 'owner gid of the TAP', int('--gid'))
    .option('--no-vnet-hdr', 'TAP without virtio-net header')
    .option('--json', 'print the NetworkInfo as JSON')
    .action(async (vmId: string, o: Record<string, unknown>, cmd: Command) => {
      const opts: EnsureOptions = { tap: 'persistent' };
      if (o.network) opts.network = o.network as string;
      if (o.ip) opts.ipv4 = o.ip as string;
      if (o.ip6) opts.ipv6 = o.ip6 as string;
      if (o.mac) opts.mac = o.mac as string;
      if (o.queues !== undefined) opts.queues = o.queues as number;
      if (o.uid !== undefined) opts.tapUid = o.uid as number;
      if (o.gid !== undefined) opts.tapGid = o.gid as number;
      if (o.vnetHdr === false) opts.vnetHdr = false;
      const info = await withManager(cmd, (m) => m.ensure(vmId, opts));
      if (globals(cmd).json) printJson(info);
      else process.stdout.write(`${table(['VM', 'NETWORK', 'TAP', 'IPV4', 'IPV6', 'MAC', 'BRIDGE'], infoRows([info]))}\n`);
    });

  program
    .command('down')
    .description('take back VMs\' networks (unknown or already released: success)')
    .argument('[vmIds...]', 'VM ids')
    .option('--all', 'every VM with a network')
    .option('--json', 'print what was released as JSON')
    .action(async (vmIds: string[], o: { all?: boolean }, cmd: Command) => {
      if (!o.all && vmIds.length === 0) throw new TapnetError('ERR_INVALID_ARGUMENT', 'name at least one VM id, or --all');
      const result = await withManager(cmd, async (m) => {
        const ids = o.all ? (await m.list()).map((i) => i.vmId) : vmIds;
        return m.releaseMany(ids);
      });
      if (globals(cmd).json) printJson({ released: result.released, failed: result.failed.map((f) => ({ vmId: f.vmId, error: f.error.toJSON() })) });
      if (result.failed.length) throw result.failed[0]!.error;
    });

  program
    .command('ls')
    .description('list VMs with a network')
    .option('--json', 'JSON array of NetworkInfo')
    .action(async (_o: unknown, cmd: Command) => {
      const list = await withManager(cmd, (m) => m.list());
      if (globals(cmd).json) printJson(list);
      else process.stdout.write(`${table(['VM', 'NETWORK', 'TAP', 'IPV4', 'IPV6', 'MAC', 'BRIDGE'], infoRows(list))}\n`);
    });

  program
    .command('inspect')
    .description("one VM's network, with configuration for its guest and VMM")
    .argument('<vmId>')
    .addOption(new Option('--machine <m>', 'QEMU machine type for the rendered arguments').choices(['microvm', 'q35', 'pc']).default('q35'))
    .option('--json', 'JSON')
    .action(async (vmId: string, o: { machine: 'microvm' | 'q35' | 'pc' }, cmd: Command) => {
      const info = await withManager(cmd, (m) => m.get(vmId));
      if (!info) throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`);
      const guest = renderGuestConfig(info, { machine: o.machine });
      if (globals(cmd).json) return printJson({ ...info, guest });
      const lines = [
        table(['VM', 'NETWORK', 'TAP', 'IPV4', 'IPV6', 'MAC', 'BRIDGE'], infoRows([info])),
        '',
        `kernel:          ${guest.kernelIpArg ?? '(IPv6 only)'}`,
        `qemu (by name):  ${guest.qemu.byName.join(' ')}`,
        `qemu (fd 3):     ${guest.qemu.byFd.join(' ')}`,
        `cloud-hypervisor --net ${guest.cloudHypervisor}`,
        `firecracker:     ${JSON.stringify(guest.firecracker ?? null)}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });

  program
    .command('gc')
    .description('reconcile the state with the kernel and the firewall, and repair')
    .option('--json', 'print the report as JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const report = await withManager(cmd, (m) => m.reconcile());
      if (globals(cmd).json) return printJson(report);
      const n = (a: unknown[]) => String(a.length);
      process.stdout.write(
        `${table(
          ['REPAIR', 'COUNT', 'ITEMS'],
          [
            ['orphan TAPs removed', n(report.orphanTaps), report.orphanTaps.join(' ')],
            ['incomplete records finished', n(report.incompleteRecords), report.incompleteRecords.join(' ')],
            ['vanished TAPs re-created', n(report.recreatedTaps), report.recreatedTaps.join(' ')],
            ['orphan leases freed', n(report.orphanLeases), report.orphanLeases.join(' ')],
            ['orphan firewall elements removed', n(report.orphanFirewallElements), report.orphanFirewallElements.join(' ')],
            ['corrupt records quarantined', n(report.corruptRecords), report.corruptRecords.join(' ')],
          ],
        )}\n`,
      );
      for (const e of report.errors) process.stderr.write(`tapnet: gc: ${e.code}: ${e.message}\n`);
      if (report.errors.length) process.exitCode = EXIT_CODES.failure;
    });

  return program;
}

/** Run the CLI with `argv` (as process.argv); resolves to the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  const json = argv.includes('--json');
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_CODES.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      return EXIT_CODES.ERR_INVALID_ARGUMENT!;
    }
    return reportError(e, json);
  }
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain || process.argv[1]?.endsWith('/tapnet')) {
  runCli(process.argv).then((code) => process.exit(code));
}
