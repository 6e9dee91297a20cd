/**
 * A real microVM in CNI mode: tapnet creates the VM's namespace and runs Debian's bridge plugin (host-local
 * IPAM) → tapnet's tc-redirect-tap (in-process); QEMU runs inside the namespace and opens the TAP by name.
 * The host side is this test process's namespace (the private one `npm test` runs in).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetworkManager } from '../../src/manager/manager.js';
import type { NetworkInfo } from '../../src/manager/types.js';
import { deleteLink } from '../../src/net/link.js';
import { listNetns } from '../../src/net/netns.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { guestFixtureSkipReason } from '../../src/vm/fixture.js';
import { QemuVm } from '../../src/vm/qemu.js';
import { firecrackerCniNetworks } from '../helpers/cni-network.js';
import { privSkipReason } from '../helpers/priv.js';

const skip =
  privSkipReason() ??
  (existsSync('/usr/lib/cni/bridge') ? undefined : 'containernetworking-plugins is not installed') ??
  (existsSync('/usr/bin/qemu-system-x86_64') ? undefined : 'qemu-system-x86_64 is not installed') ??
  guestFixtureSkipReason();

function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: 5000 }, (r) => {
      let b = '';
      r.on('data', (d) => {
        b += d;
      });
      r.on('end', () => resolve(b.trim()));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

describe('a microVM in CNI mode (bridge → tc-redirect-tap, QEMU inside the namespace)', { skip }, () => {
  let dir: string;
  let m: NetworkManager;
  let vm: QemuVm | undefined;
  let info: NetworkInfo;
  const bridge = `tvcni${process.pid % 10000}`;
  const prefix = `tvcni${process.pid % 10000}`;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapnet-vmcni-'));
    m = await NetworkManager.open({
      stateDir: join(dir, 'state'),
      defaultNetwork: 'fc',
      networks: firecrackerCniNetworks(dir, { subnet: '198.18.70.0/24', bridge, netnsPrefix: prefix }),
    });
  });
  after(async () => {
    await vm?.stop().catch(() => undefined);
    await m?.releaseMany(['cni-vm']).catch(() => undefined);
    await m?.close();
    const nl = NetlinkSocket.open();
    deleteLink(nl, bridge);
    nl.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('boots and answers HTTP from the host side', async () => {
    info = await m.ensure('cni-vm');
    assert.equal(info.mode, 'cni');
    vm = await QemuVm.start({
      name: 'cni-vm',
      network: {
        mode: 'cni',
        netns: info.netns!,
        guest: {
          vmId: 'cni-vm',
          ifname: info.tap,
          mac: info.mac,
          ipv4: info.ipv4!,
          gateway4: info.gateway4!,
          dns: info.dns,
          mtu: info.mtu,
        },
      },
    });
    assert.equal(await httpGet(`http://${info.ipv4!.split('/')[0]}/`), 'tapnet guest cni-vm');
  });

  it('release after QEMU is killed abruptly removes the namespace and the host-local lease', async () => {
    vm!.kill('SIGKILL');
    await vm!.exited;
    vm = undefined;
    await m.release('cni-vm');
    assert.ok(!listNetns().includes(`${prefix}-cni-vm`));
    assert.equal(await m.get('cni-vm'), undefined);
    assert.ok(!existsSync(join(dir, 'ipam', 'fcnet', info.ipv4!.split('/')[0]!)), 'host-local lease freed');
  });
});
