/**
 * The monitoring commands: `stats` (counters once, or `--watch`: a table with rates redrawn on a
 * terminal, one JSON line per sample when piped) and `usage` (the usage export; `--collect` hands over
 * and forgets released VMs' final totals). Through the daemon or in-process, like every command.
 */
import type { Command } from 'commander';
import type { TapnetApi } from '../daemon/service.js';
import { TapnetError, toTapnetError } from '../errors.js';
import type { UsageEntry } from '../observe/usage.js';
import type { StatsReport, VmStats } from '../observe/vmstats.js';
import { globals, mapLimit, withApi } from './context.js';
import { exitCodeFor, printJson, table } from './output.js';
import { humanBytes } from './render.js';

const help = (examples: string) => `\nExamples:\n${examples}`;

/** Per-second rates of one VM between two samples (guest's side). */
export interface VmRates {
  guestRxBytesPerSecond: number;
  guestTxBytesPerSecond: number;
  guestRxPacketsPerSecond: number;
  guestTxPacketsPerSecond: number;
}

/** One `--watch` sample: the report, each VM with its rates since the previous sample (null: first). */
export type WatchSample = Omit<StatsReport, 'vms'> & { vms: (VmStats & { rates: VmRates | null })[] };

const delta = (now: number, before: number) => (now >= before ? now - before : now); // a reset: from zero

/** Rates between two reports (pure). A VM absent before, or whose TAP changed, has none. */
export function withRates(prev: StatsReport | undefined, cur: StatsReport): WatchSample {
  const seconds = prev ? (Date.parse(cur.collectedAt) - Date.parse(prev.collectedAt)) / 1000 : 0;
  const before = new Map((prev?.vms ?? []).map((v) => [v.vmId, v]));
  return {
    ...cur,
    vms: cur.vms.map((v) => {
      const p = before.get(v.vmId);
      if (!p || p.tap !== v.tap || seconds <= 0) return { ...v, rates: null };
      const rate = (a: number, b: number) => Math.round((delta(a, b) / seconds) * 10) / 10;
      return {
        ...v,
        rates: {
          guestRxBytesPerSecond: rate(v.guestRx.bytes, p.guestRx.bytes),
          guestTxBytesPerSecond: rate(v.guestTx.bytes, p.guestTx.bytes),
          guestRxPacketsPerSecond: rate(v.guestRx.packets, p.guestRx.packets),
          guestTxPacketsPerSecond: rate(v.guestTx.packets, p.guestTx.packets),
        },
      };
    }),
  };
}

const policy = (v: VmStats) =>
  v.policyDrops ? String(v.policyDrops.egress.packets + v.policyDrops.ingress.packets) : '-';

/** The networks' drop counters, one line each (they are counted per network, not per VM). */
export function networkDropLines(r: Pick<StatsReport, 'networks'>): string[] {
  return r.networks
    .filter((n) => n.drops && n.vms > 0)
    .map(
      (n) =>
        `network ${n.network}: anti-spoofing dropped ${n.drops!.spoof.packets} packet(s), isolation ${n.drops!.isolate.packets} (per network, all its VMs)`,
    );
}

/** The one-shot table. */
export function statsTable(list: VmStats[]): string {
  return table(
    ['VM', 'TAP', 'STATE', 'GUEST RX', 'RX PKTS', 'GUEST TX', 'TX PKTS', 'ERRORS', 'DROPPED', 'POLICY DROPS'],
    list.map((s) => [
      s.vmId,
      s.tap,
      s.operstate,
      humanBytes(s.guestRx.bytes),
      String(s.guestRx.packets),
      humanBytes(s.guestTx.bytes),
      String(s.guestTx.packets),
      String(s.guestRx.errors + s.guestTx.errors),
      String(s.guestRx.dropped + s.guestTx.dropped),
      policy(s),
    ]),
  );
}

/** The `--watch` table: rates first. */
export function watchTable(s: WatchSample): string {
  const perSecond = (n: number | undefined) => (n === undefined ? '-' : `${humanBytes(n)}/s`);
  const pps = (n: number | undefined) => (n === undefined ? '-' : String(n));
  const rows = s.vms.map((v) => [
    v.vmId,
    v.network,
    v.operstate,
    perSecond(v.rates?.guestRxBytesPerSecond),
    perSecond(v.rates?.guestTxBytesPerSecond),
    pps(v.rates?.guestRxPacketsPerSecond),
    pps(v.rates?.guestTxPacketsPerSecond),
    humanBytes(v.guestRx.bytes),
    humanBytes(v.guestTx.bytes),
    String(v.guestRx.errors + v.guestTx.errors + v.guestRx.dropped + v.guestTx.dropped),
    policy(v),
  ]);
  const head = [
    'VM',
    'NETWORK',
    'STATE',
    'RX/S',
    'TX/S',
    'RX PPS',
    'TX PPS',
    'GUEST RX',
    'GUEST TX',
    'ERR+DROP',
    'POLICY DROPS',
  ];
  const lines = [table(head, rows), ...networkDropLines(s)];
  for (const p of s.problems) lines.push(`! ${p.vmId ?? p.network ?? ''} ${p.code}: ${p.message}`);
  return lines.join('\n');
}

