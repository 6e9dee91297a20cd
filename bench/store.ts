/**
 * State-store benchmark, standalone and unprivileged: `node dist/bench/store.js [--quick] [--scale X]`.
 * Also exports `suite` for bench/run.ts. Compares the two local backends, `files` (one file per record,
 * one symlink per lease, one lock file per VM) and `journal` (one append-only journal), per VM:
 *
 *   ensure-like: VM lock, get, dual-stack allocation (claim v4 + cursor, claim v6 + cursor), put record, unlock
 *   release:     VM lock, get, put 'releasing', release v4 + v6, delete record, unlock (forget)
 *
 * on the real default disk (/var/lib) and on tmpfs (/dev/shm), with 1 and with 10,000 live VMs (the
 * timed VMs come and go on top of those), plus `fill` (the ensures that brought it to 10,000: new names
 * in growing directories) and the cost of opening a store with that many VMs (what a CLI process pays
 * before its first operation). Env TAPNET_BENCH_DIRS=dir1,dir2 picks other places.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ipam, type PoolRequest } from '../src/ipam/index.js';
import {
  JournalStore,
  openStore,
  type StoreBackend,
  type StoreBackendKind,
  type StoredRecord,
} from '../src/store/index.js';
import { type BenchRecord, formatTable, makeRecord, summarize } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const SUITE = 'store';

/** Shaped like the manager's VmRecord, so lines and files have the real size. */
interface BenchVm extends StoredRecord {
  network: string;
  topology: 'bridge';
  tap: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
  tapMode: 'persistent';
  queues: number;
  vnetHdr: boolean;
  createdAt: string;
}

const POOLS: PoolRequest[] = [
  { pool: { network: 'bench', subnet: '198.18.0.0/16' } },
  { pool: { network: 'bench', subnet: 'fd00:18::/64' } },
];

const ms = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e6;

interface Rig {
  store: StoreBackend<BenchVm>;
  ipam: Ipam;
}

async function ensureVm({ store, ipam }: Rig, vmId: string, i: number): Promise<void> {
  const lock = await store.locks.acquire('vm', vmId);
  try {
    const existing = await store.records.get(vmId);
    if (existing) return;
    const [v4, v6] = await ipam.allocateAll(vmId, POOLS);
    await store.records.put(
      {
        vmId,
        state: 'ready',
        network: 'bench',
        topology: 'bridge',
        tap: `tn${i.toString(36)}`,
        mac: `02:00:${[(i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, '0')).join(':')}`,
        ipv4: v4!.address,
        ipv6: v6!.address,
        tapMode: 'persistent',
        queues: 1,
        vnetHdr: true,
        createdAt: new Date().toISOString(),
      },
      { expectedGeneration: 0 },
    );
  } finally {
    lock.release();
  }
}

async function releaseVm({ store, ipam }: Rig, vmId: string): Promise<void> {
  const lock = await store.locks.acquire('vm', vmId);
  let deleted = false;
  try {
    const rec = await store.records.get(vmId);
    if (!rec) return;
    const going = await store.records.put(
      { ...rec, state: 'releasing' },
      { expectedGeneration: rec.generation },
    );
    await ipam.releaseAll(vmId, [
      { pool: POOLS[0]!.pool, address: rec.ipv4 },
      { pool: POOLS[1]!.pool, address: rec.ipv6 },
    ]);
    deleted = await store.records.delete(vmId, { expectedGeneration: going.generation });
  } finally {
    lock.release({ forget: deleted });
  }
}

async function open(backend: StoreBackendKind, dir: string): Promise<Rig> {
  const store = await openStore<BenchVm>({ backend, dir });
  return { store, ipam: new Ipam(store.leases) };
}

interface Run {
  /** Ensures while filling to the live count: new names in growing directories (files backend). */
  fill: number[];
  ensure: number[];
  release: number[];
  compactions: number;
  openMs: number;
  journalBytes?: number;
}

