/**
 * IPAM and state-store micro-benchmark, standalone and unprivileged: `node dist/bench/ipam.js [--quick]`
 * (env TAPNET_BENCH_DIR picks the file system; default os.tmpdir()). Also exports `suite` for
 * bench/run.ts.
 *
 * 1. Allocation cost by fill level: a /22 and a /16 filled to 99 %, timing every allocation; median and
 *    p95 of a window when the pool is empty, half full and 99 % full, then of allocations into holes
 *    scattered by random releases once the cursor has wrapped. Over the in-memory LeaseStore (the
 *    algorithm alone) and the local files (what tapnet does on disk).
 * 2. The store's share of one VM ensure/release as the manager will do it, at 10,000 VMs: VM lock, intent
 *    record, dual-stack allocation, ready record, unlock (and the reverse).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ipam, MemoryLeaseStore, type PoolSpec } from '../src/ipam/index.js';
import { type LeaseStore, openLocalStore, type StoredRecord } from '../src/store/index.js';
import { type BenchRecord, formatTable, makeRecord, summarize } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const SUITE = 'ipam';

interface VmRecord extends StoredRecord {
  tap: string;
  addresses: string[];
}

const ms = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e6;

/** A deterministic PRNG (the same holes every run). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(process.env.TAPNET_BENCH_DIR ?? os.tmpdir(), `tapnet-bench-${tag}-`));
}

/** Fill `spec` to 99 %, then punch 1 % holes and refill them after the wrap. Per-allocation ms. */
async function fillLevels(
  store: LeaseStore,
  spec: PoolSpec,
  window: number,
): Promise<Record<string, number[]>> {
  const pool = new Ipam(store).pool(spec);
  const size = Number(pool.layout.dynamicSize);
  const target = Math.floor(size * 0.99);
  const times: number[] = [];
  for (let i = 0; i < target; i++) {
    const t = process.hrtime.bigint();
    await pool.allocate(`vm-${i}`);
    times.push(ms(t));
  }
  const half = Math.floor(target / 2);
  // Holes: release a random 1 % (not the most recent ones), fill the rest of the range, then the holes.
  const next = rng(7);
  const holes = new Set<number>();
  while (holes.size < Math.max(window, Math.floor(size / 100)))
    holes.add(Math.floor(next() * (target - window)));
  for (const i of holes) await pool.release(`vm-${i}`);
  for (let i = target; i < size; i++) await pool.allocate(`vm-${i}`);
  const refill: number[] = [];
  for (let i = 0; i < holes.size; i++) {
    const t = process.hrtime.bigint();
    await pool.allocate(`hole-${i}`);
    refill.push(ms(t));
  }
  return {
    empty: times.slice(0, window),
    '50 %': times.slice(half - (window >> 1), half + (window >> 1)),
    '99 %': times.slice(target - window),
    '99 %, holes after wrap': refill.slice(-window),
  };
}

/** The store's part of ensure and release for `count` VMs (dual stack). */
async function vmPath(count: number): Promise<{ ensure: number[]; release: number[]; dir: string }> {
  const dir = tempDir('vms');
  const store = await openLocalStore<VmRecord>({ dir });
  const ipam = new Ipam(store.leases);
  const pools = [
    { pool: { network: 'bench', subnet: '198.18.0.0/16' } },
    { pool: { network: 'bench', subnet: 'fd00:18::/64' } },
  ];
  const ensure: number[] = [];
  for (let i = 0; i < count; i++) {
    const vmId = `vm-${i}`;
    const t = process.hrtime.bigint();
    const lock = await store.locks.acquire('vm', vmId);
    try {
      const existing = await store.records.get(vmId);
      const intent = await store.records.put(
        { vmId, state: 'creating', tap: `tn${i}`, addresses: [] },
        { expectedGeneration: existing?.generation ?? 0 },
      );
      const leases = await ipam.allocateAll(vmId, pools);
      await store.records.put(
        { ...intent, state: 'ready', addresses: leases.map((l) => l.cidr) },
        { expectedGeneration: intent.generation },
      );
    } finally {
      lock.release();
    }
    ensure.push(ms(t));
  }
  const release: number[] = [];
  for (let i = 0; i < count; i++) {
    const vmId = `vm-${i}`;
    const t = process.hrtime.bigint();
    const lock = await store.locks.acquire('vm', vmId);
    let deleted = false;
    try {
      const rec = (await store.records.get(vmId))!;
      const going = await store.records.put(
        { ...rec, state: 'releasing' },
        { expectedGeneration: rec.generation },
      );
      await ipam.releaseAll(vmId, pools);
      deleted = await store.records.delete(vmId, { expectedGeneration: going.generation });
    } finally {
      lock.release({ forget: deleted });
    }
    release.push(ms(t));
  }
  store.close();
  return { ensure, release, dir };
}

