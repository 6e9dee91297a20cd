/**
 * The CLI as a user types it, with a daemon running (commands go through it) and without (in-process):
 * batches with a progress bar only on a terminal, stats, verify, doctor, config --print, serve's flags.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { CLI, type DaemonHarness, logLines, startDaemon } from './api-harness.js';

const skip = privSkipReason();

describe('tapnet CLI with a daemon running', { skip }, () => {
  let t: TestNetns;
  let d: DaemonHarness;
  let env: NodeJS.ProcessEnv;
  const tapnet = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
  const taps = () => t.ipJson<{ ifname: string }[]>('link', 'show', 'type', 'tun').map((l) => l.ifname);
  const daemonOps = (vmId: string) =>
    logLines(d.logs())
      .filter((l) => l.vmId === vmId)
      .map((l) => l.op);
  before(async () => {
    t = makeTestNetns('clid');
    d = await startDaemon(t, {
      tag: 'clid',
      config: {
        defaultNetwork: 'vms',
        networks: { vms: { bridge: 'tnclid0', subnet4: '198.18.44.0/24', dns: ['198.18.44.53'] } },
        log: { level: 'debug' },
      },
    });
    env = { ...process.env, TAPNET_CONFIG: d.configFile };
  });
  after(async () => {
    await d?.stop();
    d?.cleanup();
    t?.destroy();
  });

  it('up, ls, inspect, stats and down go through the daemon', () => {
    const up = tapnet('up', 'vm1', '--json');
    assert.equal(up.status, 0, up.stderr);
    const info = JSON.parse(up.stdout);
    assert.match(info.ipv4, /^198\.18\.44\.\d+\/24$/);
    assert.deepEqual(daemonOps('vm1'), ['ensure'], 'the daemon did it');
    assert.ok(taps().includes(info.tap));
    assert.match(tapnet('ls').stdout, new RegExp(`vm1\\s+vms\\s+${info.tap}\\s+198\\.18\\.44\\.`));
    assert.equal(
      JSON.parse(tapnet('inspect', 'vm1', '--json').stdout).guest.firecracker.host_dev_name,
      info.tap,
    );
    const stats = tapnet('stats', 'vm1', '--json');
    assert.equal(stats.status, 0, stats.stderr);
    assert.equal(JSON.parse(stats.stdout)[0].tap, info.tap);
    assert.match(tapnet('stats').stdout, /^VM\s+TAP\s+STATE\s+GUEST RX/m);
    assert.equal(tapnet('down', 'vm1').status, 0);
    assert.deepEqual(daemonOps('vm1'), ['ensure', 'get', 'stats', 'stats', 'release']);
    assert.ok(!taps().includes(info.tap));
  });

  it('--local runs in-process even with a daemon running', () => {
    const up = tapnet('--local', 'up', 'vm-local', '--json');
    assert.equal(up.status, 0, up.stderr);
    assert.deepEqual(daemonOps('vm-local'), []);
    assert.equal(
      JSON.parse(tapnet('ls', '--json').stdout).filter((i: { vmId: string }) => i.vmId === 'vm-local').length,
      1,
      'the daemon sees it',
    );
    assert.equal(tapnet('down', 'vm-local').status, 0);
    assert.deepEqual(daemonOps('vm-local'), ['release']);
  });

  it('batches: piped output is quiet; a terminal gets a progress bar', () => {
    const up = tapnet('up', '--count', '6', '--prefix', 'b-', '--json');
    assert.equal(up.status, 0, up.stderr);
    assert.equal(up.stderr, '', 'no progress bar when piped');
    assert.deepEqual(
      JSON.parse(up.stdout).map((i: { vmId: string }) => i.vmId),
      ['b-1', 'b-2', 'b-3', 'b-4', 'b-5', 'b-6'],
    );
    // `script` gives the command a terminal.
    const cmd = `${process.execPath} ${CLI} up --count 3 --prefix tty- --start 7`;
    const tty = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', env });
    assert.equal(tty.status, 0, tty.stdout);
    assert.match(
      tty.stdout,
      new RegExp(`\r${String.fromCharCode(27)}\\[Kup \\[#+-*\\] \\d/3 tty-\\d`),
      'a progress bar',
    );
    assert.match(tty.stdout, /tty-9\s+vms/);
    const down = tapnet('down', '--all', '--json');
    assert.equal(down.status, 0, down.stderr);
    assert.equal(down.stderr, '');
    assert.deepEqual(JSON.parse(down.stdout).released.sort(), [
      'b-1',
      'b-2',
      'b-3',
      'b-4',
      'b-5',
      'b-6',
      'tty-7',
      'tty-8',
      'tty-9',
    ]);
    assert.deepEqual(taps(), []);
  });

  it('a batch with failures reports each one and exits with the first error’s code', () => {
    assert.equal(tapnet('up', 'x1', '--ip', '198.18.44.50').status, 0);
    const r = tapnet('up', 'x2', 'x1', '--network', 'vms');
    assert.equal(r.status, 0, r.stderr);
    const bad = tapnet('up', 'ok-1', '../bad', 'ok-2');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^tapnet: up \.\.\/bad: ERR_INVALID_ARGUMENT: /m);
    assert.match(bad.stdout, /ok-1/);
    assert.match(bad.stdout, /ok-2/);
    assert.equal(tapnet('down', '--all').status, 0);
  });

  it('verify and gc through the daemon; errors keep their exit codes', () => {
    assert.equal(tapnet('up', 'v1').status, 0);
    const v = tapnet('verify');
    assert.equal(v.status, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^✓ 1 VM\(s\) on 1 network\(s\)/);
    const tap = JSON.parse(tapnet('inspect', 'v1', '--json').stdout).tap;
    t.ip('link', 'del', tap);
    const bad = tapnet('verify', '--json');
    assert.equal(bad.status, 1);
    assert.equal(JSON.parse(bad.stdout).problems[0].kind, 'missing-tap');
    const gc = tapnet('gc', '--json');
    assert.deepEqual(JSON.parse(gc.stdout).recreatedTaps, [tap]);
    assert.equal(tapnet('verify').status, 0);
    const cases: [string[], number, RegExp][] = [
      [['inspect', 'ghost'], 3, /ERR_NOT_FOUND/],
      [['up', 'v2', '--network', 'nope'], 3, /ERR_NOT_FOUND: no network named nope/],
      [['up', 'v2', '--ip', '198.18.44.999'], 2, /ERR_INVALID_ARGUMENT/],
      [['stats', 'ghost'], 3, /ERR_NOT_FOUND/],
      [['up', '--count', '2', 'a'], 2, /--count, not both/],
      [['up', 'a', 'b', '--ip', '198.18.44.9'], 2, /exactly one VM/],
    ];
    for (const [args, code, re] of cases) {
      const r = tapnet(...args);
      assert.equal(r.status, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    assert.equal(tapnet('down', 'v1').status, 0);
  });

  it('config --print shows each value and where it came from', () => {
    const r = spawnSync(process.execPath, [CLI, '--state-dir', '/srv/override', 'config', '--print'], {
      encoding: 'utf8',
      env: { ...env, TAPNET_LOG_LEVEL: 'debug' },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^# config file: ${d.configFile}$`, 'm'));
    assert.match(r.stdout, /^stateDir\s+\/srv\/override\s+flag --state-dir$/m);
    assert.match(r.stdout, /^log\.level\s+debug\s+env TAPNET_LOG_LEVEL$/m);
    assert.match(
      r.stdout,
      new RegExp(`^networks\\.vms\\.subnet4\\s+198\\.18\\.44\\.0/24\\s+file ${d.configFile}$`, 'm'),
    );
    assert.match(r.stdout, /^networks\.vms\.gateway4\s+198\.18\.44\.1\s+derived$/m);
    assert.match(r.stdout, /^firewall\s+nftables\s+default$/m);
    const json = JSON.parse(tapnet('config', '--json').stdout) as { key: string; source: string }[];
    assert.equal(json.find((e) => e.key === 'api.socket')!.source, `file ${d.configFile}`);
    const bad = spawnSync(process.execPath, [CLI, 'config', '--check'], {
      encoding: 'utf8',
      env: { ...env, TAPNET_SHUTDOWN_TIMEOUT_MS: 'later' },
    });
    assert.equal(bad.status, 2);
    assert.match(
      bad.stderr,
      /ERR_CONFIG: invalid configuration: daemon\.shutdownTimeoutMs: .*value "later", from env TAPNET_SHUTDOWN_TIMEOUT_MS/,
    );
    assert.equal(tapnet('config', '--check').status, 0);
  });

  it('doctor: every check with ✓/✗ and the fix; unreachable DNS is a ✗; exit 1', () => {
    const r = tapnet('doctor', '--dns-timeout', '300');
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.ok(r.stdout, r.stderr);
    for (const id of [
      'privileges',
      'module.tun',
      'module.bridge',
      'module.vhost_net',
      'module.nf_tables',
      'dev.tun',
      'dev.kvm',
      'network.vms',
      'firewall.vms',
      'leftovers',
      'vms',
      'daemon',
    ]) {
      assert.match(r.stdout, new RegExp(`^[✓✗!·] ${id.replace('.', '\\.')}\\s`, 'm'), id);
    }
    assert.match(r.stdout, /^✓ privileges\s+CAP_NET_ADMIN and CAP_SYS_ADMIN are effective$/m);
    assert.match(r.stdout, /^✓ dev\.tun\s+\/dev\/net\/tun opens read-write$/m);
    assert.match(r.stdout, /^✓ sysctl\.net\.ipv4\.ip_forward\s+net\.ipv4\.ip_forward = 1$/m);
    assert.match(r.stdout, /^✓ network\.vms\s+bridge tnclid0 is up with 198\.18\.44\.1$/m);
    assert.match(r.stdout, /^✓ firewall\.vms\s+NAT \(masquerade\) rule present/m);
    assert.match(r.stdout, /^✗ dns\.vms\.198\.18\.44\.53\s+198\.18\.44\.53 (is unreachable|did not answer)/m);
    assert.match(r.stdout, /^ {4}fix: check the route and firewall to 198\.18\.44\.53/m);
    assert.match(r.stdout, /^✓ daemon\s+tapnet serve answers on /m);
    const json = JSON.parse(tapnet('doctor', '--json', '--dns-timeout', '300').stdout);
    assert.equal(json.ok, false);
    assert.ok(
      json.checks.every((c: { status: string; fix?: string }) => c.status !== 'fail' || c.fix),
      'every ✗ has a fix',
    );
  });

  it('doctor finds leftovers of a crash; gc clears them', () => {
    // A TAP with tapnet's naming that no VM owns, as a crash between TAP and record leaves it.
    t.ip('tuntap', 'add', 'dev', 'tn0123456789', 'mode', 'tap');
    const r = tapnet('doctor', '--json', '--dns-timeout', '100');
    const left = JSON.parse(r.stdout).checks.find((c: { id: string }) => c.id === 'leftovers');
    assert.equal(left.status, 'fail');
    assert.match(left.message, /TAP tn0123456789 belongs to no VM/);
    assert.equal(left.fix, 'tapnet gc');
    assert.deepEqual(JSON.parse(tapnet('gc', '--json').stdout).orphanTaps, ['tn0123456789']);
    const again = JSON.parse(tapnet('doctor', '--json', '--dns-timeout', '100').stdout);
    assert.equal(again.checks.find((c: { id: string }) => c.id === 'leftovers').status, 'ok');
  });
});

describe('tapnet serve from the command line', { skip }, () => {
  let t: TestNetns;
  let dir: string;
  before(() => {
    t = makeTestNetns('serve');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-serve-'));
  });
  after(() => {
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses TCP without a token, and a bad configuration, with exit code 2 and the key named', () => {
    const config = join(dir, 'c.json');
    writeFileSync(
      config,
      JSON.stringify({
        netns: t.ns.path,
        stateDir: join(dir, 'state'),
        api: { socket: join(dir, 's.sock') },
      }),
    );
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, '--config', config, 'serve', ...args], {
        encoding: 'utf8',
        timeout: 10_000,
      });
    const tcp = run('--tcp', '127.0.0.1:7071');
    assert.equal(tcp.status, 2);
    assert.match(tcp.stderr, /api\.tcp: needs api\.token or api\.tokenFile/);
    const remote = run('--tcp', '0.0.0.0:7071', '--token-file', config);
    assert.equal(remote.status, 2);
    assert.match(remote.stderr, /api\.tcp: must be a loopback address .*from flag --tcp/);
    const level = run('--log-level', 'chatty');
    assert.equal(level.status, 2, level.stderr);
  });
});

const cniSkip = skip ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'no CNI plugins in /usr/lib/cni');

describe('tapnet cni, like cnitool', { skip: cniSkip }, () => {
  let t: TestNetns;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    t = makeTestNetns('cnitool');
    dir = mkdtempSync(join(tmpdir(), 'tapnet-cnitool-'));
    writeFileSync(
      join(dir, '10-demo.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'demo',
        plugins: [
          {
            type: 'bridge',
            bridge: 'tncnid0',
            isGateway: true,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet: '198.18.46.0/24' }]],
              dataDir: join(dir, 'ipam'),
            },
          },
        ],
      }),
    );
    env = { ...process.env, NETCONFPATH: dir, CNI_PATH: '/usr/lib/cni' };
  });
  after(() => {
    // The bridge plugin makes its bridge in this (the sandbox's) namespace; DEL leaves it, as with cnitool.
    spawnSync('ip', ['link', 'del', 'tncnid0']);
    t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('add prints the result; check passes; del removes the interface', () => {
    const cni = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, 'cni', ...args, '--cache-dir', join(dir, 'cache')], {
        encoding: 'utf8',
        env,
      });
    const add = cni('add', 'demo', t.ns.path);
    assert.equal(add.status, 0, add.stderr);
    const result = JSON.parse(add.stdout);
    assert.equal(result.cniVersion, '1.0.0');
    assert.match(result.ips[0].address, /^198\.18\.46\.\d+\/24$/);
    assert.equal(t.ipJson<{ ifname: string }[]>('link', 'show', 'eth0')[0]!.ifname, 'eth0');
    assert.equal(cni('check', 'demo', t.ns.path).status, 0);
    assert.equal(cni('del', 'demo', t.ns.path).status, 0);
    assert.equal(t.ipJson<unknown[]>('link', 'show', 'type', 'veth').length, 0);
    const missing = cni('add', 'nope', t.ns.path);
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /ERR_NOT_FOUND: no net configuration with name "nope"/);
    assert.equal(cni('frob', 'demo').status, 2);
    assert.equal(cni('add', 'demo').status, 2, 'add needs a namespace');
  });
});
