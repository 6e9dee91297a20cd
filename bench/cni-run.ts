/**
 * What the `cni` suite (bench/cni.ts) runs on: children started with posix_spawn (so that this process's
 * size does not inflate the peers' figures), the Go reference harness built offline into a temp dir, a
 * plugin directory where tc-redirect-tap is the standalone executable, and per-side "worlds" (a host
 * namespace, a conf dir, host-local's data dir, a result cache) that vanish afterwards.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TapnetError } from '../src/errors.js';
import { firecrackerConflist, writeConflist } from '../src/manager/cni-conflist.js';
import { createNetns, deleteNetns, listNetns, type Netns } from '../src/net/netns.js';
import { spawnProcess } from '../src/sys/spawn.js';
import { msSince } from './lib/stats.js';
import { uniqueTag } from './peers/exec.js';

/** The repository root (dist/bench/ → ../../). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Debian's containernetworking-plugins. */
export const DEBIAN_CNI = '/usr/lib/cni';
/** The conflist names: bridge → tc-redirect-tap, and bridge alone. */
export const FC_NET = 'fcbench';
export const BRIDGE_NET = 'brbench';
const SUBNET = '198.18.64.0/22';

/** A child run to its end: wall time from posix_spawn to exit and both pipes closed. */
export interface ChildRun {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `file argv…` with posix_spawn, optionally inside a namespace; never throws on a non-zero exit. */
export async function runChild(
  file: string,
  argv: readonly string[],
  opts: { env?: Record<string, string | undefined>; netnsFd?: number } = {},
): Promise<ChildRun> {
  const t0 = process.hrtime.bigint();
  const c = spawnProcess(file, {
    argv: [file, ...argv],
    env: opts.env ?? process.env,
    ...(opts.netnsFd !== undefined ? { netnsFd: opts.netnsFd } : {}),
  });
  const read = (s: NodeJS.ReadableStream | null): Promise<string> =>
    new Promise((resolve) => {
      let out = '';
      s?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      s?.on('end', () => resolve(out));
    });
  const [stdout, stderr, st] = await Promise.all([read(c.stdout), read(c.stderr), c.exited]);
  return { ms: msSince(t0), code: st.code, stdout, stderr };
}

/** Like runChild, but a non-zero exit is an ERR_INTERNAL naming the command and its stderr. */
export async function mustRun(
  file: string,
  argv: readonly string[],
  opts: { env?: Record<string, string | undefined>; netnsFd?: number } = {},
): Promise<ChildRun> {
  const r = await runChild(file, argv, opts);
  if (r.code !== 0) {
    throw new TapnetError(
      'ERR_INTERNAL',
      `${file} ${argv.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 800)}`,
    );
  }
  return r;
}

/** iproute2's `ip` (the Go side creates its namespaces with it, as the peers README does). */
export function ipBinary(): string {
  const found = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p));
  if (!found) throw new TapnetError('ERR_CONFIG', 'iproute2 is not installed');
  return found;
}

/** Build test/fixtures/go-libcni offline into `dir` (Debian's golang-go and golang-github-appc-cni-dev). */
export function buildGoHarness(dir: string): string {
  const out = join(dir, 'go-libcni');
  const r = spawnSync('go', ['build', '-o', out, './test/fixtures/go-libcni'], {
    cwd: ROOT,
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: '/usr/share/gocode',
      GOCACHE: join(dir, 'gocache'),
      GOFLAGS: '',
    },
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    throw new TapnetError(
      'ERR_CONFIG',
      `could not build the Go reference harness (install golang-go and golang-github-appc-cni-dev): ${r.error?.message ?? r.stderr}`,
    );
  }
  return out;
}

/**
 * A plugin dir for runtimes that exec every plugin: bridge and host-local from Debian, tc-redirect-tap
 * the standalone executable `npm run build` makes (dist/cni/tc-redirect-tap), built into `dir` if absent.
 */
