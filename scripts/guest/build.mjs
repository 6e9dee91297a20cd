#!/usr/bin/env node
// Builds tapnet's microVM guest fixture into .cache/guest/ (git-ignored) from Debian packages only:
//   vmlinux       the uncompressed kernel of Debian's linux-image-<ver>-cloud-amd64 (extracted from the
//                 bzImage's LZ4 payload, as the kernel's scripts/extract-vmlinux does), booted through PVH
//   initrd.cpio   an uncompressed newc cpio: busybox-static, the virtio modules in load order, /init
//                 (scripts/guest/init.sh) and, when the iperf3 package is installed, iperf3 with its libraries
//   manifest.json what was built from what; `key` hashes every input
// Rebuilt only when an input changes: the kernel package's version, the bytes of busybox / iperf3 and its
// libraries, init.sh and this script. Dependency-free on purpose (bootstrap runs it before node_modules).
//   node scripts/guest/build.mjs [--out DIR] [--force] [--no-iperf3] [--print]
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { Cpio } from './cpio.mjs';
import { extractVmlinux } from './lz4.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const args = process.argv.slice(2);
const opt = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const OUT = opt('--out') ?? join(root, '.cache', 'guest');
const FORCE = args.includes('--force');
const WANT_IPERF = !args.includes('--no-iperf3');
const KERNEL_META = 'linux-image-cloud-amd64';
/** Modules the guest needs; their dependencies come from each module's .modinfo `depends=`. */
const ROOT_MODULES = ['virtio_mmio', 'virtio_pci', 'virtio_net'];
const BUSYBOX = '/bin/busybox';
/** The builder itself: a change to any of these rebuilds the fixture. */
const BUILDER_FILES = ['build.mjs', 'lz4.mjs', 'cpio.mjs'];
const IPERF3 = '/usr/bin/iperf3';

const log = (m) => process.stderr.write(`guest: ${m}\n`);
function fail(m) {
  log(`error: ${m}`);
  process.exit(1);
}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) fail(`${cmd}: ${r.error.message}`);
  return r;
}

// ---- inputs ----

/** The real kernel package behind the meta package: `{ name, version }` of apt's candidate. */
function kernelPackage() {
  const show = () => run('apt-cache', ['show', '--no-all-versions', KERNEL_META]);
  let r = show();
  if ((r.status !== 0 || !r.stdout.trim()) && process.getuid?.() === 0) {
    log('apt lists unknown: apt-get update');
    run('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    r = show();
  }
  if (r.status !== 0 || !r.stdout.trim()) return undefined;
  const dep = /^Depends:.*?\b(linux-image-[0-9][^\s,(]*-cloud-amd64)\s*\(=\s*([^)\s]+)\)/m.exec(r.stdout);
  return dep ? { name: dep[1], version: dep[2] } : undefined;
}

function sha256(...parts) {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** iperf3 and the shared objects it loads (ldd), as host paths; undefined when iperf3 is not installed. */
function iperfFiles() {
  if (!WANT_IPERF || !existsSync(IPERF3)) return undefined;
  const r = run('ldd', [IPERF3]);
  if (r.status !== 0) return undefined;
  const libs = [];
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return [IPERF3, ...libs];
}

// ---- kernel modules ----

/** The `.modinfo` key=value strings of an ELF64 kernel module. */
function modinfo(ko) {
  if (ko.readUInt32BE(0) !== 0x7f454c46 || ko[4] !== 2) throw new Error('not an ELF64 module');
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  const sect = (n) => {
    const h = shoff + n * shentsize;
    return {
      name: ko.readUInt32LE(h),
      offset: Number(ko.readBigUInt64LE(h + 0x18)),
      size: Number(ko.readBigUInt64LE(h + 0x20)),
    };
  };
  const strtab = sect(shstrndx);
  for (let n = 0; n < shnum; n++) {
    const s = sect(n);
    const nameEnd = ko.indexOf(0, strtab.offset + s.name);
    if (ko.toString('latin1', strtab.offset + s.name, nameEnd) !== '.modinfo') continue;
    return ko
      .toString('latin1', s.offset, s.offset + s.size)
      .split('\0')
      .filter(Boolean);
  }
  return [];
}

function findFiles(dir, pred, out = []) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) findFiles(p, pred, out);
    else if (pred(e.name)) out.push(p);
  }
  return out;
}

