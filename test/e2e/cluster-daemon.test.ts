/**
 * Cluster mode through the product: two `tapnet serve` daemons, each managing its own "host" namespace
 * (joined to the other by an underlay bridge on 198.18.100.0/24), with `cluster:` in their configuration
 * and one `scope: cluster` network, over a real etcd-server. What a user checks: ensures through either
 * daemon's socket take distinct addresses from one pool, with the overlay MTU; `tapnet cluster status`
 * lists both hosts alive with their VM counts; a VM on host A reaches a VM on host B; an etcd outage is
 * 503 ERR_UNAVAILABLE with Retry-After (ensure and release), and the daemons carry on once etcd is back;
 * a killed daemon shows expired while its VMs stay reachable; reclaim is refused without --force and
 * frees the host with it; a daemon with no VM left leaves the cluster on SIGTERM. Host B keeps its
 * locks locally (cluster.locks: local); `tapnet --local` works on the etcd store without the daemon.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deriveVni, vxlanName } from '../../src/cluster/overlay-kernel.js';
import { openTap } from '../../src/net/tap.js';
import { etcdSkipReason, startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { type StandIn, startStandIn } from '../priv/cluster-vm.js';
import { CLI, type DaemonHarness, request, startDaemon } from './api-harness.js';

const skip = privSkipReason() ?? etcdSkipReason();
const HOSTS = ['a', 'b'] as const;
type Host = (typeof HOSTS)[number];
const VTEP: Record<Host | 'c', string> = { a: '198.18.100.1', b: '198.18.100.2', c: '198.18.100.3' };
const SUBNET = '198.18.64.0/20';
const PREFIX = '/tapnet-e2e';

interface Info {
  vmId: string;
  ipv4: string;
  mac: string;
  tap: string;
  mtu: number;
}
interface Status {
  hosts: Array<{ name: string; state: string; vms: number; vtep: string }>;
  networks: Array<{ name: string; vni?: number; mtu?: number }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bare = (cidr: string) => cidr.slice(0, cidr.indexOf('/'));

describe('cluster mode through the daemon and the CLI', { skip, timeout: 90_000 }, () => {
  let ul: TestNetns;
  let nsC: TestNetns;
  let dirC: string | undefined;
  let etcd: TestEtcd;
  const ns = {} as Record<Host, TestNetns>;
  const d = {} as Record<Host, DaemonHarness>;
  const vms: StandIn[] = [];
  const info = {} as Record<string, Info>;

  const tapnet = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, '--config', d.a.configFile, ...args], { encoding: 'utf8' });
  const tapnetAsync = (...args: string[]): Promise<{ status: number | null; stderr: string }> =>
    new Promise((resolve) => {
      const p = spawn(process.execPath, [CLI, '--config', d.a.configFile, ...args], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      p.stderr.on('data', (c: Buffer) => {
        stderr += c.toString();
      });
      p.on('close', (status) => resolve({ status, stderr }));
    });
  const status = (): Status => {
    const r = tapnet('cluster', 'status', '--json');
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  };
  const host = (s: Status, h: Host | 'c') => s.hosts.find((x) => x.name === `host-${h}`);
  const ensure = async (h: Host, vmId: string): Promise<Info> => {
    const r = await d[h].call('PUT', `/v1/vms/${vmId}`, { vnetHdr: false });
    assert.equal(r.status, 200, r.text);
    info[vmId] = r.json as Info;
    return r.json as Info;
  };
  /** What each daemon's configuration says besides netns, stateDir and api.socket. */
  const daemonConfig = (h: Host | 'c') => ({
    defaultNetwork: 'c1',
    networks: { c1: { scope: 'cluster', bridge: 'tn-c1', subnet4: SUBNET } },
    cluster: {
      endpoints: etcd.endpoints,
      host: `host-${h}`,
      vtep: VTEP[h],
      underlay: 'eth0',
      prefix: PREFIX,
      ttl: 2,
      ...(h === 'b' ? { locks: 'local' } : {}), // host B keeps its locks in its state directory
    },
  });
  const standIn = (h: Host, vmId: string): StandIn => {
    const i = info[vmId]!;
    const fd = openTap(i.tap, { nsFd: ns[h].ns.fd, vnetHdr: false }).fds[0]!;
    const s = startStandIn(fd, i.mac, bare(i.ipv4));
    closeSync(fd);
    vms.push(s);
    return s;
  };
  /** Probe until the echo comes back (the other host's entry may still be on its way), or give up. */
  const reaches = async (from: StandIn, to: StandIn, tries = 4): Promise<boolean> => {
    for (let i = 0; i < tries; i++) {
      if ((await from.probe(to.ip, 900)).echo) return true;
      await sleep(100);
    }
    return false;
  };

  before(async () => {
    ul = makeTestNetns('cdul');
    ul.ip('link', 'add', 'ul0', 'type', 'bridge');
    ul.ip('link', 'set', 'ul0', 'up');
    for (const h of HOSTS) {
      ns[h] = makeTestNetns(`cd${h}`);
      ul.ip('link', 'add', `v${h}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns[h].name);
      ul.ip('link', 'set', `v${h}`, 'master', 'ul0', 'up');
      ns[h].ip('addr', 'add', `${VTEP[h]}/24`, 'dev', 'eth0');
      ns[h].ip('link', 'set', 'eth0', 'up');
    }
    nsC = makeTestNetns('cdc'); // a third host, started while etcd is down: its underlay leads nowhere
    nsC.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    nsC.ip('addr', 'add', `${VTEP.c}/24`, 'dev', 'eth0');
    nsC.ip('link', 'set', 'eth1', 'up');
    nsC.ip('link', 'set', 'eth0', 'up');
    // etcd on the sandbox's loopback, where the daemons run; the data path is in the host namespaces.
    etcd = await startEtcd([{ name: 'cd0', ip: '127.0.0.1', clientPort: 23794, peerPort: 23804 }]);
    await Promise.all(
      HOSTS.map(async (h) => {
        d[h] = await startDaemon(ns[h], { tag: `cd${h}`, config: daemonConfig(h) });
      }),
    );
  });

  after(async () => {
    for (const s of vms) s.kill();
    for (const h of HOSTS) {
      await d[h]?.stop('SIGKILL');
      d[h]?.cleanup();
    }
    await etcd?.stop();
    if (dirC) rmSync(dirC, { recursive: true, force: true });
    for (const h of HOSTS) ns[h]?.destroy();
    nsC?.destroy();
    ul?.destroy();
  });

  it('ensures through either daemon take distinct addresses from one pool, with the overlay MTU', async () => {
    const all = await Promise.all(HOSTS.flatMap((h) => [1, 2, 3, 4, 5].map((i) => ensure(h, `vm-${h}${i}`))));
    const addrs = all.map((i) => bare(i.ipv4));
    assert.equal(new Set(addrs).size, 10, `distinct: ${addrs.join(' ')}`);
    for (const i of all) {
      assert.match(i.ipv4, /^198\.18\.(6[4-9]|7\d)\.\d+\/20$/);
      assert.equal(i.mtu, 1450, 'underlay 1500 − VXLAN 50');
    }
    const [vx] = ns.a.ipJson<Array<{ mtu: number; master: string }>>(
      'link',
      'show',
      'dev',
      vxlanName(deriveVni('c1')),
    );
    assert.deepEqual([vx!.mtu, vx!.master], [1450, 'tn-c1'], 'the VXLAN device is a port of the bridge');
    assert.ok(existsSync(join(d.b.stateDir, 'locks', 'vm')), 'host B took its VM locks locally');
    assert.ok(!existsSync(join(d.a.stateDir, 'locks', 'vm')), 'host A took them in etcd');
  });

  it('without the daemon (--local), up and down work on the etcd store too', () => {
    const up = tapnet('--local', 'up', 'vm-l1', '--json');
    assert.equal(up.status, 0, up.stderr);
    const l1 = JSON.parse(up.stdout) as Info;
    assert.equal(l1.mtu, 1450);
    const taken = Object.values(info).map((i) => bare(i.ipv4));
    assert.ok(!taken.includes(bare(l1.ipv4)), `${l1.ipv4} is not taken by another VM`);
    assert.equal(host(status(), 'a')?.vms, 6, 'host-a counts it');
    const down = tapnet('--local', 'down', 'vm-l1');
    assert.equal(down.status, 0, down.stderr);
  });

  it('tapnet cluster status lists both hosts alive with their VM counts', () => {
    const s = status();
    for (const h of HOSTS) {
      assert.deepEqual(
        { state: host(s, h)?.state, vms: host(s, h)?.vms, vtep: host(s, h)?.vtep },
        { state: 'alive', vms: 5, vtep: VTEP[h] },
      );
    }
    assert.deepEqual(
      s.networks.map((n) => [n.name, n.vni, n.mtu]),
      [['c1', deriveVni('c1'), 1450]],
    );
    const text = tapnet('cluster', 'status');
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^HOST\s+VTEP\s+STATE\s+LEASE\s+TTL\s+VMS$/m);
    assert.match(text.stdout, /^host-b\s+198\.18\.100\.2\s+alive\s+\S+\s+\d+s\s+5$/m);
  });

  it('a VM on host A reaches a VM on host B through the overlay', async () => {
    const a1 = standIn('a', 'vm-a1');
    const b1 = standIn('b', 'vm-b1');
    assert.ok(await reaches(a1, b1), 'UDP echo from B1 came back');
    assert.ok(await reaches(b1, a1), 'and the other way');
  });

  it('while etcd is down: 503 ERR_UNAVAILABLE with Retry-After; once back, the same calls succeed', async () => {
    await etcd.kill('SIGKILL');
    // A daemon started now waits for etcd: it answers, calls get 503, it opens once etcd is back.
    dirC = mkdtempSync(join(tmpdir(), 'tapnet-cdc-'));
    const socketC = join(dirC, 'tapnet.sock');
    const configC = join(dirC, 'config.json');
    writeFileSync(
      configC,
      JSON.stringify({
        netns: nsC.ns.path,
        stateDir: join(dirC, 'state'),
        api: { socket: socketC },
        ...daemonConfig('c'),
      }),
    );
    const serveC = spawn(process.execPath, [CLI, '--config', configC, 'serve'], { stdio: 'ignore' });
    const exitC = new Promise<number | null>((r) => serveC.on('exit', (code) => r(code)));
    const callC = (method: string, path: string) => request(socketC, method, path).catch(() => undefined);
    const [put, del, cli] = await Promise.all([
      d.a.call('PUT', '/v1/vms/vm-a6', { vnetHdr: false }),
      d.a.call('DELETE', '/v1/vms/vm-a5'),
      tapnetAsync('cluster', 'status'),
    ]);
    for (const r of [put, del]) {
      assert.equal(r.status, 503, r.text);
      assert.equal(r.json.code, 'ERR_UNAVAILABLE');
      assert.equal(r.headers['retry-after'], '1');
    }
    assert.equal(cli.status, 9, 'exit code 9: unavailable, retry');
    assert.match(cli.stderr, /^tapnet: ERR_UNAVAILABLE: /);
    assert.equal((await d.a.call('GET', '/healthz')).status, 200, 'the daemon is still there');
    assert.deepEqual((await callC('GET', '/readyz'))?.json, { status: 'starting' });
    const early = await callC('PUT', '/v1/vms/vm-c1');
    assert.deepEqual(
      [early?.status, early?.json.code],
      [503, 'ERR_UNAVAILABLE'],
      'the starting daemon says retry',
    );
    await etcd.start();
    assert.equal((await d.a.call('DELETE', '/v1/vms/vm-a5')).status, 204, 'the release is finished');
    const again = await ensure('a', 'vm-a6');
    const held = Object.values(info)
      .filter((i) => i.vmId !== 'vm-a5' && i.vmId !== 'vm-a6')
      .map((i) => bare(i.ipv4));
    assert.ok(!held.includes(bare(again.ipv4)), `${again.ipv4} is not taken by another VM`);
    const s = status();
    assert.deepEqual(
      HOSTS.map((h) => [host(s, h)?.state, host(s, h)?.vms]),
      [
        ['alive', 5],
        ['alive', 5],
      ],
    );
    const until = Date.now() + 10_000;
    while ((await callC('GET', '/readyz'))?.status !== 200 && Date.now() < until) await sleep(200);
    assert.equal(host(status(), 'c')?.state, 'alive', 'the late daemon opened once etcd was back');
    serveC.kill('SIGTERM');
    assert.equal(await exitC, 0);
    assert.equal(host(status(), 'c'), undefined, 'with no VM, it left the cluster on SIGTERM');
  });

  it('a killed daemon shows expired; its VMs stay reachable; reclaim needs --force', async () => {
    await d.b.stop('SIGKILL');
    const until = Date.now() + 8000;
    let s = status();
    while (host(s, 'b')?.state !== 'expired' && Date.now() < until) {
      await sleep(250);
      s = status();
    }
    assert.deepEqual({ state: host(s, 'b')?.state, vms: host(s, 'b')?.vms }, { state: 'expired', vms: 5 });
    assert.equal(host(s, 'a')?.state, 'alive');
    assert.ok(await reaches(vms[0]!, vms[1]!), 'A still reaches B: the kernel entries outlive the agent');
    const refused = tapnet('cluster', 'reclaim', 'host-b');
    assert.equal(refused.status, 4, refused.stderr);
    assert.match(refused.stderr, /ERR_CONFLICT: host host-b has expired, but its VMs may still run/);
    const r = tapnet('cluster', 'reclaim', 'host-b', '--force', '--json');
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { records: string[]; leases: unknown[] };
    assert.deepEqual([report.records.length, report.leases.length], [5, 5]);
    assert.equal(host(status(), 'b'), undefined, 'host-b is gone');
  });

  it('a daemon whose VMs are all released leaves the cluster on SIGTERM', async () => {
    for (const vmId of ['vm-a1', 'vm-a2', 'vm-a3', 'vm-a4', 'vm-a6'])
      assert.equal((await d.a.call('DELETE', `/v1/vms/${vmId}`)).status, 204);
    assert.equal(host(status(), 'a')?.vms, 0);
    assert.equal(await d.a.stop('SIGTERM'), 0);
    assert.deepEqual(status().hosts, [], 'no host left');
  });
});
