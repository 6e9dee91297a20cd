/**
 * The nftables driver against the kernel, inside a private namespace, with `nft -j` (run under
 * `ip netns exec`) as the oracle.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  createFirewall,
  type Firewall,
  type FirewallNetwork,
  type FirewallVm,
} from '../../src/firewall/index.js';
import { NftContext } from '../../src/sys/nftables.js';
import { withNetns } from '../../src/sys/ns.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();

type Obj = Record<string, unknown>;
/** `ip netns exec NAME nft -j <args>`: the objects it lists (metainfo dropped). */
function nftJson(t: TestNetns, ...args: string[]): Obj[] {
  const out = execFileSync('ip', ['netns', 'exec', t.name, 'nft', '-j', ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  const items = (JSON.parse(out) as { nftables: Obj[] }).nftables;
  return items.filter((o) => !('metainfo' in o));
}
const nft = (t: TestNetns, ...args: string[]) =>
  execFileSync('ip', ['netns', 'exec', t.name, 'nft', ...args], { encoding: 'utf8' });
const bodies = (objs: Obj[], kind: string) => objs.filter((o) => kind in o).map((o) => o[kind] as Obj);
const tapnetRules = (t: TestNetns) =>
  bodies(nftJson(t, 'list', 'ruleset'), 'rule').filter((r) => r.table === 'tapnet');
const setElems = (t: TestNetns, family: string, set: string) =>
  (bodies(nftJson(t, 'list', 'set', family, 'tapnet', set), 'set')[0]?.elem as unknown[] | undefined) ?? [];
const mapElems = (t: TestNetns, family: string, map: string) =>
  (bodies(nftJson(t, 'list', 'map', family, 'tapnet', map), 'map')[0]?.elem as unknown[] | undefined) ?? [];

const NET: FirewallNetwork = {
  name: 'n1',
  topology: 'bridge',
  bridge: 'tn-n1',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/22',
  subnet6: 'fd00:1::/64',
  nat: true,
  isolate: true,
};
const ROUTED: FirewallNetwork = {
  name: 'r1',
  topology: 'routed',
  tapPrefix: 'tr',
  subnet4: '198.18.8.0/24',
  nat: true,
  isolate: false,
};
const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
const vm = (i: number, net = NET): FirewallVm => ({
  network: net.name,
  ifname: `${net.tapPrefix}${hex(i, 5)}`,
  mac: `02:00:00:00:${hex((i >> 8) & 255, 2)}:${hex(i & 255, 2)}`,
  ipv4: net === NET ? `198.18.${(i >> 8) & 3}.${i & 255}` : `198.18.8.${i & 255}`,
  ...(net.subnet6 ? { ipv6: `fd00:1::${hex(i, 1)}` } : {}),
});

describe('libnftables context', { skip }, () => {
  let a: TestNetns;
  let b: TestNetns;
  before(() => {
    a = makeTestNetns('nfa');
    b = makeTestNetns('nfb');
  });
  after(() => {
    a?.destroy();
    b?.destroy();
  });

  it('is bound to the namespace it was opened in, whatever namespace the thread is in later', () => {
    const ctx = NftContext.open({ nsFd: a.ns.fd });
    try {
      ctx.run({ nftables: [{ add: { table: { family: 'inet', name: 'probe1' } } }] });
      // Now run from inside namespace b: the socket opened at nft_ctx_new() still points at a.
      withNetns(b.ns.fd, () =>
        ctx.run({ nftables: [{ add: { table: { family: 'inet', name: 'probe2' } } }] }),
      );
      const inA = bodies(nftJson(a, 'list', 'tables'), 'table').map((t) => t.name);
      assert.deepEqual(inA.sort(), ['probe1', 'probe2']);
      assert.deepEqual(bodies(nftJson(b, 'list', 'tables'), 'table'), [], 'b untouched');
      const here = execFileSync('nft', ['-j', 'list', 'tables'], { encoding: 'utf8' });
      assert.ok(!here.includes('probe'), 'the test process namespace untouched');
      const listed = ctx.run({ nftables: [{ list: { tables: {} } }] });
      assert.equal(listed.nftables.length, 2);
    } finally {
      ctx.close();
      ctx.close();
    }
  });

  it('reports nft errors as ERR_FIREWALL with the errno and nft text', () => {
    const ctx = NftContext.open({ nsFd: a.ns.fd });
    try {
      assert.throws(
        () => ctx.run({ nftables: [{ add: { chain: { family: 'inet', table: 'nope', name: 'c' } } }] }),
        (e) =>
          isTapnetError(e, 'ERR_FIREWALL') &&
          e.errno === 'ENOENT' &&
          /No such file/.test(String(e.details.error)),
      );
      // A value nft would read as syntax is refused before libnftables sees it.
      assert.throws(
        () => ctx.run({ nftables: [{ add: { table: { family: 'inet', name: 'x\0; flush ruleset' } } }] }),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
      );
      // A hostile name passed as a JSON value stays a name: one table with that literal name, nothing else.
      ctx.run({ nftables: [{ add: { table: { family: 'inet', name: 'x; flush ruleset' } } }] });
      assert.ok(bodies(nftJson(a, 'list', 'tables'), 'table').some((t) => t.name === 'x; flush ruleset'));
      assert.ok(
        bodies(nftJson(a, 'list', 'tables'), 'table').some((t) => t.name === 'probe1'),
        'nothing flushed',
      );
    } finally {
      ctx.close();
    }
    assert.throws(
      () => ctx.run({ nftables: [] }),
      (e) => isTapnetError(e, 'ERR_INTERNAL'),
    );
  });
});

describe('nftables firewall driver', { skip }, () => {
  let t: TestNetns;
  let fw: Firewall;
  /** Someone else's firewall in the same namespace: must survive everything we do. */
  const addOther = () => {
    nft(t, 'add', 'table', 'inet', 'other');
    nft(t, 'add', 'chain', 'inet', 'other', 'input', '{ type filter hook input priority 0; policy accept; }');
    nft(t, 'add', 'rule', 'inet', 'other', 'input', 'counter');
  };
  before(() => {
    t = makeTestNetns('fw');
    addOther();
    fw = createFirewall('nftables', { nsFd: t.ns.fd });
  });
  after(() => {
    fw?.close();
    t?.destroy();
  });
  const otherIntact = () => {
    const rules = bodies(nftJson(t, 'list', 'table', 'inet', 'other'), 'rule');
    assert.equal(rules.length, 1, 'inet other keeps its rule');
  };

  it('creates both tables and the network base, as nft lists them', () => {
    fw.ensureNetwork(NET);
    fw.ensureNetwork(ROUTED);
    const all = nftJson(t, 'list', 'ruleset');
    const tables = bodies(all, 'table').map((x) => `${x.family} ${x.name}`);
    assert.deepEqual(tables.sort(), ['bridge tapnet', 'inet other', 'inet tapnet']);
    const chains = bodies(all, 'chain').filter((c) => c.table === 'tapnet');
    const chain = (family: string, name: string) =>
      chains.find((c) => c.family === family && c.name === name);
    assert.deepEqual(
      {
        hook: chain('bridge', 'guard_tn')?.hook,
        prio: chain('bridge', 'guard_tn')?.prio,
        type: chain('bridge', 'guard_tn')?.type,
      },
      { hook: 'prerouting', prio: -200, type: 'filter' },
    );
    assert.equal(chain('inet', 'guard_tr')?.prio, -300);
    assert.equal(chain('inet', 'post_n1')?.type, 'nat');
    assert.equal(chain('inet', 'post_n1')?.hook, 'postrouting');
    assert.equal(chain('inet', 'fwd_n1')?.hook, 'forward');
    assert.equal(chain('inet', 'fwd_r1'), undefined, 'r1 is not isolated');
    const text = nft(t, 'list', 'chain', 'inet', 'tapnet', 'post_n1');
    assert.match(text, /ip saddr 198\.18\.0\.0\/22 ip daddr != 198\.18\.0\.0\/22 masquerade/);
    assert.match(text, /ip6 saddr fd00:1::\/64 ip6 daddr != fd00:1::\/64 masquerade/);
    assert.match(
      nft(t, 'list', 'chain', 'bridge', 'tapnet', 'guard_tn'),
      /meta iifkind "tun" iifname "tn\*" jump antispoof/,
    );
    assert.match(
      nft(t, 'list', 'chain', 'bridge', 'tapnet', 'antispoof'),
      /iifname \. ether saddr != @vm_mac goto spoofed/,
    );
    assert.match(
      nft(t, 'list', 'chain', 'bridge', 'tapnet', 'antispoof'),
      /iifname \. arp saddr ip != @vm_ip4 goto spoofed/,
    );
    assert.match(
      nft(t, 'list', 'chain', 'bridge', 'tapnet', 'spoofed'),
      /counter name iifname map @vm_counter drop/,
    );
    const subnets = JSON.stringify(setElems(t, 'inet', 'subnets4'));
    assert.ok(subnets.includes('198.18.0.0') && subnets.includes('198.18.8.0'), subnets);
    otherIntact();
    const st = fw.status([NET, ROUTED]);
    assert.deepEqual(st.problems, []);
    assert.ok(st.ok, JSON.stringify(st.networks.map((n) => n.problems)));
  });

  it('is idempotent: applying again changes nothing, forced or not', () => {
    const before = JSON.stringify(tapnetRules(t).map((r) => r.expr));
    fw.ensureNetwork(NET);
    fw.ensureNetwork(NET, { force: true });
    const second = createFirewall('nftables', { nsFd: t.ns.fd }); // as another process would
    second.ensureNetwork(NET);
    second.close();
    assert.equal(JSON.stringify(tapnetRules(t).map((r) => r.expr)), before);
    assert.equal(setElems(t, 'inet', 'subnets4').length, 2);
  });

  it('adds and removes a VM as elements only; twice is fine both ways', () => {
    const v = vm(1);
    const rulesBefore = tapnetRules(t).length;
    fw.addVm(v);
    fw.addVm(v);
    assert.deepEqual(setElems(t, 'bridge', 'vm_mac'), [{ concat: [v.ifname, v.mac] }]);
    assert.deepEqual(setElems(t, 'bridge', 'vm_ip4'), [{ concat: [v.ifname, v.ipv4] }]);
    assert.deepEqual(setElems(t, 'bridge', 'vm_ip6'), [{ concat: [v.ifname, v.ipv6] }]);
    assert.deepEqual(mapElems(t, 'bridge', 'vm_counter'), [[v.ifname, 'spoof_n1']]);
    assert.deepEqual(setElems(t, 'inet', 'vm_mac'), [], 'bridge topology: nothing in inet');
    assert.equal(tapnetRules(t).length, rulesBefore);
    assert.deepEqual(fw.listVms(), [
      { network: 'n1', ifname: v.ifname, topology: 'bridge', macs: [v.mac], ipv4: [v.ipv4], ipv6: [v.ipv6] },
    ]);
    const r = vm(1, ROUTED);
    fw.addVm(r);
    assert.deepEqual(setElems(t, 'inet', 'vm_ip4'), [{ concat: [r.ifname, r.ipv4] }]);
    fw.removeVm(v);
    fw.removeVm(v);
    fw.removeVm(r);
    assert.deepEqual(setElems(t, 'bridge', 'vm_mac'), []);
    assert.deepEqual(mapElems(t, 'bridge', 'vm_counter'), []);
    assert.deepEqual(fw.listVms(), []);
    otherIntact();
  });

  it('refuses what it cannot do, with codes', () => {
    assert.throws(
      () => fw.addVm({ ...vm(2), network: 'nope' }),
      (e) => isTapnetError(e, 'ERR_NOT_FOUND'),
    );
    assert.throws(
      () => fw.addVm({ ...vm(2), ifname: 'xx00002' }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => fw.ensureNetwork({ ...ROUTED, name: 'r2', subnet4: '198.18.1.0/24' }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    // The same TAP registered for another network: the kernel says EEXIST; nothing changes.
    fw.addVm(vm(3));
    const other: FirewallNetwork = { ...NET, name: 'n2', subnet4: '198.18.4.0/24', subnet6: undefined };
    fw.ensureNetwork(other);
    assert.throws(
      () => fw.addVm({ network: 'n2', ifname: vm(3).ifname, mac: '02:00:00:00:09:09', ipv4: '198.18.4.3' }),
      (e) => isTapnetError(e, 'ERR_FIREWALL') && e.errno === 'EEXIST',
    );
    assert.deepEqual(
      setElems(t, 'bridge', 'vm_mac'),
      [{ concat: [vm(3).ifname, vm(3).mac] }],
      'batch was atomic',
    );
    fw.removeNetwork('n2');
    fw.removeNetwork('n2');
    fw.removeVm(vm(3));
  });

  it('keeps the rule count flat with 1,000 VMs, and a VM costs about 0.2 ms', (ctx) => {
    const rules = tapnetRules(t).length;
    const many = Array.from({ length: 1000 }, (_, i) => vm(i + 10));
    const t0 = performance.now();
    fw.addVms(many.slice(0, 900));
    const batchMs = performance.now() - t0;
    const t1 = performance.now();
    for (const v of many.slice(900)) fw.addVm(v);
    const addMs = (performance.now() - t1) / 100;
    assert.equal(setElems(t, 'bridge', 'vm_mac').length, 1000);
    assert.equal(mapElems(t, 'bridge', 'vm_counter').length, 1000);
    assert.equal(tapnetRules(t).length, rules, 'rules do not grow with VMs');
    const t2 = performance.now();
    for (const v of many.slice(900)) fw.removeVm(v);
    const removeMs = (performance.now() - t2) / 100;
    ctx.diagnostic(
      `addVms(900) ${batchMs.toFixed(1)} ms; addVm ${addMs.toFixed(3)} ms; removeVm ${removeMs.toFixed(3)} ms (at 1,000 VMs)`,
    );
    assert.ok(addMs < 5 && removeMs < 5, 'hot path in-process, not a process per call');
    assert.equal(fw.listVms().length, 900);
    fw.removeVms(many.slice(0, 900));
    assert.equal(fw.listVms().length, 0);
  });

  it('repairs itself after `nft flush ruleset`', () => {
    fw.addVms([vm(1), vm(2)]);
    nft(t, 'flush', 'ruleset');
    assert.deepEqual(bodies(nftJson(t, 'list', 'tables'), 'table'), []);
    assert.equal(fw.status().ok, false);
    // What reconcile does: the networks again, then the elements of live VMs.
    fw.ensureNetwork(NET);
    fw.ensureNetwork(ROUTED);
    fw.addVms([vm(1), vm(2)]);
    assert.equal(setElems(t, 'bridge', 'vm_mac').length, 2);
    assert.ok(fw.status([NET, ROUTED]).ok);
    // Even without reconcile, the hot path repairs the base it needs.
    nft(t, 'flush', 'ruleset');
    fw.addVm(vm(3));
    assert.deepEqual(setElems(t, 'bridge', 'vm_mac'), [{ concat: [vm(3).ifname, vm(3).mac] }]);
    assert.match(nft(t, 'list', 'chain', 'inet', 'tapnet', 'post_n1'), /masquerade/);
    // Removing what a flush already removed is success.
    nft(t, 'flush', 'ruleset');
    fw.removeVm(vm(3));
    fw.removeVms([vm(1), vm(2, ROUTED)]);
    fw.removeNetwork('n1');
    addOther(); // (the flush was ours)
  });

  it('follows definition changes: NAT and isolation off, new subnet, topology', () => {
    fw.ensureNetwork(NET, { force: true });
    fw.addVm(vm(5));
    fw.ensureNetwork({ ...NET, nat: false, isolate: false, subnet4: '198.18.0.0/23', subnet6: undefined });
    const chains = bodies(nftJson(t, 'list', 'chains'), 'chain').map((c) => `${c.family} ${c.name}`);
    for (const gone of ['inet post_n1', 'inet fwd_n1', 'inet in_n1']) assert.ok(!chains.includes(gone), gone);
    assert.deepEqual(setElems(t, 'inet', 'subnets4'), [{ prefix: { addr: '198.18.0.0', len: 23 } }]);
    assert.deepEqual(setElems(t, 'inet', 'subnets6'), []);
    assert.deepEqual(setElems(t, 'bridge', 'vm_mac'), [{ concat: [vm(5).ifname, vm(5).mac] }], 'ports kept');
    // Another topology: old ports stay listed (reconcile's job) and status says so.
    fw.ensureNetwork({ ...NET, topology: 'routed' });
    const st = fw.status([{ ...NET, topology: 'routed' }]);
    assert.ok(st.networks[0]?.problems.some((p) => p.includes('other topology')));
    fw.removePorts(fw.listVms());
    assert.deepEqual(fw.listVms(), []);
  });

  it('removes a network and leaves the others; destroy removes only our tables', () => {
    fw.ensureNetwork(NET, { force: true });
    fw.ensureNetwork(ROUTED, { force: true });
    fw.addVms([vm(1), vm(1, ROUTED)]);
    fw.removeNetwork('n1');
    fw.removeNetwork('n1');
    assert.deepEqual(
      fw.listVms().map((p) => p.ifname),
      [vm(1, ROUTED).ifname],
    );
    const names = bodies(nftJson(t, 'list', 'ruleset'), 'chain').map((c) => c.name);
    assert.ok(!names.some((n) => String(n).endsWith('_n1')), String(names));
    assert.deepEqual(setElems(t, 'inet', 'subnets4'), [{ prefix: { addr: '198.18.8.0', len: 24 } }]);
    fw.destroy();
    fw.destroy();
    assert.deepEqual(
      bodies(nftJson(t, 'list', 'tables'), 'table').map((x) => `${x.family} ${x.name}`),
      ['inet other'],
    );
    otherIntact();
  });
});
