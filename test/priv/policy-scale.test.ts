/**
 * Policies in the kernel, without traffic: the rule and chain count does not grow with VMs, install cost
 * stays flat, two drivers (two processes) stay consistent, unused classes are collected, br_netfilter's
 * switches are read, and a flushed ruleset is repaired by setting the policy again. `nft -j` is the oracle.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import {
  createFirewall,
  type Firewall,
  type FirewallNetwork,
  type FirewallVm,
} from '../../src/firewall/index.js';
import { bridgeNetfilter } from '../../src/firewall/policy.js';
import { setSysctl } from '../../src/net/netns.js';
import { compilePolicy, parsePolicy } from '../../src/policy/index.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { listTable } from './policy-topo.js';

const skip = privSkipReason();

const NET: FirewallNetwork = {
  name: 'big',
  topology: 'routed',
  tapPrefix: 'tr',
  subnet4: '198.18.0.0/16',
  subnet6: 'fd00:1::/64',
  nat: false,
  isolate: false,
};
const vm = (i: number): FirewallVm => ({
  network: 'big',
  ifname: `tr${i.toString(16).padStart(10, '0')}`,
  mac: `02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
  ipv4: `198.18.${((i + 1) >> 8) & 255}.${(i + 1) & 255}`,
  ipv6: `fd00:1::${(i + 1).toString(16)}`,
});
const TEMPLATES = [
  { default: 'deny', rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80, 443], action: 'allow' }] },
  { default: 'allow', rules: [{ direction: 'ingress', protocol: 'tcp', ports: [22], action: 'reject' }] },
  {
    default: 'deny',
    rules: [
      { direction: 'egress', protocol: 'udp', ports: [53], action: 'allow' },
      { direction: 'ingress', protocol: 'any', action: 'allow' },
    ],
  },
].map((d) => compilePolicy({ vm: parsePolicy(d) }));

function counts(t: TestNetns): { chains: number; rules: number; elements: number } {
  const objs = listTable(t);
  const elements = objs.reduce(
    (n, o) =>
      n +
      ((o.set?.elem as unknown[] | undefined)?.length ?? 0) +
      ((o.map?.elem as unknown[] | undefined)?.length ?? 0),
    0,
  );
  return { chains: objs.filter((o) => o.chain).length, rules: objs.filter((o) => o.rule).length, elements };
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

describe('policies at scale', { skip }, () => {
  let t: TestNetns;
  let fw: Firewall;

  before(() => {
    t = makeTestNetns('pscale');
    fw = createFirewall('nftables', { nsFd: t.ns.fd });
    fw.ensureNetwork(NET);
  });

  after(() => {
    fw?.close();
    t?.destroy();
  });

  it('keeps chains and rules flat while VMs grow, and install cost flat', () => {
    const times: number[] = [];
    const install = (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const t0 = performance.now();
        fw.setPolicy(vm(i), TEMPLATES[i % 3]!);
        times.push(performance.now() - t0);
      }
    };
    install(0, 60);
    const small = counts(t);
    install(60, 1200);
    const big = counts(t);
    assert.equal(big.chains, small.chains, 'no chain per VM');
    assert.equal(big.rules, small.rules, 'no rule per VM');
    assert.ok(big.elements > small.elements * 10, 'per-VM state is elements');
    const first = median(times.slice(10, 110));
    const last = median(times.slice(-100));
    assert.ok(
      last < first * 2 + 0.2,
      `install cost flat: first ${first.toFixed(3)} ms, last ${last.toFixed(3)} ms`,
    );
    assert.equal(
      fw.listPolicies().length,
      1200 * 3 - 400,
      'egress, IPv4, IPv6 keys (template 1 lets all egress through)',
    );
  });

  it('stays consistent across two drivers (two processes)', () => {
    const other = createFirewall('nftables', { nsFd: t.ns.fd });
    try {
      other.ensureNetwork(NET);
      // `other` never saw VM 5 (template 2): it moves it to template 0, then fw moves it back and removes it.
      const applied = other.setPolicy(vm(5), TEMPLATES[0]!);
      const keys = (i: number) =>
        fw
          .listPolicies()
          .filter((e) =>
            e.direction === 'egress'
              ? e.ifname === vm(i).ifname
              : e.address === vm(i).ipv4 || e.address === vm(i).ipv6,
          );
      assert.deepEqual(new Set(keys(5).map((e) => e.class)), new Set([applied.egress, applied.ingress]));
      const back = fw.setPolicy(vm(5), TEMPLATES[1]!); // fw believes VM 5 is in template 2's classes: stale, detected
      assert.deepEqual(
        keys(5).map((e) => e.class),
        [back.ingress, back.ingress],
        'template 1 polices ingress only',
      );
      other.removePolicy(vm(5));
      assert.deepEqual(keys(5), []);
      fw.removePolicy(vm(5)); // stale again: nothing left to remove is fine
    } finally {
      other.close();
    }
  });

  it('collects classes no VM uses, and never one in use', () => {
    const lonely = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: [9999], action: 'allow' }],
      }),
    });
    const applied = fw.setPolicy(vm(7), lonely);
    assert.deepEqual(fw.gcPolicies().removed, []);
    fw.setPolicy(vm(7), TEMPLATES[1]!);
    const report = fw.gcPolicies();
    // Its egress (default deny, no rule) is template 0's egress class: shared, still in use.
    assert.deepEqual(report.removed, [`pi_${applied.ingress}`]);
    assert.ok(report.inUse >= 4);
    assert.equal(fw.gcPolicies().removed.length, 0);
  });

  it('reports whether bridged traffic reaches the policies (br_netfilter)', () => {
    assert.deepEqual(bridgeNetfilter(t.ns.fd), { available: true, ipv4: true, ipv6: true }, 'on by default');
    setSysctl(t.ns, 'net/bridge/bridge-nf-call-iptables', '0');
    try {
      assert.deepEqual(bridgeNetfilter(t.ns.fd), { available: true, ipv4: false, ipv6: true });
    } finally {
      setSysctl(t.ns, 'net/bridge/bridge-nf-call-iptables', '1');
    }
  });

  it('repairs after `nft flush ruleset` when the policy is set again', () => {
    execFileSync('ip', ['netns', 'exec', t.name, 'nft', 'flush', 'ruleset']);
    fw.ensureNetwork(NET, { force: true });
    fw.setPolicy(vm(1), TEMPLATES[0]!);
    assert.equal(fw.listPolicies().length, 3);
    const c = counts(t);
    assert.ok(c.chains > 10 && c.rules > 10);
  });
});
