import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { normalizeNetwork } from '../../src/firewall/model.js';
import { antispoofRules, spoofedRules } from '../../src/firewall/rules.js';
import {
  concatPairs,
  networksOf,
  parseSnapshot,
  portsOf,
  prefixElems,
  tablesPresent,
} from '../../src/firewall/state.js';
import { firewallStatus } from '../../src/firewall/status.js';
import type { FirewallNetwork } from '../../src/firewall/types.js';
import type { NftDocument, NftJson, NftObject } from '../../src/sys/nftables.js';

const NET: FirewallNetwork = {
  name: 'n1',
  topology: 'bridge',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/24',
  nat: true,
  isolate: true,
};

const rule = (family: string, chain: string, expr: NftJson[]): NftObject => ({
  rule: { family, table: 'tapnet', chain, handle: 1, expr },
});
const counter = (family: string, name: string, packets = 0): NftObject => ({
  counter: { family, name, table: 'tapnet', handle: 2, packets, bytes: packets * 60 },
});

/** `nft -j list table` output for both tables, shaped as libnftables 1.0.6 prints it. */
function listing(): NftDocument {
  const objs: NftObject[] = [];
  for (const family of ['inet', 'bridge']) {
    objs.push(
      { table: { family, name: 'tapnet', handle: 1 } },
      counter(family, 'unregistered', family === 'bridge' ? 3 : 0),
      counter(family, 'spoof_n1', family === 'bridge' ? 5 : 0),
      { set: { family, name: 'vm_mac', table: 'tapnet', type: ['ifname', 'ether_addr'], handle: 3 } },
      { set: { family, name: 'vm_ip4', table: 'tapnet', type: ['ifname', 'ipv4_addr'], handle: 4 } },
      { set: { family, name: 'vm_ip6', table: 'tapnet', type: ['ifname', 'ipv6_addr'], handle: 5 } },
      { map: { family, name: 'vm_counter', table: 'tapnet', type: 'ifname', handle: 6, map: 'counter' } },
      { chain: { family, table: 'tapnet', name: 'spoofed', handle: 7 } },
      { chain: { family, table: 'tapnet', name: 'antispoof', handle: 8 } },
      {
        chain: {
          family,
          table: 'tapnet',
          name: 'guard_tn',
          handle: 9,
          type: 'filter',
          hook: 'prerouting',
          prio: family === 'bridge' ? -200 : -300,
          policy: 'accept',
        },
      },
      ...spoofedRules().map((r) => rule(family, 'spoofed', r)),
      ...antispoofRules(family as 'inet' | 'bridge').map((r) => rule(family, 'antispoof', r)),
    );
  }
  // Elements of the bridge table: a live port, and a leftover address without a counter entry.
  const bridge = objs.filter(
    (o) =>
      (o.set as { family?: string })?.family === 'bridge' ||
      (o.map as { family?: string })?.family === 'bridge',
  );
  const set = (name: string) => bridge.find((o) => ((o.set ?? o.map) as { name: string }).name === name)!;
  (set('vm_mac').set as Record<string, NftJson>).elem = [
    { concat: ['tn1', '02:00:00:00:00:01'] },
    { elem: { val: { concat: ['tn9', '02:00:00:00:00:09'] }, counter: { packets: 0, bytes: 0 } } },
  ];
  (set('vm_ip4').set as Record<string, NftJson>).elem = [{ concat: ['tn1', '198.18.0.1'] }];
  (set('vm_counter').map as Record<string, NftJson>).elem = [['tn1', 'spoof_n1']];
  objs.push(
    counter('inet', 'isolate_n1', 2),
    {
      set: {
        family: 'inet',
        name: 'subnets4',
        table: 'tapnet',
        type: 'ipv4_addr',
        flags: ['interval'],
        elem: [{ prefix: { addr: '198.18.0.0', len: 24 } }],
      },
    },
    {
      chain: {
        family: 'inet',
        table: 'tapnet',
        name: 'fwd_n1',
        type: 'filter',
        hook: 'forward',
        prio: 0,
        policy: 'accept',
      },
    },
    {
      chain: {
        family: 'inet',
        table: 'tapnet',
        name: 'post_n1',
        type: 'nat',
        hook: 'postrouting',
        prio: 100,
        policy: 'accept',
      },
    },
    rule('inet', 'fwd_n1', [{ counter: 'isolate_n1' }, { drop: null }]),
    rule('inet', 'post_n1', [{ masquerade: null }]),
    // Someone else's table: ignored.
    { table: { family: 'inet', name: 'filter', handle: 9 } },
    { chain: { family: 'inet', table: 'filter', name: 'spoof_n1', handle: 1 } },
  );
  return { nftables: objs };
}

