// CNI mode with a managed namespace (config `netns`): the exec'd plugins (bridge, host-local) are started
// by posix_spawn inside that namespace, so their "host" side (the bridge, the veth host ends) lands there,
// not in this process's namespace; tc-redirect-tap still runs in-process in the VM's namespace.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NetworkManager } from '../../src/manager/manager.js';
import { findLink, getLink, listLinks } from '../../src/net/link.js';
import { listNetns, openNetns } from '../../src/net/netns.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { unreapedChildren } from '../../src/sys/spawn.js';
import { firecrackerCniNetworks } from '../helpers/cni-network.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip =
  privSkipReason() ??
  (existsSync('/usr/lib/cni/bridge') ? undefined : 'containernetworking-plugins is not installed');

describe('NetworkManager in CNI mode inside a managed namespace', { skip }, () => {
  let dir: string;
  let t: TestNetns;
  let m: NetworkManager;
  const bridge = `sbr${process.pid % 100000}`;
  const prefix = `scni${process.pid % 100000}`;
  const here = NetlinkSocket.open();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tapnet-spawn-cni-'));
    t = makeTestNetns('mgrcni');
    m = await NetworkManager.open({
      stateDir: join(dir, 'state'),
      netns: `/run/netns/${t.name}`,
      defaultNetwork: 'fc',
      networks: firecrackerCniNetworks(dir, {
        subnet: '198.18.61.0/24',
        bridge,
        netnsPrefix: prefix,
        ipMasq: false,
      }),
    });
  });
  after(async () => {
    await m?.close();
    t?.destroy();
    here.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("ensure: the bridge and the veth's host end are in the manager's namespace, not in ours", async () => {
    const info = await m.ensure('vm-1');
    assert.equal(info.gateway4, '198.18.61.1');
    const br = getLink(t.nl, bridge);
    assert.equal(br.kind, 'bridge');
    assert.equal(listLinks(t.nl, { master: br.index }).length, 1, 'one veth host end on the bridge');
    assert.equal(findLink(here, bridge), undefined, 'nothing in the process’s own namespace');
    const ns = openNetns(info.netns!);
    const nl = NetlinkSocket.open({ nsFd: ns.fd });
    try {
      assert.equal(getLink(nl, info.tap).kind, 'tun');
    } finally {
      nl.close();
      ns.close();
    }
    assert.equal(m.cni.lastTiming?.invocations.find((i) => i.type === 'bridge')?.inProcess, false);
    assert.ok((m.cni.lastTiming?.spawnMs ?? 0) > 0, 'bridge and host-local were exec’d and timed');
  });

  it('release: DEL in the same namespace removes the veth; nothing left unreaped', async () => {
    await m.release('vm-1');
    assert.equal(listLinks(t.nl, { master: getLink(t.nl, bridge).index }).length, 0);
    assert.ok(!listNetns().includes(`${prefix}-vm-1`));
    assert.equal(unreapedChildren(), 0);
  });
});
