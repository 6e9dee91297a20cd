/**
 * Crash injection, fast subset (part of `npm test`; the long runs are test/torture/crash.test.ts): kill -9
 * at every fault point of ensure, release, repair and reconcile (TAPNET_FAULTS), in direct mode (bridge +
 * routed) and CNI mode (Debian's bridge + tapnet's tc-redirect-tap); kills at random moments of library
 * workers (files and journal backends) and of the CLI; the daemon killed mid-call and restarted. After
 * each restart + reconcile the invariants hold (test/helpers/invariants.ts), a second reconcile has
 * nothing to do, and at the end every surviving VM's network answers ARP through its TAP.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { deleteLink } from '../../src/net/link.js';
import { checkInvariants } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import {
  assertQuiet,
  type Backend,
  CNI_FAULT_POINTS,
  checkConnectivity,
  cniEnv,
  DIRECT_FAULT_POINTS,
  directEnv,
  openManager,
  printFigures,
  repairCount,
  rnd,
  runCliKilled,
  runWorker,
  type TortureEnv,
  writeCliConfig,
} from '../torture/harness.js';

const skip = privSkipReason();
const cniSkip =
  skip ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'containernetworking-plugins is not installed');

const figures = { faultKills: 0, randomKills: 0, cliKills: 0, repairs: 0, checks: 0 };

/** Restart + reconcile: no errors, invariants hold, a second reconcile finds nothing. */
async function recoverAndCheck(env: TortureEnv, backend: Backend, what: string): Promise<void> {
  const m = await openManager(env, backend);
  try {
    const report = await m.reconcile();
    assert.deepEqual(report.errors, [], `${what}: reconcile errors`);
    figures.repairs += repairCount(report);
    assert.deepEqual(await checkInvariants(m), [], `${what}: invariants`);
    await assertQuiet(m);
    figures.checks++;
  } finally {
    await m.close();
  }
}

async function survivorsAnswer(env: TortureEnv, backend: Backend): Promise<number> {
  const m = await openManager(env, backend);
  try {
    const n = (await m.list()).length;
    assert.deepEqual(await checkConnectivity(m), [], 'every surviving VM answers ARP through its TAP');
    return n;
  } finally {
    await m.close();
  }
}

/** Kill a worker at `point` (its n-th passage) and check recovery. */
async function killAt(env: TortureEnv, backend: Backend, point: string): Promise<void> {
  if (point === 'repair:after-tap') {
    // A ready VM whose TAP vanished: the worker's first ensure of it repairs it (and dies there).
    const m = await openManager(env, backend);
    const victim = (await m.list()).find((i) => i.mode === 'direct');
    await m.close();
    if (!victim)
      await runWorker({ config: env.config, backend, ids: env.ids, touchAll: true, maxOps: 0, fdRatio: 0 });
    const m2 = await openManager(env, backend);
    const v2 = (await m2.list()).find((i) => i.mode === 'direct')!;
    await m2.close();
    deleteLink(env.t!.nl, v2.tap);
  }
  if (point.startsWith('reconcile:')) {
    // Leftovers for reconcile to repair: a worker killed between the firewall and the record.
    const r = await runWorker(
      { config: env.config, backend, ids: env.ids, releaseRatio: 0 },
      { faults: 'ensure:after-firewall:kill' },
    );
    assert.equal(r.signal, 'SIGKILL');
  }
  const n =
    point.startsWith('ensure:') || point.startsWith('release:') || point.startsWith('cni-') ? 1 + rnd(2) : 1;
  const r = await runWorker(
    {
      config: env.config,
      backend,
      ids: env.ids,
      touchAll: true,
      reconcileFirst: point.startsWith('reconcile:'),
      maxOps: 400,
    },
    { faults: `${point}:kill@${n}` },
  );
  assert.deepEqual(r.unexpected, [], `${point}: unexpected errors in the worker`);
  assert.equal(
    r.signal,
    'SIGKILL',
    `${point}@${n} was never reached (worker: ${r.code} ${r.stderr.slice(-500)})`,
  );
  figures.faultKills++;
  await recoverAndCheck(env, backend, `${point}@${n}`);
}

