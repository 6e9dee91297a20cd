/**
 * Traffic through the nftables firewall, inside private namespaces: a "router" namespace with a bridge and
 * TAP ports (the test plays the VMs by writing raw Ethernet frames into the TAP fds from child
 * processes), and an "upstream" namespace with a UDP echo server.
 *
 *   [vm: tn0001 fd] ─┐
 *   [vm: tn0002 fd] ─┼─ tb0 198.18.0.1/24 (t1) ─┐
 *   [  tn0003 fd  ] ─┘   tb1 198.18.1.1/24 (t2) ├─ router ── vup 198.19.0.1 ── vdn 198.19.0.2 (upstream, echo)
 *   [vm: tr0001 fd] ──── 198.18.8.2/32 route (r1) ┘
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { createFirewall, type Firewall, type FirewallNetwork } from '../../src/firewall/index.js';
import { setSysctl } from '../../src/net/netns.js';
import { createTap } from '../../src/net/tap.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { arpFrame, BROADCAST, ECHO_SCRIPT, runVm, type Udp, udpFrame } from './firewall-vm.js';

const skip = privSkipReason();

const MAC_A = '02:00:00:00:0a:01';
const MAC_B = '02:00:00:00:0b:02';
const MAC_C = '02:00:00:00:0c:03';
const BRIDGE_MAC = '02:00:00:00:00:fe';
const NET1: FirewallNetwork = {
  name: 't1',
  topology: 'bridge',
  bridge: 'tb0',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/24',
  nat: true,
  isolate: true,
};
const MAC_R = '02:00:00:00:0d:04';
const ROUTED: FirewallNetwork = {
  name: 'r1',
  topology: 'routed',
  tapPrefix: 'tr',
  subnet4: '198.18.8.0/24',
  nat: true,
  isolate: false,
};
const NET2: FirewallNetwork = {
  name: 't2',
  topology: 'bridge',
  bridge: 'tb1',
  tapPrefix: 'tm',
  subnet4: '198.18.1.0/24',
  nat: true,
  isolate: false,
};

function counter(t: TestNetns, family: string, name: string): number {
  const out = execFileSync(
    'ip',
    ['netns', 'exec', t.name, 'nft', '-j', 'list', 'counter', family, 'tapnet', name],
    { encoding: 'utf8' },
  );
  const c = (JSON.parse(out) as { nftables: Array<{ counter?: { packets: number } }> }).nftables.find(
    (o) => o.counter,
  );
  return c!.counter!.packets;
}

describe('traffic through the nftables firewall', { skip }, () => {
  let host: TestNetns;
  let up: TestNetns;
  let fw: Firewall;
  let echo: ChildProcess | undefined;
  let echoLines: string[] = [];
  const fds: number[] = [];
  const tapFd: Record<string, number> = {};
  let routedTapMac = '';

  before(async () => {
    host = makeTestNetns('fwt');
    up = makeTestNetns('fwu');
    for (const [br, cidr, address] of [
      ['tb0', '198.18.0.1/24', BRIDGE_MAC],
      ['tb1', '198.18.1.1/24', '02:00:00:00:01:fe'],
    ] as const) {
      // A fixed MAC: otherwise the bridge takes its lowest port's, which changes as TAPs join.
      host.ip('link', 'add', br, 'address', address, 'type', 'bridge');
      host.ip('addr', 'add', cidr, 'dev', br);
      host.ip('link', 'set', br, 'up');
    }
    host.ip('link', 'add', 'vup', 'type', 'veth', 'peer', 'name', 'vdn', 'netns', up.name);
    host.ip('addr', 'add', '198.19.0.1/24', 'dev', 'vup');
    host.ip('link', 'set', 'vup', 'up');
    up.ip('addr', 'add', '198.19.0.2/24', 'dev', 'vdn');
    up.ip('link', 'set', 'vdn', 'up');
    setSysctl(host.ns, 'net/ipv4/ip_forward', '1');
    const links = host.ipJson<Array<{ ifname: string; ifindex: number }>>('link', 'show');
    const tb0 = links.find((l) => l.ifname === 'tb0')!;
    for (const name of ['tn0001', 'tn0002', 'tn0003']) {
      const tap = createTap(
        { name, nsFd: host.ns.fd, persistent: false, vnetHdr: false, master: tb0.ifindex, up: true },
        host.nl,
      );
      tapFd[name] = tap.fds[0]!;
      fds.push(...tap.fds);
    }
    // Routed topology: a TAP of its own, a /32 route to the VM.
    const routed = createTap(
      { name: 'tr0001', nsFd: host.ns.fd, persistent: false, vnetHdr: false, up: true },
      host.nl,
    );
    tapFd.tr0001 = routed.fds[0]!;
    fds.push(...routed.fds);
    host.ip('route', 'add', '198.18.8.2/32', 'dev', 'tr0001');
    routedTapMac = host.ipJson<Array<{ address: string }>>('link', 'show', 'tr0001')[0]!.address;
    // Replies to the VMs need no ARP round (the test's VMs do not answer ARP).
    host.ip('neigh', 'replace', '198.18.0.2', 'lladdr', MAC_A, 'dev', 'tb0', 'nud', 'permanent');
    host.ip('neigh', 'replace', '198.18.8.2', 'lladdr', MAC_R, 'dev', 'tr0001', 'nud', 'permanent');

    fw = createFirewall('nftables', { nsFd: host.ns.fd });
    fw.ensureNetwork(NET1);
    fw.ensureNetwork(NET2);
    fw.ensureNetwork(ROUTED);
    fw.addVm({ network: 'r1', ifname: 'tr0001', mac: MAC_R, ipv4: '198.18.8.2' });
    fw.addVms([
      { network: 't1', ifname: 'tn0001', mac: MAC_A, ipv4: '198.18.0.2' },
      { network: 't1', ifname: 'tn0002', mac: MAC_B, ipv4: '198.18.0.3' },
    ]); // tn0003 stays unregistered

    echo = spawn('ip', ['netns', 'exec', up.name, process.execPath, '-e', ECHO_SCRIPT], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('echo server did not start')), 5000);
      echo!.stdout!.on('data', (d: Buffer) => {
        echoLines.push(...d.toString().split('\n').filter(Boolean));
        if (echoLines.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  });

  after(() => {
    echo?.kill();
    for (const fd of fds) closeSync(fd);
    fw?.close();
    host?.destroy();
    up?.destroy();
  });

  it('masquerades a VM reaching upstream, and the reply comes back to the VM', async () => {
    echoLines = [];
    const seen = await runVm(tapFd.tn0001!, [
      udpFrame({
        src: MAC_A,
        dst: BRIDGE_MAC,
        srcIp: '198.18.0.2',
        dstIp: '198.19.0.2',
        sport: 40000,
        dport: 7777,
        payload: 'nat-probe',
      }),
    ]);
    const got = echoLines
      .map((l) => JSON.parse(l) as { from: string; data: string })
      .filter((m) => m.data === 'nat-probe');
    assert.deepEqual(
      got,
      [{ from: '198.19.0.1', data: 'nat-probe' }],
      'upstream sees the router, not 198.18.0.2',
    );
    const reply = seen.udp.filter((u) => u.payload === 'nat-probe');
    assert.deepEqual(reply, [
      { srcIp: '198.19.0.2', dstIp: '198.18.0.2', sport: 7777, dport: 40000, payload: 'nat-probe' },
    ]);
  });

  it('drops frames with a spoofed source IP, MAC or ARP sender, and counts them', async () => {
    const before = counter(host, 'bridge', 'spoof_t1');
    const toB = (over: Partial<Udp>) =>
      udpFrame({
        src: MAC_A,
        dst: MAC_B,
        srcIp: '198.18.0.2',
        dstIp: '198.18.0.3',
        sport: 5000,
        dport: 9,
        payload: 'legit',
        ...over,
      });
    const receiver = runVm(tapFd.tn0002!, [], 1200);
    const sender = runVm(tapFd.tn0001!, [
      toB({}),
      toB({ srcIp: '198.18.0.99', payload: 'spoof-ip' }),
      toB({ src: MAC_C, payload: 'spoof-mac' }),
      toB({ dst: BRIDGE_MAC, dstIp: '198.18.0.1', srcIp: '198.18.0.77', payload: 'spoof-to-host' }),
      arpFrame(MAC_A, BROADCAST, 1, MAC_A, '198.18.0.2', '198.18.0.3'),
      arpFrame(MAC_A, BROADCAST, 2, MAC_A, '198.18.0.3', '198.18.0.3'), // "198.18.0.3 is at A"
      arpFrame(MAC_A, BROADCAST, 1, MAC_C, '198.18.0.2', '198.18.0.3'), // ARP sender MAC not the port's
    ]);
    const [seen] = await Promise.all([receiver, sender]);
    const payloads = seen.udp.map((u) => u.payload);
    assert.ok(payloads.includes('legit'), `legit frame arrives: ${payloads}`);
    for (const bad of ['spoof-ip', 'spoof-mac', 'spoof-to-host']) assert.ok(!payloads.includes(bad), bad);
    const arps = seen.arp.filter((a) => a.targetIp === '198.18.0.3');
    assert.deepEqual(arps, [{ op: 1, senderMac: MAC_A, senderIp: '198.18.0.2', targetIp: '198.18.0.3' }]);
    assert.equal(counter(host, 'bridge', 'spoof_t1') - before, 5, 'each spoofed frame counted once');
    const st = fw.status([NET1, NET2]);
    assert.equal(
      st.networks.find((n) => n.name === 't1')?.drops.spoof.packets,
      counter(host, 'bridge', 'spoof_t1'),
    );
  });

  it('drops everything from a TAP with a tapnet prefix that is not registered', async () => {
    const before = counter(host, 'bridge', 'unregistered');
    const receiver = runVm(tapFd.tn0002!, [], 1000);
    const sender = runVm(tapFd.tn0003!, [
      udpFrame({
        src: MAC_C,
        dst: MAC_B,
        srcIp: '198.18.0.4',
        dstIp: '198.18.0.3',
        sport: 5000,
        dport: 9,
        payload: 'unregistered',
      }),
    ]);
    const [seen] = await Promise.all([receiver, sender]);
    assert.ok(!seen.udp.some((u) => u.payload === 'unregistered'));
    assert.equal(counter(host, 'bridge', 'unregistered') - before, 1);
  });

  it('isolates networks: a VM cannot reach another network, routed or on the host', async () => {
    const before = counter(host, 'inet', 'isolate_t1');
    echoLines = [];
    await runVm(tapFd.tn0001!, [
      udpFrame({
        src: MAC_A,
        dst: BRIDGE_MAC,
        srcIp: '198.18.0.2',
        dstIp: '198.18.1.5',
        sport: 5000,
        dport: 9,
        payload: 'to-t2-vm',
      }),
      udpFrame({
        src: MAC_A,
        dst: BRIDGE_MAC,
        srcIp: '198.18.0.2',
        dstIp: '198.18.1.1',
        sport: 5000,
        dport: 9,
        payload: 'to-t2-gw',
      }),
      udpFrame({
        src: MAC_A,
        dst: BRIDGE_MAC,
        srcIp: '198.18.0.2',
        dstIp: '198.19.0.2',
        sport: 40001,
        dport: 7777,
        payload: 'still-out',
      }),
    ]);
    assert.equal(counter(host, 'inet', 'isolate_t1') - before, 2);
    assert.ok(
      echoLines.some((l) => l.includes('still-out')),
      'traffic to the outside still flows',
    );
  });

  it('lets a VM send again only after it is registered, and stops it once removed', async () => {
    const probe = (payload: string) =>
      udpFrame({
        src: MAC_A,
        dst: BRIDGE_MAC,
        srcIp: '198.18.0.2',
        dstIp: '198.19.0.2',
        sport: 40002,
        dport: 7777,
        payload,
      });
    fw.removeVm({ network: 't1', ifname: 'tn0001', mac: MAC_A, ipv4: '198.18.0.2' });
    echoLines = [];
    await runVm(tapFd.tn0001!, [probe('after-remove')], 600);
    assert.ok(!echoLines.some((l) => l.includes('after-remove')));
    fw.addVm({ network: 't1', ifname: 'tn0001', mac: MAC_A, ipv4: '198.18.0.2' });
    await runVm(tapFd.tn0001!, [probe('after-add')], 600);
    assert.ok(echoLines.some((l) => l.includes('after-add')));
  });

  it('routed topology: NAT for the VM, spoofed sources dropped in inet before routing', async () => {
    const before = counter(host, 'inet', 'spoof_r1');
    const out = (srcIp: string, payload: string) =>
      udpFrame({
        src: MAC_R,
        dst: routedTapMac,
        srcIp,
        dstIp: '198.19.0.2',
        sport: 40003,
        dport: 7777,
        payload,
      });
    echoLines = [];
    const seen = await runVm(tapFd.tr0001!, [
      out('198.18.8.2', 'routed-ok'),
      out('198.18.8.99', 'routed-spoof'),
    ]);
    const got = echoLines
      .map((l) => JSON.parse(l) as { from: string; data: string })
      .filter((m) => m.data.startsWith('routed'));
    assert.deepEqual(got, [{ from: '198.19.0.1', data: 'routed-ok' }]);
    assert.ok(
      seen.udp.some((u) => u.payload === 'routed-ok' && u.dstIp === '198.18.8.2'),
      'the reply reaches the VM',
    );
    assert.equal(counter(host, 'inet', 'spoof_r1') - before, 1);
  });
});
