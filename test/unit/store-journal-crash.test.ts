/**
 * kill -9 of journal writers at random moments (30 times, two at once, with compactions running): the
 * replayed journal holds only whole records, no lock stays held by a dead process, and after the
 * orphan helpers every lease has its owner's record.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { listAllLeases, orphanLeases, releaseOrphans } from '../../src/ipam/index.js';
import { JOURNAL_FILE, journalSnapshot, openJournalStore, type StoredRecord } from '../../src/store/index.js';

const WORKER = new URL('../fixtures/journal-worker.js', import.meta.url);
const roots: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

interface ChurnRecord extends StoredRecord {
  address: string;
  pad: string;
}

/** A deterministic PRNG, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Start a churning worker and SIGKILL it `delayMs` after it is ready. */
function churnAndKill(dir: string, tag: string, delayMs: number): Promise<void> {
  // A small compaction threshold, so kills also land in the middle of compactions.
  const child = fork(WORKER, ['churn', dir, tag, '198.18.20.0/24', String(16 * 1024)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.on('message', (m: { type: string }) => {
      if (m.type === 'ready') setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.once('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`churn worker ${tag} exited with ${code}`));
    });
  });
}

describe('journal store: kill -9 in the middle of writes', () => {
  it('leaves whole records only, no stuck lock, and no lease without an owner after reconcile', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-journal-crash-'));
    roots.push(dir);
    const next = rng(42);
    for (let round = 0; round < 15; round++) {
      // Two at once: they also contend for the journal lock and for the same VMs' locks.
      await Promise.all([
        churnAndKill(dir, `a${round % 3}`, 2 + Math.floor(next() * 60)),
        churnAndKill(dir, `a${(round + 1) % 3}`, 2 + Math.floor(next() * 60)),
      ]);
    }
    assert.ok(fs.statSync(path.join(dir, JOURNAL_FILE)).size > 0);

    const store = await openJournalStore<ChurnRecord>({ dir });
    try {
      // Every record is whole: the envelope, the padding, an address.
      const { records, problems } = await store.records.list();
      assert.deepEqual(problems, [], 'a torn tail is skipped, never reported as damage');
      assert.deepEqual(store.problems(), []);
      assert.ok(records.length > 0, 'the workers got somewhere');
      for (const r of records) {
        assert.ok(['creating', 'ready', 'releasing'].includes(r.state));
        assert.equal(r.pad.length, 400);
        assert.match(r.address, /^198\.18\.20\.\d+$/);
        assert.ok(r.generation >= 1);
      }
      // A record written after its claim still has its lease (no claim was lost).
      const leased = await store.leases.leases({ network: 'crash', subnet: '198.18.20.0/24' });
      for (const r of records) {
        if (r.state !== 'releasing')
          assert.equal(leased.get(r.address), r.vmId, `${r.vmId} holds ${r.address}`);
      }
      // No lock is held by a dead process: every lock line left in the journal is free.
      const snap = journalSnapshot(dir);
      for (const l of snap.locks) assert.equal(l.alive, false, `${l.name} is not held by a live process`);
      for (const l of snap.locks) (await store.locks.acquire('vm', l.name, { timeoutMs: 1000 })).release();
      for (let i = 0; i < 40; i++)
        (await store.locks.acquire('vm', `a0-${i}`, { timeoutMs: 1000 })).release();

      // Leases whose owner never got a record (a kill between claim and put) are released; the rest kept.
      const report = await releaseOrphans({
        leases: store.leases,
        records: store.records,
        locks: store.locks,
      });
      assert.deepEqual(report.failures, []);
      const owners = new Map(records.map((r) => [r.vmId, r.address]));
      const seen = new Set<string>();
      for (const { leases } of await listAllLeases(store.leases)) {
        for (const [addr, owner] of leases) {
          assert.ok(owners.has(owner), `lease ${addr} → ${owner} has a record`);
          assert.ok(!seen.has(owner), `${owner} holds one address`);
          seen.add(owner);
        }
      }
      assert.deepEqual(await orphanLeases(store.leases, store.records), []);
      // Kills in the middle of a compaction leave its temp file: never read, removed by cleanTemp().
      store.cleanTemp(0);
      assert.deepEqual(
        fs.readdirSync(dir).filter((n) => n.endsWith('.tmp')),
        [],
      );
    } finally {
      store.close();
    }
  });
});
