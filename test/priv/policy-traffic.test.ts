/**
 * Policies proven with traffic (see policy-topo.ts for the world): the two examples users expect,
 * reject, a routed VM, a live update that leaves an allowed connection alone and cuts one no longer
 * allowed, and removal with the VM. Real TCP/UDP stacks in namespaces; conntrack is the kernel's.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { compilePolicy, type PeerResolver, parsePolicy } from '../../src/policy/index.js';
import { privSkipReason } from '../helpers/priv.js';
import { makeTopo, persistentConnection, probe, startServers, type Topo } from './policy-topo.js';

const skip = privSkipReason();

const resolver: PeerResolver = {
  vm: (id) => (id === 'a' ? { ipv4: '198.18.0.10', ipv6: 'fd00:18::10' } : undefined),
  network: (name) => (name === 'pb' ? { subnet4: '198.18.0.0/24', subnet6: 'fd00:18::/64' } : undefined),
};
const compile = (doc: unknown) => compilePolicy({ vm: parsePolicy(doc), resolver });

/** "allow ingress tcp 80,443 from anywhere, deny everything else" */
const WEB = {
  default: 'deny',
  rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80, 443], action: 'allow' }],
};

describe('policies with traffic', { skip }, () => {
  let t: Topo;
  const servers: ChildProcess[] = [];

  before(async () => {
    t = makeTopo('pt');
    for (const ns of [t.vms.a.ns, t.vms.b.ns, t.vms.r.ns, t.up])
      servers.push(await startServers(ns, [22, 80, 443, 8443], [53, 5353]));
  });

  after(() => {
    for (const s of servers) s.kill();
    t?.destroy();
  });

  it('allow ingress tcp 80,443 from anywhere, deny everything else', async () => {
    const { a, b } = t.vms;
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 22), 'ok', 'open before the policy');
    const applied = t.fw.setPolicy(b.vm, compile(WEB));
    assert.ok(applied.ingress && applied.egress, 'both directions policed (default deny)');
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 80), 'ok', 'VM → VM on the bridge, port 80');
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 443), 'ok');
    assert.equal(await probe(a.ns, 'tcp', 'fd00:18::11', 443), 'ok', 'IPv6 too');
    assert.equal(await probe(t.up, 'tcp', '198.18.0.11', 80), 'ok', 'routed in from upstream');
    assert.equal(await probe(t.host, 'tcp', '198.18.0.11', 80), 'ok', 'from the host');
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 22), 'timeout', 'port 22 dropped');
    assert.equal(await probe(a.ns, 'tcp', 'fd00:18::11', 22), 'timeout');
    assert.equal(await probe(t.up, 'udp', '198.18.0.11', 53), 'timeout', 'UDP dropped');
    assert.equal(
      await probe(b.ns, 'tcp', '198.18.0.10', 80),
      'timeout',
      'new connections from the VM dropped',
    );
    assert.equal(await probe(b.ns, 'tcp', '198.18.9.2', 80), 'timeout');
    const c = t.fw.policyCounters(b.vm);
    assert.ok(c.ingress.packets >= 3, `ingress drops counted (${c.ingress.packets})`);
    assert.ok(c.egress.packets >= 2, `egress drops counted (${c.egress.packets})`);
    assert.deepEqual(t.fw.policyCounters(a.vm), {
      egress: { packets: 0, bytes: 0 },
      ingress: { packets: 0, bytes: 0 },
    });
    t.fw.removePolicy(b.vm);
  });

  it('egress only to 198.18.9.0/24 and DNS (ingress left open)', async () => {
    const { a, b } = t.vms;
    t.fw.setPolicy(
      b.vm,
      compile({
        default: 'deny',
        rules: [
          { direction: 'egress', protocol: 'any', peers: ['198.18.9.0/24'], action: 'allow' },
          { direction: 'egress', protocol: 'udp', ports: [53], action: 'allow' },
          { direction: 'egress', protocol: 'tcp', ports: [53], action: 'allow' },
          { direction: 'ingress', protocol: 'any', action: 'allow' },
        ],
      }),
    );
    assert.equal(await probe(b.ns, 'tcp', '198.18.9.2', 80), 'ok', 'to 198.18.9.0/24');
    assert.equal(await probe(b.ns, 'udp', '198.18.9.2', 5353), 'ok', 'any protocol to 198.18.9.0/24');
    assert.equal(await probe(b.ns, 'udp', '198.19.0.2', 53), 'ok', 'DNS anywhere');
    assert.equal(await probe(b.ns, 'tcp', '198.19.0.2', 80), 'timeout', 'elsewhere: dropped');
    assert.equal(await probe(b.ns, 'udp', '198.19.0.2', 5353), 'timeout');
    assert.equal(await probe(b.ns, 'tcp', '198.18.0.10', 22), 'timeout', 'other VMs: dropped');
    assert.equal(await probe(b.ns, 'tcp', '198.18.0.1', 22), 'timeout', 'the host: dropped (input hook)');
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 22), 'ok', 'ingress still open, replies pass');
    t.fw.removePolicy(b.vm);
  });

  it('reject answers with a TCP reset; peers by vm: and network:', async () => {
    const { a, b } = t.vms;
    t.fw.setPolicy(
      b.vm,
      compile({
        default: 'allow',
        rules: [
          { direction: 'ingress', protocol: 'tcp', ports: [8443], peers: ['vm:a'], action: 'reject' },
          {
            direction: 'ingress',
            protocol: 'tcp',
            ports: [443],
            peers: ['network:pb'],
            action: 'deny',
            priority: 10,
          },
        ],
      }),
    );
    assert.equal(
      await probe(a.ns, 'tcp', '198.18.0.11', 8443),
      'refused',
      'rejected: connection refused at once',
    );
    assert.equal(await probe(t.up, 'tcp', '198.18.0.11', 8443), 'ok', 'the rule names vm:a only');
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 443), 'timeout', 'network:pb denied');
    assert.equal(await probe(t.up, 'tcp', '198.18.0.11', 443), 'ok');
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 80), 'ok', 'default allow');
    t.fw.removePolicy(b.vm);
  });

  it('polices a routed VM (keyed by its TAP) the same way', async () => {
    const { r } = t.vms;
    assert.equal(await probe(t.host, 'tcp', '198.18.8.2', 22), 'ok');
    t.fw.setPolicy(r.vm, compile(WEB));
    assert.equal(await probe(t.host, 'tcp', '198.18.8.2', 80), 'ok');
    assert.equal(await probe(t.up, 'tcp', '198.18.8.2', 443), 'ok');
    assert.equal(await probe(t.host, 'tcp', '198.18.8.2', 22), 'timeout');
    assert.equal(await probe(r.ns, 'tcp', '198.18.9.2', 80), 'timeout', 'egress denied');
    assert.ok(t.fw.policyCounters(r.vm).egress.packets > 0);
    t.fw.removePolicy(r.vm);
    assert.equal(await probe(r.ns, 'tcp', '198.18.9.2', 80), 'ok');
  });

  it('updates live: an allowed connection is not disturbed, one no longer allowed is cut', async () => {
    const { a, b } = t.vms;
    t.fw.setPolicy(b.vm, compile(WEB));
    const conn = await persistentConnection(a.ns, '198.18.0.11', 80);
    const other = await persistentConnection(a.ns, '198.18.0.11', 443);
    try {
      assert.equal(await conn.ping(), 'echo');
      assert.equal(await other.ping(), 'echo');
      // A different class (one more rule), still allowing 80 and 443.
      const applied = t.fw.setPolicy(
        b.vm,
        compile({
          ...WEB,
          rules: [...WEB.rules, { direction: 'ingress', protocol: 'tcp', ports: [8443], action: 'allow' }],
        }),
      );
      assert.ok(applied.ingress);
      for (let i = 0; i < 5; i++) assert.equal(await conn.ping(300), 'echo', `ping ${i} after the update`);
      assert.equal(await other.ping(), 'echo');
      // 443 no longer allowed: that connection stops, port 80's goes on.
      t.fw.setPolicy(
        b.vm,
        compile({
          default: 'deny',
          rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80], action: 'allow' }],
        }),
      );
      assert.equal(await other.ping(400), 'lost', 'the connection to 443 is cut');
      assert.equal(await conn.ping(), 'echo', 'the connection to 80 goes on');
      assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 443), 'timeout');
    } finally {
      conn.close();
      other.close();
      t.fw.removePolicy(b.vm);
    }
  });

  it('is removed with the VM: traffic flows again and no element is left', async () => {
    const { a, b } = t.vms;
    t.fw.setPolicy(b.vm, compile(WEB));
    assert.equal(t.fw.listPolicies().length, 3, 'egress key, IPv4 and IPv6 ingress keys');
    t.fw.removePolicy(b.vm);
    t.fw.removeVm(b.vm);
    assert.deepEqual(t.fw.listPolicies(), []);
    assert.equal(await probe(a.ns, 'tcp', '198.18.0.11', 22), 'ok');
    assert.equal(await probe(b.ns, 'tcp', '198.18.0.10', 22), 'ok');
    t.fw.removePolicy(b.vm); // again: no-op
    t.fw.addVm(b.vm);
  });
});
