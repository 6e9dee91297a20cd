/**
 * Statistics from real traffic: frames written into a VM's TAP (the guest's side of it) show up as
 * exactly that many packets and bytes sent by the guest, and the host's answers as received; spoofed
 * frames as the network's anti-spoofing drops; frames a policy denies as the VM's policy drops. CNI mode
 * reads the TAP inside the VM's namespace. iproute2 is the oracle.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isTapnetError } from '../../src/errors.js';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { NetworkManager } from '../../src/manager/manager.js';
import type { NetworkInfo } from '../../src/manager/types.js';
import { deleteLink, getLink } from '../../src/net/link.js';
import { closeTapFds, openTap } from '../../src/net/tap.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { collectStats, StatsReader, vmStats } from '../../src/observe/vmstats.js';
import { firecrackerCniNetworks } from '../helpers/cni-network.js';
import { arpRequest, ethernet, ipv4Udp } from '../helpers/packets.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();

interface IpStats {
  stats64: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } };
}

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '../fixtures');
const VNET_HDR = Buffer.alloc(10);

/** A guest on the TAP queue `fd` (vnet header) ARPs for `target`: resolves to the answer's MAC or `timeout`. */
function guestArp(fd: number, mac: string, ip: string, target: string): Promise<string> {
  const child = spawn(process.execPath, [join(fixtures, 'tap-arp-child.js'), mac, ip, target], {
    stdio: ['ignore', 'pipe', 'inherit', fd],
  });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve) => child.on('exit', () => resolve(out.trim())));
}

/** The frame the ARP fixture sends (to count its bytes). */
const arpLength = (mac: string, ip: string, target: string) => arpRequest(mac, ip, target).length;