/** Fill to `live` VMs, time `cycles` ensure + release of other VMs, then time a fresh open. */
async function run(backend: StoreBackendKind, dir: string, live: number, cycles: number): Promise<Run> {
  const rig = await open(backend, dir);
  const fill: number[] = [];
  for (let i = 0; i < live; i++) {
    const t = process.hrtime.bigint();
    await ensureVm(rig, `live-${i}`, i);
    fill.push(ms(t));
  }
  for (let i = 0; i < 500; i++) {
    // Steady state: the JIT has compiled the path, the seat / lock directory / cursor files exist.
    await ensureVm(rig, `warm-${i}`, live + i);
    await releaseVm(rig, `warm-${i}`);
  }
  const journal = rig.store instanceof JournalStore ? rig.store.journal : undefined;
  const compactions0 = journal?.stats.compactions ?? 0;
  const ensure: number[] = [];
  const release: number[] = [];
  for (let i = 0; i < cycles; i++) {
    const vmId = `vm-${i}`;
    let t = process.hrtime.bigint();
    await ensureVm(rig, vmId, live + 100 + i);
    ensure.push(ms(t));
    t = process.hrtime.bigint();
    await releaseVm(rig, vmId);
    release.push(ms(t));
  }
  const compactions = (journal?.stats.compactions ?? 0) - compactions0;
  const journalBytes = journal?.size;
  rig.store.close();
  // What a new process pays: open the store and answer its first question.
  const t = process.hrtime.bigint();
  const again = await open(backend, dir);
  await again.store.records.get('live-0');
  await again.ipam.pool(POOLS[0]!.pool).leaseOf('live-0');
  const openMs = ms(t);
  again.store.close();
  return { fill, ensure, release, compactions, openMs, journalBytes };
}

function places(): Array<[string, string]> {
  const env = process.env.TAPNET_BENCH_DIRS;
  const dirs = env ? env.split(',').filter(Boolean) : ['/var/lib', '/dev/shm'];
  return dirs.filter((d) => fs.existsSync(d)).map((d) => [d, d]);
}

/** Run everything; returns the records and prints the table. */
export async function runStoreBench(opts: BenchOptions): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  const rows: Array<Array<string | number>> = [];
  const us = (x: number): string => (x * 1000).toFixed(0);
  const bigLive = Math.round((opts.quick ? 1000 : 10_000) * opts.scale);
  const levels = [1, bigLive];
  const cycles = Math.max(50, Math.round((opts.quick ? 300 : 3000) * opts.scale));
  for (const [label, base] of places()) {
    for (const live of levels) {
      for (const backend of ['files', 'journal'] as const) {
        const dir = fs.mkdtempSync(path.join(base, `tapnet-bench-store-${backend}-`));
        let r: Run;
        try {
          r = await run(backend, dir, live, cycles);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
        for (const [op, samples] of [
          ['fill', r.fill],
          ['ensure', r.ensure],
          ['release', r.release],
        ] as const) {
          if (samples.length < 100) continue; // filling to 1 VM is not a measurement
          const s = summarize(samples);
          rows.push([
            label,
            live,
            backend,
            op,
            s.n,
            us(s.median),
            us(s.p95),
            us(s.p99),
            us(s.max),
            op === 'ensure' ? r.compactions : '',
            op === 'ensure' ? r.openMs.toFixed(1) : '',
          ]);
          records.push(
            makeRecord(SUITE, `tapnet store (${backend})`, `${op} on ${label} at ${live} VMs`, samples, {
              baseline: backend === 'files',
              note: 'lock, get, v4+v6 claim and cursor, put, unlock (release: lock, get, put, 2 releases, delete, unlock)',
              extra: {
                backend,
                fs: label,
                live,
                compactions: r.compactions,
                open_ms: r.openMs,
                ...(r.journalBytes !== undefined ? { journal_bytes: r.journalBytes } : {}),
              },
            }),
          );
        }
      }
    }
  }
  process.stdout.write(
    `\nState store per VM, files vs journal (µs; ${cycles} ensure+release cycles on top of the live VMs; open = new store + first lookups, ms)\n${formatTable(
      [
        'fs',
        'live VMs',
        'backend',
        'op',
        'n',
        'median µs',
        'p95 µs',
        'p99 µs',
        'max µs',
        'compactions',
        'open ms',
      ],
      rows,
    )}\n`,
  );
  return records;
}

/** For bench/run.ts (add 'store' to SUITE_MODULES to include it). */
export const suite: BenchSuite = {
  name: 'store',
  description:
    'state store per VM ensure/release: files vs journal backend, on /var/lib and /dev/shm, 1 and 10,000 VMs',
  run: runStoreBench,
};

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--scale');
  const scale = i > 0 ? Number(process.argv[i + 1]) : 1;
  runStoreBench({ quick: process.argv.includes('--quick'), scale: scale > 0 ? scale : 1 }).catch((e) => {
    process.stderr.write(`bench store: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
