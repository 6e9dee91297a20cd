/**
 * Timing and statistics for the benchmarks: wall-clock timers on process.hrtime.bigint, summaries in
 * milliseconds, ratios, a flatness check for "the 1,000th costs what the 1st did", a plain text table
 * and the JSON records every suite returns (appended, one per line, to $BENCH_OUT when it is set).
 */
import { appendFileSync } from 'node:fs';

/** Milliseconds since `start` (a process.hrtime.bigint() reading). */
export function msSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Wall-clock milliseconds that `fn` takes; awaits it when it returns a promise. */
export async function time(fn: () => unknown): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return msSince(start);
}

/** Wall-clock milliseconds of a synchronous `fn` (no await in the measurement). */
export function timeSync(fn: () => unknown): number {
  const start = process.hrtime.bigint();
  fn();
  return msSince(start);
}

/** What a series of timings looks like, all in milliseconds. */
export interface Summary {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** The p-th percentile (0–100) of an ascending array, nearest-rank. NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Median of any array (mean of the two middle values when the length is even). NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** n, median, p95, p99, min, max and mean of `samples` (ms). */
export function summarize(samples: readonly number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const mean = n === 0 ? Number.NaN : s.reduce((a, b) => a + b, 0) / n;
  return {
    n,
    median: median(s),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    min: n ? s[0]! : Number.NaN,
    max: n ? s[n - 1]! : Number.NaN,
    mean,
  };
}

/** a / b; NaN when b is 0 or either is not finite. */
export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : Number.NaN;
}

/** How the cost of the first items compares with the last ones. */
export interface Flatness {
  /** How many items each window holds. */
  window: number;
  /** Median of the first `window` items (ms). */
  first: number;
  /** Median of the last `window` items (ms). */
  last: number;
  /** last / first: 1 is flat, 2 means the late items cost twice the early ones. */
  growth: number;
  /** growth <= tolerance. */
  flat: boolean;
}

/**
 * Compare the median of the first and the last `window` items of a series in the order they happened
 * (default window: a tenth of the series, at least 1). `flat` when last/first <= tolerance (1.5).
 */
export function flatness(
  series: readonly number[],
  opts: { window?: number; tolerance?: number } = {},
): Flatness {
  const window = Math.max(1, Math.min(opts.window ?? Math.ceil(series.length / 10), series.length));
  const first = median(series.slice(0, window));
  const last = median(series.slice(series.length - window));
  const growth = ratio(last, first);
  return { window, first, last, growth, flat: growth <= (opts.tolerance ?? 1.5) };
}

/** One measured operation: what a suite returns and what goes to $BENCH_OUT / --json. */
export interface BenchRecord {
  suite: string;
  /** Who did it: `tapnet`, `ip (sequence)`, `cni bridge`, `netavark`, … */
  subject: string;
  /** What was done, per item: `tap setup`, `vm teardown`, … Records with the same op are compared. */
  op: string;
  n: number;
  median_ms: number;
  p95_ms: number;
  p99_ms: number;
  min_ms: number;
  max_ms: number;
  mean_ms: number;
  /** The record the others of the same op are divided by in the printed ratio column. */
  baseline?: boolean;
  /** A short remark printed under the table (how it was measured, growth, …). */
  note?: string;
  /** Anything else worth keeping in the JSON (e.g. flatness windows, totals). */
  extra?: Record<string, number | string | boolean>;
}

/** Build a record from raw per-item timings (ms). */
export function makeRecord(
  suite: string,
  subject: string,
  op: string,
  samples: readonly number[],
  more: Pick<BenchRecord, 'baseline' | 'note' | 'extra'> = {},
): BenchRecord {
  const s = summarize(samples);
  return {
    suite,
    subject,
    op,
    n: s.n,
    median_ms: s.median,
    p95_ms: s.p95,
    p99_ms: s.p99,
    min_ms: s.min,
    max_ms: s.max,
    mean_ms: s.mean,
    ...more,
  };
}

/** Append records as JSON lines to `file` (default $BENCH_OUT); does nothing when neither is set. */
export function appendRecords(records: readonly BenchRecord[], file = process.env.BENCH_OUT): void {
  if (!file || records.length === 0) return;
  appendFileSync(file, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

/** A millisecond figure for people: 3 significant digits, at least 3 decimals under 1 ms. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toFixed(3);
}

/** A ratio for people: `12.3×`. */
export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return '-';
  return `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`;
}

/** A plain text table; columns whose cells all look numeric are right-aligned. */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly (string | number)[])[],
): string {
  const cells = rows.map((r) => header.map((_, i) => String(r[i] ?? '')));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const numeric = header.map((_, i) => cells.length > 0 && cells.every((r) => /^[-\d.,×%]*$/.test(r[i]!)));
  const line = (r: readonly string[]): string =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}
