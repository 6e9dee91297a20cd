/**
 * Concurrency and the daemon under fire (fast subset; test/torture/concurrency.test.ts runs for minutes):
 * library workers, CLIs in-process and through the daemon, and daemon clients hammer ensure/release on
 * the same few VM ids for 10 s; then the invariants hold and every VM answers. The daemon is also killed
 * with SIGKILL in the middle of calls and restarted: its startup reconcile repairs what it left.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isTapnetError, toTapnetError } from '../../src/errors.js';
import { checkInvariants } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import {
  CLI,
  checkConnectivity,
  type DaemonProc,
  directEnv,
  haveDaemon,
  openManager,
  printFigures,
  rnd,
  runChild,
  runWorker,
  startReadyDaemon,
  type TortureEnv,
  type WorkerRun,
  writeCliConfig,
} from '../torture/harness.js';

const skip = privSkipReason() ?? (haveDaemon() ? undefined : 'no daemon in this build');
const SECONDS = Number(process.env.TORTURE_FAST_SECONDS ?? 10);

/** Codes a client may get while others work on the same VMs. */
const EXPECTED = new Set(['ERR_CONFLICT', 'ERR_TEARDOWN', 'ERR_IPAM_EXHAUSTED', 'ERR_IPAM_CONFLICT']);

/** Hammer through a daemon client until `until`; counts ops and error codes; returns unexpected errors. */
async function clientLoop(
  d: DaemonProc,
  env: TortureEnv,
  until: number,
  tally: Record<string, number>,
  allow: Set<string> = EXPECTED,
): Promise<string[]> {
  const unexpected: string[] = [];
  while (Date.now() < until) {
    const vm = env.ids[rnd(env.ids.length)]!;
    try {
      if (Math.random() < 0.4) await d.client.release(vm.id);
      else await d.client.ensure(vm.id, { network: vm.network });
      tally.ok = (tally.ok ?? 0) + 1;
    } catch (e) {
      const code = toTapnetError(e).code;
      tally[code] = (tally[code] ?? 0) + 1;
      if (!isTapnetError(e) || !allow.has(code)) unexpected.push(`${vm.id}: ${code} ${(e as Error).message}`);
    }
  }
  return unexpected;
}

/** tapnet up/down in a loop (through the daemon unless `local`). */
async function cliLoop(cfg: string, env: TortureEnv, until: number, local: boolean): Promise<WorkerRun[]> {
  const bad: WorkerRun[] = [];
  while (Date.now() < until) {
    const vm = env.ids[rnd(env.ids.length)]!;
    const args = [CLI, ...(local ? ['--local'] : []), '--config', cfg];
    const r = await runChild(
      [...args, ...(Math.random() < 0.4 ? ['down', vm.id] : ['up', vm.id, '--network', vm.network])],
      { readyWord: '\0' },
    );
    // exit 0, or 4 (conflict) / 8 (teardown incomplete) when another process works on the same VM.
    if (![0, 4, 8].includes(r.code ?? -1)) bad.push(r);
  }
  return bad;
}

describe('concurrency: workers, CLIs and the daemon on the same VM ids', { skip }, () => {
  let env: TortureEnv;
  before(() => {
    env = directEnv('tcc', 124, 8);
  });
  after(() => env?.destroy());

  it(`${SECONDS} s of ensure/release from 3 library workers, 2 CLIs, 2 daemon clients: invariants hold`, async () => {
    const d = await startReadyDaemon(env);
    const cfg = writeCliConfig(env, { api: { socket: d.socket } });
    const until = Date.now() + SECONDS * 1000;
    const tally: Record<string, number> = {};
    const [workers, clients, clis] = await Promise.all([
      Promise.all(
        [0, 1, 2].map(() =>
          runWorker({ config: env.config, backend: 'files', ids: env.ids, maxMs: SECONDS * 1000 }),
        ),
      ),
      Promise.all([0, 1].map(() => clientLoop(d, env, until, tally))),
      Promise.all([cliLoop(cfg, env, until, false), cliLoop(cfg, env, until, true)]),
    ]);
    assert.equal(await d.stop(), 0, `the daemon stops cleanly: ${d.stderr().slice(-1000)}`);
    for (const w of workers) {
      assert.ok(w.stats, `worker finished: ${w.stderr.slice(-500)}`);
      assert.deepEqual(w.unexpected, []);
    }
    assert.deepEqual(clients.flat(), [], 'daemon clients saw only expected errors');
    assert.deepEqual(
      clis.flat().map((r) => `${r.code}: ${r.stderr}`),
      [],
      'CLIs exited 0, 4 or 8',
    );
    const m = await openManager(env);
    try {
      const r = await m.reconcile();
      assert.deepEqual(r.errors, []);
      assert.deepEqual(await checkInvariants(m), []);
      assert.deepEqual(await checkConnectivity(m), []);
      printFigures('torture-fast-concurrency', {
        seconds: SECONDS,
        workerOps: workers.reduce((n, w) => n + (w.stats?.ops ?? 0), 0),
        clientCalls: Object.values(tally).reduce((a, b) => a + b, 0),
        clientErrors: tally,
        vmsAtEnd: (await m.list()).length,
        repairsAtEnd: r.incompleteRecords.length + r.orphanTaps.length + r.orphanLeases.length,
      });
    } finally {
      await m.close();
    }
  });

  it('the daemon killed with SIGKILL mid-call twice: the restarted daemon repairs everything by itself', async () => {
    for (let round = 0; round < 2; round++) {
      const d = await startReadyDaemon(env);
      const until = Date.now() + 1000;
      const tally: Record<string, number> = {};
      // While the daemon dies, its clients may see anything a broken connection gives; once it is back,
      // only tapnet errors.
      const loops = [0, 1, 2].map(() =>
        clientLoop(
          d,
          env,
          until,
          tally,
          new Set([...EXPECTED, 'ERR_UNAVAILABLE', 'ERR_INTERNAL', 'ERR_ABORTED']),
        ),
      );
      await new Promise((r) => setTimeout(r, 200 + rnd(600)));
      await d.kill();
      await Promise.all(loops);
    }
    const d = await startReadyDaemon(env); // after its startup reconcile
    assert.equal(await d.stop(), 0);
    const m = await openManager(env);
    try {
      assert.deepEqual(await checkInvariants(m), [], 'no reconcile of ours: the daemon repaired at start');
      assert.deepEqual(await checkConnectivity(m), []);
      await m.releaseMany((await m.list()).map((i) => i.vmId));
      assert.deepEqual(await checkInvariants(m), []);
    } finally {
      await m.close();
    }
  });
});
