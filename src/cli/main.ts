#!/usr/bin/env node
/**
 * The `tapnet` command: a thin adapter over the API — through the daemon when one answers on the socket,
 * in-process otherwise. Every read command takes --json; errors are one line on stderr and a meaningful
 * exit code (see EXIT_CODES).
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { addClusterCommand } from './commands-cluster.js';
import { addCniCommand } from './commands-cni.js';
import { addOpsCommands } from './commands-ops.js';
import { addPolicyCommand } from './commands-policy.js';
import { addVmCommands } from './commands-vm.js';
import { EXIT_CODES, reportError } from './output.js';

const EXAMPLES = `
Examples:
  tapnet up vm1                          give vm1 a TAP, an address, NAT and anti-spoofing
  tapnet up vm1 --network fleet --ip 198.18.0.10 --json
  tapnet up --count 50 --prefix vm-      vm-1 … vm-50 (progress bar on a terminal)
  tapnet inspect vm1 --json              the same answer again, with guest/VMM configuration
  tapnet ls                              every VM with a network
  tapnet stats vm1                       traffic counters of its TAP
  tapnet down vm1                        take it all back (no-op when already gone)
  tapnet down --all
  tapnet gc                              repair after a crash: orphans removed, vanished TAPs re-created
  tapnet verify                          compare state, kernel and firewall; change nothing
  tapnet doctor                          check the host: modules, devices, bridge, NAT, DNS, leftovers
  tapnet serve                           run the daemon (API on /run/tapnet/tapnet.sock)
  tapnet config --print                  the effective configuration and where each value came from
  tapnet cni add vms /run/netns/demo     run a CNI conflist by hand, like cnitool
  tapnet cluster status                  cluster mode: every host, its VTEP, lease state and VMs (etcd)
  tapnet cluster reclaim host-b --force  free a dead host's addresses (refused while it is alive)

Daemon: commands go through the daemon when one answers on the socket (--socket, TAPNET_SOCKET,
api.socket; default /run/tapnet/tapnet.sock), and run in-process otherwise; --local forces in-process.
Configuration: /etc/tapnet/config.yaml (or .json; --config FILE, TAPNET_CONFIG), then TAPNET_*
variables, then flags. See \`tapnet config --help\`.
Exit codes: 0 ok, 1 failure (also: verify found problems, doctor found a ✗), 2 invalid argument or
config, 3 not found, 4 conflict, 5 exhausted or capacity, 6 permission denied, 7 unsupported platform,
8 teardown incomplete, 9 timeout, aborted or unavailable (cluster store unreachable: retry).`;

export function buildProgram(): Command {
  const program = new Command('tapnet')
    .description('Networking for microVMs: TAP devices, addresses, NAT and anti-spoofing, without leaks.')
    .option('--config <file>', 'configuration file (YAML or JSON; default /etc/tapnet/config.yaml)')
    .option('--state-dir <dir>', 'state directory (default /var/lib/tapnet)')
    .option('--netns <name|path>', 'manage this network namespace instead of the current one')
    .option('--socket <path>', 'the daemon’s API socket (default /run/tapnet/tapnet.sock)')
    .option('--local', 'never use the daemon: run in this process')
    .addHelpText('after', EXAMPLES)
    .showHelpAfterError(false)
    .exitOverride();
  addVmCommands(program);
  addOpsCommands(program);
  addPolicyCommand(program);
  addCniCommand(program);
  addClusterCommand(program);
  for (const c of program.commands) c.exitOverride();
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
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      )
        return 0;
      return EXIT_CODES.ERR_INVALID_ARGUMENT!;
    }
    return reportError(e, json);
  }
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  runCli(process.argv).then((code) => {
    // Let stdout drain (pipes), then exit: the daemon's timers and FFI handles must not keep us alive.
    process.stdout.write('', () => process.exit(code));
  });
}
