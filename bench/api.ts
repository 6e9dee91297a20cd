/**
 * The `api` suite (issue: step 4): ensure + release pairs through the daemon's HTTP API on its Unix
 * socket, 16 concurrent clients with a keep-alive connection each, for 2 minutes (--quick: 5 s); the same
 * load on a NetworkManager in-process (the baseline: what the API adds); and GET /v1/vms/{id} of an
 * existing VM, the API's own floor. Zero errors and zero leaks are checked; the run fails otherwise.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TapnetError } from '../src/errors.js';
import type { ManagerConfigInput } from '../src/manager/config.js';
import { NetworkManager } from '../src/manager/manager.js';
import { listLinks } from '../src/net/link.js';
import { createNetns, deleteNetns } from '../src/net/netns.js';
import { NetlinkSocket } from '../src/netlink/socket.js';
import { type BenchRecord, fmtMs, makeRecord } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const NAME = 'api';
const CLIENTS = 16;
const CLI = new URL('../src/cli/main.js', import.meta.url).pathname;

interface Load {
  pairs: number[];
  ensure: number[];
  release: number[];
  seconds: number;
  errors: string[];
}

function call(socket: string, agent: http.Agent, method: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** `clients` loops of ensure + release until `seconds` have passed. */
async function pairsLoad(
  seconds: number,
  clients: number,
  pair: (c: number, id: string) => Promise<[number, number]>,
): Promise<Load> {
  const out: Load = { pairs: [], ensure: [], release: [], seconds: 0, errors: [] };
  const end = Date.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; Date.now() < end; i++) {
        const id = `b${c}-${i}`;
        const s = performance.now();
        try {
          const [e, r] = await pair(c, id);
          out.ensure.push(e);
          out.release.push(r);
        } catch (err) {
          out.errors.push(`${id}: ${(err as Error).message}`);
        }
        out.pairs.push(performance.now() - s);
      }
    }),
  );
  out.seconds = (performance.now() - t0) / 1000;
  return out;
}

