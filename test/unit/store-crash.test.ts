import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { listAllLeases, orphanLeases, releaseOrphans } from '../../src/ipam/index.js';
import { openLocalStore } from '../../src/store/index.js';

const WORKER = new URL('../fixtures/store-worker.js', import.meta.url);
const roots: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

/** Run a churning worker until it has done at least `iterations` steps, then SIGKILL it mid-write. */
function churnAndKill(dir: string, tag: string, iterations: number): Promise<void> {
  const child = fork(WORKER, ['churn', dir, tag, '198.18.20.0/24'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.on('message', (m: { type: string; i: number }) => {
      if (m.type === 'progress' && m.i >= iterations) child.kill('SIGKILL');
    });
    child.once('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`churn worker ${tag} exited with ${code}`));
    });
  });
}

describe('kill -9 in the middle of writes', () => {
  it('leaves only whole records, no stuck lock, and no lease without an owner after reconcile', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-crash-'));
    roots.push(dir);
    for (let round = 0; round < 6; round++) await churnAndKill(dir, `c${round}`, 20 + round * 17);

    // Every record file on disk parses on its own: no half-written JSON, whatever instant the kill hit.
    const vmsDir = path.join(dir, 'vms');
    const files = fs.readdirSync(vmsDir).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    assert.ok(files.length > 0);
    for (const f of files) {
      const rec = JSON.parse(fs.readFileSync(path.join(vmsDir, f), 'utf8'));
      assert.equal(`${rec.vmId}.json`, f);
      assert.ok(['creating', 'ready', 'releasing'].includes(rec.state));
      assert.equal(rec.pad.length, 400);
    }
    const store = await openLocalStore({ dir });
    const { records, problems } = await store.records.list();
    // A kill between write and rename may leave a temp file: never a record, removed by cleanTemp().
    await store.cleanTemp(0);
    assert.deepEqual(
      fs.readdirSync(vmsDir).filter((n) => n.endsWith('.tmp')),
      [],
    );
    assert.deepEqual(problems, []);
    assert.equal(records.length, files.length);

    // No lock is left held by a dead process.
    for (const f of fs.readdirSync(path.join(dir, 'locks', 'vm'))) {
      const lock = await store.locks.acquire('vm', f.replace(/\.lock$/, ''), { timeoutMs: 1000 });
      lock.release();
    }

    // A lease whose owner never got a record (as after a crash between claim and record), on purpose.
    const pool = { network: 'ghost', subnet: '198.18.21.0/24' };
    assert.equal(await store.leases.claim(pool, '198.18.21.250', 'ghost-vm'), true);
    const orphans = await orphanLeases(store.leases, store.records);
    assert.ok(orphans.some((o) => o.owner === 'ghost-vm' && o.address === '198.18.21.250'));
    // A record that appears before the orphan's lock is taken keeps its lease.
    await store.records.put({ vmId: orphans[0]!.owner, state: 'creating' });
    const report = await releaseOrphans({
      leases: store.leases,
      records: store.records,
      locks: store.locks,
      orphans,
    });
    assert.deepEqual(report.failures, []);
    assert.deepEqual(report.kept, [orphans[0]]);
    assert.equal(report.released.length, orphans.length - 1);

    // Afterwards every lease has a findable owner, and every owner holds one address.
    const owners = new Set((await store.records.list()).records.map((r) => r.vmId));
    const seen = new Set<string>();
    for (const { leases } of await listAllLeases(store.leases)) {
      for (const [addr, owner] of leases) {
        assert.ok(owners.has(owner), `lease ${addr} → ${owner} has a record`);
        assert.ok(!seen.has(owner), `${owner} holds one address`);
        seen.add(owner);
      }
    }
    assert.deepEqual(await orphanLeases(store.leases, store.records), []);
  });
});
