import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseCidr, parseIp } from '../../src/ip.js';
import { openLocalStore } from '../../src/store/index.js';

const WORKER = new URL('../fixtures/store-worker.js', import.meta.url);
const roots: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

interface Msg {
  type: string;
  addresses?: string[];
}

describe('IPAM across processes', () => {
  it('two processes allocating 500 addresses each from one /22 get 1000 distinct addresses', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-ipam-mp-'));
    roots.push(dir);
    const subnet = '198.18.16.0/22';
    const workers = ['p1', 'p2'].map((tag) => {
      const child = fork(WORKER, ['alloc', dir, tag, '500', subnet], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.push(child);
      const ready = new Promise<void>((resolve, reject) => {
        child.on('message', (m: Msg) => m.type === 'ready' && resolve());
        child.once('exit', (c) => reject(new Error(`${tag} exited with ${c}`)));
      });
      const done = new Promise<string[]>((resolve, reject) => {
        child.on('message', (m: Msg) => m.type === 'done' && resolve(m.addresses!));
        child.once('exit', (c) => c !== 0 && reject(new Error(`${tag} exited with ${c}`)));
      });
      return { tag, child, ready, done };
    });
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.child.send('go'); // both start together: they race for the same addresses
    const [a, b] = await Promise.all(workers.map((w) => w.done));
    assert.equal(a!.length, 500);
    assert.equal(b!.length, 500);
    const all = new Set([...a!, ...b!]);
    assert.equal(all.size, 1000, 'no address was handed to two VMs');

    const cidr = parseCidr(subnet);
    for (const addr of all) {
      const v = parseIp(addr).value;
      assert.ok(v > cidr.network + 1n && v < cidr.network + 1023n, `${addr} is a usable host address`);
    }
    // The files agree with what each process was told.
    const store = await openLocalStore({ dir });
    const leases = await store.leases.leases({ network: 'shared', subnet });
    assert.equal(leases.size, 1000);
    for (const [i, addr] of a!.entries()) assert.equal(leases.get(addr), `p1-${i}`);
    for (const [i, addr] of b!.entries()) assert.equal(leases.get(addr), `p2-${i}`);
  });
});
