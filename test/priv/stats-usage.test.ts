/**
 * The usage export against the kernel: a VM's TAP deleted behind tapnet's back and re-created by
 * reconcile starts its counters from zero, yet the VM's totals keep growing and never go back — also when
 * the new TAP's counters overtake the old ones before the next sample, across a restart (new manager and
 * ledger over the same state), and while the TAP is missing. Releasing through the service samples the
 * last traffic first; the final totals stay until collected.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LoadedConfig } from '../../src/config/load.js';
import { ManagerService } from '../../src/daemon/service.js';
import { isTapnetError } from '../../src/errors.js';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { NetworkManager } from '../../src/manager/manager.js';
import { deleteLink, getLink } from '../../src/net/link.js';
import { closeTapFds, openTap } from '../../src/net/tap.js';
import { type UsageEntry, UsageLedger } from '../../src/observe/usage.js';
import { ethernet, ipv4Udp } from '../helpers/packets.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const VNET_HDR = Buffer.alloc(10);

describe('usage survives re-created TAPs, restarts and release', { skip }, () => {
  let t: TestNetns;
  let dir: string;
  let config: ManagerConfigInput;
  let m: NetworkManager;
  let ledger: UsageLedger;
  let fd: number | undefined;
  let sent = 0;
  let lastTotal = 0;

  let vmMac = '';
  let vmIp = '';
  /** Play the guest: `n` UDP frames of `size` payload bytes into the TAP (after a virtio-net header). */
  function send(n: number, size: number): void {
    const frame = ethernet(
      getLink(t.nl, 'tnus0').mac!,
      vmMac,
      0x0800,
      ipv4Udp(vmIp, '198.18.32.1', 40000, 9, Buffer.alloc(size)),
    );
    for (let i = 0; i < n; i++) writeSync(fd!, Buffer.concat([VNET_HDR, frame]));
    sent += n * frame.length;
  }
  async function attach(): Promise<void> {
    if (fd !== undefined) await closeTapFds([fd]);
    const info = (await m.get('vm1'))!;
    fd = openTap(info.tap, { nsFd: t.ns.fd, vnetHdr: true }).fds[0]!;
  }
  async function detach(): Promise<void> {
    if (fd !== undefined) await closeTapFds([fd]);
    fd = undefined;
  }
  /** Sample; the totals must never go back. */
  async function sample(): Promise<UsageEntry> {
    const r = await ledger.sample(m);
    assert.deepEqual(r.problems, []);
    const e = r.vms.find((v) => v.vmId === 'vm1')!;
    const total = e.guestRx.bytes + e.guestTx.bytes;
    assert.ok(total >= lastTotal, `totals went back: ${lastTotal} → ${total}`);
    lastTotal = total;
    return e;
  }

  before(async () => {
    t = makeTestNetns('usage');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-usage-'));
    config = {
      stateDir: dir,
      netns: t.ns.path,
      defaultNetwork: 'vms',
      networks: { vms: { topology: 'bridge', bridge: 'tnus0', subnet4: '198.18.32.0/24' } },
    };
    m = await NetworkManager.open(config);
    ledger = new UsageLedger(dir);
    const info = await m.ensure('vm1');
    vmMac = info.mac;
    vmIp = info.ipv4!.split('/')[0]!;
    await attach();
  });
  after(async () => {
    await detach();
    await m?.close();
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts what the guest sent, exactly', async () => {
    send(10, 100);
    const e = await sample();
    assert.equal(e.guestTx.bytes, sent);
    assert.equal(e.guestTx.packets, 10);
    assert.equal(e.resets, 0);
    assert.equal(e.state, 'active');
  });

  it('TAP deleted behind tapnet’s back, re-created by reconcile, more traffic than before: totals keep growing', async () => {
    await detach();
    const tap = (await m.get('vm1'))!.tap;
    const oldIndex = getLink(t.nl, tap).index;
    deleteLink(t.nl, tap);
    // While the TAP is missing: nothing to read, totals stay.
    const missing = await sample();
    assert.equal(missing.guestTx.bytes, sent);
    const report = await m.reconcile();
    assert.deepEqual(report.recreatedTaps, [tap]);
    assert.notEqual(getLink(t.nl, tap).index, oldIndex, 'a new device');
    await attach();
    // More than the old TAP ever counted: the counters alone cannot show the reset, the epoch does.
    send(30, 300);
    const e = await sample();
    assert.equal(e.guestTx.bytes, sent, 'old TAP + new TAP');
    assert.equal(e.guestTx.packets, 40);
    assert.equal(e.resets, 1);
  });

  it('a restart (new manager, new ledger, same state) continues the totals', async () => {
    await detach();
    await m.close();
    m = await NetworkManager.open(config);
    ledger = new UsageLedger(dir);
    await attach();
    send(5, 50);
    const e = await sample();
    assert.equal(e.guestTx.bytes, sent);
    assert.equal(e.resets, 1, 'same TAP: no reset');
  });

  it('release through the service samples the last traffic first; collected once, then gone', async () => {
    send(3, 1000); // never sampled before the release
    await detach();
    const service = new ManagerService(m, {} as LoadedConfig);
    await service.release('vm1');
    assert.equal(await m.get('vm1'), undefined);
    const report = await service.usage();
    const e = report.vms.find((v) => v.vmId === 'vm1')!;
    assert.equal(e.state, 'released');
    assert.equal(e.guestTx.bytes, sent, 'the last frames are in the final totals');
    assert.ok(e.releasedAt);
    assert.ok((await service.usage({ since: '1h' })).vms.some((v) => v.vmId === 'vm1'));
    const final = await service.collectUsage('vm1');
    assert.deepEqual(final, e);
    await assert.rejects(service.collectUsage('vm1'), (err) => isTapnetError(err, 'ERR_NOT_FOUND'));
    assert.ok(!existsSync(join(dir, 'usage', 'vm1.json')));
  });

  it('a VM that still has a network cannot be collected', async () => {
    await m.ensure('vm2');
    const service = new ManagerService(m, {} as LoadedConfig);
    await service.usage();
    await assert.rejects(service.collectUsage('vm2'), (err) => isTapnetError(err, 'ERR_CONFLICT'));
    await service.release('vm2');
    assert.equal((await service.collectUsage('vm2')).state, 'released');
  });
});
