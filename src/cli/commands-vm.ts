/**
 * The VM commands: up, down, ls, inspect (stats: commands-stats.ts). Each works through the daemon or in-process
 * (context.ts); batches run a few calls at a time with a progress bar on a terminal.
 */
import { type Command, Option } from 'commander';
import type { EnsureBody } from '../daemon/schemas.js';
import { TapnetError, toTapnetError } from '../errors.js';
import { renderGuestConfig } from '../manager/info.js';
import type { NetworkInfo } from '../manager/types.js';
import { globals, mapLimit, withApi } from './context.js';
import { exitCodeFor, printJson } from './output.js';
import { Progress } from './progress.js';
import { vmTable } from './render.js';

const int =
  (what: string, min = 0) =>
  (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < min)
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `${what} must be a whole number ≥ ${min}, not ${JSON.stringify(v)}`,
      );
    return Number(v);
  };

const help = (examples: string) => `\nExamples:\n${examples}`;

/** Report the failures of a batch (one line each) and set the exit code of the first. */
function reportBatch(
  op: string,
  ids: string[],
  results: PromiseSettledResult<unknown>[],
  json: boolean,
): void {
  let first: number | undefined;
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') return;
    const e = toTapnetError(r.reason);
    if (json) process.stderr.write(`${JSON.stringify({ vmId: ids[i], error: e.toJSON() })}\n`);
    else process.stderr.write(`tapnet: ${op} ${ids[i]}: ${e.code}: ${e.message.replaceAll('\n', ' ')}\n`);
    first ??= exitCodeFor(e);
  });
  if (first !== undefined) process.exitCode = first;
}

function batchIds(vmIds: string[], o: { count?: number; prefix?: string; start?: number }): string[] {
  if (o.count === undefined) {
    if (o.prefix !== undefined) throw new TapnetError('ERR_INVALID_ARGUMENT', '--prefix goes with --count');
    return vmIds;
  }
  if (vmIds.length) throw new TapnetError('ERR_INVALID_ARGUMENT', 'give VM ids or --count, not both');
  const start = o.start ?? 1;
  return Array.from({ length: o.count }, (_, i) => `${o.prefix ?? 'vm-'}${start + i}`);
}

