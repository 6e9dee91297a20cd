/**
 * tc-redirect-tap against the kernel, as a CNI chain would run it. A test namespace plays the host (a
 * bridge with the gateway address); each VM gets its own namespace with `eth0`, a veth whose peer is a
 * bridge port (what the bridge plugin makes). Our plugin runs in-process and as the standalone
 * executable; iproute2 and tc are the oracle; an ARP exchange through the TAP proves the plumbing.
 * (cni-tc-redirect-tap-chain.test.ts: after Debian's real bridge plugin, and timings.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it, type TestContext } from 'node:test';
import {
  arpThroughTap,
  cniEnv,
  tapConf as conf,
  ensurePluginBuilt,
  failure,
  hasIngress,
  inProcess,
  type LinkJson,
  linkNames,
  ok,
  type ResultJson,
  type Runner,
  redirectTargets,
  standalone,
  TapWorld,
} from '../helpers/cni-tap.js';
import { privSkipReason } from '../helpers/priv.js';

const skip = privSkipReason();

describe('tc-redirect-tap CNI plugin in namespaces', { skip }, () => {
  let world: TapWorld;

  before(() => {
    ensurePluginBuilt();
    world = new TapWorld();
  });
  after(() => world?.destroy());

  async function fullCycle(t: TestContext, run: Runner, how: string, named: boolean): Promise<void> {
    const { ns, path, net, vethMac, prev } = world.vm(`crt-${how}`);
    const id = `vm-${how}`;
    // Owner through CNI_ARGS (in-process run) or through the environment (standalone run).
    const extra: Record<string, string> = named
      ? { TC_REDIRECT_TAP_NAME: 'fctap0', TC_REDIRECT_TAP_UID: '1234', TC_REDIRECT_TAP_GID: '5678' }
      : { CNI_ARGS: 'IgnoreUnknown=1;TC_REDIRECT_TAP_UID=1234;TC_REDIRECT_TAP_GID=5678' };
    const tapName = named ? 'fctap0' : 'tap0';
    const env = cniEnv(id, path, extra);

    const result = JSON.parse(ok(await run('ADD', env, conf(prev)), 'ADD')) as ResultJson;

    // The kernel has the TAP: veth's MTU, vnet header, owner, persistent, up.
    const [tap] = ns.ipJson<LinkJson[]>('-d', 'link', 'show', tapName);
    assert.ok(tap, `${tapName} exists`);
    assert.equal(tap.mtu, 1400);
    assert.ok(tap.flags.includes('UP'));
    assert.equal(tap.linkinfo?.info_kind, 'tun');
    const info = tap.linkinfo?.info_data ?? {};
    assert.deepEqual(
      [info.type, info.vnet_hdr, info.persist, info.user, info.group],
      ['tap', true, true, 1234, 5678],
    );
    // Both redirects, as tc shows them.
    assert.deepEqual(redirectTargets(ns, tapName), ['u32:eth0']);
    assert.deepEqual(redirectTargets(ns, 'eth0'), [`u32:${tapName}`]);

    // The result: the previous one, plus the TAP and the VM's interface with the veth's MAC and IP.
    assert.equal(result.cniVersion, '1.0.0');
    assert.deepEqual(result.interfaces.slice(0, 3), prev.interfaces);
    assert.deepEqual(result.interfaces.slice(3), [
      { name: tapName, mac: tap.address, sandbox: path },
      { name: tapName, mac: vethMac, sandbox: id },
    ]);
    assert.deepEqual(result.ips, [
      { interface: 2, address: `198.18.${net}.2/24`, gateway: `198.18.${net}.1` },
      { interface: 4, address: `198.18.${net}.2/24`, gateway: `198.18.${net}.1` },
    ]);
    assert.deepEqual(result.routes, prev.routes);

    // Traffic: the guest's ARP request goes TAP → eth0 → bridge, the reply comes back into the TAP.
    const arp = await arpThroughTap(ns, tapName, vethMac, `198.18.${net}.2`, `198.18.${net}.1`);
    assert.equal(arp, `reply ${world.bridgeMac}`);

    const cached = (v = '1.0.0'): Buffer => conf(structuredClone(result), v);
    ok(await run('CHECK', env, cached()), 'CHECK');
    // CHECK notices a wrong MTU and a missing redirect, and needs a spec version that has it.
    ns.ip('link', 'set', tapName, 'mtu', '1300');
    assert.match(failure(await run('CHECK', env, cached())).msg, /MTU 1300/);
    ns.ip('link', 'set', tapName, 'mtu', '1400');
    execFileSync('ip', ['netns', 'exec', ns.name, 'tc', 'filter', 'del', 'dev', 'eth0', 'ingress']);
    assert.match(failure(await run('CHECK', env, cached())).msg, /no filter redirects eth0/);
    assert.equal(failure(await run('CHECK', env, cached('0.3.1'))).code, 1);

    // DEL removes the TAP and our filters and qdisc from eth0; eth0 stays (it is the bridge plugin's).
    ok(await run('DEL', env, cached()), 'DEL');
    assert.deepEqual(linkNames(ns), ['eth0', 'lo']);
    assert.deepEqual(redirectTargets(ns, 'eth0'), []);
    assert.equal(hasIngress(ns, 'eth0'), false);
    // Again: nothing left is success. Then with the namespace gone.
    ok(await run('DEL', env, cached()), 'second DEL');
    ns.destroy();
    ok(await run('DEL', env, cached()), 'DEL without a namespace');
    t.diagnostic(`${how}: ADD, ARP through the TAP, CHECK, DEL ×3 ok`);
  }

  it('in-process: ADD, traffic through the TAP, CHECK, DEL, DEL again, DEL without the namespace', async (t) => {
    await fullCycle(t, inProcess, 'inproc', false);
  });

  it('standalone executable: the same, with a fixed TAP name and owner from the environment', async (t) => {
    await fullCycle(t, standalone, 'exec', true);
  });

  it('a second ADD in the same namespace takes the next free tapN; DEL finds a TAP by its redirect', async () => {
    const { ns, path, prev } = world.vm('crt-two');
    const r1 = JSON.parse(ok(await inProcess('ADD', cniEnv('a', path), conf(prev)), 'ADD')) as ResultJson;
    ns.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p');
    ns.ip('link', 'set', 'eth1', 'up');
    const env1 = cniEnv('b', path, { CNI_IFNAME: 'eth1' });
    const r2 = JSON.parse(
      ok(await inProcess('ADD', env1, conf({ cniVersion: '1.0.0' })), 'ADD 2'),
    ) as ResultJson;
    assert.equal(r1.interfaces.at(-1)?.name, 'tap0');
    assert.equal(r2.interfaces.at(-1)?.name, 'tap1');
    assert.deepEqual(redirectTargets(ns, 'eth1'), ['u32:tap1']);
    // DEL without a cached result or a name finds the TAP through eth1's redirect.
    ok(await inProcess('DEL', env1, conf()), 'DEL');
    assert.ok(!linkNames(ns).includes('tap1'));
    assert.deepEqual(redirectTargets(ns, 'eth0'), ['u32:tap0'], 'the other VM is untouched');
    ok(await inProcess('DEL', cniEnv('a', path), conf(r1)), 'DEL 1');
    assert.deepEqual(linkNames(ns), ['eth0', 'eth1', 'eth1p', 'lo']);
  });

  it('ADD fails cleanly: no prevResult (7), no CNI_IFNAME device, a non-TAP of the requested name', async () => {
    const { ns, path, prev } = world.vm('crt-bad');
    assert.equal(failure(await inProcess('ADD', cniEnv('x', path), conf())).code, 7);
    const noVeth = failure(await inProcess('ADD', cniEnv('x', path, { CNI_IFNAME: 'eth9' }), conf(prev)));
    assert.match(noVeth.msg, /failed to find redirect interface "eth9"/);
    ns.ip('link', 'add', 'notatap', 'type', 'veth', 'peer', 'name', 'notatapp');
    const named = cniEnv('x', path, { CNI_ARGS: 'TC_REDIRECT_TAP_NAME=notatap' });
    assert.equal(failure(await inProcess('ADD', named, conf(prev))).code, 999);
    // Nothing was left behind by the failed ADDs.
    assert.deepEqual(redirectTargets(ns, 'eth0'), []);
    assert.equal(hasIngress(ns, 'eth0'), false);
    assert.deepEqual(linkNames(ns), ['eth0', 'lo', 'notatap', 'notatapp']);
  });

  it('CHECK and DEL work on what awslabs’ plugin makes (filters at a kernel-chosen priority)', async () => {
    const { ns, path, vethMac, prev } = world.vm('crt-aws');
    ns.ip('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap', 'vnet_hdr');
    ns.ip('link', 'set', 'tap0', 'mtu', '1400', 'up');
    for (const [from, to] of [
      ['tap0', 'eth0'],
      ['eth0', 'tap0'],
    ] as const) {
      const tc = (...a: string[]) => execFileSync('ip', ['netns', 'exec', ns.name, 'tc', ...a]);
      tc('qdisc', 'add', 'dev', from, 'ingress');
      const match = ['protocol', 'all', 'u32', 'match', 'u32', '0', '0'];
      tc(
        'filter',
        'add',
        'dev',
        from,
        'parent',
        'ffff:',
        ...match,
        'action',
        'mirred',
        'egress',
        'redirect',
        'dev',
        to,
      );
    }
    const tapMac = ns.ipJson<LinkJson[]>('link', 'show', 'tap0')[0]!.address;
    const result = structuredClone(prev);
    result.interfaces.push(
      { name: 'tap0', mac: tapMac, sandbox: path },
      { name: 'tap0', mac: vethMac, sandbox: 'aws' },
    );
    ok(await inProcess('CHECK', cniEnv('aws', path), conf(result)), 'CHECK');
    ok(await inProcess('DEL', cniEnv('aws', path), conf(result)), 'DEL');
    assert.deepEqual(linkNames(ns), ['eth0', 'lo']);
    assert.equal(hasIngress(ns, 'eth0'), false);
  });
});