/** A StatsReport from any TapnetApi (per-VM calls for services without statsAll). */
async function statsReport(api: TapnetApi, ids: string[]): Promise<StatsReport> {
  if (api.statsAll) return api.statsAll(ids.length ? ids : undefined);
  const list = ids.length ? ids : (await api.list()).map((i) => i.vmId);
  const results = await mapLimit(list, 16, (id) => api.stats(id));
  const report: StatsReport = {
    collectedAt: new Date().toISOString(),
    vms: [],
    networks: [],
    unregisteredDrops: null,
    problems: [],
  };
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') report.vms.push(r.value);
    else {
      const e = toTapnetError(r.reason);
      report.problems.push({ vmId: list[i]!, code: e.code, message: e.message });
    }
  });
  return report;
}

/** What `--watch` writes to: stdout, or a test's stand-in. */
export interface WatchOutput {
  isTTY?: boolean;
  write(s: string): boolean;
}

/**
 * Sample every `intervalSeconds` until `count` samples (default: until SIGINT/SIGTERM or `signal`).
 * On a terminal (and without `json`): the table redrawn in place; otherwise one JSON line per sample.
 */
export async function watchStats(
  read: () => Promise<StatsReport>,
  o: { intervalSeconds: number; count?: number; json?: boolean; out?: WatchOutput; signal?: AbortSignal },
): Promise<number> {
  const out = o.out ?? process.stdout;
  const tty = out.isTTY === true && !o.json;
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  o.signal?.addEventListener('abort', onSignal, { once: true });
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let prev: StatsReport | undefined;
  let n = 0;
  try {
    while (!stop.signal.aborted) {
      const cur = await read();
      const sample = withRates(prev, cur);
      if (tty) {
        const when = new Date(cur.collectedAt).toLocaleTimeString();
        out.write(
          `\x1b[H\x1b[2Jtapnet stats: every ${o.intervalSeconds}s, ${when} (Ctrl-C to stop)\n\n${watchTable(sample)}\n`,
        );
      } else out.write(`${JSON.stringify(sample)}\n`);
      prev = cur;
      if (o.count !== undefined && ++n >= o.count) break;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          stop.signal.removeEventListener('abort', wake);
          resolve();
        };
        const t = setTimeout(wake, o.intervalSeconds * 1000);
        stop.signal.addEventListener('abort', wake, { once: true });
      });
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    o.signal?.removeEventListener('abort', onSignal);
  }
  return n;
}

function number(what: string, min: number, integer: boolean) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || n < min || (integer && !Number.isInteger(n))) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `${what} must be a ${integer ? 'whole ' : ''}number ≥ ${min}, not ${JSON.stringify(v)}`,
      );
    }
    return n;
  };
}

export function usageTable(list: UsageEntry[]): string {
  return table(
    [
      'VM',
      'NETWORK',
      'STATE',
      'GUEST RX',
      'RX PKTS',
      'GUEST TX',
      'TX PKTS',
      'RESETS',
      'FIRST SEEN',
      'RELEASED',
    ],
    list.map((u) => [
      u.vmId,
      u.network,
      u.state,
      humanBytes(u.guestRx.bytes),
      String(u.guestRx.packets),
      humanBytes(u.guestTx.bytes),
      String(u.guestTx.packets),
      String(u.resets),
      u.firstSeenAt,
      u.releasedAt ?? '-',
    ]),
  );
}

function unsupported(what: string): TapnetError {
  return new TapnetError('ERR_NOT_FOUND', `this tapnet service does not offer ${what}`);
}

