/**
 * tc-redirect-tap against the kernel, as a CNI chain would run it. A test namespace plays the host (a
 * bridge with the gateway address); each VM gets its own namespace with `eth0`, a veth whose peer is a
 * bridge port (what the bridge plugin makes). Our plugin runs in-process and as the standalone
 * executable; iproute2 and tc are the oracle; an ARP exchange through the TAP proves the plumbing.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tcRedirectTapPlugin } from '../../src/cni/plugins/index.js';
import { closeTapFds, openTap } from '../../src/net/tap.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
const EXE = join(root, 'dist', 'cni', 'tc-redirect-tap');
const ARP_CHILD = join(here, '..', 'fixtures', 'tap-arp-child.js');
const DEBIAN_BRIDGE = '/usr/lib/cni/bridge';

type Cmd = 'ADD' | 'DEL' | 'CHECK';
interface Out {
  stdout: Buffer;
  exitCode: number;
}
type Runner = (cmd: Cmd, env: Record<string, string>, stdin: Buffer) => Promise<Out>;

const inProcess: Runner = (cmd, env, stdin) => tcRedirectTapPlugin.run(cmd, env, stdin);

/** Exec a plugin file as a runtime does: CNI_COMMAND and CNI_* in the environment, the config on stdin. */
function execPlugin(
  file: string,
  cmd: string,
  env: Record<string, string>,
  stdin: Buffer,
  wrap: string[] = [],
): Promise<Out> {
  return new Promise((resolve, reject) => {
    const argv = [...wrap, file];
    const p = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env, CNI_COMMAND: cmd },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const chunks: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => chunks.push(d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ stdout: Buffer.concat(chunks), exitCode: code ?? -1 }));
    p.stdin.end(stdin);
  });
}

const standalone: Runner = (cmd, env, stdin) => execPlugin(EXE, cmd, env, stdin);

interface ResultJson {
  cniVersion: string;
  interfaces: { name: string; mac?: string; sandbox?: string }[];
  ips: { interface?: number; address: string; gateway?: string }[];
  routes?: { dst: string; gw?: string }[];
}

interface LinkJson {
  ifname: string;
  ifindex: number;
  mtu: number;
  address: string;
  flags: string[];
  linkinfo?: { info_kind: string; info_data?: Record<string, unknown> };
}

interface TcFilterJson {
  pref: number;
  kind: string;
  options?: { actions?: { kind: string; mirred_action: string; direction: string; to_dev: string }[] };
}

function ok(out: Out, what: string): string {
  assert.equal(out.exitCode, 0, `${what} failed: ${out.stdout.toString()}`);
  return out.stdout.toString();
}

function failure(out: Out): { code: number; msg: string } {
  assert.equal(out.exitCode, 1, `expected a failure: ${out.stdout.toString()}`);
  return JSON.parse(out.stdout.toString()) as { code: number; msg: string };
}

