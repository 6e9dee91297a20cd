/**
 * tc-redirect-tap in a real chain: Debian's `bridge` plugin (containernetworking-plugins, with host-local)
 * exec'd in the host namespace, its result fed to our standalone executable as prevResult, traffic through
 * the TAP, CHECK, and DEL in reverse order with the cached result, as libcni runs a conflist. Then the
 * cost of the two ways to run our plugin: in-process against exec of the standalone file.
 */
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import {
  arpThroughTap,
  cniEnv,
  tapConf as conf,
  ensurePluginBuilt,
  execPlugin,
  inProcess,
  type LinkJson,
  linkNames,
  ok,
  type ResultJson,
  type Runner,
  standalone,
  TapWorld,
} from '../helpers/cni-tap.js';
import { privSkipReason } from '../helpers/priv.js';

const skip = privSkipReason();
const DEBIAN_BRIDGE = '/usr/lib/cni/bridge';

describe('tc-redirect-tap in a chain, and its cost', { skip }, () => {
  let world: TapWorld;

  before(() => {
    ensurePluginBuilt();
    world = new TapWorld();
  });
  after(() => world?.destroy());

  it('chained after Debian’s bridge plugin (exec’d in the host namespace), with traffic', {
    skip: !existsSync(DEBIAN_BRIDGE) && `${DEBIAN_BRIDGE} is not installed`,
  }, async (t) => {
    const ns = world.netns('crt-deb');
    const path = `/run/netns/${ns.name}`;
    const dataDir = `/run/tapnet-crt-ipam-${process.pid}`;
    const bridgeConf = {
      cniVersion: '1.0.0',
      name: 'crtnet',
      type: 'bridge',
      bridge: 'crtbr9',
      isGateway: true,
      mtu: 1450,
      ipam: { type: 'host-local', subnet: '198.18.90.0/24', gateway: '198.18.90.1', dataDir },
    };
    const env = cniEnv('deb', path);
    const inHost = ['ip', 'netns', 'exec', world.host.name];
    const bridge = (cmd: string, c: object) =>
      execPlugin(DEBIAN_BRIDGE, cmd, env, Buffer.from(JSON.stringify(c)), inHost);
    try {
      const prev = JSON.parse(ok(await bridge('ADD', bridgeConf), 'bridge ADD')) as ResultJson;
      const ours = JSON.parse(
        ok(await standalone('ADD', env, conf(prev)), 'tc-redirect-tap ADD'),
      ) as ResultJson;
      const vmIf = ours.interfaces.at(-1)!;
      const eth0 = ns.ipJson<LinkJson[]>('link', 'show', 'eth0')[0]!;
      assert.deepEqual([vmIf.sandbox, vmIf.mac], ['deb', eth0.address]);
      assert.equal(
        ns.ipJson<LinkJson[]>('link', 'show', vmIf.name)[0]!.mtu,
        1450,
        'the MTU the bridge plugin set',
      );
      const vmIp = ours.ips.find((i) => i.interface === ours.interfaces.length - 1)!;
      assert.equal(vmIp.gateway, '198.18.90.1');
      const br9 = world.host.ipJson<LinkJson[]>('link', 'show', 'crtbr9')[0]!.address;
      const [addr] = vmIp.address.split('/') as [string];
      assert.equal(await arpThroughTap(ns, vmIf.name, vmIf.mac!, addr, '198.18.90.1'), `reply ${br9}`);
      ok(await standalone('CHECK', env, conf(ours)), 'CHECK');
      // DEL in reverse order, each with the cached (final) result, as libcni does.
      ok(await standalone('DEL', env, conf(ours)), 'tc-redirect-tap DEL');
      ok(await bridge('DEL', { ...bridgeConf, prevResult: ours }), 'bridge DEL');
      assert.deepEqual(linkNames(ns), ['lo']);
      t.diagnostic(`bridge → tc-redirect-tap: ${vmIf.name} ${vmIp.address} via 198.18.90.1`);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      try {
        world.host.ip('link', 'del', 'crtbr9');
      } catch {}
    }
  });

  it('timing: in-process ADD+DEL against exec of the standalone file', async (t) => {
    const { path, prev } = world.vm('crt-time');
    const env = cniEnv('time', path);
    const cycle = async (run: Runner): Promise<[number, number]> => {
      const t0 = performance.now();
      const res = ok(await run('ADD', env, conf(prev)), 'ADD');
      const t1 = performance.now();
      ok(await run('DEL', env, conf(JSON.parse(res))), 'DEL');
      return [t1 - t0, performance.now() - t1];
    };
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const measure = async (name: string, run: Runner, n: number): Promise<number> => {
      await cycle(run); // warm-up
      const adds: number[] = [];
      const dels: number[] = [];
      for (let i = 0; i < n; i++) {
        const [a, d] = await cycle(run);
        adds.push(a);
        dels.push(d);
      }
      const [a, d] = [median(adds), median(dels)];
      t.diagnostic(`${name}: ADD median ${a.toFixed(2)} ms, DEL median ${d.toFixed(2)} ms (n=${n})`);
      return a + d;
    };
    const inproc = await measure('in-process', inProcess, 20);
    const exec = await measure('standalone exec', standalone, 5);
    assert.ok(
      inproc < exec,
      `in-process (${inproc.toFixed(1)} ms) is cheaper than exec (${exec.toFixed(1)} ms)`,
    );
  });
});
