/**
 * The operator commands: stats and usage (commands-stats.ts), gc, verify, doctor, serve, config.
 */
import { type Command, Option } from 'commander';
import { describeConfig, type FlagValue } from '../config/load.js';
import { LOG_LEVELS } from '../config/schema.js';
import { DaemonClient } from '../daemon/client.js';
import { runDoctor } from '../observe/doctor.js';
import { addStatsCommands } from './commands-stats.js';
import { loadCliConfig } from './config.js';
import { globals, withApi } from './context.js';
import { EXIT_CODES, printJson } from './output.js';
import { configTable, doctorText, reconcileTable, verifyText } from './render.js';

const help = (examples: string) => `\nExamples:\n${examples}`;

export function addOpsCommands(program: Command): void {
  addStatsCommands(program);
  program
    .command('gc')
    .description('reconcile the state with the kernel and the firewall, and repair')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      help('  tapnet gc            after a crash or a reboot: orphans removed, vanished TAPs re-created'),
    )
    .action(async (_o: unknown, cmd: Command) => {
      const report = await withApi(cmd, (c) => c.api.gc());
      if (globals(cmd).json) printJson(report);
      else process.stdout.write(`${reconcileTable(report)}\n`);
      for (const e of report.errors) process.stderr.write(`tapnet: gc: ${e.code}: ${e.message}\n`);
      if (report.errors.length) process.exitCode = EXIT_CODES.failure;
    });

  program
    .command('verify')
    .description('compare the state with the kernel and the firewall, change nothing (exit 1 on any problem)')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      help(
        '  tapnet verify && echo consistent\n  tapnet verify --json | jq \'.problems[] | select(.kind == "orphan-tap")\'',
      ),
    )
    .action(async (_o: unknown, cmd: Command) => {
      const report = await withApi(cmd, (c) => c.api.verify());
      if (globals(cmd).json) printJson(report);
      else process.stdout.write(`${verifyText(report)}\n`);
      if (!report.ok) process.exitCode = EXIT_CODES.failure;
    });

  program
    .command('doctor')
    .description('check everything tapnet needs on this host, each ✓/✗ with the fix (exit 1 on any ✗)')
    .option('--dns-timeout <ms>', 'how long to wait for each DNS server', (v) => Number(v), 1500)
    .option('--json', 'print the checks as JSON')
    .addHelpText(
      'after',
      help('  sudo tapnet doctor\n  tapnet doctor --json | jq \'.checks[] | select(.status == "fail")\''),
    )
    .action(async (o: { dnsTimeout: number }, cmd: Command) => {
      const g = globals(cmd);
      const loaded = loadCliConfig(g);
      const socket = loaded.config.api.socket;
      const state = await DaemonClient.probe(socket, 2000);
      const report = await runDoctor({ loaded, daemon: { socket, state }, dnsTimeoutMs: o.dnsTimeout });
      if (g.json) printJson(report);
      else process.stdout.write(`${doctorText(report)}\n`);
      if (!report.ok) process.exitCode = EXIT_CODES.failure;
    });

  program
    .command('serve')
    .description('run the daemon: the HTTP/JSON API on a Unix socket (and optionally loopback TCP)')
    .option('--tcp <host:port>', 'also listen on loopback TCP (needs --token-file or api.token)')
    .option('--token-file <file>', 'bearer token for TCP clients (first line of the file)')
    .addOption(new Option('--log-level <level>', 'log level').choices([...LOG_LEVELS]))
    .addHelpText(
      'after',
      help(`  tapnet serve                                   /run/tapnet/tapnet.sock
  tapnet serve --socket /tmp/t.sock --log-level debug
  tapnet serve --tcp 127.0.0.1:7070 --token-file /etc/tapnet/token
  curl --unix-socket /run/tapnet/tapnet.sock -X PUT http://localhost/v1/vms/vm1
Signals: SIGTERM finishes calls in flight and exits (VMs keep their networks); SIGHUP reloads the configuration.`),
    )
    .action(async (o: { tcp?: string; tokenFile?: string; logLevel?: string }, cmd: Command) => {
      const extra: FlagValue[] = [];
      if (o.tcp) extra.push({ key: 'api.tcp', value: o.tcp, flag: '--tcp' });
      if (o.tokenFile) extra.push({ key: 'api.tokenFile', value: o.tokenFile, flag: '--token-file' });
      if (o.logLevel) extra.push({ key: 'log.level', value: o.logLevel, flag: '--log-level' });
      const loaded = loadCliConfig(globals(cmd), process.env, extra);
      const { Daemon } = await import('../daemon/server.js'); // pino and prom-client: only for serve
      const daemon = await Daemon.start({ loaded, handleSignals: true });
      try {
        await daemon.ready;
      } catch {
        await daemon.done;
        process.exitCode = EXIT_CODES.failure;
        return;
      }
      await daemon.done;
    });

  program
    .command('config')
    .description('show the effective configuration and where each value came from')
    .option('--print', 'print it (the default)')
    .option('--check', 'only validate: exit 0 when valid, 2 with the reason otherwise')
    .option('--json', 'print it as JSON: [{key, value, source}]')
    .addHelpText(
      'after',
      help(`  tapnet config --print
  TAPNET_LOG_LEVEL=debug tapnet config --print --json | jq '.[] | select(.key == "log.level")'
  tapnet --config ./config.yaml config --check
Sources, lowest to highest precedence: default, file (/etc/tapnet/config.yaml or .json, --config,
TAPNET_CONFIG), env (TAPNET_STATE_DIR, TAPNET_NETNS, TAPNET_SOCKET, TAPNET_LOG_LEVEL, …), flag.`),
    )
    .action(async (o: { check?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const loaded = loadCliConfig(g);
      if (o.check) {
        process.stdout.write(
          `configuration is valid${loaded.file ? ` (${loaded.file})` : ' (no file: defaults)'}\n`,
        );
        return;
      }
      const entries = describeConfig(loaded);
      if (g.json) printJson(entries);
      else process.stdout.write(`${configTable(entries, loaded.file)}\n`);
    });
}
