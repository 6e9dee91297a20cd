/**
 * Kernel-side and disk faults (fast subset): a TAP, the bridge, the routed gateway holder deleted behind
 * tapnet's back; `nft flush ruleset`; a CNI plugin binary removed mid-run; the state directory full (a
 * 64 KiB tmpfs) or read-only (`mount -o remount,ro`). Each gives a clear error (its code is asserted)
 * and is repaired by reconcile once the cause is gone: invariants hold and every VM answers ARP.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isTapnetError, type TapnetError } from '../../src/errors.js';
import type { NetworkManager } from '../../src/manager/manager.js';
import { deleteLink, findLink } from '../../src/net/link.js';
import { deleteNetns } from '../../src/net/netns.js';
import { checkInvariants } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import {
  checkConnectivity,
  cniEnv,
  directEnv,
  openManager,
  repairCount,
  type TortureEnv,
} from '../torture/harness.js';

const skip = privSkipReason();
const cniSkip =
  skip ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'containernetworking-plugins is not installed');

/** Reconcile in a fresh manager (a restarted process): no errors, invariants hold, every VM answers. */
async function repairedByReconcile(env: TortureEnv): Promise<number> {
  const m = await openManager(env);
  try {
    const r = await m.reconcile();
    assert.deepEqual(r.errors, []);
    assert.deepEqual(await checkInvariants(m), []);
    assert.deepEqual(await checkConnectivity(m), []);
    return repairCount(r);
  } finally {
    await m.close();
  }
}

const code = (c: string, errno?: string) => (e: unknown) => {
  assert.ok(isTapnetError(e), `a TapnetError, not ${String(e)}`);
  assert.equal((e as TapnetError).code, c, (e as Error).message);
  if (errno) assert.equal((e as TapnetError).errno, errno, (e as Error).message);
  return true;
};

describe('kernel-side faults in direct mode', { skip }, () => {
  let env: TortureEnv;
  let m: NetworkManager;
  /** After a bridge deletion: set the network up again and re-make its VMs (their TAPs are detached). */
  const remakeBridgeVms = async (): Promise<void> => {
    await m.reconcile();
    const ids = (await m.list()).filter((i) => i.network === 'br').map((i) => i.vmId);
    await m.releaseMany(ids);
    for (const id of ids) await m.ensure(id, { network: 'br' });
  };
  before(async () => {
    env = directEnv('tkf', 116, 6);
    m = await openManager(env);
    for (const vm of env.ids.slice(0, 4)) await m.ensure(vm.id, { network: vm.network });
  });
  after(async () => {
    await m?.close();
    env?.destroy();
  });

  it('a TAP deleted behind our back: ensure re-creates it; reconcile re-creates the others', async () => {
    const [a, b] = await Promise.all([m.get(env.ids[0]!.id), m.get(env.ids[1]!.id)]);
    deleteLink(env.t!.nl, a!.tap);
    deleteLink(env.t!.nl, b!.tap);
    const again = await m.ensure(a!.vmId);
    assert.equal(again.tap, a!.tap);
    assert.ok(findLink(env.t!.nl, a!.tap));
    assert.ok((await checkInvariants(m)).some((v) => v.startsWith(`missing-tap: ${b!.vmId}`)));
    assert.ok((await repairedByReconcile(env)) >= 1);
  });

  it('the bridge deleted: reconcile re-creates it and re-attaches the TAPs of its VMs', async () => {
    const br = m.network('br').bridge;
    deleteLink(env.t!.nl, br);
    try {
      const r = await m.reconcile();
      assert.deepEqual(r.errors, []);
      assert.deepEqual(await checkInvariants(m), [], 'every TAP is a port of the bridge again');
      assert.deepEqual(await checkConnectivity(m), []);
    } finally {
      await remakeBridgeVms();
    }
  });

  it('the bridge deleted: the running manager notices and sets the network up again by itself', async () => {
    deleteLink(env.t!.nl, m.network('br').bridge);
    try {
      await m.ensure('self-heal', { network: 'br' });
      await m.release('self-heal');
    } finally {
      await remakeBridgeVms();
    }
  });

  it('the routed gateway holder deleted: reconcile re-creates it and the routed VMs answer', async () => {
    deleteLink(env.t!.nl, m.network('rt').bridge);
    await repairedByReconcile(env);
  });

  it("nft flush ruleset: the next ensure rebuilds the base rules and every other VM's elements", async () => {
    execFileSync('ip', ['netns', 'exec', env.t!.name, 'nft', 'flush', 'ruleset']);
    const before = await checkInvariants(m);
    assert.ok(
      before.some((v) => v.startsWith('missing-firewall-element')),
      before.join('; '),
    );
    // The driver notices its tables are gone and rebuilds the base (or says ERR_FIREWALL).
    const err = await m.ensure(env.ids[5]!.id, { network: 'rt' }).then(
      () => undefined,
      (e: unknown) => e as TapnetError,
    );
    if (err) assert.equal(err.code, 'ERR_FIREWALL');
    // The manager sees the driver rebuild its tables and adds every other VM's elements again at once.
    if (!err) assert.deepEqual(await checkInvariants(m), []);
    await m.reconcile();
    assert.deepEqual(await checkInvariants(m), []);
  });
});

