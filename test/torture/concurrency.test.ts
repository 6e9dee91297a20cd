/**
 * The long concurrency run (`npm run torture`): for TORTURE_CONCURRENCY_SECONDS (default 180) per store
 * backend, 6 library workers, 3 CLIs (through the daemon and in-process) and 3 daemon clients hammer
 * ensure/release on 16 overlapping VM ids; then the invariants hold and every VM answers ARP.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isTapnetError, toTapnetError } from '../../src/errors.js';
import { checkInvariants } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import {
  CLI,
  checkConnectivity,
  directEnv,
  haveDaemon,
  openManager,
  printFigures,
  rnd,
  runChild,
  runWorker,
  startReadyDaemon,
  type TortureEnv,
  writeCliConfig,
} from './harness.js';

const SECONDS = Number(process.env.TORTURE_CONCURRENCY_SECONDS ?? 180);
const skip = privSkipReason() ?? (haveDaemon() ? undefined : 'no daemon in this build');
const EXPECTED = new Set(['ERR_CONFLICT', 'ERR_TEARDOWN', 'ERR_IPAM_EXHAUSTED', 'ERR_IPAM_CONFLICT']);

for (const backend of ['files', 'journal'] as const) {
  describe(`concurrency for ${SECONDS} s (${backend} backend)`, { skip }, () => {
    let env: TortureEnv | undefined;
    after(() => env?.destroy());

    it('invariants hold after the hammering; every VM answers', {
      timeout: (SECONDS + 600) * 1000,
    }, async () => {
      env = directEnv(`tcx${backend[0]}`, backend === 'files' ? 146 : 148, 16, backend);
      const e = env;
      const d = await startReadyDaemon(e);
      const cfg = writeCliConfig(e, { api: { socket: d.socket } });
      const until = Date.now() + SECONDS * 1000;
      const tally: Record<string, number> = {};
      const unexpected: string[] = [];
      const client = async () => {
        while (Date.now() < until) {
          const vm = e.ids[rnd(e.ids.length)]!;
          try {
            if (Math.random() < 0.4) await d.client.release(vm.id);
            else await d.client.ensure(vm.id, { network: vm.network });
            tally.ok = (tally.ok ?? 0) + 1;
          } catch (err) {
            const c = toTapnetError(err).code;
            tally[c] = (tally[c] ?? 0) + 1;
            if (!isTapnetError(err) || !EXPECTED.has(c))
              unexpected.push(`${vm.id}: ${c} ${(err as Error).message}`);
          }
        }
      };
      const cli = async (local: boolean) => {
        let bad = 0;
        while (Date.now() < until) {
          const vm = e.ids[rnd(e.ids.length)]!;
          const args = [CLI, ...(local ? ['--local'] : []), '--config', cfg];
          const r = await runChild(
            [...args, ...(Math.random() < 0.4 ? ['down', vm.id] : ['up', vm.id, '--network', vm.network])],
            { readyWord: '\0' },
          );
          if (![0, 4, 8].includes(r.code ?? -1)) {
            bad++;
            unexpected.push(`cli ${r.code}: ${r.stderr.slice(0, 300)}`);
          }
        }
        return bad;
      };
      const [workers] = await Promise.all([
        Promise.all(
          Array.from({ length: 6 }, () =>
            runWorker(
              { config: e.config, backend, ids: e.ids, maxMs: SECONDS * 1000 },
              { timeoutMs: (SECONDS + 120) * 1000 },
            ),
          ),
        ),
        Promise.all([client(), client(), client()]),
        Promise.all([cli(false), cli(false), cli(true)]),
      ]);
      assert.equal(await d.stop(), 0);
      for (const w of workers) assert.deepEqual(w.unexpected, []);
      assert.deepEqual(unexpected, []);
      const m = await openManager(e);
      try {
        const r = await m.reconcile();
        assert.deepEqual(r.errors, []);
        assert.deepEqual(await checkInvariants(m), []);
        assert.deepEqual(await checkConnectivity(m), []);
        printFigures(`torture-concurrency-${backend}`, {
          seconds: SECONDS,
          workerOps: workers.reduce((n, w) => n + (w.stats?.ops ?? 0), 0),
          workerErrors: workers.map((w) => w.stats?.errors),
          clientCalls: tally,
          vmsAtEnd: (await m.list()).length,
        });
        await m.releaseMany((await m.list()).map((i) => i.vmId));
      } finally {
        await m.close();
      }
    });
  });
}