export function execPluginDir(dir: string): { dir: string; tcRedirectTap: string } {
  for (const p of ['bridge', 'host-local']) {
    if (!existsSync(join(DEBIAN_CNI, p)))
      throw new TapnetError(
        'ERR_CONFIG',
        `${DEBIAN_CNI}/${p} is missing: install containernetworking-plugins`,
      );
  }
  let tc = join(ROOT, 'dist', 'cni', 'tc-redirect-tap');
  if (!existsSync(tc)) {
    tc = join(dir, 'tc-redirect-tap-standalone');
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'build-plugin.mjs'), '--out', tc], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new TapnetError('ERR_CONFIG', `could not build tc-redirect-tap: ${r.stderr}`);
  }
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  symlinkSync(join(DEBIAN_CNI, 'bridge'), join(bin, 'bridge'));
  symlinkSync(join(DEBIAN_CNI, 'host-local'), join(bin, 'host-local'));
  symlinkSync(tc, join(bin, 'tc-redirect-tap'));
  return { dir: bin, tcRedirectTap: tc };
}

/** One side's world: the plugins' host namespace, conflists, host-local leases, a result cache. */
export interface World {
  tag: string;
  host: Netns;
  dir: string;
  confDir: string;
  ipamDir: string;
  cacheDir: string;
  /** Names of the VM namespaces this side created (removed by close()). */
  vmNetns: Set<string>;
  /** host-local leases still held (should be 0 after teardown). */
  leases(): number;
  close(): void;
}

/** A fresh world: host namespace `<tag>` (lo up), both conflists on bridge `cbr0` (same on every side). */
export async function makeWorld(prefix: string): Promise<World> {
  const tag = uniqueTag(prefix);
  const dir = mkdtempSync(join(tmpdir(), `tapnet-bench-${prefix}-`));
  const confDir = join(dir, 'net.d');
  const ipamDir = join(dir, 'ipam');
  const host = createNetns(tag);
  const vmNetns = new Set<string>();
  await mustRun(ipBinary(), ['-n', tag, 'link', 'set', 'lo', 'up']);
  const fc = firecrackerConflist({
    name: FC_NET,
    bridge: 'cbr0',
    subnet: SUBNET,
    dataDir: ipamDir,
    ipMasq: false,
  });
  writeConflist(confDir, fc);
  writeConflist(confDir, { ...fc, name: BRIDGE_NET, plugins: [(fc.plugins as unknown[])[0]] });
  return {
    tag,
    host,
    dir,
    confDir,
    ipamDir,
    cacheDir: join(dir, 'cache'),
    vmNetns,
    leases: () => {
      let n = 0;
      for (const net of [FC_NET, BRIDGE_NET]) {
        const d = join(ipamDir, net);
        if (existsSync(d)) n += readdirSync(d).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).length;
      }
      return n;
    },
    close: () => {
      const present = new Set(listNetns());
      for (const n of vmNetns) if (present.has(n)) deleteNetns(n);
      host.close();
      deleteNetns(tag);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Milliseconds of Node's spawn() (the call) and to exit, per start of /bin/true. */
export async function nodeSpawnTrue(): Promise<{ create: number; total: number }> {
  const t0 = process.hrtime.bigint();
  const c = spawn('/bin/true', [], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const create = msSince(t0);
  c.stdin.on('error', () => undefined);
  c.stdin.end('{}');
  await new Promise((r) => c.on('close', r));
  return { create, total: msSince(t0) };
}

/** The same with posix_spawn (src/sys/spawn.ts). */
export async function posixSpawnTrue(): Promise<{ create: number; total: number }> {
  const t0 = process.hrtime.bigint();
  const c = spawnProcess('/bin/true', { input: '{}' });
  const create = msSince(t0);
  c.stdout!.resume();
  c.stderr!.resume();
  await Promise.all([
    c.exited,
    new Promise((r) => c.stdout!.on('close', r)),
    new Promise((r) => c.stderr!.on('close', r)),
  ]);
  return { create, total: msSince(t0) };
}