for (const backend of ['files', 'journal'] as const) {
  describe(`disk faults (${backend} backend): the state directory full or read-only`, { skip }, () => {
    let env: TortureEnv;
    let m: NetworkManager;
    let mnt: string;
    before(async () => {
      env = directEnv(`tdk${backend[0]}`, backend === 'files' ? 118 : 122, 4, backend);
      mnt = env.config.stateDir!;
      mkdirSync(mnt, { recursive: true });
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'tapnet-torture', mnt]);
      m = await openManager(env);
      await m.ensure(env.ids[0]!.id);
      await m.ensure(env.ids[1]!.id, { network: 'rt' });
    });
    after(async () => {
      await m?.close();
      if (mnt) execFileSync('umount', ['-l', mnt]);
      env?.destroy();
    });

    it('disk full: ensure and release fail with ERR_STORE/ENOSPC and leave nothing; what was acknowledged is stored; reconcile repairs once space is back', async () => {
      const filler = join(mnt, 'filler');
      const fd = openSync(filler, 'w');
      try {
        for (;;) writeSync(fd, Buffer.alloc(4096, 1));
      } catch (e) {
        assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
      } finally {
        closeSync(fd);
      }
      // Appends may still fit in a page the store already has: go on until the disk says no.
      const acknowledged: string[] = [];
      let failure: unknown;
      try {
        for (let i = 0; i < 200 && failure === undefined; i++) {
          const id = `full-${i}`;
          await m.ensure(id).then(
            () => acknowledged.push(id),
            (e: unknown) => {
              failure = e;
            },
          );
        }
        assert.ok(failure !== undefined, 'a full disk is noticed');
        const f = failure as TapnetError;
        // Both backends say why: a short append writes the rest, and the kernel then answers ENOSPC.
        code('ERR_STORE', 'ENOSPC')(f);
        const left = (await checkInvariants(m, { settled: false })).filter((v) =>
          v.includes(`full-${acknowledged.length}`),
        );
        if (backend === 'files') assert.deepEqual(left, [], 'the failed ensure left nothing of its VM');
        else {
          // An append-only journal cannot record the undo of a lease on a full disk: the leftover must be
          // reported with the error (details.rollbackFailures) and is freed by reconcile later.
          for (const v of left) assert.match(v, /^orphan-lease: /);
          if (left.length) assert.ok(Array.isArray(f.details.rollbackFailures), JSON.stringify(f.toJSON()));
        }
        await assert.rejects(m.release(env.ids[0]!.id), code('ERR_STORE'));
      } finally {
        rmSync(filler);
      }
      // Every ensure that returned is in the store, as seen by another process.
      const fresh = await openManager(env);
      try {
        const stored = new Set((await fresh.list()).map((i) => i.vmId));
        assert.deepEqual(
          acknowledged.filter((id) => !stored.has(id)),
          [],
          'acknowledged VMs are stored',
        );
      } finally {
        await fresh.close();
      }
      await repairedByReconcile(env);
      await m.release(env.ids[0]!.id);
      await m.releaseMany(acknowledged);
      assert.deepEqual(await checkInvariants(m), []);
    });

    it('read-only state directory: ensure and release fail with ERR_STORE/EROFS; reconcile repairs once writable', async () => {
      // A read-only bind mount over the directory: files already open stay writable below it, so the
      // journal (one file, kept open) is closed first and the read-only state is met when opening.
      if (backend === 'journal') await m.close();
      execFileSync('mount', ['--bind', mnt, mnt]);
      execFileSync('mount', ['-o', 'remount,bind,ro', mnt]);
      let released = false;
      try {
        if (backend === 'journal') {
          await assert.rejects(openManager(env), code('ERR_STORE', 'EROFS'));
        } else {
          await assert.rejects(m.ensure(env.ids[3]!.id), code('ERR_STORE', 'EROFS'));
          await assert.rejects(m.release(env.ids[1]!.id), code('ERR_STORE', 'EROFS'));
          assert.deepEqual(
            (await checkInvariants(m, { settled: false })).filter((v) => v.includes(env.ids[3]!.id)),
            [],
            'the failed ensure left nothing of its VM',
          );
        }
        released = true;
      } finally {
        execFileSync('umount', [mnt]);
        if (backend === 'journal') m = await openManager(env);
      }
      assert.ok(released);
      await repairedByReconcile(env);
      await m.ensure(env.ids[3]!.id);
      await m.releaseMany((await m.list()).map((i) => i.vmId));
      assert.deepEqual(await checkInvariants(m), []);
    });
  });
}