describe('crash injection (fast): direct mode, bridge + routed', { skip }, () => {
  let env: TortureEnv;
  let jenv: TortureEnv;
  before(() => {
    env = directEnv('tfc', 100);
    jenv = directEnv('tfj', 104, 8, 'journal');
  });
  after(() => {
    env?.destroy();
    jenv?.destroy();
    printFigures('torture-fast-crash', figures);
  });

  it(`kill -9 at each of the ${DIRECT_FAULT_POINTS.length} fault points of ensure, repair, release and reconcile`, async () => {
    for (const point of DIRECT_FAULT_POINTS) await killAt(env, 'files', point);
    assert.ok((await survivorsAnswer(env, 'files')) > 0, 'some VMs survived to be checked');
  });

  it('kill -9 at random moments of library workers (files and journal backends)', async () => {
    const kills = 12;
    for (let i = 0; i < kills; i++) {
      const [e, backend] = i % 3 === 2 ? [jenv, 'journal' as const] : [env, 'files' as const];
      const r = await runWorker({ config: e.config, backend, ids: e.ids }, { killAfterMs: rnd(80) });
      assert.ok(r.ready, `worker started: ${r.stderr.slice(-500)}`);
      assert.deepEqual(r.unexpected, []);
      figures.randomKills++;
      if (i % 4 === 3) await recoverAndCheck(e, backend, `random kill ${i}`);
    }
    await recoverAndCheck(env, 'files', 'random kills (files)');
    await recoverAndCheck(jenv, 'journal', 'random kills (journal)');
    await survivorsAnswer(env, 'files');
    await survivorsAnswer(jenv, 'journal');
  });

  it('kill -9 of the CLI (tapnet up/down --local) at random moments', async () => {
    const cfg = writeCliConfig(env);
    for (let i = 0; i < 5; i++) {
      const vm = env.ids[rnd(env.ids.length)]!;
      const args =
        i % 3 === 2
          ? ['--local', '--config', cfg, 'down', vm.id]
          : ['--local', '--config', cfg, 'up', vm.id, '--network', vm.network];
      const r = await runCliKilled(args, 150 + rnd(400));
      assert.ok(r.signal === 'SIGKILL' || r.code === 0, `tapnet ${args.join(' ')}: ${r.code} ${r.stderr}`);
      figures.cliKills++;
    }
    await recoverAndCheck(env, 'files', 'CLI kills');
    await survivorsAnswer(env, 'files');
  });
});

describe('crash injection (fast): CNI mode, bridge → tc-redirect-tap', { skip: cniSkip }, () => {
  let env: TortureEnv;
  before(() => {
    env = cniEnv('tfn', 102, 4);
  });
  after(() => env?.destroy());

  it(`kill -9 at each of ${CNI_FAULT_POINTS.length} fault points of CNI ensure, release and reconcile`, async () => {
    for (const point of CNI_FAULT_POINTS) {
      const n = point.startsWith('reconcile:') ? 1 : 1 + rnd(2);
      const r = await runWorker(
        {
          config: env.config,
          backend: 'files',
          ids: env.ids,
          touchAll: true,
          reconcileFirst: point.startsWith('reconcile:'),
          maxOps: 200,
        },
        { faults: `${point}:kill@${n}`, timeoutMs: 60_000 },
      );
      assert.deepEqual(r.unexpected, [], `${point}: unexpected errors`);
      assert.equal(r.signal, 'SIGKILL', `${point}@${n} was never reached: ${r.stderr.slice(-500)}`);
      figures.faultKills++;
      await recoverAndCheck(env, 'files', `CNI ${point}@${n}`);
    }
    assert.ok((await survivorsAnswer(env, 'files')) > 0);
  });

  it('kill -9 at random moments of CNI workers', async () => {
    for (let i = 0; i < 6; i++) {
      const r = await runWorker(
        { config: env.config, backend: 'files', ids: env.ids },
        { killAfterMs: rnd(150) },
      );
      assert.ok(r.ready);
      assert.deepEqual(r.unexpected, []);
      figures.randomKills++;
    }
    await recoverAndCheck(env, 'files', 'CNI random kills');
    await survivorsAnswer(env, 'files');
    // Leave nothing: release everything, then the plugins' host side is empty too.
    const m = await openManager(env);
    try {
      const { failed } = await m.releaseMany((await m.list()).map((i) => i.vmId));
      assert.deepEqual(failed, []);
      assert.deepEqual(await checkInvariants(m), []);
    } finally {
      await m.close();
    }
  });
});
