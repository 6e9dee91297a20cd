/**
 * The daemon for real: `tapnet serve` managing a test namespace, every endpoint over its Unix socket,
 * checked against the kernel (iproute2 as the oracle); TAP fds received by a client and used by a child
 * process that gets an ARP answer from the bridge; loopback TCP with a token; SIGHUP adds a network;
 * SIGTERM finishes a call in flight and leaves the VMs' networks in place.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DaemonClient } from '../../src/daemon/client.js';
import { resolveConfig } from '../../src/manager/config.js';
import { VM_RECORD_SCHEMA } from '../../src/manager/manager.js';
import type { VmRecord } from '../../src/manager/types.js';
import { openStore } from '../../src/store/index.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { type DaemonHarness, logLines, startDaemon } from './api-harness.js';

const skip = privSkipReason();
const here = dirname(fileURLToPath(import.meta.url));
const TOKEN = 'e2e-token-0123456789abcdef';
const PORT = 20000 + (process.pid % 20000);

interface Link {
  ifname: string;
  master?: string;
  address: string;
  operstate: string;
}

/** Run the ARP fixture on `fd` (as its fd 3): resolves to its output line. */
function arpThroughFd(fd: number, mac: string, ip: string, target: string): Promise<string> {
  const child = spawn(process.execPath, [join(here, '../fixtures/tap-arp-child.js'), mac, ip, target], {
    stdio: ['ignore', 'pipe', 'inherit', fd],
  });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve) => child.on('exit', () => resolve(out.trim())));
}

