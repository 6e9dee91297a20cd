/**
 * Real microVMs in direct mode: QEMU (TCG here) boots the guest fixture (.cache/guest, built by
 * scripts/guest/build.mjs) with the TAP tapnet hands out as an fd, the MAC and `ip=` tapnet rendered.
 * Everything runs inside a private namespace; addresses are in 198.18.0.0/15.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetworkManager } from '../../src/manager/manager.js';
import type { NetworkInfo } from '../../src/manager/types.js';
import { createVeth, findLink } from '../../src/net/link.js';
import { createNetns, deleteNetns, type Netns } from '../../src/net/netns.js';
import { guestFixtureSkipReason, guestFixtureWorldReadable, loadGuestFixture } from '../../src/vm/fixture.js';
import { QemuVm } from '../../src/vm/qemu.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

function qemuSkipReason(): string | undefined {
  const r = spawnSync('qemu-system-x86_64', ['--version']);
  return r.status === 0
    ? undefined
    : 'qemu-system-x86_64 is not installed (bootstrap --profile test installs it)';
}

const skip = privSkipReason() ?? qemuSkipReason() ?? guestFixtureSkipReason();

const asNobody = !skip && guestFixtureWorldReadable(loadGuestFixture());

/** `ip netns exec <ns> node -e <code>`: a client on the host side of the bridge, in the test's namespace. */
function nodeIn(ns: string, code: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, process.execPath, '-e', code],
      { timeout: timeoutMs, encoding: 'utf8' },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout.trim()),
    );
  });
}

function httpGetIn(ns: string, url: string): Promise<string> {
  const code = `require('http').get(${JSON.stringify(url)}, { timeout: 5000 }, (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => console.log(r.statusCode + ' ' + b.trim())); }).on('error', (e) => { console.log('ERR ' + e.message); })`;
  return nodeIn(ns, code);
}

