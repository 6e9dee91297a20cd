import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import type { PolicyEntry } from '../../src/firewall/types.js';
import { ifbName } from '../../src/manager/limits.js';
import { NetworkManager } from '../../src/manager/manager.js';
import { findLink } from '../../src/net/link.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const ownedBy = (p: PolicyEntry, tap: string, cidr: string): boolean =>
  'ifname' in p ? p.ifname === tap : p.address === cidr.split('/')[0];
const WEB = {
  default: 'deny',
  rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80, 443], action: 'allow', priority: 100 }],
};

describe('NetworkManager: per-VM policies and bandwidth limits', { skip }, () => {
  let t: TestNetns;
  let dir: string;
  let m: NetworkManager;
  before(async () => {
    t = makeTestNetns('mpol');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-mpol-'));
    m = await NetworkManager.open({
      stateDir: dir,
      netns: t.ns.path,
      defaultNetwork: 'p',
      networks: {
        p: {
          bridge: 'tnpol0',
          subnet4: '198.18.80.0/24',
          policy: {
            default: 'allow',
            rules: [{ direction: 'egress', protocol: 'tcp', ports: [25], action: 'deny' }],
          },
        },
      },
    });
  });
  after(async () => {
    await m?.close();
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('ensure installs the policy and the limits; the answer and the record carry them', async () => {
    const info = await m.ensure('web', {
      policy: WEB,
      bandwidth: { rx: { rateBps: 2_000_000 }, tx: { rateBps: 1_000_000 } },
    });
    assert.deepEqual((info.policy as { default: string }).default, 'deny');
    assert.equal(info.bandwidth?.rx?.rateBps, 2_000_000);
    assert.ok(
      m.firewall.listPolicies().some((p) => ownedBy(p, info.tap, info.ipv4!)),
      'policy installed for the VM',
    );
    const tbf = JSON.parse(
      execFileSync('tc', ['-n', t.name, '-j', 'qdisc', 'show', 'dev', info.tap], { encoding: 'utf8' }),
    ) as { kind: string }[];
    assert.ok(
      tbf.some((q) => q.kind === 'tbf'),
      'shaping towards the guest',
    );
    assert.ok(findLink(t.nl, ifbName(info.tap)), 'an IFB shapes what the guest sends');
    assert.deepEqual(await m.getPolicy('web'), info.policy);
  });

  it('changes the policy and the limits live, and removes them', async () => {
    const upd = await m.setPolicy('web', { default: 'allow', rules: [] });
    assert.equal((upd.policy as { default: string }).default, 'allow');
    const none = await m.setPolicy('web', null);
    assert.equal(none.policy, undefined);
    const bw = await m.setBandwidth('web', null);
    assert.equal(bw.bandwidth, undefined);
    assert.equal(findLink(t.nl, ifbName(bw.tap)), undefined);
  });

  it('refuses a bad policy with the exact field before touching anything', async () => {
    await assert.rejects(
      m.ensure('bad', {
        policy: {
          default: 'deny',
          rules: [{ direction: 'ingress', protocol: 'tcp', ports: ['80; flush ruleset'], action: 'allow' }],
        },
      }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT') && /rules\[0\]\.ports\[0\]/.test(e.message),
    );
    assert.equal(await m.get('bad'), undefined);
  });

  it('release removes the policy, the limits and the IFB', async () => {
    const info = await m.ensure('web2', { policy: WEB, bandwidth: { tx: { rateBps: 1_000_000 } } });
    await m.release('web2', { wait: true });
    assert.ok(!m.firewall.listPolicies().some((p) => ownedBy(p, info.tap, info.ipv4!)));
    assert.equal(findLink(t.nl, ifbName(info.tap)), undefined);
    await m.release('web');
  });
});