export function addStatsCommands(program: Command): void {
  program
    .command('stats')
    .description("traffic counters of VMs' TAPs (all VMs when none is named), policy and anti-spoofing drops")
    .argument('[vmIds...]')
    .option('--watch', 'sample again and again: a table with rates on a terminal, JSON lines when piped')
    .option(
      '--interval <seconds>',
      'with --watch: seconds between samples (default 2)',
      number('--interval', 0.1, false),
      2,
    )
    .option('--count <n>', 'with --watch: stop after n samples', number('--count', 1, true))
    .option('--json', 'JSON array of counters (with --watch: one JSON object per line)')
    .addHelpText(
      'after',
      help(`  tapnet stats
  tapnet stats vm1 --json
  tapnet stats --watch                         redrawn every 2 s, with RX/s and TX/s
  tapnet stats vm1 vm2 --watch --interval 10 | jq -c '.vms[] | [.vmId, .rates]'
Anti-spoofing and isolation drops are counted per network (listed under the table), policy drops per VM.`),
    )
    .action(
      async (vmIds: string[], o: { watch?: boolean; interval: number; count?: number }, cmd: Command) => {
        const json = globals(cmd).json === true;
        if (o.watch) {
          await withApi(cmd, (c) =>
            watchStats(() => statsReport(c.api, vmIds), {
              intervalSeconds: o.interval,
              ...(o.count !== undefined ? { count: o.count } : {}),
              json,
            }),
          );
          return;
        }
        const { ids, results } = await withApi(cmd, async (c) => {
          const ids = vmIds.length ? vmIds : (await c.api.list()).map((i) => i.vmId);
          return { ids, results: await mapLimit(ids, 16, (id) => c.api.stats(id)) };
        });
        const ok = results
          .filter((r): r is PromiseFulfilledResult<VmStats> => r.status === 'fulfilled')
          .map((r) => r.value);
        if (json) printJson(ok);
        else {
          const nets = new Map(ok.filter((s) => s.networkDrops).map((s) => [s.network, s.networkDrops!]));
          const counts = new Map<string, number>();
          for (const s of ok) counts.set(s.network, (counts.get(s.network) ?? 0) + 1);
          const lines = networkDropLines({
            networks: [...nets].map(([network, drops]) => ({
              network,
              mode: 'direct',
              vms: counts.get(network) ?? 0,
              drops,
            })),
          });
          process.stdout.write(`${[statsTable(ok), ...lines].join('\n')}\n`);
        }
        if (vmIds.length === 1 && results[0]?.status === 'rejected') throw results[0].reason;
        let first: number | undefined;
        results.forEach((r, i) => {
          if (r.status === 'fulfilled') return;
          const e = toTapnetError(r.reason);
          if (json) process.stderr.write(`${JSON.stringify({ vmId: ids[i], error: e.toJSON() })}\n`);
          else
            process.stderr.write(`tapnet: stats ${ids[i]}: ${e.code}: ${e.message.replaceAll('\n', ' ')}\n`);
          first ??= exitCodeFor(e);
        });
        if (first !== undefined) process.exitCode = first;
      },
    );

  program
    .command('usage')
    .description('cumulative traffic per VM that survives TAP re-creations and restarts (billing export)')
    .option(
      '--since <time>',
      'only VMs whose totals grew, or that were released, since then: ISO 8601 or 15m, 2h, 7d',
    )
    .option('--collect', "after printing, forget released VMs' final totals (hand-over to your billing)")
    .option('--json', 'JSON: {sampledAt, vms: [...], problems, collected?}')
    .addHelpText(
      'after',
      help(`  tapnet usage
  tapnet usage --since 1h --json
  tapnet usage --json --collect > usage-$(date +%s).json     export, then forget what was released
Semantics: docs/USAGE.md. Totals are from the guest's side: RX is what the VM received.`),
    )
    .action(async (o: { since?: string; collect?: boolean }, cmd: Command) => {
      const json = globals(cmd).json === true;
      await withApi(cmd, async (c) => {
        if (!c.api.usage) throw unsupported('the usage export');
        const report = await c.api.usage(o.since === undefined ? {} : { since: o.since });
        const released = report.vms.filter((u) => u.state === 'released').map((u) => u.vmId);
        if (!o.collect) {
          if (json) printJson(report);
          else process.stdout.write(`${usageTable(report.vms)}\n`);
        } else {
          if (!c.api.collectUsage) throw unsupported('collecting usage');
          // Print first: what is forgotten must have been written out.
          if (json) printJson({ ...report, collected: released });
          else process.stdout.write(`${usageTable(report.vms)}\n`);
          await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
          const results = await mapLimit(released, 8, (id) => c.api.collectUsage!(id));
          results.forEach((r, i) => {
            if (r.status === 'fulfilled') return;
            const e = toTapnetError(r.reason);
            process.stderr.write(`tapnet: usage: not collected ${released[i]}: ${e.code}: ${e.message}\n`);
            process.exitCode = exitCodeFor(e);
          });
          if (!json)
            process.stdout.write(
              `collected ${results.filter((r) => r.status === 'fulfilled').length} released VM(s)\n`,
            );
        }
        for (const p of report.problems)
          process.stderr.write(`tapnet: usage: ${p.vmId ?? ''} ${p.code}: ${p.message}\n`);
      });
    });
}