describe('tapnet serve: the API over its Unix socket', { skip }, () => {
  let t: TestNetns;
  let d: DaemonHarness;
  const links = () => t.ipJson<Link[]>('link', 'show', 'type', 'tun');
  before(async () => {
    t = makeTestNetns('api');
    d = await startDaemon(t, {
      tag: 'api',
      config: {
        defaultNetwork: 'vms',
        networks: { vms: { bridge: 'tnapi0', subnet4: '198.18.40.0/24', dns: ['198.18.40.53'] } },
        api: { tcp: `127.0.0.1:${PORT}`, token: TOKEN },
      },
    });
  });
  after(async () => {
    await d?.stop('SIGKILL');
    d?.cleanup();
    t?.destroy();
  });

  it('health, readiness and the OpenAPI document', async () => {
    assert.equal((await d.call('GET', '/healthz')).json.status, 'ok');
    assert.deepEqual((await d.call('GET', '/readyz')).json, { status: 'ready' });
    const doc = (await d.call('GET', '/openapi')).json;
    assert.deepEqual(doc, JSON.parse(readFileSync(join(here, '../../../docs/openapi.json'), 'utf8')));
  });

  it('PUT creates the TAP on the bridge; again returns the same; GET and list agree', async () => {
    const r = await d.call('PUT', '/v1/vms/vm1', { network: 'vms' });
    assert.equal(r.status, 200, r.text);
    const info = r.json;
    assert.match(info.ipv4, /^198\.18\.40\.\d+\/24$/);
    assert.equal(info.gateway4, '198.18.40.1');
    assert.deepEqual(info.dns, ['198.18.40.53']);
    const link = links().find((l) => l.ifname === info.tap);
    assert.equal(link?.master, 'tnapi0');
    assert.deepEqual((await d.call('PUT', '/v1/vms/vm1')).json, info);
    assert.deepEqual((await d.call('GET', '/v1/vms/vm1')).json, info);
    const s = await d.call('PUT', '/v1/vms/vm2', { ipv4: '198.18.40.99', mac: '02:aa:bb:cc:dd:ee' });
    assert.equal(s.json.ipv4, '198.18.40.99/24');
    assert.deepEqual(
      (await d.call('GET', '/v1/vms')).json.map((i: { vmId: string }) => i.vmId),
      ['vm1', 'vm2'],
    );
    const line = logLines(d.logs()).find((l) => l.op === 'ensure' && l.vmId === 'vm1');
    assert.equal(line?.outcome, 'ok');
    assert.equal(line?.network, 'vms');
    assert.equal(typeof line?.durationMs, 'number');
  });

  it('errors from the manager: conflict, unknown network, bad address — nothing left behind', async () => {
    const before = links().length;
    const cases: [string, unknown, number, string][] = [
      ['vm3', { ipv4: '198.18.40.99' }, 409, 'ERR_IPAM_CONFLICT'],
      ['vm3', { network: 'nope' }, 404, 'ERR_NOT_FOUND'],
      ['vm3', { ipv4: '198.18.40.300' }, 400, 'ERR_INVALID_ARGUMENT'],
      ['vm3', { mac: '01:00:00:00:00:01' }, 400, 'ERR_INVALID_ARGUMENT'],
      ['vm3', { queues: 'x' }, 400, 'ERR_INVALID_ARGUMENT'],
      ['vm1', { network: 'vms', ipv4: '198.18.40.98' }, 200, ''],
    ];
    for (const [id, body, status, code] of cases) {
      const r = await d.call('PUT', `/v1/vms/${id}`, body);
      assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
      if (code) assert.equal(r.json.code, code);
      assert.doesNotMatch(r.text, /\n\s+at /);
    }
    assert.equal(links().length, before, 'no TAP from failed calls');
    assert.equal((await d.call('GET', '/v1/vms/vm3')).status, 404);
  });

  it('stats: the TAP’s counters, from the guest’s side', async () => {
    const r = await d.call('GET', '/v1/vms/vm1/stats');
    assert.equal(r.status, 200);
    for (const k of ['guestRx', 'guestTx'])
      for (const f of ['bytes', 'packets', 'errors', 'dropped']) assert.equal(typeof r.json[k][f], 'number');
    assert.equal((await d.call('GET', '/v1/vms/ghost/stats')).status, 404);
  });

  it('TAP fds over SCM_RIGHTS: a child process ARPs through them and the bridge answers', async () => {
    const bridgeMac = t.ipJson<Link[]>('link', 'show', 'tnapi0')[0]!.address;
    const c = new DaemonClient({ socket: d.socket });
    try {
      // A new VM in fd mode: the TAP lives as long as the fds.
      const info = await c.ensureWithTapFds('fdvm');
      assert.equal(info.tapMode, 'fd');
      assert.equal(info.tapFds.length, 1);
      assert.ok(links().some((l) => l.ifname === info.tap));
      assert.equal(
        await arpThroughFd(info.tapFds[0]!, info.mac, info.ipv4!.split('/')[0]!, info.gateway4!),
        `reply ${bridgeMac}`,
      );
      // The daemon holds no copy: closing ours removes the TAP.
      for (const fd of info.tapFds) closeSync(fd);
      for (let i = 0; i < 50 && links().some((l) => l.ifname === info.tap); i++)
        await new Promise((r) => setTimeout(r, 20));
      assert.ok(!links().some((l) => l.ifname === info.tap), 'the fd-mode TAP went with its last fd');
      assert.equal((await d.call('DELETE', '/v1/vms/fdvm')).status, 204);
      // An existing persistent VM: its queue is opened for us.
      const vm1 = await c.ensureWithTapFds('vm1');
      assert.equal(vm1.tapMode, 'persistent');
      assert.equal(
        await arpThroughFd(vm1.tapFds[0]!, vm1.mac, vm1.ipv4!.split('/')[0]!, vm1.gateway4!),
        `reply ${bridgeMac}`,
      );
      for (const fd of vm1.tapFds) closeSync(fd);
      assert.ok(
        links().some((l) => l.ifname === vm1.tap),
        'a persistent TAP stays',
      );
    } finally {
      await c.close();
    }
  });

  it('verify notices a TAP deleted behind its back; gc re-creates it', async () => {
    const tap = (await d.call('GET', '/v1/vms/vm2')).json.tap;
    t.ip('link', 'del', tap);
    const v = (await d.call('GET', '/v1/verify')).json;
    assert.equal(v.ok, false);
    assert.deepEqual(
      v.problems.map((p: { kind: string; vmId: string }) => [p.kind, p.vmId]),
      [['missing-tap', 'vm2']],
    );
    const gc = (await d.call('POST', '/v1/gc')).json;
    assert.deepEqual(gc.recreatedTaps, [tap]);
    assert.equal((await d.call('GET', '/v1/verify')).json.ok, true);
    assert.ok(links().some((l) => l.ifname === tap && l.master === 'tnapi0'));
  });

  it('/metrics: ensure counters by network and outcome, pool usage, active VMs, API requests', async () => {
    const text = (await d.call('GET', '/metrics')).text;
    assert.match(text, /^tapnet_ensure_total\{network="vms",mode="direct",outcome="created",code=""\} \d+$/m);
    assert.match(
      text,
      /^tapnet_ensure_total\{network="vms",mode="direct",outcome="error",code="ERR_IPAM_CONFLICT"\} 1$/m,
    );
    assert.match(text, /^tapnet_ipam_pool_size\{network="vms",subnet="198\.18\.40\.0\/24"\} 253$/m);
    assert.match(text, /^tapnet_ipam_pool_used\{network="vms",subnet="198\.18\.40\.0\/24"\} 2$/m);
    assert.match(text, /^tapnet_active_vms 2$/m);
    assert.match(text, /^tapnet_reconcile_total\{outcome="ok"\} 2$/m, 'the startup reconcile and one gc');
    assert.match(text, /^tapnet_reconcile_repairs_total\{kind="recreatedTaps"\} 1$/m);
    assert.match(
      text,
      /^tapnet_api_requests_total\{method="PUT",route="\/v1\/vms\/\{vmId\}",status="409"\} 1$/m,
    );
  });

  it('loopback TCP: bearer token required, compared exactly; fds only on the Unix socket', async () => {
    const tcp = (method: string, path: string, auth?: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port: PORT, method, path, headers: auth ? { authorization: auth } : {} },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      });
    assert.equal(await tcp('GET', '/v1/vms'), 401);
    assert.equal(await tcp('GET', '/v1/vms', `Bearer ${TOKEN.slice(0, -1)}`), 401);
    assert.equal(await tcp('GET', '/v1/vms', `Bearer ${TOKEN}`), 200);
    assert.equal(await tcp('POST', '/v1/vms/vm1/tap-fd', `Bearer ${TOKEN}`), 404);
    const c = new DaemonClient({ tcp: { host: '127.0.0.1', port: PORT }, token: TOKEN });
    try {
      assert.equal((await c.get('vm1'))?.vmId, 'vm1');
    } finally {
      await c.close();
    }
  });

  it('concurrent clients: 16 at once, distinct addresses, all released', async () => {
    const clients = Array.from({ length: 16 }, () => new DaemonClient({ socket: d.socket }));
    try {
      const infos = await Promise.all(clients.map((c, i) => c.ensure(`par-${i}`)));
      assert.equal(new Set(infos.map((i) => i.ipv4)).size, 16);
      assert.equal(new Set(infos.map((i) => i.tap)).size, 16);
      await Promise.all(clients.map((c, i) => c.release(`par-${i}`, { wait: true })));
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
    assert.equal(links().filter((l) => l.ifname !== undefined).length, 2, 'only vm1 and vm2 remain');
  });

  it('SIGHUP reloads: a network added to the file is served without a restart', async () => {
    const cfg = JSON.parse(readFileSync(d.configFile, 'utf8'));
    cfg.networks.more = { bridge: 'tnapi1', subnet4: '198.18.41.0/24' };
    writeFileSync(d.configFile, JSON.stringify(cfg));
    assert.equal((await d.call('PUT', '/v1/vms/vm9', { network: 'more' })).status, 404);
    d.proc.kill('SIGHUP');
    let r = await d.call('PUT', '/v1/vms/vm9', { network: 'more' });
    for (let i = 0; i < 50 && r.status !== 200; i++) {
      await new Promise((res) => setTimeout(res, 50));
      r = await d.call('PUT', '/v1/vms/vm9', { network: 'more' });
    }
    assert.equal(r.status, 200, r.text);
    assert.match(r.json.ipv4, /^198\.18\.41\./);
    assert.ok(logLines(d.logs()).some((l) => l.op === 'reload' && l.managerReopened === true));
    assert.equal(
      (await d.call('GET', '/v1/vms')).json.length,
      3,
      'the VMs from before the reload are still served',
    );
  });

  it('SIGTERM: a call in flight finishes, new calls are refused, the process exits 0, VMs keep their networks', async () => {
    const before = links()
      .map((l) => l.ifname)
      .sort();
    // Hold the VM's lock through the same store the daemon uses, so its ensure is in flight for as long as we want.
    const store = await openStore<VmRecord>({
      backend: resolveConfig({ stateDir: d.stateDir }).storeBackend,
      dir: d.stateDir,
      schema: VM_RECORD_SCHEMA,
    });
    const lock = await store.locks.acquire('vm', 'held');
    const held = d.call('PUT', '/v1/vms/held');
    await new Promise((r) => setTimeout(r, 300));
    d.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    const late = await d.call('PUT', '/v1/vms/late').then(
      (r) => r.status,
      (e: NodeJS.ErrnoException) => e.code ?? 'error',
    );
    assert.ok(late === 503 || late === 'ECONNREFUSED' || late === 'ENOENT', `a call after SIGTERM: ${late}`);
    assert.equal(d.proc.exitCode, null, 'still running while a call is in flight');
    lock.release();
    await store.close?.();
    const r = await held;
    assert.equal(r.status, 200, r.text);
    assert.equal(await d.exited, 0);
    const after = links().map((l) => l.ifname);
    assert.deepEqual(
      after.sort(),
      [...before, r.json.tap].sort(),
      'every TAP stays, the finished call’s too',
    );
    assert.ok(logLines(d.logs()).some((l) => l.op === 'shutdown' && l.outcome === 'ok'));
  });
});

describe('tapnet serve with daemon.keepNetworksOnExit: false', { skip }, () => {
  let t: TestNetns;
  let d: DaemonHarness;
  before(async () => {
    t = makeTestNetns('apikeep');
    d = await startDaemon(t, {
      tag: 'apikeep',
      config: {
        defaultNetwork: 'k',
        networks: { k: { bridge: 'tnkeep0', subnet4: '198.18.42.0/24' } },
        daemon: { keepNetworksOnExit: false },
      },
    });
  });
  after(() => {
    d?.cleanup();
    t?.destroy();
  });

  it('SIGTERM releases every VM before exiting', async () => {
    for (const id of ['k1', 'k2', 'k3']) assert.equal((await d.call('PUT', `/v1/vms/${id}`)).status, 200);
    assert.equal(t.ipJson<unknown[]>('link', 'show', 'type', 'tun').length, 3);
    assert.equal(await d.stop('SIGTERM'), 0);
    assert.equal(t.ipJson<unknown[]>('link', 'show', 'type', 'tun').length, 0);
    assert.ok(logLines(d.logs()).some((l) => l.op === 'shutdown' && l.released === 3));
  });
});