describe('kernel-side faults in CNI mode', { skip: cniSkip }, () => {
  let env: TortureEnv;
  let m: NetworkManager;
  before(async () => {
    env = cniEnv('tkc', 120, 6);
    m = await openManager(env);
    for (const vm of env.ids.slice(0, 3)) await m.ensure(vm.id);
  });
  after(async () => {
    await m?.releaseMany((await m.list()).map((i) => i.vmId));
    await m?.close();
    env?.destroy();
  });

  it("a VM's namespace deleted behind our back: ensure starts it over; reconcile releases the others", async () => {
    const [a, b] = [env.ids[0]!.id, env.ids[1]!.id];
    deleteNetns(`${env.cni!.netnsPrefix}-${a}`);
    deleteNetns(`${env.cni!.netnsPrefix}-${b}`);
    const info = await m.ensure(a);
    assert.ok(existsSync(info.netns!));
    const r = await m.reconcile();
    assert.ok(r.incompleteRecords.includes(b));
    assert.deepEqual(await checkInvariants(m), []);
    assert.deepEqual(await checkConnectivity(m), []);
  });

  for (const plugin of ['bridge', 'host-local']) {
    it(`the ${plugin} plugin removed mid-run: ADD fails with a clear code and leaves nothing; DEL fails with ERR_TEARDOWN; reconcile finishes once it is back`, async () => {
      const newId = plugin === 'bridge' ? env.ids[4]!.id : env.ids[5]!.id;
      const file = join(env.cni!.pluginDir, plugin);
      const aside = `${file}.aside`;
      renameSync(file, aside);
      try {
        // A missing plugin of the conflist is ERR_NOT_FOUND naming it; one the bridge plugin delegates
        // to (IPAM) fails inside that plugin: ERR_CNI.
        await assert.rejects(m.ensure(newId), code(plugin === 'bridge' ? 'ERR_NOT_FOUND' : 'ERR_CNI'));
        assert.deepEqual(await checkInvariants(m), [], 'the failed ADD left nothing');
        const victim = (await m.list())[0]!.vmId;
        await assert.rejects(m.release(victim), code('ERR_TEARDOWN'));
        assert.equal((await m.store.records.get(victim))?.state, 'releasing');
      } finally {
        renameSync(aside, file);
      }
      const r = await m.reconcile();
      assert.deepEqual(r.errors, []);
      assert.deepEqual(await checkInvariants(m), []);
      await m.ensure(newId);
      assert.deepEqual(await checkConnectivity(m), []);
    });
  }
});