export function addVmCommands(program: Command): void {
  program
    .command('up')
    .description('give VMs their network (idempotent: an existing VM gets what it has)')
    .argument('[vmIds...]', 'VM ids: 1-128 of A-Z a-z 0-9 _ . -')
    .option('--count <n>', 'batch: this many VMs named <prefix><n>', int('--count', 1))
    .option('--prefix <p>', 'batch: VM id prefix (default vm-)')
    .option('--start <n>', 'batch: first number (default 1)', int('--start'))
    .option('--network <name>', 'network (default: the configured default)')
    .option('--ip <addr>', 'static IPv4 address (one VM only)')
    .option('--ip6 <addr>', 'static IPv6 address (one VM only)')
    .option('--mac <mac>', 'guest MAC (one VM only; default: derived from the VM id)')
    .option('--queues <n>', 'TAP queues (multi-queue)', int('--queues', 1))
    .option('--uid <uid>', 'owner uid of the TAP (non-root VMMs)', int('--uid'))
    .option('--gid <gid>', 'owner gid of the TAP', int('--gid'))
    .option('--no-vnet-hdr', 'TAP without virtio-net header')
    .option('--parallel <n>', 'batch: calls at a time (default 8)', int('--parallel', 1))
    .option('--json', 'print the NetworkInfo (an array for several VMs) as JSON')
    .addHelpText(
      'after',
      help(`  tapnet up vm1
  tapnet up vm1 --network fleet --ip 198.18.0.10 --json
  tapnet up --count 100 --prefix web-      web-1 … web-100, with a progress bar on a terminal
  tapnet up vm1 vm2 vm3 --json | jq -r '.[].ipv4'`),
    )
    .action(async (vmIds: string[], o: Record<string, unknown>, cmd: Command) => {
      const ids = batchIds(vmIds, o as { count?: number; prefix?: string; start?: number });
      if (!ids.length) throw new TapnetError('ERR_INVALID_ARGUMENT', 'name at least one VM id, or --count N');
      if (ids.length > 1 && (o.ip || o.ip6 || o.mac))
        throw new TapnetError('ERR_INVALID_ARGUMENT', '--ip, --ip6 and --mac need exactly one VM');
      const opts: EnsureBody = { tap: 'persistent' };
      if (o.network) opts.network = o.network as string;
      if (o.ip) opts.ipv4 = o.ip as string;
      if (o.ip6) opts.ipv6 = o.ip6 as string;
      if (o.mac) opts.mac = o.mac as string;
      if (o.queues !== undefined) opts.queues = o.queues as number;
      if (o.uid !== undefined) opts.tapUid = o.uid as number;
      if (o.gid !== undefined) opts.tapGid = o.gid as number;
      if (o.vnetHdr === false) opts.vnetHdr = false;
      const json = globals(cmd).json === true;
      if (ids.length === 1) {
        const info = await withApi(cmd, (c) => c.api.ensure(ids[0]!, opts));
        if (json) printJson(info);
        else process.stdout.write(`${vmTable([info])}\n`);
        return;
      }
      const progress = new Progress(ids.length, 'up');
      const results = await withApi(cmd, (c) =>
        mapLimit(ids, (o.parallel as number | undefined) ?? 8, async (id) => {
          try {
            const info = await c.api.ensure(id, opts);
            progress.tick(id);
            return info;
          } catch (e) {
            progress.tick(id, false);
            throw e;
          }
        }),
      );
      progress.finish();
      const ok = results
        .filter((r): r is PromiseFulfilledResult<NetworkInfo> => r.status === 'fulfilled')
        .map((r) => r.value);
      if (json) printJson(ok);
      else process.stdout.write(`${vmTable(ok)}\n`);
      reportBatch('up', ids, results, json);
    });

  program
    .command('down')
    .description(
      "take back VMs' networks, TAPs deleted when it returns (unknown or already released: success)",
    )
    .argument('[vmIds...]', 'VM ids')
    .option('--all', 'every VM with a network')
    .option('--parallel <n>', 'calls at a time (default 16)', int('--parallel', 1))
    .option('--json', 'print what was released as JSON')
    .addHelpText(
      'after',
      help('  tapnet down vm1\n  tapnet down --all                      with a progress bar on a terminal'),
    )
    .action(async (vmIds: string[], o: { all?: boolean; parallel?: number }, cmd: Command) => {
      if (!o.all && vmIds.length === 0)
        throw new TapnetError('ERR_INVALID_ARGUMENT', 'name at least one VM id, or --all');
      if (o.all && vmIds.length)
        throw new TapnetError('ERR_INVALID_ARGUMENT', 'give VM ids or --all, not both');
      const json = globals(cmd).json === true;
      const { ids, results } = await withApi(cmd, async (c) => {
        const ids = o.all ? (await c.api.list()).map((i) => i.vmId) : vmIds;
        const progress = new Progress(ids.length, 'down');
        const results = await mapLimit(ids, o.parallel ?? 16, async (id) => {
          try {
            await c.api.release(id, { wait: true });
            progress.tick(id);
          } catch (e) {
            progress.tick(id, false);
            throw e;
          }
        });
        progress.finish();
        return { ids, results };
      });
      if (json) {
        printJson({
          released: ids.filter((_, i) => results[i]!.status === 'fulfilled'),
          failed: ids.flatMap((id, i) => {
            const r = results[i]!;
            return r.status === 'rejected' ? [{ vmId: id, error: toTapnetError(r.reason).toJSON() }] : [];
          }),
        });
      }
      reportBatch('down', ids, results, json);
    });

  program
    .command('ls')
    .description('list VMs with a network')
    .option('--network <name>', 'only this network')
    .option('--json', 'JSON array of NetworkInfo')
    .addHelpText('after', help("  tapnet ls\n  tapnet ls --json | jq -r '.[] | [.vmId, .ipv4] | @tsv'"))
    .action(async (o: { network?: string }, cmd: Command) => {
      const all = await withApi(cmd, (c) => c.api.list());
      const list = o.network ? all.filter((i) => i.network === o.network) : all;
      if (globals(cmd).json) printJson(list);
      else process.stdout.write(`${vmTable(list)}\n`);
    });

  program
    .command('inspect')
    .description("one VM's network, with configuration for its guest and VMM")
    .argument('<vmId>')
    .addOption(
      new Option('--machine <m>', 'QEMU machine type for the rendered arguments')
        .choices(['microvm', 'q35', 'pc'])
        .default('q35'),
    )
    .option('--json', 'JSON: NetworkInfo plus `guest`')
    .addHelpText(
      'after',
      help('  tapnet inspect vm1\n  tapnet inspect vm1 --machine microvm --json | jq .guest.qemu.byName'),
    )
    .action(async (vmId: string, o: { machine: 'microvm' | 'q35' | 'pc' }, cmd: Command) => {
      const info = await withApi(cmd, (c) => c.api.get(vmId));
      if (!info) throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`);
      const guest = renderGuestConfig(info, { machine: o.machine });
      if (globals(cmd).json) return printJson({ ...info, guest });
      const lines = [
        vmTable([info]),
        '',
        `kernel:          ${guest.kernelIpArg ?? '(IPv6 only)'}`,
        `qemu (by name):  ${guest.qemu.byName.join(' ')}`,
        `qemu (fd 3):     ${guest.qemu.byFd.join(' ')}`,
        `cloud-hypervisor --net ${guest.cloudHypervisor}`,
        `firecracker:     ${JSON.stringify(guest.firecracker ?? null)}`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
