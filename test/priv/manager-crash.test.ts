import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { NetworkManager } from '../../src/manager/manager.js';
import { listLinks } from '../../src/net/link.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const fixtures = join(dirname(fileURLToPath(import.meta.url)), '../fixtures');
const KILLS = 50;

/** Start the worker, let it run for a random while after it is ready, then SIGKILL it. Resolves whether it got ready. */
function runAndKill(config: ManagerConfigInput, maxMs: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(fixtures, 'ensure-loop.js'), JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let ready = false;
    child.on('error', reject);
    child.stdout!.once('data', () => {
      ready = true;
      setTimeout(() => child.kill('SIGKILL'), Math.random() * maxMs);
    });
    child.on('exit', (_code, signal) => resolve(ready && signal === 'SIGKILL'));
  });
}

describe('crash recovery: SIGKILL at random moments of ensure/release, then reconcile', { skip }, () => {
  let t: TestNetns;
  let stateDir: string;
  let config: ManagerConfigInput;
  before(() => {
    t = makeTestNetns('crash');
    stateDir = mkdtempSync(join(tmpdir(), 'tapnet-crash-'));
    config = {
      stateDir,
      netns: t.ns.path,
      defaultNetwork: 'c',
      networks: { c: { bridge: 'tncr0', subnet4: '198.18.16.0/24' } },
    };
  });
  after(() => {
    t?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it(`leaves zero orphans after ${KILLS} kills and a reconcile; every surviving VM is whole`, async () => {
    let killed = 0;
    for (let i = 0; i < KILLS; i++) if (await runAndKill(config, 60)) killed++;
    // A worker that dies before it is ready (e.g. cannot load) tests nothing: every one must have run.
    assert.equal(killed, KILLS, 'every worker got ready and was killed by SIGKILL');
    const m = await NetworkManager.open(config);
    try {
      const report = await m.reconcile();
      assert.deepEqual(report.errors, []);
      const list = await m.list();
      const { records, problems } = await m.store.records.list();
      assert.deepEqual(problems, [], 'no corrupt records');
      assert.ok(
        records.every((r) => r.state === 'ready'),
        'no half-done records',
      );
      // TAPs ↔ records, one to one.
      const taps = listLinks(t.nl, { kind: 'tun' })
        .map((l) => l.name)
        .sort();
      assert.deepEqual(taps, list.map((i) => i.tap).sort());
      // Leases ↔ records: no orphan lease, no address held twice.
      const pool = m.pools(m.network('c')).v4!;
      const leases = await m.store.leases.leases({ network: pool.network, subnet: pool.subnet });
      const owners = [...leases.values()].sort();
      assert.deepEqual(owners, list.map((i) => i.vmId).sort());
      const ips = list.map((i) => i.ipv4);
      assert.equal(new Set(ips).size, ips.length, 'no IP held by two VMs');
      for (const i of list) assert.equal(leases.get(i.ipv4!.split('/')[0]!), i.vmId);
      // Firewall ports ↔ records.
      const ports = m.firewall
        .listVms()
        .map((p) => p.ifname)
        .sort();
      assert.deepEqual(ports, list.map((i) => i.tap).sort());
      // A second reconcile finds nothing to do.
      const again = await m.reconcile();
      assert.deepEqual(
        [
          again.orphanTaps,
          again.orphanLeases,
          again.orphanFirewallElements,
          again.incompleteRecords,
          again.recreatedTaps,
        ].map((a) => a.length),
        [0, 0, 0, 0, 0],
      );
      // Clean up everything.
      await m.releaseMany(
        list.map((i) => i.vmId),
        { wait: true },
      );
      assert.equal(listLinks(t.nl, { kind: 'tun' }).length, 0);
    } finally {
      await m.close();
    }
  });
});
