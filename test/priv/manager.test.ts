import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isTapnetError } from '../../src/errors.js';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { NetworkManager } from '../../src/manager/manager.js';
import { createVeth, findLink, getLink, listLinks } from '../../src/net/link.js';
import { createNetns, deleteNetns, getSysctl } from '../../src/net/netns.js';
import { closeTapFds } from '../../src/net/tap.js';
import { ethernet, ipv4Udp, parseUdp } from '../helpers/packets.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const fixtures = join(dirname(fileURLToPath(import.meta.url)), '../fixtures');

function runChild(args: string[], fd?: number): Promise<string> {
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'inherit', ...(fd !== undefined ? [fd] : [])],
  });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => resolve(out.trim()));
  });
}

interface Ctx {
  t: TestNetns;
  stateDir: string;
  config: ManagerConfigInput;
}

function setup(
  tag: string,
  networks: ManagerConfigInput['networks'],
  firewall: 'nftables' | 'none' = 'nftables',
): Ctx {
  const t = makeTestNetns(tag);
  const stateDir = mkdtempSync(join(tmpdir(), `tapnet-${tag}-`));
  return {
    t,
    stateDir,
    config: {
      stateDir,
      netns: t.ns.path,
      networks,
      firewall,
      defaultNetwork: Object.keys(networks ?? {})[0] ?? 'default',
    },
  };
}

function teardown(c: Ctx): void {
  c.t.destroy();
  rmSync(c.stateDir, { recursive: true, force: true });
}