describe('firewall state from nft listings', () => {
  it('sees which of our tables exist, from tables or from any listed object', () => {
    assert.deepEqual(tablesPresent(listing()), { inet: true, bridge: true });
    assert.deepEqual(
      tablesPresent({ nftables: [{ chain: { family: 'bridge', table: 'tapnet', name: 'x' } }] }),
      {
        inet: false,
        bridge: true,
      },
    );
    assert.deepEqual(tablesPresent({ nftables: [{ table: { family: 'ip', name: 'tapnet' } }] }), {
      inet: false,
      bridge: false,
    });
  });

  it('folds objects of our tables only', () => {
    const snap = parseSnapshot(listing(), { inet: true, bridge: true });
    assert.ok(snap.inet.chains.has('post_n1'));
    assert.ok(!snap.inet.chains.has('spoof_n1'), 'a chain of another table');
    assert.deepEqual(snap.bridge.chains.get('guard_tn'), { type: 'filter', hook: 'prerouting', prio: -200 });
    assert.deepEqual(snap.bridge.counters.get('spoof_n1'), { packets: 5, bytes: 300 });
    assert.equal(snap.inet.rules.get('post_n1')?.length, 1);
    assert.deepEqual([...networksOf(snap)], ['n1']);
  });

  it('reads elements, with or without per-element extras', () => {
    assert.deepEqual(
      concatPairs([
        { concat: ['a', 'b'] },
        { elem: { val: { concat: ['c', 'd'] } } },
        'junk',
        { concat: [1, 2] },
      ]),
      [
        ['a', 'b'],
        ['c', 'd'],
      ],
    );
    assert.deepEqual(prefixElems([{ prefix: { addr: '198.18.0.0', len: 24 } }, '198.18.1.1', 'fd00::1']), [
      '198.18.0.0/24',
      '198.18.1.1/32',
      'fd00::1/128',
    ]);
  });

  it('lists ports with their network, and leftovers without one', () => {
    const ports = portsOf(parseSnapshot(listing(), { inet: true, bridge: true }));
    assert.deepEqual(ports, [
      {
        network: 'n1',
        ifname: 'tn1',
        topology: 'bridge',
        macs: ['02:00:00:00:00:01'],
        ipv4: ['198.18.0.1'],
        ipv6: [],
      },
      {
        network: undefined,
        ifname: 'tn9',
        topology: 'bridge',
        macs: ['02:00:00:00:00:09'],
        ipv4: [],
        ipv6: [],
      },
    ]);
  });
});

describe('firewall status', () => {
  it('is ok when everything of the network is there, and counts drops', () => {
    const st = firewallStatus(parseSnapshot(listing(), { inet: true, bridge: true }), [
      normalizeNetwork(NET),
    ]);
    assert.deepEqual(st.problems, []);
    assert.equal(st.ok, true);
    assert.deepEqual(st.unregisteredDrops, { packets: 3, bytes: 180 });
    assert.deepEqual(st.networks, [
      {
        name: 'n1',
        topology: 'bridge',
        ok: true,
        nat: true,
        isolated: true,
        ports: 1,
        drops: { spoof: { packets: 5, bytes: 300 }, isolate: { packets: 2, bytes: 120 } },
        problems: [],
      },
    ]);
  });

  it('names what is missing or different', () => {
    const doc = listing();
    doc.nftables = doc.nftables.filter((o) => {
      const r = o.rule as { chain?: string } | undefined;
      return r?.chain !== 'post_n1' && r?.chain !== 'antispoof';
    });
    const expected = [
      normalizeNetwork({ ...NET, isolate: false }),
      normalizeNetwork({ ...NET, name: 'n2', tapPrefix: 'tx', subnet4: '198.18.1.0/24' }),
    ];
    const st = firewallStatus(parseSnapshot(doc, { inet: true, bridge: true }), expected);
    assert.equal(st.ok, false);
    assert.ok(st.problems.some((p) => p.includes('antispoof')));
    const [n1, n2] = st.networks;
    assert.deepEqual(n1?.problems, [
      'NAT (masquerade) rule is missing',
      'isolation is on but not configured',
    ]);
    assert.ok(n2?.problems.includes('counter inet spoof_n2 is missing'));
    assert.ok(n2?.problems.includes('chain bridge tapnet guard_tx is missing'));
  });

  it('reports missing tables', () => {
    const st = firewallStatus(parseSnapshot({ nftables: [] }, { inet: false, bridge: false }), [
      normalizeNetwork(NET),
    ]);
    assert.deepEqual(st.tables, { inet: false, bridge: false });
    assert.deepEqual(st.problems, ['table inet tapnet is missing', 'table bridge tapnet is missing']);
    assert.equal(st.networks[0]?.ok, false);
  });
});
