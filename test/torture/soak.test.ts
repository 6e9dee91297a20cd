/**
 * Soak (`npm run torture`): SOAK_SECONDS (default 3,600) of churn at a high rate — ensure + release pairs
 * of fresh VM ids, 8 at a time, in this process (a library user) and through a daemon — sampling RSS and
 * open fds of both processes every SOAK_SAMPLE_MS (default 5,000). Asserts no growth: after a warm-up
 * (first 10 %), the mean of the last third is within 25 % (RSS) and 8 fds of the first third's, and a
 * least-squares slope below 2 MiB and 1 fd per 10 minutes. Prints `figures {...}` and the samples.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { checkInvariants, orphanLockFiles, tempFiles } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import {
  directEnv,
  haveDaemon,
  openManager,
  printFigures,
  startReadyDaemon,
  type TortureEnv,
} from './harness.js';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 3600);
const SAMPLE_MS = Number(process.env.SOAK_SAMPLE_MS ?? 5000);
const skip = privSkipReason() ?? (haveDaemon() ? undefined : 'no daemon in this build');

interface Sample {
  t: number;
  rss: number;
  fds: number;
  daemonRss: number;
  daemonFds: number;
  ops: number;
}

const procRss = (pid: number | 'self'): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
};
const procFds = (pid: number | 'self'): number => readdirSync(`/proc/${pid}/fd`).length;

/** Least-squares slope of y over t (per ms). */
function slope(t: number[], y: number[]): number {
  const n = t.length;
  const mt = t.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (t[i]! - mt) * (y[i]! - my);
    den += (t[i]! - mt) ** 2;
  }
  return den ? num / den : 0;
}
const mean = (a: number[]): number => a.reduce((x, y) => x + y, 0) / Math.max(1, a.length);

