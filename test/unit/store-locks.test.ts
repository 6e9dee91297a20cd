import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { KeyedMutex, openLocalStore, withLock } from '../../src/store/index.js';

const WORKER = new URL('../fixtures/store-worker.js', import.meta.url);
const roots: string[] = [];
const children: ChildProcess[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-locks-'));
  roots.push(d);
  return d;
}
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fork the worker and wait for its first message of `type`. */
function forkWorker(args: string[], type: string): Promise<ChildProcess> {
  const child = fork(WORKER, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.on('message', (m: { type?: string }) => {
      if (m.type === type) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`worker exited with ${code} before '${type}'`)));
  });
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

describe('KeyedMutex', () => {
  it('serializes one key in arrival order and lets other keys through', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const job = async (key: string, name: string, ms: number): Promise<void> => {
      const release = await m.acquire(key);
      order.push(`${name}+`);
      await sleep(ms);
      order.push(`${name}-`);
      release();
    };
    await Promise.all([job('a', 'a1', 20), job('a', 'a2', 1), job('a', 'a3', 1), job('b', 'b1', 1)]);
    assert.deepEqual(
      order.filter((o) => o.startsWith('a')),
      ['a1+', 'a1-', 'a2+', 'a2-', 'a3+', 'a3-'],
    );
    assert.ok(order.indexOf('b1-') < order.indexOf('a1-'), 'b did not wait for a');
    assert.equal(m.size, 0);
  });

  it('an aborted or timed-out waiter leaves the queue and the next one gets the key', async () => {
    const m = new KeyedMutex();
    const release = await m.acquire('k');
    const ac = new AbortController();
    const aborted = m.acquire('k', { signal: ac.signal });
    const timedOut = m.acquire('k', { timeoutMs: 10 });
    const third = m.acquire('k');
    ac.abort(new Error('caller gave up'));
    await assert.rejects(aborted, (e) => isTapnetError(e, 'ERR_ABORTED'));
    await assert.rejects(timedOut, (e) => isTapnetError(e, 'ERR_TIMEOUT'));
    release();
    const r3 = await third;
    r3();
    assert.equal(m.isHeld('k'), false);
    await assert.rejects(m.acquire('k', { signal: AbortSignal.abort() }), (e) =>
      isTapnetError(e, 'ERR_ABORTED'),
    );
  });
});

describe('LocalLockService', () => {
  it('serializes calls for the same VM in one process, never across VMs', async () => {
    const store = await openLocalStore({ dir: tempDir() });
    let inside = 0;
    let maxInside = 0;
    const work = (vmId: string): Promise<void> =>
      withLock(store.locks, 'vm', vmId, async () => {
        inside++;
        maxInside = Math.max(maxInside, inside);
        await sleep(2);
        inside--;
      });
    await Promise.all(Array.from({ length: 10 }, () => work('same')));
    assert.equal(maxInside, 1);
    maxInside = 0;
    await Promise.all(Array.from({ length: 10 }, (_, i) => work(`vm-${i}`)));
    assert.ok(maxInside > 1, 'different VMs ran concurrently');
    // Lock files live as long as their VM; release({ forget: true }) removes one.
    const lockDir = path.join(store.dir, 'locks', 'vm');
    assert.equal(fs.readdirSync(lockDir).length, 11);
    (await store.locks.acquire('vm', 'same')).release({ forget: true });
    assert.equal(fs.existsSync(path.join(lockDir, 'same.lock')), false);
    (await store.locks.acquire('vm', 'same', { timeoutMs: 100 })).release();
  });

  it('prune() removes the lock files nobody holds, in this process or another', async () => {
    const dir = tempDir();
    const store = await openLocalStore({ dir });
    for (const vmId of ['idle-1', 'idle-2']) (await store.locks.acquire('vm', vmId)).release();
    (await store.locks.acquire('network', 'idle-net')).release();
    const mine = await store.locks.acquire('vm', 'held-here');
    const child = await forkWorker(['hold', dir, 'held-there'], 'locked');
    assert.equal(store.locks.prune(), 3);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'locks', 'vm')).sort(), [
      'held-here.lock',
      'held-there.lock',
    ]);
    await assert.rejects(store.locks.acquire('vm', 'held-there', { timeoutMs: 50 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    mine.release();
    child.kill('SIGKILL');
    await killed(child);
    assert.equal(store.locks.prune(), 2);
    (await store.locks.acquire('vm', 'idle-1', { timeoutMs: 100 })).release();
  });

  it('a waiter whose lock file is removed by the holder retries on the new file', async () => {
    const store = await openLocalStore({ dir: tempDir() });
    const first = await store.locks.acquire('vm', 'gone');
    const second = store.locks.acquire('vm', 'gone', { timeoutMs: 1000 });
    first.release({ forget: true });
    (await second).release({ forget: true });
    const third = await store.locks.acquire('vm', 'gone', { timeoutMs: 100 });
    third.release();
  });

  it('waits for another process, honours AbortSignal and timeouts, and is freed when that process is killed', async () => {
    const dir = tempDir();
    const store = await openLocalStore({ dir });
    const child = await forkWorker(['hold', dir, 'busy-vm'], 'locked');

    await assert.rejects(store.locks.acquire('vm', 'busy-vm', { timeoutMs: 50 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    const ac = new AbortController();
    const pending = store.locks.acquire('vm', 'busy-vm', { signal: ac.signal });
    setTimeout(() => ac.abort(), 30);
    await assert.rejects(pending, (e) => isTapnetError(e, 'ERR_ABORTED'));
    // Other VMs are not blocked by it.
    (await store.locks.acquire('vm', 'other-vm', { timeoutMs: 50 })).release();

    const waiting = store.locks.acquire('vm', 'busy-vm', { timeoutMs: 5000 });
    await sleep(20);
    child.kill('SIGKILL');
    await killed(child);
    const t0 = Date.now();
    const lock = await waiting;
    assert.ok(Date.now() - t0 < 1000, 'the waiter got the lock soon after the holder died');
    lock.release();
    lock.release(); // idempotent
  });

  it('a lock file left behind by a dead process does not block', async () => {
    const dir = tempDir();
    const store = await openLocalStore({ dir });
    fs.mkdirSync(path.join(dir, 'locks', 'vm'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'locks', 'vm', 'left.lock'), '');
    const lock = await store.locks.acquire('vm', 'left', { timeoutMs: 100 });
    lock.release();
    const net = await store.locks.acquire('network', 'br-net', { timeoutMs: 100 });
    net.release();
    await assert.rejects(store.locks.acquire('network', '../x'), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });
});
