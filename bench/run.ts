/**
 * The benchmark runner: `npm run bench [-- suite… --quick --scale X --json out.json]`, which runs
 * `node scripts/sandbox.mjs node dist/bench/run.js …` so everything happens in a private network and
 * mount namespace. Runs the named suites (all by default) one after the other, prints a table per suite
 * (median, p95, p99, and the ratio to the suite's baseline of the same op), then a summary. Exit 0 when
 * every suite ran, 1 when one failed or left a namespace behind, 2 on bad usage or outside the sandbox.
 */
import { writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { TapnetError } from '../src/errors.js';
import { listNetns } from '../src/net/netns.js';
import {
  appendRecords,
  type BenchRecord,
  fmtMs,
  fmtRatio,
  formatTable,
  msSince,
  ratio,
} from './lib/stats.js';
import { type BenchOptions, type BenchSuite, loadSuites, selectSuites } from './lib/suite.js';

const USAGE = `usage: node dist/bench/run.js [suite…] [--quick] [--scale X] [--json out.json] [--list]
  suite…        suites to run, in that order (default: all)
  --quick       small counts: a smoke run, numbers indicative only
  --scale X     multiply each suite's default counts by X (default 1)
  --json FILE   write every record, with the machine's description, to FILE
  --list        list the suites and exit
  env BENCH_OUT=FILE appends each record as one JSON line to FILE`;

interface Args {
  names: string[];
  quick: boolean;
  scale: number;
  json?: string;
  list: boolean;
}

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { names: [], quick: false, scale: 1, list: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => argv[++i] ?? usage(`${arg} needs a value`);
    if (arg === '--quick') a.quick = true;
    else if (arg === '--list') a.list = true;
    else if (arg === '--json') a.json = value();
    else if (arg === '--scale') {
      a.scale = Number(value());
      if (!(a.scale > 0 && a.scale <= 100)) usage('--scale must be a number in (0, 100]');
    } else if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (arg.startsWith('-')) usage(`unknown option ${arg}`);
    else a.names.push(arg);
  }
  return a;
}

/** The suite's records as a table; the ratio column divides by the baseline record of the same op. */
export function renderRecords(records: readonly BenchRecord[]): string {
  const baselines = new Map<string, BenchRecord>();
  for (const r of records) if (r.baseline && !baselines.has(r.op)) baselines.set(r.op, r);
  const rows = records.map((r) => {
    const base = baselines.get(r.op);
    return [
      r.op,
      r.subject,
      r.n,
      fmtMs(r.median_ms),
      fmtMs(r.p95_ms),
      fmtMs(r.p99_ms),
      fmtMs(r.min_ms),
      fmtMs(r.max_ms),
      base ? fmtRatio(ratio(r.median_ms, base.median_ms)) : '',
    ];
  });
  const table = formatTable(['op', 'subject', 'n', 'median ms', 'p95', 'p99', 'min', 'max', '× base'], rows);
  const notes = records.filter((r) => r.note).map((r) => `  ${r.subject} / ${r.op}: ${r.note}`);
  const bases = [...baselines.values()].map((r) => `${r.op}: ${r.subject}`);
  return [
    table,
    ...(bases.length ? [`  × base = median / median of the baseline (${bases.join('; ')})`] : []),
    ...notes,
  ].join('\n');
}

interface Outcome {
  suite: BenchSuite;
  records: BenchRecord[];
  seconds: number;
  error?: unknown;
}

async function runOne(suite: BenchSuite, opts: BenchOptions): Promise<Outcome> {
  process.stdout.write(`\n== ${suite.name}: ${suite.description}${opts.quick ? ' (quick)' : ''}\n`);
  const before = new Set(listNetns());
  const start = process.hrtime.bigint();
  let records: BenchRecord[] = [];
  let error: unknown;
  try {
    records = await suite.run(opts);
  } catch (e) {
    error = e;
  }
  const seconds = msSince(start) / 1000;
  const leftovers = listNetns().filter((n) => !before.has(n));
  if (!error && leftovers.length > 0)
    error = new TapnetError('ERR_INTERNAL', `left namespaces behind: ${leftovers.join(', ')}`);
  if (records.length > 0) {
    process.stdout.write(`${renderRecords(records)}\n`);
    appendRecords(records);
  }
  if (error) process.stdout.write(`!! ${suite.name} failed: ${describe(error)}\n`);
  return { suite, records, seconds, error };
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: string }).code;
    return `${code ? `${code}: ` : ''}${e.message}`;
  }
  return String(e);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const all = await loadSuites();
  if (args.list) {
    process.stdout.write(`${all.map((s) => `${s.name.padEnd(12)} ${s.description}`).join('\n')}\n`);
    return 0;
  }
  if (process.env.TAPNET_SANDBOX !== '1') {
    process.stderr.write(
      'bench: refusing to run outside the sandbox (TAPNET_SANDBOX is not 1): benchmarks never touch this\n' +
        "machine's network. Run `npm run bench` (node scripts/sandbox.mjs node dist/bench/run.js …) as root.\n",
    );
    return 2;
  }
  let suites: BenchSuite[];
  try {
    suites = selectSuites(all, args.names);
  } catch (e) {
    usage(describe(e));
  }
  const opts: BenchOptions = { scale: args.scale, quick: args.quick };
  const machine = {
    cpus: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memory_gb: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
  };
  process.stdout.write(
    `tapnet bench: ${suites.map((s) => s.name).join(', ')} | ${machine.cpus} CPUs, ${machine.cpu}, kernel ${machine.kernel}, node ${machine.node}\n`,
  );
  const outcomes: Outcome[] = [];
  for (const s of suites) outcomes.push(await runOne(s, opts));

  process.stdout.write('\n== summary\n');
  process.stdout.write(
    `${formatTable(
      ['suite', 'status', 'records', 'seconds'],
      outcomes.map((o) => [o.suite.name, o.error ? 'FAILED' : 'ok', o.records.length, o.seconds.toFixed(1)]),
    )}\n`,
  );
  if (args.json) {
    const doc = {
      date: new Date().toISOString(),
      machine,
      options: opts,
      records: outcomes.flatMap((o) => o.records),
    };
    writeFileSync(args.json, `${JSON.stringify(doc, null, 2)}\n`);
    process.stdout.write(`records written to ${args.json}\n`);
  }
  return outcomes.some((o) => o.error) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench: ${describe(e)}\n`);
    process.exit(1);
  },
);