describe('stats from real traffic, direct mode', { skip }, () => {
  let t: TestNetns;
  let dir: string;
  let m: NetworkManager;
  let config: ManagerConfigInput;
  let vm: NetworkInfo;
  let fd: number;
  const ip = () => vm.ipv4!.split('/')[0]!;
  before(async () => {
    t = makeTestNetns('stats');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-stats-'));
    config = {
      stateDir: dir,
      netns: t.ns.path,
      defaultNetwork: 'vms',
      networks: { vms: { topology: 'bridge', bridge: 'tnst0', subnet4: '198.18.30.0/24' } },
    };
    m = await NetworkManager.open(config);
    vm = await m.ensure('vm1');
    // The guest's end of the TAP (a VMM holding it: carrier up). Frames go in after a virtio-net header.
    fd = openTap(vm.tap, { nsFd: t.ns.fd, vnetHdr: true }).fds[0]!;
  });
  after(async () => {
    if (fd !== undefined) await closeTapFds([fd]);
    await m?.close();
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('frames the guest sends are counted exactly; the host’s ARP answer as received', async () => {
    const gw = m.network('vms').gateway4!;
    const bridgeMac = getLink(t.nl, 'tnst0').mac!;
    const before = await vmStats(m, 'vm1');
    assert.equal(before.mode, 'direct');
    assert.equal(before.operstate, 'up', 'a VMM (this test) holds the TAP');
    const frames = Array.from({ length: 20 }, (_, i) =>
      ethernet(bridgeMac, vm.mac, 0x0800, ipv4Udp(ip(), gw, 40000, 9, Buffer.alloc(10 + i * 37))),
    );
    for (const f of frames) writeSync(fd, Buffer.concat([VNET_HDR, f]));
    assert.equal(
      await guestArp(fd, vm.mac, ip(), gw),
      `reply ${bridgeMac}`,
      'the bridge answered the ARP request',
    );
    const after = await vmStats(m, 'vm1');
    const sent = frames.reduce((n, f) => n + f.length, arpLength(vm.mac, ip(), gw));
    assert.equal(after.guestTx.packets - before.guestTx.packets, 21);
    assert.equal(after.guestTx.bytes - before.guestTx.bytes, sent);
    assert.ok(after.guestRx.packets - before.guestRx.packets >= 1, 'the ARP reply reached the guest');
    assert.ok(after.guestRx.bytes - before.guestRx.bytes >= 42);
    // The oracle: iproute2 sees the TAP's side (rx = what the guest sent).
    const oracle = t.ipJson<IpStats[]>('-s', 'link', 'show', vm.tap)[0]!.stats64;
    assert.equal(oracle.rx.packets, after.guestTx.packets);
    assert.equal(oracle.rx.bytes, after.guestTx.bytes);
    assert.ok(oracle.tx.packets >= after.guestRx.packets);
  });

  it('spoofed frames: counted as sent by the guest and as the network’s anti-spoofing drops', async () => {
    const bridgeMac = getLink(t.nl, 'tnst0').mac!;
    const before = await vmStats(m, 'vm1');
    for (let i = 0; i < 7; i++) {
      const spoofed = ethernet(
        bridgeMac,
        vm.mac,
        0x0800,
        ipv4Udp('198.18.30.250', '198.18.30.1', 40001, 9, Buffer.alloc(20)),
      );
      writeSync(fd, Buffer.concat([VNET_HDR, spoofed]));
    }
    const after = await vmStats(m, 'vm1');
    assert.equal(after.guestTx.packets - before.guestTx.packets, 7);
    assert.equal(after.networkDrops!.spoof.packets - before.networkDrops!.spoof.packets, 7);
    const report = await collectStats(m);
    const net = report.networks.find((n) => n.network === 'vms')!;
    assert.equal(net.vms, 1);
    assert.deepEqual(net.drops, after.networkDrops);
  });

  it('frames the VM’s policy denies are its policy drops (egress), per VM', async () => {
    await m.setPolicy('vm1', {
      default: 'allow',
      rules: [{ direction: 'egress', protocol: 'udp', ports: [9999], action: 'deny' }],
    });
    const bridgeMac = getLink(t.nl, 'tnst0').mac!;
    const gw = m.network('vms').gateway4!;
    const before = await vmStats(m, 'vm1');
    const frame = ethernet(bridgeMac, vm.mac, 0x0800, ipv4Udp(ip(), gw, 40002, 9999, Buffer.alloc(30)));
    for (let i = 0; i < 5; i++) writeSync(fd, Buffer.concat([VNET_HDR, frame]));
    const after = await vmStats(m, 'vm1');
    assert.equal(after.policyDrops!.egress.packets - before.policyDrops!.egress.packets, 5);
    assert.equal(after.policyDrops!.egress.bytes - before.policyDrops!.egress.bytes, 5 * (frame.length - 14));
    assert.equal(after.policyDrops!.ingress.packets, before.policyDrops!.ingress.packets);
    await m.setPolicy('vm1', null);
  });

  it('another process (a CLI without the daemon) reads policy counters too, changing nothing', async () => {
    await m.setPolicy('vm1', {
      default: 'allow',
      rules: [{ direction: 'egress', protocol: 'udp', ports: [9998], action: 'deny' }],
    });
    const bridgeMac = getLink(t.nl, 'tnst0').mac!;
    const denied = ethernet(
      bridgeMac,
      vm.mac,
      0x0800,
      ipv4Udp(ip(), m.network('vms').gateway4!, 40003, 9998, Buffer.alloc(8)),
    );
    writeSync(fd, Buffer.concat([VNET_HDR, denied]));
    const rules = t
      .ip('netns', 'exec', t.name, 'nft', 'list', 'ruleset')
      .replace(/packets \d+ bytes \d+/g, '');
    const other = await NetworkManager.open(config);
    try {
      const s = await new StatsReader(other).vm('vm1');
      assert.ok(s.policyDrops!.egress.packets >= 1);
      assert.equal(
        t.ip('netns', 'exec', t.name, 'nft', 'list', 'ruleset').replace(/packets \d+ bytes \d+/g, ''),
        rules,
      );
    } finally {
      await other.close();
      await m.setPolicy('vm1', null);
    }
  });

  it('a StatsReader shares one firewall reading, yet a VM created after it gets its figures at once', async () => {
    const reader = new StatsReader(m);
    assert.notEqual((await reader.vm('vm1')).policyDrops, null);
    await m.ensure('late');
    try {
      const s = await reader.vm('late');
      assert.deepEqual(s.policyDrops, {
        egress: { packets: 0, bytes: 0 },
        ingress: { packets: 0, bytes: 0 },
      });
    } finally {
      await m.release('late');
    }
  });

  it('a VM whose TAP is gone: ERR_LINK_NOT_FOUND alone, a problem in the report; unknown VMs too', async () => {
    const gone = await m.ensure('vm-gone');
    deleteLink(t.nl, gone.tap);
    await assert.rejects(vmStats(m, 'vm-gone'), (e) => isTapnetError(e, 'ERR_LINK_NOT_FOUND'));
    await assert.rejects(vmStats(m, 'ghost'), (e) => isTapnetError(e, 'ERR_NOT_FOUND'));
    const r = await new StatsReader(m).all(['vm1', 'vm-gone', 'ghost']);
    assert.deepEqual(
      r.vms.map((v) => v.vmId),
      ['vm1'],
    );
    assert.deepEqual(r.problems.map((p) => [p.vmId, p.code]).sort(), [
      ['ghost', 'ERR_NOT_FOUND'],
      ['vm-gone', 'ERR_LINK_NOT_FOUND'],
    ]);
    await m.release('vm-gone');
  });

  it('many VMs are read from one link dump with the same figures', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `many-${i}`);
    for (const id of ids) await m.ensure(id);
    const all = await collectStats(m);
    assert.deepEqual(
      all.vms.map((v) => v.vmId),
      ['many-0', 'many-1', 'many-10', 'many-11', ...ids.slice(2, 10), 'vm1'].sort(),
    );
    const one = await vmStats(m, 'vm1');
    assert.equal(all.vms.find((v) => v.vmId === 'vm1')!.guestTx.bytes, one.guestTx.bytes);
    await m.releaseMany(ids);
  });
});