describe('NetworkManager, bridge topology', { skip }, () => {
  let c: Ctx;
  let m: NetworkManager;
  before(async () => {
    c = setup('mgr', {
      vms: {
        topology: 'bridge',
        bridge: 'tnbr0',
        subnet4: '198.18.0.0/22',
        subnet6: 'fd00:198:18::/64',
        dns: ['198.18.0.53'],
      },
    });
    m = await NetworkManager.open(c.config);
  });
  after(async () => {
    await m?.close();
    teardown(c);
  });

  it('ensure gives a TAP on the bridge, addresses, MAC and gateway; the bridge holds the gateway', async () => {
    const info = await m.ensure('vm-1');
    assert.equal(info.network, 'vms');
    assert.equal(info.bridge, 'tnbr0');
    assert.match(info.ipv4!, /^198\.18\.0\.\d+\/22$/);
    assert.equal(info.gateway4, '198.18.0.1');
    assert.match(info.ipv6!, /^fd00:198:18::[0-9a-f]+\/64$/);
    assert.equal(info.gateway6, 'fd00:198:18::1');
    assert.deepEqual(info.dns, ['198.18.0.53']);
    assert.match(info.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.equal(Number.parseInt(info.mac.slice(0, 2), 16) & 3, 2, 'locally administered unicast');
    const tap = c.t.ipJson<
      { master: string; flags: string[]; mtu: number; linkinfo: { info_kind: string } }[]
    >('-d', 'link', 'show', info.tap)[0]!;
    assert.equal(tap.master, 'tnbr0');
    assert.ok(tap.flags.includes('UP'));
    assert.equal(tap.linkinfo.info_kind, 'tun');
    const br = c.t.ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>(
      'addr',
      'show',
      'tnbr0',
    )[0]!;
    assert.ok(br.addr_info.some((a) => a.local === '198.18.0.1' && a.prefixlen === 22));
    assert.equal(getSysctl(c.t.ns, 'net/ipv4/ip_forward'), '1');
    // The same VM again: the same answer, nothing new.
    const again = await m.ensure('vm-1');
    assert.deepEqual({ ...again, tapFds: undefined }, { ...info, tapFds: undefined });
    assert.equal((await m.list()).length, 1);
  });

  it('the MAC is stable for a VM and differs between VMs', async () => {
    const a = await m.ensure('vm-mac');
    await m.release('vm-mac');
    const b = await m.ensure('vm-mac');
    assert.equal(a.mac, b.mac);
    assert.notEqual(a.mac, (await m.get('vm-1'))!.mac);
    await m.release('vm-mac');
  });

  it("an ensure of a VM just released, in another process, gets a TAP the first one's deletion leaves alone", async () => {
    const other = await NetworkManager.open(c.config); // another process: its own reaper
    try {
      const first = await m.ensure('vm-hop');
      await m.release('vm-hop'); // answers before the kernel has deleted the TAP
      const second = await other.ensure('vm-hop'); // waits for the VM's lock, held until the TAP is gone
      assert.equal(second.tap, first.tap);
      await m.settled();
      const tap = getLink(c.t.nl, second.tap);
      assert.ok(tap.up, 'the new TAP is there and up after the old one was deleted');
      assert.equal(tap.master, getLink(c.t.nl, 'tnbr0').index);
      await other.release('vm-hop', { wait: true });
      assert.equal(findLink(c.t.nl, second.tap), undefined);
    } finally {
      await other.close();
    }
  });

  it('200 concurrent ensures give 200 distinct addresses and TAPs', async () => {
    const ids = Array.from({ length: 200 }, (_, i) => `conc-${i}`);
    const infos = await Promise.all(ids.map((id) => m.ensure(id)));
    assert.equal(new Set(infos.map((i) => i.ipv4)).size, 200);
    assert.equal(new Set(infos.map((i) => i.ipv6)).size, 200);
    assert.equal(new Set(infos.map((i) => i.tap)).size, 200);
    const br = getLink(c.t.nl, 'tnbr0');
    assert.equal(listLinks(c.t.nl, { master: br.index }).length, 201);
    const { released, failed } = await m.releaseMany(ids);
    assert.equal(released.length, 200);
    assert.deepEqual(failed, []);
    // Released: unusable and freed at once; the kernel deletes the TAPs in the background, batched.
    await m.settled();
    assert.equal(listLinks(c.t.nl, { master: br.index }).length, 1);
  });

  it('honours a static IP and refuses a taken one with ERR_IPAM_CONFLICT, leaving nothing behind', async () => {
    const s = await m.ensure('vm-static', { ipv4: '198.18.1.77' });
    assert.equal(s.ipv4, '198.18.1.77/22');
    const before = listLinks(c.t.nl, { kind: 'tun' }).length;
    await assert.rejects(m.ensure('vm-thief', { ipv4: '198.18.1.77' }), (e) =>
      isTapnetError(e, 'ERR_IPAM_CONFLICT'),
    );
    await assert.rejects(m.ensure('vm-outside', { ipv4: '198.19.0.5' }), (e) =>
      isTapnetError(e, 'ERR_IPAM_CONFLICT'),
    );
    assert.equal(listLinks(c.t.nl, { kind: 'tun' }).length, before);
    assert.equal(await m.get('vm-thief'), undefined);
    await m.release('vm-static');
  });

  it('release is a no-op for unknown VMs and the second time', async () => {
    const info = await m.ensure('vm-twice');
    await m.release('vm-twice', { wait: true });
    await m.release('vm-twice');
    await m.release('never-existed');
    assert.equal(findLink(c.t.nl, info.tap), undefined);
    assert.equal(await m.get('vm-twice'), undefined);
  });

  it('rejects bad input with ERR_INVALID_ARGUMENT or ERR_NOT_FOUND before doing anything', async () => {
    for (const id of ['../../etc', '', 'a/b', 'x'.repeat(200)]) {
      await assert.rejects(m.ensure(id), (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'), id);
    }
    await assert.rejects(m.ensure('vm-x', { network: 'nope' }), (e) => isTapnetError(e, 'ERR_NOT_FOUND'));
    await assert.rejects(m.ensure('vm-x', { mac: '01:00:5e:00:00:01' }), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    await assert.rejects(m.ensure('vm-x', { ipv4: '198.18.0.999' }), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.equal(await m.get('vm-x'), undefined);
  });

  it('hands out a TAP as an fd; the TAP disappears when the fd closes and reconcile frees the rest', async () => {
    const info = await m.ensure('vm-fd', { tap: 'fd' });
    assert.equal(info.tapFds?.length, 1);
    assert.ok(findLink(c.t.nl, info.tap));
    await closeTapFds(info.tapFds!);
    assert.equal(findLink(c.t.nl, info.tap), undefined);
    const report = await m.reconcile();
    assert.ok(report.incompleteRecords.includes('vm-fd'));
    assert.equal(await m.get('vm-fd'), undefined);
  });

  it('reconcile re-creates a persistent TAP deleted behind its back, and removes orphans', async () => {
    const info = await m.ensure('vm-repair');
    c.t.ip('link', 'del', info.tap);
    c.t.ip('tuntap', 'add', 'dev', 'tn0123456789', 'mode', 'tap');
    const report = await m.reconcile();
    assert.deepEqual(report.recreatedTaps, [info.tap]);
    assert.deepEqual(report.orphanTaps, ['tn0123456789']);
    assert.equal(getLink(c.t.nl, info.tap).master, getLink(c.t.nl, 'tnbr0').index);
    await m.release('vm-repair');
  });
});

describe('NetworkManager: exhaustion, NAT and anti-spoofing with traffic', { skip }, () => {
  let c: Ctx;
  let m: NetworkManager;
  let upstream: ReturnType<typeof createNetns>;
  const upName = `t${process.pid}-upstream`;
  let echo: ChildProcess | undefined;
  before(async () => {
    c = setup('nat', { tiny: { topology: 'bridge', bridge: 'tnbr1', subnet4: '198.18.8.0/29' } });
    m = await NetworkManager.open(c.config);
    // The simulated upstream host: another namespace behind a veth, 198.19.255.2; the host side is .1.
    upstream = createNetns(upName);
    createVeth(c.t.nl, { name: 'tnup0', peer: 'eth0', peerNsFd: upstream.fd, up: true });
    c.t.ip('addr', 'add', '198.19.255.1/24', 'dev', 'tnup0');
  });
  after(async () => {
    echo?.kill();
    await m?.close();
    upstream?.close();
    deleteNetns(upName);
    teardown(c);
  });

  it('exhaustion of a /29 (5 VMs) gives ERR_IPAM_EXHAUSTED and leaves no partial state', async () => {
    const infos = [];
    for (let i = 0; i < 5; i++) infos.push(await m.ensure(`ex-${i}`));
    const taps = listLinks(c.t.nl, { kind: 'tun' }).length;
    await assert.rejects(m.ensure('ex-5'), (e) => isTapnetError(e, 'ERR_IPAM_EXHAUSTED'));
    assert.equal(listLinks(c.t.nl, { kind: 'tun' }).length, taps);
    assert.equal(await m.get('ex-5'), undefined);
    await m.releaseMany(infos.map((i) => i.vmId).slice(1));
  });

  it('a VM stand-in reaches the upstream host with its source masqueraded, and the reply comes back', async () => {
    const inUp = (cmd: string, ...a: string[]) => ['netns', 'exec', upName, cmd, ...a];
    c.t.ip(...(inUp('ip', 'addr', 'add', '198.19.255.2/24', 'dev', 'eth0') as [string]));
    c.t.ip(...(inUp('ip', 'link', 'set', 'eth0', 'up') as [string]));
    c.t.ip(...(inUp('ip', 'link', 'set', 'lo', 'up') as [string]));
    // No route back to 198.18.8.0/29 upstream: only masquerading lets the reply return.
    echo = spawn(
      'ip',
      [
        'netns',
        'exec',
        upName,
        process.execPath,
        join(fixtures, 'udp-echo.js'),
        '198.19.255.2',
        '7777',
        '20',
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    await new Promise((r) => echo!.stdout!.once('data', r));
    const vm = await m.ensure('nat-vm', { tap: 'fd', vnetHdr: false });
    const net = m.network('tiny');
    const vmIp = vm.ipv4!.split('/')[0]!;
    // The host needs the VM's MAC for the reply; a real guest would answer ARP.
    c.t.ip('neigh', 'replace', vmIp, 'lladdr', vm.mac, 'dev', 'tnbr1', 'nud', 'permanent');
    const frame = ethernet(
      net.bridgeMac,
      vm.mac,
      0x0800,
      ipv4Udp(vmIp, '198.19.255.2', 40000, 7777, Buffer.from('hello')),
    );
    const out = await runChild(
      [join(fixtures, 'tap-peer.js'), '40000', '3000', frame.toString('hex')],
      vm.tapFds![0],
    );
    assert.notEqual(out, 'timeout', 'the reply came back through NAT');
    const reply = parseUdp(Buffer.from(out, 'hex'))!;
    assert.equal(reply.src, '198.19.255.2');
    assert.equal(reply.dst, vmIp);
    assert.equal(reply.data.toString(), 'seen-from 198.19.255.1', 'upstream saw the masqueraded source');
    await closeTapFds(vm.tapFds!);
    await m.release('nat-vm');
  });

  it('a spoofed source IP from a VM port is dropped and counted', async () => {
    const vm = await m.ensure('spoof-vm', { tap: 'fd', vnetHdr: false });
    const net = m.network('tiny');
    const before = m.firewall.status([m.firewallNetwork(net)]).networks.find((n) => n.name === 'tiny')!.drops
      .spoof.packets;
    const frame = ethernet(
      net.bridgeMac,
      vm.mac,
      0x0800,
      ipv4Udp('198.18.8.6', '198.19.255.2', 40001, 7777, Buffer.from('spoof')),
    );
    const out = await runChild(
      [join(fixtures, 'tap-peer.js'), '40001', '1500', frame.toString('hex')],
      vm.tapFds![0],
    );
    assert.equal(out, 'timeout', 'no answer to a spoofed packet');
    const after = m.firewall.status([m.firewallNetwork(net)]).networks.find((n) => n.name === 'tiny')!.drops
      .spoof.packets;
    assert.ok(after > before, `spoof drop counter grew (${before} → ${after})`);
    await closeTapFds(vm.tapFds!);
    await m.release('spoof-vm');
  });
});

describe('NetworkManager, routed topology', { skip }, () => {
  let c: Ctx;
  let m: NetworkManager;
  before(async () => {
    c = setup('routed', {
      fleet: { topology: 'routed', bridge: 'tngw0', subnet4: '198.19.0.0/16', subnet6: 'fd00:198:19::/64' },
    });
    m = await NetworkManager.open(c.config);
  });
  after(async () => {
    await m?.close();
    teardown(c);
  });

  it('gives a point-to-point TAP with a host route, proxy ARP and strict rp_filter', async () => {
    const info = await m.ensure('r-1');
    assert.equal(info.topology, 'routed');
    assert.equal(info.bridge, undefined);
    assert.equal(info.gateway4, '198.19.0.1');
    assert.equal(info.gateway6, 'fe80::1');
    assert.match(info.ipv6!, /\/128$/);
    const ip = info.ipv4!.split('/')[0]!;
    const routes = c.t.ipJson<{ dst: string; dev: string }[]>('route', 'show');
    assert.ok(
      routes.some((r) => r.dst === ip && r.dev === info.tap),
      `route ${ip} dev ${info.tap}`,
    );
    const routes6 = c.t.ipJson<{ dst: string; dev: string }[]>('-6', 'route', 'show');
    assert.ok(routes6.some((r) => r.dst === info.ipv6!.split('/')[0] && r.dev === info.tap));
    assert.equal(getSysctl(c.t.ns, `net/ipv4/conf/${info.tap}/proxy_arp`), '1');
    assert.equal(getSysctl(c.t.ns, `net/ipv4/conf/${info.tap}/rp_filter`), '1');
    assert.equal(getLink(c.t.nl, info.tap).master, undefined);
    await m.release('r-1', { wait: true });
    const after = c.t.ipJson<{ dst: string }[]>('route', 'show');
    assert.ok(!after.some((r) => r.dst === ip));
  });

  it('leaves no records or leases once everything is released', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `r-batch-${i}`);
    await Promise.all(ids.map((id) => m.ensure(id)));
    await m.releaseMany(ids, { wait: true });
    assert.deepEqual((await m.store.records.list()).records, []);
    const pool = m.pools(m.network('fleet')).v4!;
    assert.equal((await m.store.leases.leases({ network: pool.network, subnet: pool.subnet })).size, 0);
    assert.equal(listLinks(c.t.nl, { kind: 'tun' }).length, 0);
  });
});
