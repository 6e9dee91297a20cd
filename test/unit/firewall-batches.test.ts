import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  buildAddPorts,
  buildDestroy,
  buildEnsureNetwork,
  buildRemoveNetwork,
  buildRemovePorts,
  vmElements,
} from '../../src/firewall/batches.js';
import { normalizeNetwork, normalizeVm } from '../../src/firewall/model.js';
import { bridgeAntispoofRules, inetAntispoofRules, natRules } from '../../src/firewall/rules.js';
import { emptyFamily, emptySnapshot, type Snapshot } from '../../src/firewall/state.js';
import type { FirewallNetwork } from '../../src/firewall/types.js';
import type { NftDocument, NftJson, NftObject } from '../../src/sys/nftables.js';

const NET: FirewallNetwork = {
  name: 'n1',
  topology: 'bridge',
  bridge: 'tn-n1',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/24',
  subnet6: 'fd00:1::/64',
  nat: true,
  isolate: true,
};
const spec = normalizeNetwork(NET);

type Cmd = { verb: string; kind: string; body: Record<string, NftJson> };
/** Commands as {verb, kind, body}, for readable assertions. */
function cmds(doc: NftDocument): Cmd[] {
  return doc.nftables.map((o: NftObject) => {
    const [verb, inner] = Object.entries(o)[0]!;
    const [kind, body] = Object.entries(inner as Record<string, NftJson>)[0]!;
    return { verb, kind, body: body as Record<string, NftJson> };
  });
}
const find = (doc: NftDocument, verb: string, kind: string, family: string, name: string) =>
  cmds(doc).findIndex(
    (c) => c.verb === verb && c.kind === kind && c.body.family === family && c.body.name === name,
  );
const rulesOf = (doc: NftDocument, family: string, chain: string) =>
  cmds(doc)
    .filter(
      (c) => c.verb === 'add' && c.kind === 'rule' && c.body.family === family && c.body.chain === chain,
    )
    .map((c) => c.body.expr);