/**
 * A module's ELF bytes. Debian 12 ships plain .ko files; later kernels compress them (busybox insmod wants
 * them plain): gzip through node's zlib, xz and zstd through Debian's xz-utils / zstd when installed.
 */
function readModule(path) {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.gz')) return gunzipSync(readFileSync(path));
  const tool = path.endsWith('.xz') ? 'xz' : 'zstd';
  const r = spawnSync(tool, ['-dc', path], { maxBuffer: 256 << 20 });
  if (r.status !== 0) fail(`cannot decompress ${path}: install ${tool === 'xz' ? 'xz-utils' : 'zstd'}`);
  return r.stdout;
}

/** The modules the guest needs, dependencies first: [{ name, data }]. */
function resolveModules(modRoot) {
  const all = new Map();
  for (const p of findFiles(modRoot, (n) => /\.ko(\.xz|\.zst|\.gz)?$/.test(n))) {
    const base = posix.basename(p).replace(/\.ko(\.xz|\.zst|\.gz)?$/, '');
    all.set(base.replace(/-/g, '_'), p);
  }
  const order = [];
  const seen = new Set();
  const visit = (name, chain) => {
    if (seen.has(name)) return;
    if (chain.includes(name)) fail(`module dependency cycle: ${[...chain, name].join(' → ')}`);
    const path = all.get(name);
    if (!path) fail(`module ${name} is not in the kernel package (built in? renamed?)`);
    const data = readModule(path);
    const dep = modinfo(data).find((k) => k.startsWith('depends='));
    for (const d of (dep?.slice(8) ?? '').split(',').filter(Boolean))
      visit(d.replace(/-/g, '_'), [...chain, name]);
    seen.add(name);
    order.push({ name, data });
  };
  for (const m of ROOT_MODULES) visit(m, []);
  return order;
}

// ---- build ----

function writeAtomic(path, data) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