describe('microVMs in direct mode (QEMU; TAP by fd and by name)', { skip }, () => {
  let t: TestNetns;
  let stateDir: string;
  let m: NetworkManager;
  let upstream: Netns;
  let upServer: ChildProcess | undefined;
  const upName = `t${process.pid}-vmup`;
  const vms = new Map<string, QemuVm>();
  const infos = new Map<string, NetworkInfo>();
  const ip = (id: string) => infos.get(id)!.ipv4!.split('/')[0]!;
  const vm = (id: string) => vms.get(id)!;
  const spoofDrops = (network: string) =>
    m.firewall.status([m.firewallNetwork(m.network(network))]).networks.find((n) => n.name === network)!
      .drops;

  before(async () => {
    t = makeTestNetns('vm');
    stateDir = mkdtempSync(join(tmpdir(), 'tapnet-vm-'));
    m = await NetworkManager.open({
      stateDir,
      netns: t.ns.path,
      defaultNetwork: 'a',
      networks: {
        a: { bridge: 'tnvma', subnet4: '198.18.30.0/24', dns: ['198.18.30.53'] },
        b: { bridge: 'tnvmb', subnet4: '198.18.31.0/24' },
      },
    });
    // The simulated upstream host, behind a veth, with no route back to the VMs: only NAT brings replies.
    upstream = createNetns(upName);
    createVeth(t.nl, { name: 'tnup0', peer: 'eth0', peerNsFd: upstream.fd, up: true });
    t.ip('addr', 'add', '198.19.255.1/24', 'dev', 'tnup0');
    const up = (...a: string[]) => spawnSync('ip', ['-n', upName, ...a], { stdio: 'inherit' });
    up('addr', 'add', '198.19.255.2/24', 'dev', 'eth0');
    up('link', 'set', 'eth0', 'up');
    up('link', 'set', 'lo', 'up');
    const server = `require('http').createServer((q, s) => s.end('seen-from ' + q.socket.remoteAddress)).listen(8080, '198.19.255.2', () => console.log('ready'))`;
    upServer = spawn('ip', ['netns', 'exec', upName, process.execPath, '-e', server], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const serverReady = new Promise((r) => upServer!.stdout!.once('data', r));

    // microvm (virtio-mmio) for network a, q35 (virtio-net-pci, qboot) for network b. vm-a1 has a
    // persistent TAP that QEMU opens by name (ifname=), started inside the manager's namespace.
    const plan: [string, string, 'microvm' | 'q35', 'fd' | 'name'][] = [
      ['vm-a0', 'a', 'microvm', 'fd'],
      ['vm-a1', 'a', 'microvm', 'name'],
      ['vm-a2', 'a', 'microvm', 'fd'],
      ['vm-b0', 'b', 'q35', 'fd'],
    ];
    for (const [id, network, , mode] of plan) {
      infos.set(id, await m.ensure(id, { network, tap: mode === 'fd' ? 'fd' : 'persistent' }));
    }
    // Boot all in parallel.
    const started = await Promise.allSettled(
      plan.map(([id, , machine, mode]) =>
        QemuVm.start({
          name: id,
          machine,
          network: { mode, info: infos.get(id)! },
          // With the TAP passed as an fd, QEMU needs no privilege: run one as nobody.
          ...(id === 'vm-a0' && asNobody ? { runAs: { uid: 65534, gid: 65534 } } : {}),
        }),
      ),
    );
    started.forEach((s, i) => {
      if (s.status === 'fulfilled') vms.set(plan[i]![0], s.value);
    });
    const failed = started.find((s) => s.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    await serverReady;
  });

  after(async () => {
    await Promise.all([...vms.values()].map((v) => v.stop()));
    upServer?.kill();
    await m?.releaseMany([...infos.keys()]);
    await m?.close();
    upstream?.close();
    deleteNetns(upName);
    t?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('boots the VMs in parallel (microvm and q35, TAP by fd and by name); each answers HTTP from the host side with its name, MAC and IP from tapnet', async () => {
    for (const [id, v] of vms) {
      assert.ok(v.readyMs > 0 && v.readyMs < 30_000, `${id} ready in ${v.readyMs} ms`);
      assert.equal(await httpGetIn(t.name, `http://${ip(id)}/`), `200 tapnet guest ${id}`);
      const mac = await v.exec('cat /sys/class/net/eth0/address');
      assert.equal(mac.output.trim(), infos.get(id)!.mac);
      const addr = await v.exec('ip -4 -o addr show dev eth0');
      assert.match(addr.output, new RegExp(`inet ${ip(id).replace(/\./g, '\\.')}/24 `));
      const tap = infos.get(id)!.tap;
      assert.match(
        v.argv.join(' '),
        id === 'vm-a1'
          ? new RegExp(`-netdev tap,id=net0,ifname=${tap},script=no`)
          : /-netdev tap,id=net0,fd=3/,
      );
      assert.match(
        v.argv.join(' '),
        v.machine === 'q35' ? /virtio-net-pci,netdev=net0/ : /virtio-net-device,netdev=net0/,
      );
      assert.doesNotMatch(v.argv.join(' '), /vhost=on/, 'no vhost-net on this host');
    }
  });

  const nobodySkip = asNobody ? undefined : 'user nobody cannot read the guest fixture in this checkout';
  it('with the TAP passed as an fd, QEMU runs as nobody without capabilities', { skip: nobodySkip }, () => {
    const status = readFileSync(`/proc/${vm('vm-a0').pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.match(status, /^CapEff:\s+0+$/m);
    assert.match(status, /^CapPrm:\s+0+$/m);
  });

  it('VM to VM across the bridge', async () => {
    const r = await vm('vm-a0').exec(`timeout 5 wget -q -O - http://${ip('vm-a1')}/`);
    assert.equal(r.status, 0, r.output);
    assert.equal(r.output.trim(), 'tapnet guest vm-a1');
    const back = await vm('vm-a1').exec(`timeout 5 wget -q -O - http://${ip('vm-a0')}/`);
    assert.equal(back.output.trim(), 'tapnet guest vm-a0');
  });

  it('isolation: a VM on network b cannot reach a VM on network a', async () => {
    const before = spoofDrops('b').isolate.packets + spoofDrops('a').isolate.packets;
    const r = await vm('vm-b0').exec(`timeout 2 wget -q -O - http://${ip('vm-a0')}/`);
    assert.notEqual(r.status, 0, `b reached a: ${r.output}`);
    const afterDrops = spoofDrops('b').isolate.packets + spoofDrops('a').isolate.packets;
    assert.ok(afterDrops > before, `isolation drops grew (${before} → ${afterDrops})`);
    // Its own gateway still answers: the failure is the isolation, not a dead VM.
    assert.equal((await vm('vm-b0').exec('ping -c 1 -W 2 198.18.31.1')).status, 0);
  });

  it('VM to the upstream host through NAT: the upstream sees the masqueraded source', async () => {
    const r = await vm('vm-a0').exec('timeout 5 wget -q -O - http://198.19.255.2:8080/');
    assert.equal(r.status, 0, r.output);
    assert.equal(r.output.trim(), 'seen-from 198.19.255.1');
  });

  it('anti-spoofing: a guest that changes its IP loses connectivity and the spoof drops are counted', async () => {
    const v = vm('vm-a2');
    const gw = infos.get('vm-a2')!.gateway4!;
    assert.equal((await v.exec(`ping -c 1 -W 2 ${gw}`)).status, 0, 'reachable before');
    const before = spoofDrops('a').spoof.packets;
    const spoofed = await v.exec(`ifconfig eth0 198.18.30.250 netmask 255.255.255.0 && ping -c 2 -W 1 ${gw}`);
    assert.notEqual(spoofed.status, 0, `spoofed IP still reached the gateway: ${spoofed.output}`);
    const afterDrops = spoofDrops('a').spoof.packets;
    assert.ok(afterDrops > before, `spoof drops grew (${before} → ${afterDrops})`);
    await v.exec(
      `ifconfig eth0 ${ip('vm-a2')} netmask 255.255.255.0; route add default gw ${gw} 2>/dev/null; true`,
    );
    assert.equal((await v.exec(`ping -c 1 -W 2 ${gw}`)).status, 0, 'reachable again with its own IP');
  });

  it('anti-spoofing: a guest that changes its MAC loses connectivity and the spoof drops are counted', async () => {
    const v = vm('vm-a2');
    const gw = infos.get('vm-a2')!.gateway4!;
    const before = spoofDrops('a').spoof.packets;
    const spoofed = await v.exec(`ip link set dev eth0 address 02:00:00:00:be:ef && ping -c 2 -W 1 ${gw}`);
    assert.notEqual(spoofed.status, 0, `spoofed MAC still reached the gateway: ${spoofed.output}`);
    const afterDrops = spoofDrops('a').spoof.packets;
    assert.ok(afterDrops > before, `spoof drops grew (${before} → ${afterDrops})`);
    await v.exec(`ip link set dev eth0 address ${infos.get('vm-a2')!.mac}`);
    assert.equal((await v.exec(`ping -c 1 -W 2 ${gw}`)).status, 0, 'reachable again with its own MAC');
  });

  it('QEMU killed abruptly: release still removes the TAP, the lease and the firewall elements', async () => {
    const info = infos.get('vm-a2')!;
    const owners = async () => {
      const out: string[] = [];
      for (const pool of await m.store.leases.pools())
        for (const owner of (await m.store.leases.leases(pool)).values()) out.push(owner);
      return out;
    };
    assert.ok(findLink(t.nl, info.tap), 'TAP exists while QEMU runs');
    assert.ok(
      m.firewall.listVms().some((p) => p.ifname === info.tap),
      'firewall elements exist',
    );
    assert.ok((await owners()).includes('vm-a2'), 'lease exists');
    vm('vm-a2').kill('SIGKILL');
    const exit = await vm('vm-a2').exited;
    assert.equal(exit.signal, 'SIGKILL');
    await m.release('vm-a2', { wait: true });
    vms.delete('vm-a2');
    infos.delete('vm-a2');
    assert.equal(findLink(t.nl, info.tap), undefined, 'no TAP');
    assert.equal(await m.get('vm-a2'), undefined, 'no record');
    assert.ok(!(await owners()).includes('vm-a2'), 'no lease');
    assert.ok(!m.firewall.listVms().some((p) => p.ifname === info.tap), 'no firewall element');
    // The other VMs are unaffected.
    assert.equal(await httpGetIn(t.name, `http://${ip('vm-a0')}/`), '200 tapnet guest vm-a0');
  });
});

describe('tapnet killed while setting up 5 VMs: reconcile repairs, and the VMs that got a network boot and work', {
  skip,
}, () => {
  let t: TestNetns;
  let stateDir: string;
  const vms: QemuVm[] = [];
  let m: NetworkManager | undefined;
  after(async () => {
    await Promise.all(vms.map((v) => v.stop()));
    if (m) await m.releaseMany((await m.list()).map((i) => i.vmId));
    await m?.close();
    t?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('SIGKILL after the second VM is ready, inside the setup of the third', async (tc) => {
    t = makeTestNetns('vmcrash');
    stateDir = mkdtempSync(join(tmpdir(), 'tapnet-vmcrash-'));
    const config = {
      stateDir,
      netns: t.ns.path,
      defaultNetwork: 'c',
      networks: { c: { bridge: 'tnvmc', subnet4: '198.18.32.0/24' } },
    };
    // A separate tapnet process sets up five VMs one after the other; it is killed as soon as the second
    // is done, so the kill lands inside the third ensure (or soon after).
    const managerUrl = new URL('../../src/manager/manager.js', import.meta.url).href;
    const code = `const { NetworkManager } = await import(${JSON.stringify(managerUrl)});
const m = await NetworkManager.open(JSON.parse(process.argv[1]));
for (let i = 0; i < 5; i++) { await m.ensure('crash-' + i); console.log('ensured crash-' + i); }
setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    await new Promise<void>((resolve) =>
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('ensured crash-1')) resolve();
      }),
    );
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));

    m = await NetworkManager.open(config, { reconcile: true });
    const infos = await m.list();
    tc.diagnostic(`VMs with a network after the kill: ${infos.length}`);
    assert.ok(infos.length >= 2, 'the VMs set up before the kill kept their networks');
    // Nothing half-made is left: every TAP belongs to a VM with a network, every lease to such a VM.
    const taps = t
      .ipJson<{ ifname: string }[]>('-d', 'link', 'show', 'type', 'tun')
      .map((l) => l.ifname)
      .sort();
    assert.deepEqual(taps, infos.map((i) => i.tap).sort());
    const owners: string[] = [];
    for (const pool of await m.store.leases.pools())
      owners.push(...(await m.store.leases.leases(pool)).values());
    assert.deepEqual(owners.sort(), infos.map((i) => i.vmId).sort());
    // The survivors boot on their persistent TAPs (QEMU opens them by name) and answer from the host side.
    vms.push(
      ...(await Promise.all(
        infos.map((info) => QemuVm.start({ name: info.vmId, network: { mode: 'name', info } })),
      )),
    );
    for (const v of vms)
      assert.equal(await httpGetIn(t.name, `http://${v.ipv4}/`), `200 tapnet guest ${v.name}`);
  });
});
