import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const cli = join(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

describe('tapnet CLI, as a user types it', { skip }, () => {
  let t: TestNetns;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const tapnet = (...args: string[]) =>
    spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env });
  before(() => {
    t = makeTestNetns('cli');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-cli-'));
    const config = join(dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        netns: t.ns.path,
        networks: { vms: { bridge: 'tncli0', subnet4: '198.18.20.0/24', dns: ['198.18.20.53'] } },
        defaultNetwork: 'vms',
      }),
    );
    env = { ...process.env, TAPNET_CONFIG: config, TAPNET_STATE_DIR: join(dir, 'state') };
  });
  after(() => {
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('up --json prints the NetworkInfo with the documented keys, and creates the TAP', () => {
    const r = tapnet('up', 'vm1', '--json');
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    for (const k of ['vmId', 'network', 'tap', 'mac', 'ipv4', 'gateway4', 'bridge', 'mtu', 'dns'])
      assert.ok(k in info, k);
    assert.equal(info.vmId, 'vm1');
    assert.equal(info.bridge, 'tncli0');
    assert.match(info.ipv4, /^198\.18\.20\.\d+\/24$/);
    assert.equal(info.gateway4, '198.18.20.1');
    assert.deepEqual(info.dns, ['198.18.20.53']);
    const link = t.ipJson<{ master: string }[]>('link', 'show', info.tap)[0]!;
    assert.equal(link.master, 'tncli0');
    const again = JSON.parse(tapnet('up', 'vm1', '--json').stdout);
    assert.equal(again.ipv4, info.ipv4);
  });

  it('up with a static IP and MAC; ls shows both VMs as a table and as JSON', () => {
    const r = tapnet('up', 'vm2', '--ip', '198.18.20.99', '--mac', '02:aa:bb:cc:dd:ee', '--json');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).ipv4, '198.18.20.99/24');
    const ls = tapnet('ls');
    assert.match(ls.stdout, /^VM\s+NETWORK\s+TAP/m);
    assert.match(ls.stdout, /vm2\s+vms\s+\S+\s+198\.18\.20\.99\/24/);
    const list = JSON.parse(tapnet('ls', '--json').stdout);
    assert.deepEqual(
      list.map((i: { vmId: string }) => i.vmId),
      ['vm1', 'vm2'],
    );
  });

  it('inspect --json includes guest and VMM configuration', () => {
    const r = tapnet('inspect', 'vm2', '--json');
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.match(info.guest.kernelIpArg, /^ip=198\.18\.20\.99::198\.18\.20\.1:255\.255\.255\.0::eth0:off/);
    assert.equal(info.guest.firecracker.guest_mac, '02:aa:bb:cc:dd:ee');
    assert.ok(info.guest.qemu.byFd.some((a: string) => a.includes('fd=3')));
  });

  it('invalid input: a non-zero exit and one clear line on stderr', () => {
    const cases: [string[], number, RegExp][] = [
      [['up', '../../etc'], 2, /ERR_INVALID_ARGUMENT: VM id/],
      [['up', 'vm3', '--ip', '198.18.20.300'], 2, /ERR_INVALID_ARGUMENT/],
      [['up', 'vm3', '--ip', '198.18.20.99'], 4, /ERR_IPAM_CONFLICT/],
      [['up', 'vm3', '--network', 'nope'], 3, /ERR_NOT_FOUND: no network named nope/],
      [['up', 'vm3', '--mac', 'zz:00:00:00:00:00'], 2, /ERR_INVALID_ARGUMENT/],
      [['inspect', 'ghost'], 3, /ERR_NOT_FOUND/],
      [['down'], 2, /ERR_INVALID_ARGUMENT/],
    ];
    for (const [args, code, re] of cases) {
      const r = tapnet(...args);
      assert.equal(r.status, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    const badConfig = spawnSync(process.execPath, [cli, 'ls'], {
      encoding: 'utf8',
      env: { ...env, TAPNET_CONFIG: '/nonexistent.json' },
    });
    assert.equal(badConfig.status, 2);
    assert.match(badConfig.stderr, /ERR_CONFIG: cannot read config file/);
  });

  it('down releases; again is fine; gc reports; nothing is left', () => {
    assert.equal(tapnet('down', 'vm1').status, 0);
    assert.equal(tapnet('down', 'vm1').status, 0);
    assert.equal(tapnet('down', '--all').status, 0);
    const gc = tapnet('gc', '--json');
    assert.equal(gc.status, 0, gc.stderr);
    assert.deepEqual(JSON.parse(gc.stdout).errors, []);
    assert.deepEqual(JSON.parse(tapnet('ls', '--json').stdout), []);
    assert.equal(t.ipJson<unknown[]>('link', 'show', 'type', 'tun').length, 0);
  });

  it('policy set/get/rm, and a bad policy refused naming the field', () => {
    assert.equal(tapnet('up', 'vmpol').status, 0);
    const file = join(dir, 'web.json');
    const doc = {
      default: 'deny',
      rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80, 443], action: 'allow' }],
    };
    writeFileSync(file, JSON.stringify(doc));
    const set = tapnet('policy', 'set', 'vmpol', '--file', file);
    assert.equal(set.status, 0, set.stderr);
    const got = JSON.parse(tapnet('policy', 'get', 'vmpol', '--json').stdout);
    assert.equal(got.default, 'deny');
    assert.deepEqual(got.rules[0].ports, [80, 443]);
    writeFileSync(
      file,
      JSON.stringify({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: ['80; flush ruleset'], action: 'allow' }],
      }),
    );
    const bad = tapnet('policy', 'set', 'vmpol', '--file', file);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /ERR_INVALID_ARGUMENT: .*rules\[0\]\.ports\[0\]/);
    assert.equal(tapnet('policy', 'rm', 'vmpol').status, 0);
    assert.equal(JSON.parse(tapnet('policy', 'get', 'vmpol', '--json').stdout), null);
    assert.equal(tapnet('down', 'vmpol').status, 0);
  });

  it('cni conflist prints the Firecracker conflist and writes it atomically', () => {
    const r = tapnet('cni', 'conflist', 'fcnet', '--subnet', '198.18.90.0/24');
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(
      doc.plugins.map((p: { type: string }) => p.type),
      ['bridge', 'tc-redirect-tap'],
    );
    assert.equal(doc.plugins[0].ipam.subnet, '198.18.90.0/24');
    const w = tapnet('cni', 'conflist', 'fcnet', '--subnet', '198.18.90.0/24', '--write', join(dir, 'net.d'));
    assert.equal(w.status, 0, w.stderr);
    assert.equal(w.stdout.trim(), join(dir, 'net.d', 'fcnet.conflist'));
  });

  it('--help shows the commands, examples and exit codes', () => {
    const r = tapnet('--help');
    assert.equal(r.status, 0);
    for (const w of ['up', 'down', 'ls', 'inspect', 'gc', 'Examples:', 'Exit codes:'])
      assert.match(r.stdout, new RegExp(w));
  });
});