describe(`soak: ${SECONDS} s of churn`, { skip }, () => {
  let env: TortureEnv | undefined;
  after(() => env?.destroy());

  it('RSS and open fds stay bounded (library user and daemon); nothing leaks', {
    timeout: (SECONDS + 600) * 1000,
  }, async () => {
    env = directEnv('tsk', 150, 0, 'journal');
    const e = env;
    const m = await openManager(e);
    const d = await startReadyDaemon(e);
    const daemonPid = d.child.pid!;
    const until = Date.now() + SECONDS * 1000;
    let ops = 0;
    let seq = 0;
    const failures: string[] = [];
    const churn = async (api: 'lib' | 'daemon', lane: number) => {
      while (Date.now() < until) {
        const id = `soak-${api}-${lane}-${seq++}`;
        const network = seq % 2 ? 'rt' : 'br';
        try {
          if (api === 'lib') {
            await m.ensure(id, { network });
            await m.release(id);
          } else {
            await d.client.ensure(id, { network });
            await d.client.release(id);
          }
          ops += 2;
        } catch (err) {
          failures.push(`${id}: ${(err as Error).message}`);
          if (failures.length > 20) throw err;
        }
      }
    };
    const samples: Sample[] = [];
    const t0 = Date.now();
    const sample = () =>
      samples.push({
        t: Date.now() - t0,
        rss: procRss('self'),
        fds: procFds('self'),
        daemonRss: procRss(daemonPid),
        daemonFds: procFds(daemonPid),
        ops,
      });
    sample();
    const timer = setInterval(sample, SAMPLE_MS);
    try {
      await Promise.all([
        ...Array.from({ length: 8 }, (_, i) => churn('lib', i)),
        ...Array.from({ length: 8 }, (_, i) => churn('daemon', i)),
      ]);
    } finally {
      clearInterval(timer);
    }
    sample();
    assert.equal(await d.stop(), 0);
    assert.deepEqual(failures, []);
    assert.deepEqual(await checkInvariants(m), []);
    assert.deepEqual(await m.list(), []);
    const locks = await orphanLockFiles(m);
    const temps = tempFiles(e.config.stateDir!);
    await m.close();

    const warm = samples.filter((s) => s.t >= (SECONDS * 1000) / 10);
    const third = Math.max(1, Math.floor(warm.length / 3));
    const first = warm.slice(0, third);
    const last = warm.slice(-third);
    const perTenMin = 600_000;
    const result = {
      seconds: SECONDS,
      ops,
      opsPerSecond: Math.round(ops / SECONDS),
      samples: samples.length,
      rssMiB: {
        first: +(mean(first.map((s) => s.rss)) / 2 ** 20).toFixed(1),
        last: +(mean(last.map((s) => s.rss)) / 2 ** 20).toFixed(1),
        max: +(Math.max(...samples.map((s) => s.rss)) / 2 ** 20).toFixed(1),
      },
      fds: {
        first: mean(first.map((s) => s.fds)),
        last: mean(last.map((s) => s.fds)),
        max: Math.max(...samples.map((s) => s.fds)),
      },
      daemonRssMiB: {
        first: +(mean(first.map((s) => s.daemonRss)) / 2 ** 20).toFixed(1),
        last: +(mean(last.map((s) => s.daemonRss)) / 2 ** 20).toFixed(1),
        max: +(Math.max(...samples.map((s) => s.daemonRss)) / 2 ** 20).toFixed(1),
      },
      daemonFds: {
        first: mean(first.map((s) => s.daemonFds)),
        last: mean(last.map((s) => s.daemonFds)),
        max: Math.max(...samples.map((s) => s.daemonFds)),
      },
      slopePer10Min: {
        rssMiB: +(
          (slope(
            warm.map((s) => s.t),
            warm.map((s) => s.rss),
          ) *
            perTenMin) /
          2 ** 20
        ).toFixed(2),
        fds: +(
          slope(
            warm.map((s) => s.t),
            warm.map((s) => s.fds),
          ) * perTenMin
        ).toFixed(2),
        daemonRssMiB: +(
          (slope(
            warm.map((s) => s.t),
            warm.map((s) => s.daemonRss),
          ) *
            perTenMin) /
          2 ** 20
        ).toFixed(2),
        daemonFds: +(
          slope(
            warm.map((s) => s.t),
            warm.map((s) => s.daemonFds),
          ) * perTenMin
        ).toFixed(2),
      },
      orphanLockFiles: locks.length,
      tempFiles: temps.length,
    };
    printFigures('torture-soak', result);
    process.stdout.write(
      `samples ${JSON.stringify(samples.map((s) => [Math.round(s.t / 1000), Math.round(s.rss / 2 ** 20), s.fds, Math.round(s.daemonRss / 2 ** 20), s.daemonFds, s.ops]))}\n`,
    );
    for (const [what, a, b] of [
      ['RSS', result.rssMiB.first, result.rssMiB.last],
      ['daemon RSS', result.daemonRssMiB.first, result.daemonRssMiB.last],
    ] as const) {
      assert.ok(b <= a * 1.25 + 8, `${what} grew from ${a} to ${b} MiB`);
    }
    assert.ok(
      result.fds.last <= result.fds.first + 8,
      `fds grew from ${result.fds.first} to ${result.fds.last}`,
    );
    assert.ok(
      result.daemonFds.last <= result.daemonFds.first + 8,
      `daemon fds grew from ${result.daemonFds.first} to ${result.daemonFds.last}`,
    );
    if (SECONDS >= 600) {
      assert.ok(
        result.slopePer10Min.rssMiB < 2 && result.slopePer10Min.daemonRssMiB < 2,
        JSON.stringify(result.slopePer10Min),
      );
      assert.ok(
        result.slopePer10Min.fds < 1 && result.slopePer10Min.daemonFds < 1,
        JSON.stringify(result.slopePer10Min),
      );
    }
    assert.equal(locks.length, 0, 'no lock file left per VM id');
  });
});