async function throughDaemon(
  config: ManagerConfigInput,
  dir: string,
  seconds: number,
  readSeconds: number,
): Promise<{ load: Load; reads: number[] }> {
  const socket = join(dir, 'api.sock');
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify({ ...config, api: { socket }, log: { level: 'info' } }));
  const logFd = openSync(join(dir, 'daemon.log'), 'a');
  // TAPNET_BENCH_CPU_PROF=<dir>: a V8 CPU profile of the daemon under the load (docs/BENCHMARKS.md, API).
  const prof = process.env.TAPNET_BENCH_CPU_PROF;
  const flags = prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : [];
  const daemon = spawn(process.execPath, [...flags, CLI, '--config', configFile, 'serve'], {
    stdio: ['ignore', logFd, logFd],
  });
  closeSync(logFd);
  const exited = new Promise<number | null>((r) => daemon.on('exit', r));
  try {
    const probe = new http.Agent();
    for (let i = 0; ; i++) {
      if (daemon.exitCode !== null) throw new TapnetError('ERR_INTERNAL', 'tapnet serve exited early');
      const ok = await call(socket, probe, 'GET', '/readyz').catch(() => 0);
      if (ok === 200) break;
      if (i > 300) throw new TapnetError('ERR_TIMEOUT', 'tapnet serve did not become ready');
      await new Promise((r) => setTimeout(r, 50));
    }
    const agents = Array.from({ length: CLIENTS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    const load = await pairsLoad(seconds, CLIENTS, async (c, id) => {
      const a = agents[c]!;
      const s = performance.now();
      const put = await call(socket, a, 'PUT', `/v1/vms/${id}`);
      const m = performance.now();
      const del = await call(socket, a, 'DELETE', `/v1/vms/${id}`);
      if (put !== 200 || del !== 204) throw new TapnetError('ERR_INTERNAL', `PUT ${put}, DELETE ${del}`);
      return [m - s, performance.now() - m];
    });
    // The API's own floor: reading one existing VM.
    const reads: number[] = [];
    await call(socket, agents[0]!, 'PUT', '/v1/vms/reader');
    const end = Date.now() + readSeconds * 1000;
    await Promise.all(
      agents.map(async (a) => {
        while (Date.now() < end) {
          const s = performance.now();
          if ((await call(socket, a, 'GET', '/v1/vms/reader')) !== 200) load.errors.push('GET reader');
          reads.push(performance.now() - s);
        }
      }),
    );
    await call(socket, agents[0]!, 'DELETE', '/v1/vms/reader');
    const left = await new Promise<string>((resolve, reject) => {
      http
        .get({ socketPath: socket, path: '/v1/vms', agent: agents[0] }, (res) => {
          let b = '';
          res.on('data', (d) => {
            b += d;
          });
          res.on('end', () => resolve(b));
        })
        .on('error', reject);
    });
    if (JSON.parse(left).length !== 0) load.errors.push(`VMs left after the run: ${left.slice(0, 200)}`);
    for (const a of [...agents, probe]) a.destroy();
    return { load, reads };
  } finally {
    daemon.kill('SIGTERM');
    await exited;
  }
}

async function inProcess(config: ManagerConfigInput, seconds: number): Promise<Load> {
  const m = await NetworkManager.open(config);
  try {
    return await pairsLoad(seconds, CLIENTS, async (_c, id) => {
      const s = performance.now();
      await m.ensure(id);
      const mid = performance.now();
      await m.release(id);
      return [mid - s, performance.now() - mid];
    });
  } finally {
    await m.close();
  }
}

/** TAPs in the namespace (after the runs: must be none). */
function leftTaps(nsFd: number): number {
  const nl = NetlinkSocket.open({ nsFd });
  try {
    return listLinks(nl, { kind: 'tun' }).length;
  } finally {
    nl.close();
  }
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const log = (m: string): void => void process.stderr.write(`  api: ${m}\n`);
  const apiSeconds = (opts.quick ? 5 : 120) * opts.scale;
  const baseSeconds = (opts.quick ? 3 : 30) * opts.scale;
  const readSeconds = opts.quick ? 2 : 10;
  const tag = `bench-api-${process.pid}`;
  const ns = createNetns(tag);
  const dir = mkdtempSync(join(tmpdir(), 'tapnet-bench-api-'));
  const config = (stateDir: string): ManagerConfigInput => ({
    stateDir,
    netns: ns.path,
    defaultNetwork: 'bench',
    networks: { bench: { bridge: 'tnapi0', subnet4: '198.18.64.0/22' } },
  });
  try {
    log(`in-process NetworkManager, ${CLIENTS} concurrent loops, ${baseSeconds} s`);
    const base = await inProcess(config(join(dir, 'state-inproc')), baseSeconds);
    log(`through the API (tapnet serve), ${CLIENTS} clients, ${apiSeconds} s`);
    const { load: api, reads } = await throughDaemon(
      config(join(dir, 'state-api')),
      dir,
      apiSeconds,
      readSeconds,
    );
    const taps = leftTaps(ns.fd);
    const errors = [...base.errors, ...api.errors, ...(taps ? [`${taps} TAP(s) left`] : [])];
    if (errors.length)
      throw new TapnetError(
        'ERR_INTERNAL',
        `api bench: ${errors.length} error(s): ${errors.slice(0, 3).join('; ')}`,
      );
    const rate = (l: Load) => l.pairs.length / l.seconds;
    const note = (l: Load) =>
      `${rate(l).toFixed(0)} pairs/s over ${l.seconds.toFixed(0)} s, ${CLIENTS} clients, ${l.pairs.length} pairs, 0 errors, 0 left`;
    log(
      `API ${rate(api).toFixed(0)} pairs/s, in-process ${rate(base).toFixed(0)} pairs/s; GET p50 ${fmtMs(reads[reads.length >> 1] ?? Number.NaN)} ms`,
    );
    const extra = (l: Load) => ({
      pairsPerSecond: Math.round(rate(l)),
      seconds: Math.round(l.seconds),
      clients: CLIENTS,
      errors: 0,
    });
    return [
      makeRecord(NAME, 'in-process NetworkManager', 'ensure+release pair', base.pairs, {
        baseline: true,
        note: note(base),
        extra: extra(base),
      }),
      makeRecord(NAME, 'tapnet API (Unix socket)', 'ensure+release pair', api.pairs, {
        note: note(api),
        extra: extra(api),
      }),
      makeRecord(NAME, 'in-process NetworkManager', 'ensure', base.ensure, { baseline: true }),
      makeRecord(NAME, 'tapnet API (Unix socket)', 'ensure', api.ensure, { note: 'PUT /v1/vms/{id}' }),
      makeRecord(NAME, 'in-process NetworkManager', 'release', base.release, { baseline: true }),
      makeRecord(NAME, 'tapnet API (Unix socket)', 'release', api.release, { note: 'DELETE /v1/vms/{id}' }),
      makeRecord(NAME, 'tapnet API (Unix socket)', 'GET /v1/vms/{id}', reads, {
        note: `the API's own cost: ${(reads.length / readSeconds).toFixed(0)} reads/s, ${CLIENTS} clients`,
      }),
    ];
  } finally {
    ns.close();
    deleteNetns(tag);
    rmSync(dir, { recursive: true, force: true });
  }
}

export const suite: BenchSuite = {
  name: NAME,
  description: `ensure+release pairs through the daemon's API, ${CLIENTS} clients for 2 minutes, against the same load in-process`,
  run,
};