function main() {
  const manifestPath = join(OUT, 'manifest.json');
  const old = existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : undefined;
  let kernel = kernelPackage();
  if (!kernel) {
    if (old && existsSync(join(OUT, old.kernel)) && existsSync(join(OUT, old.initrd))) {
      log(
        `cannot ask apt for ${KERNEL_META}; keeping the fixture built from ${old.kernelPackage.name} ${old.kernelPackage.version}`,
      );
      return;
    }
    fail(`apt knows no ${KERNEL_META} (run apt-get update?)`);
  }
  if (!existsSync(BUSYBOX)) fail(`${BUSYBOX} missing: apt-get install busybox-static`);
  const iperf = iperfFiles();
  const hostFiles = [BUSYBOX, ...(iperf ?? [])];
  const initScript = readFileSync(join(here, 'init.sh'));
  const fileHashes = hostFiles.map((f) => [f, sha256(readFileSync(f))]);
  const inputsKey = (k) =>
    sha256(
      JSON.stringify({ kernel: k, roots: ROOT_MODULES, files: fileHashes }),
      initScript,
      ...BUILDER_FILES.map((f) => readFileSync(join(here, f))),
    );
  let key = inputsKey(kernel);
  if (!FORCE && old?.key === key && existsSync(join(OUT, old.kernel)) && existsSync(join(OUT, old.initrd))) {
    if (args.includes('--print')) process.stdout.write(`${JSON.stringify(old, null, 2)}\n`);
    log(`up to date (${kernel.name} ${kernel.version}${old.iperf3 ? ', iperf3' : ''})`);
    return;
  }
  const t0 = Date.now();
  mkdirSync(OUT, { recursive: true });
  const work = join(OUT, `.build-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const download = (k) => {
      log(`downloading ${k.name} ${k.version}`);
      const argv = ['download', '-q', '-o', 'APT::Sandbox::User=root', `${k.name}=${k.version}`];
      return run('apt-get', argv, { cwd: work, stdio: ['ignore', 'ignore', 'inherit'] }).status === 0;
    };
    if (!download(kernel)) {
      // Stale apt lists name a version the archive no longer has: refresh once and ask again.
      if (process.getuid?.() !== 0) fail(`apt-get download ${kernel.name}=${kernel.version} failed`);
      log('download failed: apt-get update and retry');
      run('apt-get', ['update', '-qq'], { stdio: 'inherit' });
      kernel = kernelPackage() ?? fail(`apt knows no ${KERNEL_META}`);
      key = inputsKey(kernel);
      if (!download(kernel)) fail(`apt-get download ${kernel.name}=${kernel.version} failed`);
    }
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) fail('apt-get download produced no .deb');
    const x = join(work, 'x');
    execFileSync('dpkg', ['-x', join(work, deb), x]);
    const release = readdirSync(join(x, 'lib', 'modules'))[0];
    const bz = readFileSync(join(x, 'boot', `vmlinuz-${release}`));
    const vmlinux = extractVmlinux(bz);
    log(
      `vmlinux ${(vmlinux.length / 2 ** 20).toFixed(1)} MiB from a ${(bz.length / 2 ** 20).toFixed(1)} MiB bzImage`,
    );
    const modules = resolveModules(join(x, 'lib', 'modules', release, 'kernel'));

    const cpio = new Cpio();
    for (const d of [
      'dev',
      'proc',
      'sys',
      'tmp',
      'run',
      'etc',
      'root',
      'www',
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
    ])
      cpio.dir(d);
    cpio.add('dev/console', 0o020600, undefined, [5, 1]);
    cpio.add('dev/null', 0o020666, undefined, [1, 3]);
    cpio.file('init', initScript, 0o755);
    cpio.file('bin/busybox', readFileSync(BUSYBOX), 0o755);
    const applets = run(BUSYBOX, ['--list-full']).stdout.split('\n').filter(Boolean);
    for (const a of applets) if (a !== 'bin/busybox' && a !== 'linuxrc') cpio.symlink(a, '/bin/busybox');
    for (const m of modules) cpio.file(`lib/modules/${m.name}.ko`, m.data);
    cpio.file('etc/tapnet-modules', Buffer.from(`${modules.map((m) => m.name).join('\n')}\n`));
    cpio.file('etc/hosts', Buffer.from('127.0.0.1 localhost\n'));
    cpio.file('etc/passwd', Buffer.from('root:x:0:0:root:/root:/bin/sh\n'));
    cpio.file('etc/group', Buffer.from('root:x:0:\n'));
    if (iperf) for (const f of iperf) cpio.file(f.slice(1), readFileSync(f), 0o755);
    const initrd = cpio.done();

    writeAtomic(join(OUT, 'vmlinux'), vmlinux);
    writeAtomic(join(OUT, 'initrd.cpio'), initrd);
    const manifest = {
      key,
      builtAt: new Date().toISOString(),
      kernel: 'vmlinux',
      initrd: 'initrd.cpio',
      kernelRelease: release,
      kernelPackage: kernel,
      modules: modules.map((m) => m.name),
      busybox: { applets: applets.length },
      iperf3: Boolean(iperf),
      readyMarker: 'TAPNET-READY',
      bootedMarker: 'TAPNET-BOOTED',
      sizes: { vmlinux: vmlinux.length, initrd: initrd.length },
    };
    writeAtomic(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
    log(
      `built ${release}: initrd ${(initrd.length / 2 ** 20).toFixed(1)} MiB, modules ${manifest.modules.join(' ')}` +
        `${iperf ? ', iperf3' : ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    if (args.includes('--print')) process.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

try {
  statSync(here);
  main();
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}
