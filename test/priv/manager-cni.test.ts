import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isTapnetError } from '../../src/errors.js';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { NetworkManager } from '../../src/manager/manager.js';
import { deleteLink, findLink, getLink, listLinks } from '../../src/net/link.js';
import { createNetns, deleteNetns, isNetnsMounted, listNetns, openNetns } from '../../src/net/netns.js';
import { closeTapFds } from '../../src/net/tap.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { firecrackerCniNetworks } from '../helpers/cni-network.js';
import { privSkipReason } from '../helpers/priv.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '../fixtures');
const skip =
  privSkipReason() ??
  (existsSync('/usr/lib/cni/bridge') ? undefined : 'containernetworking-plugins is not installed');

function runChild(args: string[], fd: number): Promise<string> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit', fd] });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  return new Promise((resolve) => child.on('exit', () => resolve(out.trim())));
}

describe('NetworkManager in CNI mode: per-VM namespace, bridge → tc-redirect-tap (in-process)', {
  skip,
}, () => {
  let dir: string;
  let m: NetworkManager;
  let config: ManagerConfigInput;
  const bridge = `tcni${process.pid % 100000}`;
  const prefix = `tcni${process.pid % 100000}`;
  // The plugins' host side is this process's namespace: the private one `npm test` runs in.
  const host = NetlinkSocket.open();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapnet-cni-'));
    config = {
      stateDir: join(dir, 'state'),
      defaultNetwork: 'fc',
      networks: firecrackerCniNetworks(dir, { subnet: '198.18.60.0/24', bridge, netnsPrefix: prefix }),
    };
    m = await NetworkManager.open(config);
  });
  after(async () => {
    await m?.close();
    deleteLink(host, bridge);
    host.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('ensure creates the namespace, runs ADD and answers like direct mode', async () => {
    const info = await m.ensure('fc-1');
    assert.equal(info.mode, 'cni');
    assert.equal(info.netns, `/run/netns/${prefix}-fc-1`);
    assert.ok(listNetns().includes(`${prefix}-fc-1`));
    assert.match(info.ipv4!, /^198\.18\.60\.\d+\/24$/);
    assert.equal(info.gateway4, '198.18.60.1');
    assert.match(info.tap, /^tap\d+$/);
    const ns = openNetns(info.netns!);
    const nl = NetlinkSocket.open({ nsFd: ns.fd });
    try {
      const tap = getLink(nl, info.tap);
      assert.equal(tap.kind, 'tun');
      assert.equal(getLink(nl, 'eth0').mac, info.mac, "the VM uses the veth's MAC");
      assert.equal(info.mtu, tap.mtu);
    } finally {
      nl.close();
      ns.close();
    }
    assert.ok(getLink(host, bridge).kind === 'bridge');
    const again = await m.ensure('fc-1');
    assert.equal(again.ipv4, info.ipv4);
    assert.equal(
      readdirSync(join(dir, 'cache', 'results')).length,
      1,
      'the libcni result cache holds the attachment',
    );
  });

  it('a frame written into the TAP fd reaches the bridge and the answer comes back', async () => {
    const info = await m.ensure('fc-2', { tap: 'fd' });
    assert.equal(info.tapFds?.length, 1);
    const ip = info.ipv4!.split('/')[0]!;
    const out = await runChild(
      [join(fixtures, 'tap-arp-child.js'), info.mac, ip, '198.18.60.1'],
      info.tapFds![0]!,
    );
    assert.equal(out, `reply ${getLink(host, bridge).mac}`);
    await closeTapFds(info.tapFds!);
  });

  it('release runs DEL and removes the namespace; a second release is a no-op', async () => {
    await m.release('fc-1');
    await m.release('fc-1');
    assert.ok(!listNetns().includes(`${prefix}-fc-1`));
    assert.equal(await m.get('fc-1'), undefined);
    assert.equal(readdirSync(join(dir, 'cache', 'results')).filter((f) => f.includes('fc-1')).length, 0);
  });

  it('refuses static addresses in CNI mode and leaves nothing behind', async () => {
    await assert.rejects(m.ensure('fc-3', { ipv4: '198.18.60.9' }), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.ok(!listNetns().includes(`${prefix}-fc-3`));
  });

  it('reconcile runs DEL for a namespace a crash left without a record', async () => {
    // What a crash between creating the namespace and writing the record leaves: a namespace.
    createNetns(`${prefix}-ghost`).close();
    const report = await m.reconcile();
    assert.deepEqual(report.orphanNetns, [`${prefix}-ghost`]);
    assert.ok(!listNetns().includes(`${prefix}-ghost`));
  });

  it('reconcile removes a namespace file a crash left unmounted (killed inside createNetns)', async () => {
    // The window between creating /run/netns/<name> and bind-mounting the namespace on it: a plain
    // file, which the plugins refuse ("unknown FS magic") unless it is treated as a namespace gone.
    writeFileSync(`/run/netns/${prefix}-halfmade`, '');
    assert.equal(isNetnsMounted(`${prefix}-halfmade`), false);
    const report = await m.reconcile();
    assert.deepEqual(report.errors, []);
    assert.deepEqual(report.orphanNetns, [`${prefix}-halfmade`]);
    assert.ok(!listNetns().includes(`${prefix}-halfmade`));
    // And ensure of a VM whose name a half-made file holds starts clean.
    writeFileSync(`/run/netns/${prefix}-fc-5`, '');
    const info = await m.ensure('fc-5');
    assert.equal(isNetnsMounted(`${prefix}-fc-5`), true);
    await m.release(info.vmId);
  });

  it('reconcile releases a VM whose namespace was deleted behind its back (DEL frees the host-local lease)', async () => {
    const info = await m.ensure('fc-4');
    deleteNetns(`${prefix}-fc-4`);
    const report = await m.reconcile();
    assert.ok(report.incompleteRecords.includes('fc-4'));
    assert.equal(await m.get('fc-4'), undefined);
    const leases = readdirSync(join(dir, 'ipam', 'fcnet')).filter((f) => /^\d/.test(f));
    assert.ok(!leases.includes(info.ipv4!.split('/')[0]!), 'host-local lease freed');
  });

  it('leaves nothing once everything is released', async () => {
    await m.releaseMany((await m.list()).map((i) => i.vmId));
    assert.deepEqual(
      listNetns().filter((n) => n.startsWith(prefix)),
      [],
    );
    assert.equal(
      listLinks(host, { master: getLink(host, bridge).index }).length,
      0,
      'no veth left on the bridge',
    );
    assert.equal(findLink(host, 'nothing'), undefined);
  });
});