const vm = (i: number, net = spec) =>
  normalizeVm(
    {
      network: net.name,
      ifname: `tn${i.toString(16).padStart(4, '0')}`,
      mac: `02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      ipv4: `198.18.0.${i & 255}`,
      ipv6: `fd00:1::${i.toString(16)}`,
    },
    net,
  );

describe('ensureNetwork batch', () => {
  const doc = buildEnsureNetwork(spec, emptySnapshot());

  it('creates only tapnet tables, in both families, and touches nothing else', () => {
    const all = cmds(doc);
    assert.deepEqual(all[0], { verb: 'add', kind: 'table', body: { family: 'inet', name: 'tapnet' } });
    for (const c of all) {
      assert.ok(['add', 'flush', 'delete'].includes(c.verb), c.verb);
      assert.ok(c.kind !== 'ruleset', 'never the ruleset');
      assert.ok(c.body.family === 'inet' || c.body.family === 'bridge', JSON.stringify(c.body));
      assert.equal(c.kind === 'table' ? c.body.name : c.body.table, 'tapnet');
    }
    assert.ok(!all.some((c) => c.verb === 'delete'), 'nothing to remove on an empty ruleset');
  });

  it('guards TAPs of the prefix in bridge prerouting (-200) and inet prerouting (raw, -300)', () => {
    const guard = (family: string) =>
      cmds(doc).find((c) => c.kind === 'chain' && c.body.family === family && c.body.name === 'guard_tn');
    assert.deepEqual(guard('bridge')?.body, {
      family: 'bridge',
      table: 'tapnet',
      name: 'guard_tn',
      type: 'filter',
      hook: 'prerouting',
      prio: -200,
      policy: 'accept',
    });
    assert.equal(guard('inet')?.body.prio, -300);
    assert.deepEqual(rulesOf(doc, 'bridge', 'guard_tn'), [
      [
        { match: { op: '==', left: { meta: { key: 'iifkind' } }, right: 'tun' } },
        { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'tn*' } },
        { jump: { target: 'antispoof' } },
      ],
    ]);
  });

  it('rebuilds every chain atomically: add, flush, then its rules', () => {
    for (const [family, chain] of [
      ['bridge', 'antispoof'],
      ['inet', 'antispoof'],
      ['bridge', 'spoofed'],
      ['inet', 'fwd_n1'],
      ['inet', 'post_n1'],
    ]) {
      const add = find(doc, 'add', 'chain', family!, chain!);
      const flush = find(doc, 'flush', 'chain', family!, chain!);
      const firstRule = cmds(doc).findIndex(
        (c) => c.kind === 'rule' && c.body.family === family && c.body.chain === chain,
      );
      assert.ok(
        add >= 0 && add < flush && flush < firstRule,
        `${family} ${chain}: ${add} ${flush} ${firstRule}`,
      );
    }
    assert.equal(rulesOf(doc, 'bridge', 'antispoof').length, bridgeAntispoofRules().length);
    assert.equal(rulesOf(doc, 'inet', 'antispoof').length, inetAntispoofRules().length);
  });

  it('pins the source MAC, ARP sender and IP source to the port, with counted drops', () => {
    const [first, arpMac, arpIp] = rulesOf(doc, 'bridge', 'antispoof') as NftJson[][];
    const iifnameDot = (protocol: string, field: string) => ({
      concat: [{ meta: { key: 'iifname' } }, { payload: { protocol, field } }],
    });
    assert.deepEqual(first, [
      { match: { op: '!=', left: iifnameDot('ether', 'saddr'), right: '@vm_mac' } },
      { goto: { target: 'spoofed' } },
    ]);
    assert.deepEqual(arpMac?.[1], {
      match: { op: '!=', left: iifnameDot('arp', 'saddr ether'), right: '@vm_mac' },
    });
    assert.deepEqual(arpIp?.[2], {
      match: { op: '!=', left: iifnameDot('arp', 'saddr ip'), right: '@vm_ip4' },
    });
    const rules = JSON.stringify(rulesOf(doc, 'bridge', 'antispoof'));
    for (const needle of ['"@vm_ip4"', '"@vm_ip6"', '"nd-router-advert"', '"fe80::"'])
      assert.ok(rules.includes(needle), needle);
    assert.deepEqual(rulesOf(doc, 'bridge', 'spoofed'), [
      [{ counter: { map: { key: { meta: { key: 'iifname' } }, data: '@vm_counter' } } }, { drop: null }],
      [{ counter: 'unregistered' }, { drop: null }],
    ]);
    // The last bridge rule drops every other ethertype (VLAN tags included).
    assert.deepEqual(rulesOf(doc, 'bridge', 'antispoof').at(-1), [{ goto: { target: 'spoofed' } }]);
  });

  it('records the subnet, adds it to the shared set, isolates and masquerades', () => {
    const net4 = cmds(doc).find((c) => c.verb === 'add' && c.kind === 'element' && c.body.name === 'net4_n1');
    assert.deepEqual(net4?.body.elem, [{ concat: ['198.18.0.0', '255.255.255.0'] }]);
    const all4 = cmds(doc).find(
      (c) => c.verb === 'add' && c.kind === 'element' && c.body.name === 'subnets4',
    );
    assert.deepEqual(all4?.body.elem, [{ prefix: { addr: '198.18.0.0', len: 24 } }]);
    assert.deepEqual(rulesOf(doc, 'inet', 'post_n1'), natRules(spec));
    assert.deepEqual(rulesOf(doc, 'inet', 'post_n1')[0], [
      {
        match: {
          op: '==',
          left: { payload: { protocol: 'ip', field: 'saddr' } },
          right: { prefix: { addr: '198.18.0.0', len: 24 } },
        },
      },
      {
        match: {
          op: '!=',
          left: { payload: { protocol: 'ip', field: 'daddr' } },
          right: { prefix: { addr: '198.18.0.0', len: 24 } },
        },
      },
      { masquerade: null },
    ]);
    assert.equal(rulesOf(doc, 'inet', 'fwd_n1').length, 4); // out of and into the subnet, v4 and v6
    assert.equal(rulesOf(doc, 'inet', 'in_n1').length, 2);
    for (const family of ['inet', 'bridge']) assert.ok(find(doc, 'add', 'counter', family, 'spoof_n1') >= 0);
    assert.ok(find(doc, 'add', 'counter', 'inet', 'isolate_n1') >= 0);
  });

  it('leaves out NAT and isolation when off, and removes them when they exist', () => {
    const off = normalizeNetwork({ ...NET, nat: false, isolate: false, subnet6: undefined });
    const plain = buildEnsureNetwork(off, emptySnapshot());
    for (const chain of ['post_n1', 'fwd_n1', 'in_n1'])
      assert.equal(find(plain, 'add', 'chain', 'inet', chain), -1);
    assert.equal(find(plain, 'add', 'set', 'inet', 'net6_n1'), -1);

    const snap: Snapshot = { inet: emptyFamily(true), bridge: emptyFamily(true) };
    for (const chain of ['post_n1', 'fwd_n1', 'in_n1']) snap.inet.chains.set(chain, {});
    snap.inet.sets.set('net6_n1', [{ concat: ['fd00:1::', 'ffff:ffff:ffff:ffff::'] }]);
    snap.inet.sets.set('subnets6', [{ prefix: { addr: 'fd00:1::', len: 64 } }]);
    const repair = buildEnsureNetwork(off, snap);
    for (const chain of ['post_n1', 'fwd_n1', 'in_n1']) {
      const flush = find(repair, 'flush', 'chain', 'inet', chain);
      assert.ok(flush >= 0 && flush < find(repair, 'delete', 'chain', 'inet', chain), chain);
    }
    assert.ok(find(repair, 'delete', 'set', 'inet', 'net6_n1') >= 0);
    const del6 = cmds(repair).find(
      (c) => c.verb === 'delete' && c.kind === 'element' && c.body.name === 'subnets6',
    );
    assert.deepEqual(del6?.body.elem, [{ prefix: { addr: 'fd00:1::', len: 64 } }]);
  });

  it('moves a changed subnet: the old one leaves the shared set before the new one goes in', () => {
    const snap: Snapshot = { inet: emptyFamily(true), bridge: emptyFamily(true) };
    snap.inet.sets.set('net4_n1', [{ concat: ['198.18.0.0', '255.255.255.0'] }]);
    snap.inet.sets.set('subnets4', [
      { prefix: { addr: '198.18.0.0', len: 24 } },
      { prefix: { addr: '198.18.9.0', len: 24 } },
    ]);
    const moved = buildEnsureNetwork(normalizeNetwork({ ...NET, subnet4: '198.18.0.0/23' }), snap);
    const all = cmds(moved);
    const del = all.findIndex(
      (c) => c.verb === 'delete' && c.kind === 'element' && c.body.name === 'subnets4',
    );
    const add = all.findIndex((c) => c.verb === 'add' && c.kind === 'element' && c.body.name === 'subnets4');
    assert.ok(del >= 0 && del < add);
    assert.deepEqual(all[del]!.body.elem, [{ prefix: { addr: '198.18.0.0', len: 24 } }]); // not the other network's
    assert.deepEqual(all[add]!.body.elem, [{ prefix: { addr: '198.18.0.0', len: 23 } }]);
    // Unchanged subnet: nothing deleted.
    const same = buildEnsureNetwork(spec, snap);
    assert.ok(!cmds(same).some((c) => c.verb === 'delete'));
  });

  it('has the same rules whatever the number of VMs (per-VM state is elements only)', () => {
    const rules = (d: NftDocument) => cmds(d).filter((c) => c.kind === 'rule').length;
    const snapWithVms: Snapshot = { inet: emptyFamily(true), bridge: emptyFamily(true) };
    snapWithVms.bridge.sets.set(
      'vm_mac',
      Array.from({ length: 1000 }, (_, i) => ({ concat: [`tn${i}`, '02:00:00:00:00:01'] })),
    );
    assert.equal(rules(buildEnsureNetwork(spec, snapWithVms)), rules(doc));
  });
});

describe('VM element batches', () => {
  it('adds one VM as four elements in its topology family, one command per set', () => {
    const doc = buildAddPorts([vmElements(vm(1), 'bridge')]);
    assert.deepEqual(cmds(doc), [
      {
        verb: 'add',
        kind: 'element',
        body: {
          family: 'bridge',
          table: 'tapnet',
          name: 'vm_mac',
          elem: [{ concat: ['tn0001', '02:00:00:00:00:01'] }],
        },
      },
      {
        verb: 'add',
        kind: 'element',
        body: {
          family: 'bridge',
          table: 'tapnet',
          name: 'vm_ip4',
          elem: [{ concat: ['tn0001', '198.18.0.1'] }],
        },
      },
      {
        verb: 'add',
        kind: 'element',
        body: {
          family: 'bridge',
          table: 'tapnet',
          name: 'vm_ip6',
          elem: [{ concat: ['tn0001', 'fd00:1::1'] }],
        },
      },
      {
        verb: 'add',
        kind: 'element',
        body: { family: 'bridge', table: 'tapnet', name: 'vm_counter', elem: [['tn0001', 'spoof_n1']] },
      },
    ]);
    const routed = buildAddPorts([vmElements(vm(1), 'routed')]);
    assert.ok(cmds(routed).every((c) => c.body.family === 'inet'));
  });

  it('batches many VMs into the same four commands, without duplicates', () => {
    const ports = Array.from({ length: 1000 }, (_, i) => vmElements(vm(i + 1), 'bridge'));
    const doc = buildAddPorts([...ports, ports[0]!]);
    assert.equal(doc.nftables.length, 4);
    for (const c of cmds(doc)) assert.equal((c.body.elem as NftJson[]).length, 1000);
  });

  it('removes idempotently: adds each element, then deletes it (map entries by key)', () => {
    const doc = buildRemovePorts([vmElements(vm(1), 'bridge')]);
    const all = cmds(doc);
    assert.deepEqual(
      all.map((c) => `${c.verb} ${c.body.name}`),
      [
        'add vm_mac',
        'add vm_ip4',
        'add vm_ip6',
        'add vm_counter',
        'delete vm_mac',
        'delete vm_ip4',
        'delete vm_ip6',
        'delete vm_counter',
      ],
    );
    assert.deepEqual(all[7]!.body.elem, ['tn0001']);
    const noCounter = buildRemovePorts([{ ...vmElements(vm(1), 'bridge'), network: undefined }]);
    assert.ok(!cmds(noCounter).some((c) => c.body.name === 'vm_counter'));
  });

  it('never builds text: hostile-looking but valid names travel as JSON strings only', () => {
    const odd = normalizeNetwork({ ...NET, name: 'a.b-c_d', tapPrefix: 'T.x-' });
    const v = normalizeVm({ network: 'a.b-c_d', ifname: 'T.x-_9', mac: '02:00:00:00:00:09' }, odd);
    for (const doc of [buildEnsureNetwork(odd, emptySnapshot()), buildAddPorts([vmElements(v, 'bridge')])]) {
      assert.deepEqual(JSON.parse(JSON.stringify(doc)), doc);
      const text = JSON.stringify(doc);
      assert.ok(!/[;\n]/.test(text), 'no statement separators anywhere');
    }
  });
});

describe('removal and destroy batches', () => {
  it('removes exactly one network and its ports, from what exists', () => {
    const snap: Snapshot = { inet: emptyFamily(true), bridge: emptyFamily(true) };
    const b = snap.bridge;
    b.counters.set('spoof_n1', { packets: 0, bytes: 0 });
    b.counters.set('spoof_n2', { packets: 0, bytes: 0 });
    b.sets.set('vm_counter', [
      ['tn1', 'spoof_n1'],
      ['tn2', 'spoof_n2'],
    ]);
    b.sets.set('vm_mac', [
      { concat: ['tn1', '02:00:00:00:00:01'] },
      { concat: ['tn2', '02:00:00:00:00:02'] },
    ]);
    b.sets.set('vm_ip4', [{ concat: ['tn1', '198.18.0.1'] }, { concat: ['tn2', '198.18.1.2'] }]);
    snap.inet.counters.set('isolate_n1', { packets: 0, bytes: 0 });
    snap.inet.chains.set('post_n1', {});
    snap.inet.chains.set('post_n2', {});
    snap.inet.sets.set('net4_n1', [{ concat: ['198.18.0.0', '255.255.255.0'] }]);
    snap.inet.sets.set('subnets4', [
      { prefix: { addr: '198.18.0.0', len: 24 } },
      { prefix: { addr: '198.18.1.0', len: 24 } },
    ]);
    const doc = buildRemoveNetwork('n1', snap);
    const text = JSON.stringify(doc);
    assert.ok(
      !text.includes('tn2') && !text.includes('n2') && !text.includes('198.18.1.'),
      'other network untouched',
    );
    const all = cmds(doc);
    const delMap = all.findIndex((c) => c.verb === 'delete' && c.body.name === 'vm_counter');
    const delCounter = find(doc, 'delete', 'counter', 'bridge', 'spoof_n1');
    assert.ok(delMap >= 0 && delMap < delCounter, 'map entries go before the counter they reference');
    assert.deepEqual(all.find((c) => c.body.name === 'vm_mac')?.body.elem, [
      { concat: ['tn1', '02:00:00:00:00:01'] },
    ]);
    for (const [verb, kind, family, name] of [
      ['delete', 'chain', 'inet', 'post_n1'],
      ['delete', 'set', 'inet', 'net4_n1'],
      ['delete', 'counter', 'inet', 'isolate_n1'],
    ]) {
      assert.ok(find(doc, verb!, kind!, family!, name!) >= 0, `${verb} ${kind} ${name}`);
    }
    assert.deepEqual(buildRemoveNetwork('n1', emptySnapshot()), { nftables: [] });
  });

  it('destroys both tables whether or not they exist, and nothing else', () => {
    assert.deepEqual(buildDestroy(), {
      nftables: [
        { add: { table: { family: 'inet', name: 'tapnet' } } },
        { delete: { table: { family: 'inet', name: 'tapnet' } } },
        { add: { table: { family: 'bridge', name: 'tapnet' } } },
        { delete: { table: { family: 'bridge', name: 'tapnet' } } },
      ],
    });
  });
});
