/**
 * The journal backend across real processes (test/fixtures/journal-worker.ts): racing allocations, a
 * lock held by a live process, a lock freed by SIGKILL, and compaction while another process writes.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { parseCidr, parseIp } from '../../src/ip.js';
import { Ipam } from '../../src/ipam/index.js';
import { type JournalStore, openJournalStore } from '../../src/store/index.js';

const WORKER = new URL('../fixtures/journal-worker.js', import.meta.url);
const roots: string[] = [];
const children: ChildProcess[] = [];
const stores: JournalStore[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of stores) s.close();
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-journal-mp-'));
  roots.push(d);
  return d;
}
async function open(dir: string): Promise<JournalStore> {
  const s = await openJournalStore({ dir });
  stores.push(s);
  return s;
}

interface Msg {
  type: string;
  addresses?: string[];
}

/** Fork the worker; resolves on its first message of type `until`, rejects if it exits before. */
function start(
  args: string[],
  until: string,
): { child: ChildProcess; reached: Promise<void>; done: Promise<Msg> } {
  const child = fork(WORKER, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(child);
  const reached = new Promise<void>((resolve, reject) => {
    child.on('message', (m: Msg) => m.type === until && resolve());
    child.once('exit', (c) =>
      reject(new Error(`worker ${args.join(' ')} exited with ${c} before '${until}'`)),
    );
  });
  const done = new Promise<Msg>((resolve, reject) => {
    child.on('message', (m: Msg) => m.type === 'done' && resolve(m));
    child.once('exit', (c, sig) => (c !== 0 || sig) && reject(new Error(`worker exited with ${c ?? sig}`)));
  });
  done.catch(() => {}); // observed where it matters
  return { child, reached, done };
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

describe('journal store across processes', () => {
  it('two processes allocating 500 addresses each from one /22 get 1000 distinct addresses', async () => {
    const dir = tempDir();
    const subnet = '198.18.16.0/22';
    const workers = ['p1', 'p2'].map((tag) => start(['alloc', dir, tag, '500', subnet], 'ready'));
    await Promise.all(workers.map((w) => w.reached));
    for (const w of workers) w.child.send('go'); // both start together: they race for the same addresses
    const [a, b] = (await Promise.all(workers.map((w) => w.done))).map((m) => m.addresses!);
    assert.equal(a!.length, 500);
    assert.equal(b!.length, 500);
    const all = new Set([...a!, ...b!]);
    assert.equal(all.size, 1000, 'no address was handed to two VMs');
    const cidr = parseCidr(subnet);
    for (const addr of all) {
      const v = parseIp(addr).value;
      assert.ok(v > cidr.network + 1n && v < cidr.network + 1023n, `${addr} is a usable host address`);
    }
    // The journal agrees with what each process was told.
    const store = await open(dir);
    const leases = await store.leases.leases({ network: 'shared', subnet });
    assert.equal(leases.size, 1000);
    for (const [i, addr] of a!.entries()) assert.equal(leases.get(addr), `p1-${i}`);
    for (const [i, addr] of b!.entries()) assert.equal(leases.get(addr), `p2-${i}`);
    assert.deepEqual(store.problems(), []);
  });

  it('a lock held by a live process blocks (timeout, abort), other keys do not, and SIGKILL frees it at once', async () => {
    const dir = tempDir();
    const store = await open(dir);
    const { child, reached } = start(['hold', dir, 'busy-vm'], 'locked');
    await reached;
    await assert.rejects(store.locks.acquire('vm', 'busy-vm', { timeoutMs: 50 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    const ac = new AbortController();
    const pending = store.locks.acquire('vm', 'busy-vm', { signal: ac.signal });
    setTimeout(() => ac.abort(), 30);
    await assert.rejects(pending, (e) => isTapnetError(e, 'ERR_ABORTED'));
    (await store.locks.acquire('vm', 'other-vm', { timeoutMs: 50 })).release();

    const waiting = store.locks.acquire('vm', 'busy-vm', { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGKILL');
    await exited(child);
    const t0 = Date.now();
    const lock = await waiting;
    assert.ok(Date.now() - t0 < 500, 'the waiter got the lock soon after the holder died');
    lock.release();
  });

  it('compaction while another process writes: no record or lease lost or duplicated', async () => {
    const dir = tempDir();
    const count = 40;
    const rounds = 25;
    const compactor = await open(dir);
    const w = start(['writer', dir, 'w', String(count), String(rounds)], 'ready');
    await w.reached;
    let compactions = 0;
    let finished = false;
    w.done.then(
      () => {
        finished = true;
      },
      () => {
        finished = true;
      },
    );
    while (!finished) {
      compactor.compact(); // the worker compacts by itself too (32 KiB threshold)
      compactions++;
      await new Promise((r) => setTimeout(r, 3));
    }
    await w.done;
    assert.ok(compactions >= 2, `compacted ${compactions} times meanwhile`);
    for (const s of [compactor, await open(dir)]) {
      const { records, problems } = await s.records.list();
      assert.deepEqual(problems, []);
      assert.equal(records.length, count);
      for (const r of records) assert.equal(r.generation, rounds, `${r.vmId} was written once per round`);
      const leases = await s.leases.leases({ network: 'w', subnet: '198.18.40.0/22' });
      assert.equal(leases.size, count);
      assert.deepEqual([...new Set(leases.values())].sort(), records.map((r) => r.vmId).sort());
      assert.deepEqual(s.problems(), []);
    }
    // Another IPAM over the result hands out a fresh address, not a taken one.
    const next = await new Ipam(compactor.leases)
      .pool({ network: 'w', subnet: '198.18.40.0/22' })
      .allocate('new');
    assert.equal(
      [...(await compactor.leases.leases({ network: 'w', subnet: '198.18.40.0/22' })).values()].filter(
        (o) => o === 'new',
      ).length,
      1,
    );
    assert.ok(next.address);
  });
});
