/**
 * A record written but never acknowledged (the cluster store's etcd went away mid-write) and a lease that
 * vanished under a ready VM: ensure must not roll back under a record that exists, and reconcile takes a
 * lost lease again, so no address is ever handed to two VMs.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { type ManagerStore, NetworkManager, VM_RECORD_SCHEMA } from '../../src/manager/manager.js';
import { repairCount } from '../../src/manager/report.js';
import type { VmRecord } from '../../src/manager/types.js';
import { listLinks } from '../../src/net/link.js';
import { openStore } from '../../src/store/index.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();

/** The outage's faults, armed per test: what the next record put and delete do. */
interface Faults {
  /** Apply the next put, then fail it as a request that went out and got no answer. */
  putAppliedUnanswered?: boolean;
  /** Fail the next delete as unreachable. */
  deleteUnavailable?: boolean;
}

function unanswered(what: string): TapnetError {
  return new TapnetError('ERR_UNAVAILABLE', `${what}: the answer was cut off`, {
    details: { ambiguous: true },
  });
}

/** A local store whose record writes can be made to fail as an etcd outage does. */
async function faultyStore(dir: string, faults: Faults): Promise<ManagerStore> {
  const store = await openStore<VmRecord>({ backend: 'files', dir, schema: VM_RECORD_SCHEMA });
  const { records } = store;
  const put = records.put.bind(records);
  const del = records.delete.bind(records);
  records.put = async (input, options) => {
    const stored = await put(input, options);
    if (faults.putAppliedUnanswered) {
      faults.putAppliedUnanswered = false;
      throw unanswered('put');
    }
    return stored;
  };
  records.delete = async (vmId, options) => {
    if (faults.deleteUnavailable) {
      faults.deleteUnavailable = false;
      throw new TapnetError('ERR_UNAVAILABLE', 'delete: etcd is unreachable');
    }
    return del(vmId, options);
  };
  return store;
}

describe('lost leases: unanswered record writes and vanished leases', { skip }, () => {
  let t: TestNetns;
  let dir: string;
  let m: NetworkManager;
  const faults: Faults = {};
  const pool = () => {
    const p = m.pools(m.network('l')).v4!;
    return { network: p.network, subnet: p.subnet };
  };
  const ownerOf = async (ipv4: string) => m.store.leases.ownerOf(pool(), ipv4.split('/')[0]!);

  before(async () => {
    t = makeTestNetns('lost');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-lost-'));
    const config: ManagerConfigInput = {
      stateDir: join(dir, 'state'),
      netns: t.ns.path,
      defaultNetwork: 'l',
      networks: { l: { bridge: 'tnlost0', subnet4: '198.18.17.0/24' } },
    };
    m = await NetworkManager.open(config, { store: await faultyStore(join(dir, 'store'), faults) });
  });
  beforeEach(() => {
    delete faults.putAppliedUnanswered;
    delete faults.deleteUnavailable;
  });
  after(async () => {
    await m?.close();
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an unanswered record write is undone whole: record first, then TAP and lease', async () => {
    faults.putAppliedUnanswered = true;
    await assert.rejects(m.ensure('vm-a'), (e) => isTapnetError(e, 'ERR_UNAVAILABLE'));
    assert.equal(await m.get('vm-a'), undefined, 'no record');
    assert.deepEqual(
      listLinks(t.nl, { kind: 'tun' }).map((l) => l.name),
      [],
      'no TAP',
    );
    assert.equal((await m.store.leases.leases(pool())).size, 0, 'no lease');
    const r = await m.reconcile();
    assert.deepEqual(r.errors, []);
    assert.equal(repairCount(r), 0);
  });

  it('when the record cannot be removed either, nothing is undone and reconcile finds it whole', async () => {
    faults.putAppliedUnanswered = true;
    faults.deleteUnavailable = true;
    await assert.rejects(m.ensure('vm-b'), (e) => {
      assert.ok(isTapnetError(e, 'ERR_UNAVAILABLE'));
      assert.equal(e.details.outcome, 'unknown');
      return true;
    });
    const info = await m.get('vm-b');
    assert.ok(info, 'the record the store kept');
    assert.equal(await ownerOf(info.ipv4!), 'vm-b', 'its lease was kept');
    const r = await m.reconcile();
    assert.deepEqual(r.errors, []);
    assert.equal(repairCount(r), 0, `nothing to repair: ${JSON.stringify(r)}`);
    // A retried ensure answers the VM's network as it is.
    assert.equal((await m.ensure('vm-b')).ipv4, info.ipv4);
  });

  it('reconcile takes again the lease a ready VM lost, and the address is not handed out twice', async () => {
    const a = await m.ensure('vm-c');
    assert.ok(await m.store.leases.release(pool(), a.ipv4!.split('/')[0]!, 'vm-c'));
    const r = await m.reconcile();
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.reclaimedLeases, [`l:${a.ipv4!.split('/')[0]} (vm-c)`]);
    assert.equal(await ownerOf(a.ipv4!), 'vm-c');
    const again = await m.reconcile();
    assert.equal(repairCount(again), 0);
    const others = await Promise.all(['vm-d', 'vm-e', 'vm-f'].map((id) => m.ensure(id)));
    assert.ok(!others.some((o) => o.ipv4 === a.ipv4));
  });

  it('a lost address that another VM holds now is reported, not taken', async () => {
    const a = await m.ensure('vm-g');
    const addr = a.ipv4!.split('/')[0]!;
    await m.store.leases.release(pool(), addr, 'vm-g');
    await m.ensure('vm-h', { ipv4: addr }); // what the lost lease allows: the address handed out again
    const r = await m.reconcile();
    assert.equal(await ownerOf(a.ipv4!), 'vm-h');
    assert.equal(r.errors.length, 1, JSON.stringify(r));
    assert.match(r.errors[0]!.message, /vm-g/);
    await m.release('vm-h');
    assert.deepEqual((await m.reconcile()).reclaimedLeases, [`l:${addr} (vm-g)`]);
  });

  it('leaves nothing behind', async () => {
    const { failed } = await m.releaseMany((await m.list()).map((i) => i.vmId));
    assert.deepEqual(failed, []);
    assert.equal((await m.store.leases.leases(pool())).size, 0);
  });
});