describe('tc-redirect-tap CNI plugin in namespaces', { skip }, () => {
  let host: TestNetns;
  let bridgeMac = '';
  const vms: TestNetns[] = [];
  let subnet = 40;

  before(() => {
    if (!existsSync(EXE)) {
      const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-plugin.mjs')], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, `build-plugin: ${r.stderr}`);
    }
    host = makeTestNetns('crt-host');
    // A fixed MAC: a bridge without one takes its lowest port's, and changes it as ports come and go.
    host.ip('link', 'add', 'crtbr0', 'address', '02:00:5e:12:00:01', 'type', 'bridge');
    host.ip('link', 'set', 'crtbr0', 'up');
    bridgeMac = host.ipJson<LinkJson[]>('link', 'show', 'crtbr0')[0]!.address;
  });
  after(() => {
    for (const vm of vms) vm.destroy();
    host?.destroy();
  });

  /** A VM namespace with eth0 (MTU 1400, 198.18.N.2/24) whose peer is a port of crtbr0 (198.18.N.1/24). */
  function makeVm(tag: string): { vm: TestNetns; path: string; net: number; vethMac: string; prev: object } {
    const net = subnet++;
    const vm = makeTestNetns(tag);
    vms.push(vm);
    execFileSync('ip', [
      'netns',
      'exec',
      vm.name,
      'sysctl',
      '-qw',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
    ]);
    const port = `crtp${net}`;
    host.ip('addr', 'add', `198.18.${net}.1/24`, 'dev', 'crtbr0');
    host.ip('link', 'add', port, 'mtu', '1400', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vm.name);
    host.ip('link', 'set', port, 'master', 'crtbr0', 'up');
    vm.ip('addr', 'add', `198.18.${net}.2/24`, 'dev', 'eth0');
    vm.ip('link', 'set', 'eth0', 'mtu', '1400', 'up');
    const vethMac = vm.ipJson<LinkJson[]>('link', 'show', 'eth0')[0]!.address;
    const path = `/run/netns/${vm.name}`;
    const prev = {
      cniVersion: '1.0.0',
      interfaces: [
        { name: 'crtbr0', mac: bridgeMac },
        { name: port },
        { name: 'eth0', mac: vethMac, sandbox: path },
      ],
      ips: [{ interface: 2, address: `198.18.${net}.2/24`, gateway: `198.18.${net}.1` }],
      routes: [{ dst: '0.0.0.0/0', gw: `198.18.${net}.1` }],
    };
    return { vm, path, net, vethMac, prev };
  }

  const conf = (prevResult?: object, cniVersion = '1.0.0'): Buffer =>
    Buffer.from(
      JSON.stringify({
        cniVersion,
        name: 'crtnet',
        type: 'tc-redirect-tap',
        ...(prevResult ? { prevResult } : {}),
      }),
    );
  const cniEnv = (
    containerId: string,
    netns: string,
    extra: Record<string, string> = {},
  ): Record<string, string> => ({
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/usr/lib/cni',
    ...extra,
  });
  const tcJson = <T>(vm: TestNetns, ...args: string[]): T =>
    JSON.parse(
      execFileSync('ip', ['netns', 'exec', vm.name, 'tc', '-j', ...args], { encoding: 'utf8' }) || '[]',
    ) as T;
  const redirectTargets = (vm: TestNetns, dev: string): string[] =>
    tcJson<TcFilterJson[]>(vm, 'filter', 'show', 'dev', dev, 'ingress').flatMap((f) =>
      (f.options?.actions ?? [])
        .filter((a) => a.kind === 'mirred' && a.mirred_action === 'redirect' && a.direction === 'egress')
        .map((a) => `${f.kind}:${a.to_dev}`),
    );
  const hasIngress = (vm: TestNetns, dev: string): boolean =>
    tcJson<{ kind: string }[]>(vm, 'qdisc', 'show', 'dev', dev).some((q) => q.kind === 'ingress');

  /** Write an ARP request for the gateway into the TAP (as the guest) and wait for the bridge's reply. */
  async function arpThroughTap(vm: TestNetns, tap: string, mac: string, net: number): Promise<string> {
    const { fds } = openTap(tap, { nsFd: vm.ns.fd, vnetHdr: true });
    try {
      const child = spawn(process.execPath, [ARP_CHILD, mac, `198.18.${net}.2`, `198.18.${net}.1`], {
        stdio: ['ignore', 'pipe', 'inherit', fds[0]!],
      });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      await new Promise((r) => child.on('close', r));
      return out.trim();
    } finally {
      await closeTapFds(fds);
    }
  }

  async function fullCycle(t: TestContext, run: Runner, how: string, named: boolean): Promise<void> {
    const { vm, path, net, vethMac, prev } = makeVm(`crt-${how}`);
    const id = `vm-${how}`;
    // Owner through CNI_ARGS (in-process run) or through the environment (standalone run).
    const extra: Record<string, string> = named
      ? { TC_REDIRECT_TAP_NAME: 'fctap0', TC_REDIRECT_TAP_UID: '1234', TC_REDIRECT_TAP_GID: '5678' }
      : { CNI_ARGS: 'IgnoreUnknown=1;TC_REDIRECT_TAP_UID=1234;TC_REDIRECT_TAP_GID=5678' };
    const tapName = named ? 'fctap0' : 'tap0';

    const result = JSON.parse(ok(await run('ADD', cniEnv(id, path, extra), conf(prev)), 'ADD')) as ResultJson;

    // The kernel has the TAP: veth's MTU, vnet header, owner, persistent, up.
    const [tap] = vm.ipJson<LinkJson[]>('-d', 'link', 'show', tapName);
    assert.ok(tap, `${tapName} exists`);
    assert.equal(tap.mtu, 1400);
    assert.ok(tap.flags.includes('UP'));
    assert.equal(tap.linkinfo?.info_kind, 'tun');
    assert.deepEqual(
      [tap.linkinfo?.info_data?.type, tap.linkinfo?.info_data?.vnet_hdr, tap.linkinfo?.info_data?.persist],
      ['tap', true, true],
    );
    assert.deepEqual([tap.linkinfo?.info_data?.user, tap.linkinfo?.info_data?.group], [1234, 5678]);
    // Both redirects, as tc shows them.
    assert.deepEqual(redirectTargets(vm, tapName), ['u32:eth0']);
    assert.deepEqual(redirectTargets(vm, 'eth0'), [`u32:${tapName}`]);

    // The result: the previous one, plus the TAP and the VM's interface with the veth's MAC and IP.
    assert.equal(result.cniVersion, '1.0.0');
    assert.deepEqual(result.interfaces.slice(3), [
      { name: tapName, mac: tap.address, sandbox: path },
      { name: tapName, mac: vethMac, sandbox: id },
    ]);
    assert.deepEqual(result.ips, [
      { interface: 2, address: `198.18.${net}.2/24`, gateway: `198.18.${net}.1` },
      { interface: 4, address: `198.18.${net}.2/24`, gateway: `198.18.${net}.1` },
    ]);
    assert.deepEqual(result.routes, [{ dst: '0.0.0.0/0', gw: `198.18.${net}.1` }]);

    // Traffic: the guest's ARP request goes TAP → eth0 → bridge, the reply comes back into the TAP.
    assert.equal(await arpThroughTap(vm, tapName, vethMac, net), `reply ${bridgeMac}`);

    const cached = JSON.stringify(result);
    ok(await run('CHECK', cniEnv(id, path, extra), conf(JSON.parse(cached))), 'CHECK');
    // CHECK notices a wrong MTU and a missing redirect.
    vm.ip('link', 'set', tapName, 'mtu', '1300');
    assert.match(
      failure(await run('CHECK', cniEnv(id, path, extra), conf(JSON.parse(cached)))).msg,
      /MTU 1300/,
    );
    vm.ip('link', 'set', tapName, 'mtu', '1400');
    execFileSync('ip', ['netns', 'exec', vm.name, 'tc', 'filter', 'del', 'dev', 'eth0', 'ingress']);
    assert.match(
      failure(await run('CHECK', cniEnv(id, path, extra), conf(JSON.parse(cached)))).msg,
      /no filter redirects eth0/,
    );
    // CHECK needs a spec version that has it.
    assert.equal(
      failure(await run('CHECK', cniEnv(id, path, extra), conf(JSON.parse(cached), '0.3.1'))).code,
      1,
    );

    // DEL removes the TAP and our filters and qdisc from eth0; eth0 stays (it is the bridge plugin's).
    ok(await run('DEL', cniEnv(id, path, extra), conf(JSON.parse(cached))), 'DEL');
    assert.deepEqual(
      vm
        .ipJson<LinkJson[]>('link', 'show')
        .map((l) => l.ifname)
        .sort(),
      ['eth0', 'lo'],
    );
    assert.deepEqual(redirectTargets(vm, 'eth0'), []);
    assert.equal(hasIngress(vm, 'eth0'), false);
    // Again: nothing left is success. Then with the namespace gone.
    ok(await run('DEL', cniEnv(id, path, extra), conf(JSON.parse(cached))), 'second DEL');
    vm.destroy();
    ok(await run('DEL', cniEnv(id, path, extra), conf(JSON.parse(cached))), 'DEL without a namespace');
    t.diagnostic(`${how}: ADD, ARP through the TAP, CHECK, DEL ×3 ok`);
  }

  it('in-process: ADD, traffic through the TAP, CHECK, DEL, DEL again, DEL without the namespace', async (t) => {
    await fullCycle(t, inProcess, 'inproc', false);
  });

  it('standalone executable: the same, with a fixed TAP name and owner from the environment', async (t) => {
    await fullCycle(t, standalone, 'exec', true);
  });

  it('a second ADD in the same namespace takes the next free tapN', async () => {
    const { vm, path, prev } = makeVm('crt-two');
    const r1 = JSON.parse(ok(await inProcess('ADD', cniEnv('a', path), conf(prev)), 'ADD')) as ResultJson;
    vm.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p');
    vm.ip('link', 'set', 'eth1', 'up');
    const r2 = JSON.parse(
      ok(
        await inProcess('ADD', cniEnv('b', path, { CNI_IFNAME: 'eth1' }), conf({ cniVersion: '1.0.0' })),
        'ADD 2',
      ),
    ) as ResultJson;
    assert.equal(r1.interfaces.at(-1)?.name, 'tap0');
    assert.equal(r2.interfaces.at(-1)?.name, 'tap1');
    assert.deepEqual(redirectTargets(vm, 'eth1'), ['u32:tap1']);
    // DEL without a cached result or a name finds the TAP through eth1's redirect.
    ok(await inProcess('DEL', cniEnv('b', path, { CNI_IFNAME: 'eth1' }), conf()), 'DEL');
    assert.ok(!vm.ipJson<LinkJson[]>('link', 'show').some((l) => l.ifname === 'tap1'));
    assert.deepEqual(redirectTargets(vm, 'eth0'), ['u32:tap0'], 'the other VM is untouched');
    ok(await inProcess('DEL', cniEnv('a', path), conf(r1)), 'DEL 1');
  });

  it('ADD fails cleanly: no prevResult (7), no CNI_IFNAME device, a non-TAP of the requested name', async () => {
    const { vm, path, prev } = makeVm('crt-bad');
    assert.equal(failure(await inProcess('ADD', cniEnv('x', path), conf())).code, 7);
    const noVeth = failure(await inProcess('ADD', cniEnv('x', path, { CNI_IFNAME: 'eth9' }), conf(prev)));
    assert.match(noVeth.msg, /failed to find redirect interface "eth9"/);
    vm.ip('link', 'add', 'notatap', 'type', 'veth', 'peer', 'name', 'notatapp');
    const clash = failure(
      await inProcess('ADD', cniEnv('x', path, { CNI_ARGS: 'TC_REDIRECT_TAP_NAME=notatap' }), conf(prev)),
    );
    assert.equal(clash.code, 999);
    // Nothing was left behind by the failed ADDs.
    assert.deepEqual(redirectTargets(vm, 'eth0'), []);
    assert.equal(hasIngress(vm, 'eth0'), false);
    assert.deepEqual(
      vm
        .ipJson<LinkJson[]>('link', 'show')
        .map((l) => l.ifname)
        .sort(),
      ['eth0', 'lo', 'notatap', 'notatapp'],
    );
  });

  it('CHECK and DEL work on what awslabs’ plugin makes (filters at a kernel-chosen priority)', async () => {
    const { vm, path, vethMac, prev } = makeVm('crt-aws');
    vm.ip('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap', 'vnet_hdr');
    vm.ip('link', 'set', 'tap0', 'mtu', '1400', 'up');
    const tc = (...a: string[]) => execFileSync('ip', ['netns', 'exec', vm.name, 'tc', ...a]);
    for (const [from, to] of [
      ['tap0', 'eth0'],
      ['eth0', 'tap0'],
    ] as const) {
      tc('qdisc', 'add', 'dev', from, 'ingress');
      tc(
        'filter',
        'add',
        'dev',
        from,
        'parent',
        'ffff:',
        'protocol',
        'all',
        'u32',
        'match',
        'u32',
        '0',
        '0',
        'action',
        'mirred',
        'egress',
        'redirect',
        'dev',
        to,
      );
    }
    const tapMac = vm.ipJson<LinkJson[]>('link', 'show', 'tap0')[0]!.address;
    const result = structuredClone(prev) as ResultJson;
    result.interfaces.push(
      { name: 'tap0', mac: tapMac, sandbox: path },
      { name: 'tap0', mac: vethMac, sandbox: 'aws' },
    );
    ok(await inProcess('CHECK', cniEnv('aws', path), conf(result)), 'CHECK');
    ok(await inProcess('DEL', cniEnv('aws', path), conf(result)), 'DEL');
    assert.deepEqual(
      vm
        .ipJson<LinkJson[]>('link', 'show')
        .map((l) => l.ifname)
        .sort(),
      ['eth0', 'lo'],
    );
    assert.equal(hasIngress(vm, 'eth0'), false);
  });

  it('chained after Debian’s real bridge plugin (exec’d in the host namespace), with traffic', {
    skip: !existsSync(DEBIAN_BRIDGE) && `${DEBIAN_BRIDGE} is not installed`,
  }, async (t) => {
    const vm = makeTestNetns('crt-deb');
    vms.push(vm);
    const path = `/run/netns/${vm.name}`;
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
    const inHost = ['ip', 'netns', 'exec', host.name];
    try {
      const bridgeOut = await execPlugin(
        DEBIAN_BRIDGE,
        'ADD',
        env,
        Buffer.from(JSON.stringify(bridgeConf)),
        inHost,
      );
      const prev = JSON.parse(ok(bridgeOut, 'bridge ADD')) as ResultJson;
      const ours = JSON.parse(
        ok(await standalone('ADD', env, conf(prev)), 'tc-redirect-tap ADD'),
      ) as ResultJson;
      const vmIf = ours.interfaces.at(-1)!;
      assert.equal(vmIf.sandbox, 'deb');
      const eth0 = vm.ipJson<LinkJson[]>('link', 'show', 'eth0')[0]!;
      assert.equal(vmIf.mac, eth0.address);
      assert.equal(vm.ipJson<LinkJson[]>('link', 'show', vmIf.name)[0]!.mtu, 1450);
      const vmIp = ours.ips.find((i) => i.interface === ours.interfaces.length - 1)!;
      assert.equal(vmIp.gateway, '198.18.90.1');
      const br9 = host.ipJson<LinkJson[]>('link', 'show', 'crtbr9')[0]!.address;
      const [addr] = vmIp.address.split('/') as [string];
      const { fds } = openTap(vmIf.name, { nsFd: vm.ns.fd, vnetHdr: true });
      try {
        const child = spawn(process.execPath, [ARP_CHILD, vmIf.mac!, addr, '198.18.90.1'], {
          stdio: ['ignore', 'pipe', 'inherit', fds[0]!],
        });
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
        });
        await new Promise((r) => child.on('close', r));
        assert.equal(out.trim(), `reply ${br9}`);
      } finally {
        await closeTapFds(fds);
      }
      ok(await standalone('CHECK', env, conf(ours)), 'CHECK');
      // DEL in reverse order, each with the cached (final) result, as libcni does.
      ok(await standalone('DEL', env, conf(ours)), 'tc-redirect-tap DEL');
      const bridgeDel = { ...bridgeConf, prevResult: ours };
      ok(
        await execPlugin(DEBIAN_BRIDGE, 'DEL', env, Buffer.from(JSON.stringify(bridgeDel)), inHost),
        'bridge DEL',
      );
      assert.deepEqual(
        vm.ipJson<LinkJson[]>('link', 'show').map((l) => l.ifname),
        ['lo'],
      );
      t.diagnostic(`bridge → tc-redirect-tap: ${vmIf.name} ${vmIp.address} via 198.18.90.1`);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      try {
        host.ip('link', 'del', 'crtbr9');
      } catch {}
    }
  });

  it('timing: in-process ADD+DEL against exec of the standalone file', async (t) => {
    const { path, prev } = makeVm('crt-time');
    const cycle = async (run: Runner): Promise<[number, number]> => {
      const t0 = performance.now();
      const res = ok(await run('ADD', cniEnv('time', path), conf(prev)), 'ADD');
      const t1 = performance.now();
      ok(await run('DEL', cniEnv('time', path), conf(JSON.parse(res))), 'DEL');
      return [t1 - t0, performance.now() - t1];
    };
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const report = async (name: string, run: Runner, n: number): Promise<number> => {
      await cycle(run); // warm-up
      const adds: number[] = [];
      const dels: number[] = [];
      for (let i = 0; i < n; i++) {
        const [a, d] = await cycle(run);
        adds.push(a);
        dels.push(d);
      }
      t.diagnostic(
        `${name}: ADD median ${median(adds).toFixed(2)} ms, DEL median ${median(dels).toFixed(2)} ms (n=${n})`,
      );
      return median(adds) + median(dels);
    };
    const inproc = await report('in-process', inProcess, 20);
    const exec = await report('standalone exec', standalone, 5);
    assert.ok(
      inproc < exec,
      `in-process (${inproc.toFixed(1)} ms) is cheaper than exec (${exec.toFixed(1)} ms)`,
    );
  });
});
