/**
 * The long crash-injection run (`npm run torture`): TORTURE_KILLS (default 2,000) kill -9 of library
 * workers, the CLI and the daemon, at random moments and at random fault points, rotating over direct
 * mode on both store backends (bridge + routed networks) and CNI mode (bridge → tc-redirect-tap). Every
 * 25 kills and at the end: restart + reconcile, invariants, a second reconcile with nothing to do; at the
 * end every surviving VM answers ARP through its TAP. Prints `figures {...}` for docs/RELIABILITY.md.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { FAULT_POINTS } from '../../src/manager/faults.js';
import { checkInvariants } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import {
  assertQuiet,
  CNI_FAULT_POINTS,
  checkConnectivity,
  cniEnv,
  DIRECT_FAULT_POINTS,
  directEnv,
  haveDaemon,
  openManager,
  printFigures,
  repairCount,
  rnd,
  runCliKilled,
  runWorker,
  startDaemon,
  type TortureEnv,
  writeCliConfig,
} from './harness.js';

const KILLS = Number(process.env.TORTURE_KILLS ?? 2000);
const skip = privSkipReason();
const haveCni = existsSync('/usr/lib/cni/bridge');
const CNI_OK = new Set<string>([...CNI_FAULT_POINTS, 'reconcile:after-networks', 'reconcile:before-leases']);

describe(`crash injection: ${KILLS} kills`, { skip }, () => {
  const envs: { env: TortureEnv; name: string; cni: boolean }[] = [];
  const f = {
    kills: 0,
    faultKills: 0,
    timerKills: 0,
    cliKills: 0,
    daemonKills: 0,
    repairs: 0,
    checks: 0,
    notReached: 0,
    survivorsChecked: 0,
    ms: 0,
  };
  before(() => {
    envs.push({ env: directEnv('tcf', 140, 12, 'files'), name: 'direct/files', cni: false });
    envs.push({ env: directEnv('tcj', 142, 12, 'journal'), name: 'direct/journal', cni: false });
    if (haveCni) envs.push({ env: cniEnv('tcn', 144, 8), name: 'cni', cni: true });
  });
  after(() => {
    for (const e of envs) e.env.destroy();
    printFigures('torture-crash', f);
  });

  async function check(e: (typeof envs)[number], what: string): Promise<void> {
    const m = await openManager(e.env);
    try {
      const r = await m.reconcile();
      assert.deepEqual(r.errors, [], `${what}: reconcile errors`);
      f.repairs += repairCount(r);
      assert.deepEqual(await checkInvariants(m), [], `${what}: invariants`);
      await assertQuiet(m);
      f.checks++;
    } finally {
      await m.close();
    }
  }

  it('every kill is repaired; invariants hold; survivors answer', { timeout: 24 * 3600_000 }, async () => {
    const t0 = Date.now();
    for (let i = 0; i < KILLS; i++) {
      const e = envs[i % envs.length]!;
      const dice = Math.random();
      if (!e.cni && dice < 0.05) {
        const cfg = writeCliConfig(e.env);
        const vm = e.env.ids[rnd(e.env.ids.length)]!;
        const args =
          Math.random() < 0.4
            ? ['--local', '--config', cfg, 'down', vm.id]
            : ['--local', '--config', cfg, 'up', vm.id, '--network', vm.network];
        await runCliKilled(args, 100 + rnd(500));
        f.cliKills++;
      } else if (!e.cni && dice < 0.07 && haveDaemon()) {
        const d = startDaemon(e.env);
        await d.ready().catch(() => undefined);
        const calls = e.env.ids.map((vm) =>
          (Math.random() < 0.4
            ? d.client.release(vm.id)
            : d.client.ensure(vm.id, { network: vm.network })
          ).catch(() => undefined),
        );
        await new Promise((r) => setTimeout(r, rnd(300)));
        await d.kill();
        await Promise.all(calls);
        f.daemonKills++;
      } else if (dice < 0.55) {
        const points = e.cni
          ? FAULT_POINTS.filter((p) => CNI_OK.has(p))
          : DIRECT_FAULT_POINTS.filter((p) => p !== 'repair:after-tap');
        const point = points[rnd(points.length)]!;
        const r = await runWorker(
          {
            config: e.env.config,
            backend: e.env.config.storeBackend as 'files' | 'journal',
            ids: e.env.ids,
            touchAll: Math.random() < 0.3,
            reconcileFirst: point.startsWith('reconcile:'),
            maxOps: 300,
          },
          { faults: `${point}:kill@${1 + rnd(3)}` },
        );
        assert.deepEqual(r.unexpected, [], `${e.name} ${point}`);
        if (r.signal === 'SIGKILL') f.faultKills++;
        else f.notReached++;
      } else {
        const r = await runWorker(
          { config: e.env.config, backend: e.env.config.storeBackend as 'files' | 'journal', ids: e.env.ids },
          { killAfterMs: rnd(e.cni ? 200 : 100) },
        );
        assert.ok(r.ready, r.stderr.slice(-500));
        assert.deepEqual(r.unexpected, [], e.name);
        f.timerKills++;
      }
      f.kills++;
      if (i % 25 === 24) await check(e, `${e.name} after kill ${i}`);
    }
    for (const e of envs) {
      await check(e, `${e.name} at the end`);
      const m = await openManager(e.env);
      try {
        f.survivorsChecked += (await m.list()).length;
        assert.deepEqual(await checkConnectivity(m), [], `${e.name}: survivors answer`);
        if (e.cni) await m.releaseMany((await m.list()).map((i) => i.vmId));
      } finally {
        await m.close();
      }
    }
    f.ms = Date.now() - t0;
  });
});