/** Run everything; returns the records and prints the tables. */
export async function runIpamBench(opts: BenchOptions): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  const rows: Array<Array<string | number>> = [];
  const f = (x: number): string => (x * 1000).toFixed(1);
  const pools: Array<[string, PoolSpec, number]> = [
    ['/22', { network: 'b22', subnet: '198.18.0.0/22' }, 50],
    ['/16', { network: 'b16', subnet: '198.18.0.0/16' }, 500],
  ];
  interface Backend {
    store: LeaseStore;
    done(): void;
  }
  const backends: Array<[string, () => Promise<Backend>]> = [
    ['memory', async () => ({ store: new MemoryLeaseStore(), done: () => {} })],
    [
      'files',
      async () => {
        const dir = tempDir('ipam');
        const local = await openLocalStore({ dir });
        return {
          store: local.leases,
          done: () => {
            local.close();
            fs.rmSync(dir, { recursive: true, force: true });
          },
        };
      },
    ],
  ];
  process.stdout.write(`state directories under ${process.env.TAPNET_BENCH_DIR ?? os.tmpdir()}\n`);
  for (const [backend, make] of backends) {
    for (const [label, spec, window] of pools) {
      if (opts.quick && label === '/16') continue;
      const { store, done } = await make();
      try {
        const levels = await fillLevels(store, spec, window);
        const base = summarize(levels.empty!).median;
        for (const [level, samples] of Object.entries(levels)) {
          const s = summarize(samples);
          rows.push([backend, label, level, s.n, f(s.median), f(s.p95), (s.median / base).toFixed(2)]);
          records.push(
            makeRecord(SUITE, `tapnet ipam (${backend})`, `allocate ${label} at ${level}`, samples, {
              baseline: level === 'empty',
              extra: { pool: spec.subnet, level, backend },
            }),
          );
        }
      } finally {
        done();
      }
    }
  }
  process.stdout.write(
    `\nAllocation cost by fill level (µs per allocation; ratio = median / median when empty)\n${formatTable(
      ['store', 'pool', 'fill', 'n', 'median µs', 'p95 µs', 'ratio'],
      rows,
    )}\n`,
  );

  const count = Math.round((opts.quick ? 1000 : 10_000) * opts.scale);
  const { ensure, release, dir } = await vmPath(count);
  fs.rmSync(dir, { recursive: true, force: true });
  const win = Math.max(1, Math.floor(count / 10));
  const vmRows: Array<Array<string | number>> = [];
  for (const [op, samples] of [
    ['ensure', ensure],
    ['release', release],
  ] as const) {
    for (const [which, part] of [
      ['first', samples.slice(0, win)],
      ['last', samples.slice(-win)],
      ['all', samples],
    ] as const) {
      const s = summarize(part);
      vmRows.push([op, which, s.n, f(s.median), f(s.p95), f(s.p99)]);
    }
    records.push(
      makeRecord(SUITE, 'tapnet store', `store part of ${op}`, samples, {
        note: 'VM lock + records (intent, ready) + dual-stack leases (/16 + /64) on local files; no kernel work',
        extra: { vms: count },
      }),
    );
  }
  process.stdout.write(
    `\nStore + IPAM part of one VM ensure/release at ${count} VMs (µs; lock, records, v4+v6 leases)\n${formatTable(
      ['op', 'VMs', 'n', 'median µs', 'p95 µs', 'p99 µs'],
      vmRows,
    )}\n`,
  );
  return records;
}

/** For bench/run.ts (add 'ipam' to SUITE_MODULES to include it). */
export const suite: BenchSuite = {
  name: 'ipam',
  description: 'IPAM allocation cost by fill level (/22, /16) and the store’s part of ensure/release',
  run: runIpamBench,
};

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runIpamBench({ quick: process.argv.includes('--quick'), scale: 1 }).catch((e) => {
    process.stderr.write(`bench ipam: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
