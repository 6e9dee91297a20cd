#!/usr/bin/env node
// Installs what tapnet needs on a fresh Debian machine, idempotently, then builds.
// Dependency-free on purpose: it runs before node_modules exists.
//   node scripts/bootstrap.mjs [--profile test|demo|bench|dev]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const profile = args.includes('--profile') ? args[args.indexOf('--profile') + 1] : 'dev';

/** QEMU, the guest's userland and iperf3 (in the guest and on the host side of the throughput bench). */
const VM_PACKAGES = ['qemu-system-x86', 'busybox-static', 'iperf3'];
/** Cluster mode's store (a real etcd-server in the tests and the bench) and etcdctl, the test oracle. */
const ETCD_PACKAGES = ['etcd-server', 'etcd-client'];

/** Debian packages per profile. Runtime needs only libnftables1; the rest are test oracles, peers and fixtures. */
const PACKAGES = {
  dev: ['libnftables1', 'nftables', 'iproute2', 'util-linux'],
  // golang-go + golang-github-appc-cni-dev: the Go libcni reference harness; iptables: CNI firewall/portmap.
  test: [
    'libnftables1',
    'nftables',
    'iproute2',
    'util-linux',
    'containernetworking-plugins',
    'golang-go',
    'golang-github-appc-cni-dev',
    'iptables',
    ...VM_PACKAGES,
    ...ETCD_PACKAGES,
  ],
  demo: [
    'libnftables1',
    'nftables',
    'iproute2',
    'util-linux',
    'containernetworking-plugins',
    'iptables',
    ...VM_PACKAGES,
  ],
  bench: [
    'libnftables1',
    'nftables',
    'iproute2',
    'util-linux',
    'containernetworking-plugins',
    'netavark',
    'iptables',
    ...VM_PACKAGES,
    ...ETCD_PACKAGES,
  ],
};
/** Profiles that boot real microVMs: they also build the guest fixture (scripts/guest/build.mjs). */
const VM_PROFILES = ['test', 'demo', 'bench'];

const log = (m) => process.stderr.write(`bootstrap: ${m}\n`);

function missingDebs(pkgs) {
  return pkgs.filter((p) => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not a template
    const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' });
    return r.status !== 0 || !r.stdout.includes('install ok installed');
  });
}

function ensureDebs(pkgs) {
  if (process.platform !== 'linux') return log('not Linux: skipping Debian packages');
  if (spawnSync('dpkg-query', ['--version']).status !== 0)
    return log(`no dpkg: install the equivalents of ${pkgs.join(' ')}`);
  const missing = missingDebs(pkgs);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    log(`missing Debian packages ${missing.join(' ')} and not root: install them with apt-get`);
    return;
  }
  log(`installing ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    stdio: 'inherit',
    env,
  });
}

function mtime(p) {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

function ensureNodeModules() {
  const lock = join(root, 'package-lock.json');
  const stamp = join(root, 'node_modules', '.package-lock.json');
  if (existsSync(stamp) && mtime(stamp) >= mtime(lock) && existsSync(join(root, 'node_modules', 'koffi')))
    return;
  log('installing npm packages');
  // `npm ci` when the lock file allows it; some npm versions write lock files without the other platforms'
  // optional packages (biome's binaries) and then refuse `npm ci`: `npm install` honours the lock as well.
  const opts = { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] };
  if (existsSync(lock) && spawnSync('npm', ['ci', '--no-audit', '--no-fund'], opts).status === 0) return;
  execFileSync('npm', ['install', '--no-audit', '--no-fund'], opts);
}

function build() {
  const r = spawnSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', join(root, 'tsconfig.json')], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    log('TypeScript build failed');
    process.exit(r.status ?? 1);
  }
  // The standalone tc-redirect-tap CNI plugin (one bundled file) for runtimes that exec plugins.
  const p = spawnSync(process.execPath, [join(root, 'scripts', 'build-plugin.mjs')], {
    cwd: root,
    stdio: 'inherit',
  });
  if (p.status !== 0) {
    log('building the CNI plugin failed');
    process.exit(p.status ?? 1);
  }
}

/** The microVM guest fixture in .cache/guest (rebuilt only when its inputs change). */
function buildGuest() {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'guest', 'build.mjs')], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status === 0) return;
  if (process.getuid?.() !== 0) return log('guest fixture not built (not root): the microVM tests will skip');
  log('building the guest fixture failed');
  process.exit(r.status ?? 1);
}

const pkgs = PACKAGES[profile];
if (!pkgs) {
  log(`unknown profile ${profile}; use one of ${Object.keys(PACKAGES).join(', ')}`);
  process.exit(2);
}
ensureDebs(pkgs);
ensureNodeModules();
if (VM_PROFILES.includes(profile)) buildGuest();
build();
const pj = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
log(`${pj.name} ${pj.version} ready (${profile})`);