const cniSkip =
  skip ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'containernetworking-plugins is not installed');

describe('stats in CNI mode: the TAP inside the VM’s namespace', { skip: cniSkip }, () => {
  let dir: string;
  let m: NetworkManager;
  const bridge = `tcst${process.pid % 100000}`;
  const host = cniSkip ? undefined : NetlinkSocket.open();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapnet-stats-cni-'));
    m = await NetworkManager.open({
      stateDir: join(dir, 'state'),
      defaultNetwork: 'fc',
      networks: firecrackerCniNetworks(dir, { subnet: '198.18.31.0/24', bridge, netnsPrefix: bridge }),
    });
  });
  after(async () => {
    await m?.release('cni-1').catch(() => undefined);
    await m?.close();
    if (host) {
      deleteLink(host, bridge);
      host.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts what the guest sent and received; no tapnet firewall figures', async () => {
    const info = await m.ensure('cni-1', { tap: 'fd' });
    const fd = info.tapFds![0]!;
    try {
      const before = await vmStats(m, 'cni-1');
      assert.equal(before.mode, 'cni');
      assert.equal(before.netns, info.netns);
      assert.equal(before.policyDrops, null);
      assert.equal(before.networkDrops, null);
      const vmIp = info.ipv4!.split('/')[0]!;
      assert.match(
        await guestArp(fd, info.mac, vmIp, '198.18.31.1'),
        /^reply /,
        'the bridge answered through the veth',
      );
      const after = await vmStats(m, 'cni-1');
      assert.equal(after.guestTx.packets - before.guestTx.packets, 1);
      assert.equal(after.guestTx.bytes - before.guestTx.bytes, arpLength(info.mac, vmIp, '198.18.31.1'));
      assert.ok(after.guestRx.packets - before.guestRx.packets >= 1);
      // The oracle: `ip -n <vm-netns> -s -j link show <tap>`.
      const nsName = info.netns!.split('/').at(-1)!;
      const oracle = JSON.parse(
        execFileSync('ip', ['-n', nsName, '-s', '-j', 'link', 'show', info.tap], { encoding: 'utf8' }),
      ) as IpStats[];
      assert.equal(oracle[0]!.stats64.rx.bytes, after.guestTx.bytes);
      const report = await collectStats(m);
      assert.deepEqual(report.networks, [{ network: 'fc', mode: 'cni', vms: 1, drops: null }]);
    } finally {
      await closeTapFds([fd]);
    }
  });
});
