import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Ipam, listAllLeases, orphanLeases, releaseOrphans } from '../../src/ipam/index.js';
import { openLocalStore } from '../../src/store/index.js';

const roots: string[] = [];
after(() => {
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

describe('IPAM reconcile helpers', () => {
  it('find and release leases without a record, sparing owners whose record is unreadable', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-reconcile-'));
    roots.push(dir);
    const store = await openLocalStore({ dir });
    const ipam = new Ipam(store.leases);
    const v4 = ipam.pool({ network: 'r', subnet: '198.18.30.0/24' });
    const v6 = ipam.pool({ network: 'r', subnet: 'fd00:30::/64' });
    for (const vmId of ['has-record', 'no-record', 'corrupt']) {
      await ipam.allocateAll(vmId, [{ pool: v4.layout.ref }, { pool: v6.layout.ref }]);
    }
    await store.records.put({ vmId: 'has-record', state: 'ready' });
    fs.writeFileSync(path.join(dir, 'vms', 'corrupt.json'), '{"vmId": "corr');
    // A lease written by hand with an owner that is not even a VM ID.
    fs.symlinkSync('not a vm!', path.join(dir, 'ipam', 'r', '198.18.30.0_24', 'leases', '198.18.30.99'));

    const all = await listAllLeases(store.leases);
    assert.deepEqual(all.map((p) => [p.pool.subnet, p.leases.size]).sort(), [
      ['198.18.30.0/24', 4],
      ['fd00:30::/64', 3],
    ]);
    const orphans = await orphanLeases(store.leases, store.records);
    assert.deepEqual(orphans.map((o) => `${o.owner}@${o.address}`).sort(), [
      'no-record@198.18.30.3',
      'no-record@fd00:30::3',
      'not a vm!@198.18.30.99',
    ]);
    const report = await releaseOrphans({
      leases: store.leases,
      records: store.records,
      locks: store.locks,
      ipam,
    });
    assert.equal(report.released.length, 3);
    assert.deepEqual(report.failures, []);
    assert.deepEqual(await orphanLeases(store.leases, store.records), []);
    assert.equal(await v4.leaseOf('no-record'), undefined, 'the process’s index was refreshed');
    assert.equal((await v4.leaseOf('corrupt'))?.address, '198.18.30.4');
  });
});
