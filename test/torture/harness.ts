/**
 * Shared machinery of the torture suites (test/torture/*.test.ts and the fast subset in
 * test/priv/torture-fast*.test.ts): environments in private namespaces (direct bridge + routed, CNI with
 * Debian's bridge plugin and tapnet's tc-redirect-tap), workers that are killed, the CLI, the daemon, the
 * check that every surviving VM's network answers ARP through its TAP, and figures.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonClient } from '../../src/daemon/client.js';
import { toTapnetError } from '../../src/errors.js';
import { firecrackerConflist, writeConflist } from '../../src/manager/cni-conflist.js';
import type { ManagerConfigInput } from '../../src/manager/config.js';
import { FAULT_POINTS } from '../../src/manager/faults.js';
import { type ManagerOptions, NetworkManager } from '../../src/manager/manager.js';
import { repairCount } from '../../src/manager/report.js';
import { deleteLink, findLink } from '../../src/net/link.js';
import { closeTapFds } from '../../src/net/tap.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { makeTestNetns, type TestNetns } from '../helpers/priv.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from dist/test/torture). */
export const ROOT = join(here, '..', '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const WORKER = join(here, 'worker.js');
export const ARP_CHILD = join(ROOT, 'dist', 'test', 'fixtures', 'tap-arp-child.js');

export type Backend = 'files' | 'journal';

/** A place to torture a manager: a temp dir, a state dir, and a namespace (direct) or plugins (CNI). */
export interface TortureEnv {
  dir: string;
  config: ManagerConfigInput;
  /** The managed namespace (direct mode). */
  t?: TestNetns;
  /** CNI: copies of the plugins (so one can be removed), the bridge, the namespace prefix. */
  cni?: { pluginDir: string; bridge: string; netnsPrefix: string; dataDir: string };
  /** VM ids and their networks, for workers. */
  ids: { id: string; network: string }[];
  destroy(): void;
}

let envCounter = 0;

/**
 * Direct mode: network `br` (bridge, 198.18.<o>.0/24) and `rt` (routed, 198.18.<o+1>.0/24 and a ULA /64)
 * in a fresh namespace; `n` VM ids alternating between them.
 */
export function directEnv(tag: string, octet: number, n = 8, backend: Backend = 'files'): TortureEnv {
  const t = makeTestNetns(tag);
  const dir = mkdtempSync(join(tmpdir(), `tapnet-${tag}-`));
  const k = envCounter++;
  const config: ManagerConfigInput = {
    stateDir: join(dir, 'state'),
    storeBackend: backend,
    netns: t.ns.path,
    defaultNetwork: 'br',
    networks: {
      br: { topology: 'bridge', bridge: `tbr${k}`, subnet4: `198.18.${octet}.0/24`, tapPrefix: 'tb' },
      rt: {
        topology: 'routed',
        bridge: `trt${k}`,
        subnet4: `198.18.${octet + 1}.0/24`,
        subnet6: `fd00:198:18:${octet.toString(16)}::/64`,
        tapPrefix: 'tr',
      },
    },
  };
  const ids = Array.from({ length: n }, (_, i) => ({ id: `${tag}-${i}`, network: i % 2 ? 'rt' : 'br' }));
  return {
    dir,
    config,
    t,
    ids,
    destroy() {
      t.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * CNI mode: a conflist `bridge` (host-local IPAM in the temp dir, no masquerade) → `tc-redirect-tap`
 * (in-process), the plugins copied from /usr/lib/cni into the temp dir. The plugins' host side is this
 * process's namespace (the sandbox's): the bridge is removed by destroy().
 */
export function cniEnv(tag: string, octet: number, n = 6, backend: Backend = 'files'): TortureEnv {
  const dir = mkdtempSync(join(tmpdir(), `tapnet-${tag}-`));
  const k = `${process.pid % 10000}${envCounter++}`;
  const bridge = `tcb${k}`.slice(0, 15);
  const netnsPrefix = `tc${k}`;
  const pluginDir = join(dir, 'plugins');
  mkdirSync(pluginDir);
  for (const p of ['bridge', 'host-local']) {
    copyFileSync(join('/usr/lib/cni', p), join(pluginDir, p));
    chmodSync(join(pluginDir, p), 0o755);
  }
  const dataDir = join(dir, 'ipam');
  writeConflist(
    join(dir, 'net.d'),
    firecrackerConflist({ name: 'tnet', subnet: `198.18.${octet}.0/24`, bridge, dataDir, ipMasq: false }),
  );
  const config: ManagerConfigInput = {
    stateDir: join(dir, 'state'),
    storeBackend: backend,
    defaultNetwork: 'fc',
    networks: {
      fc: {
        mode: 'cni',
        cni: {
          network: 'tnet',
          confDir: join(dir, 'net.d'),
          cacheDir: join(dir, 'cache'),
          pluginPaths: [pluginDir],
          netnsPrefix,
        },
      },
    },
  };
  const ids = Array.from({ length: n }, (_, i) => ({ id: `${tag}-${i}`, network: 'fc' }));
  return {
    dir,
    config,
    cni: { pluginDir, bridge, netnsPrefix, dataDir },
    ids,
    destroy() {
      const nl = NetlinkSocket.open();
      try {
        if (findLink(nl, bridge)) deleteLink(nl, bridge);
      } finally {
        nl.close();
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Open a manager over an environment (what a restarted process does), with the store backend of the
 * environment's configuration unless `backend` says otherwise.
 */
export function openManager(
  env: TortureEnv,
  backend?: Backend,
  options: ManagerOptions = {},
): Promise<NetworkManager> {
  return NetworkManager.open({ ...env.config, ...(backend ? { storeBackend: backend } : {}) }, options);
}

/** What a worker does (test/torture/worker.ts); passed as JSON in argv[2]. */
export interface WorkerSpec {
  config: ManagerConfigInput;
  backend: Backend;
  ids: { id: string; network: string }[];
  /** Run a reconcile right after opening (so kills land inside reconcile too). */
  reconcileFirst?: boolean;
  /** Ensure every id once, in order, before the random loop (reaches repairs of vanished TAPs). */
  touchAll?: boolean;
  /** Probability that an op is a release (default 0.4). */
  releaseRatio?: number;
  /** Probability that an ensure asks for tap: 'fd' (default 0.2). */
  fdRatio?: number;
  /** Stop after this many ops (default: run until killed). */
  maxOps?: number;
  /** Stop after this many milliseconds. */
  maxMs?: number;
}

/** How a worker ended. */
export interface WorkerRun {
  ready: boolean;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Lines `unexpected {...}`: errors a worker should never see. */
  unexpected: string[];
  /** The final `done {...}` statistics, when it finished by itself. */
  stats?: { ops: number; errors: Record<string, number> };
}

/**
 * Start a child (`node <args>`), optionally SIGKILL it `killAfterMs` after it printed `ready`, and wait
 * for it. A child that dies before `ready` with a module-loading error (another engineer's build racing
 * ours on dist/) is started again, up to 3 times.
 */
export async function runChild(
  args: string[],
  opts: { killAfterMs?: number; env?: Record<string, string>; timeoutMs?: number; readyWord?: string } = {},
): Promise<WorkerRun> {
  for (let attempt = 0; ; attempt++) {
    const r = await runOnce(args, opts);
    const loadError =
      !r.ready && /SyntaxError|ERR_MODULE_NOT_FOUND|does not provide an export/.test(r.stderr);
    if (!loadError || attempt >= 3) return r;
    await new Promise((res) => setTimeout(res, 500));
  }
}

function runOnce(
  args: string[],
  opts: { killAfterMs?: number; env?: Record<string, string>; timeoutMs?: number; readyWord?: string },
): Promise<WorkerRun> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    let ready = false;
    const word = opts.readyWord ?? 'ready';
    const guard = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!ready && stdout.split('\n').includes(word)) {
        ready = true;
        if (opts.killAfterMs !== undefined) setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs);
      }
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      const lines = stdout.split('\n');
      const done = lines.find((l) => l.startsWith('done '));
      resolve({
        ready,
        code,
        signal,
        stdout,
        stderr,
        unexpected: lines.filter((l) => l.startsWith('unexpected ')),
        ...(done ? { stats: JSON.parse(done.slice(5)) } : {}),
      });
    });
  });
}

/** Run a worker with `spec`; see runChild for the options. */
export function runWorker(
  spec: WorkerSpec,
  opts: { killAfterMs?: number; faults?: string; timeoutMs?: number } = {},
): Promise<WorkerRun> {
  return runChild([WORKER, JSON.stringify(spec)], {
    ...(opts.killAfterMs !== undefined ? { killAfterMs: opts.killAfterMs } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    env: { TORTURE_WORKER: '1', ...(opts.faults ? { TAPNET_FAULTS: opts.faults } : {}) },
  });
}

/** Write the environment's configuration as a JSON file for the CLI and the daemon; returns its path. */
export function writeCliConfig(env: TortureEnv, extra: Record<string, unknown> = {}): string {
  const file = join(env.dir, `config-${envCounter++}.json`);
  writeFileSync(file, JSON.stringify({ ...env.config, ...extra }, null, 2));
  return file;
}

/** Run `tapnet <args>` (in-process mode unless the args say otherwise). */
export function runCli(
  args: string[],
  opts: { faults?: string; timeoutMs?: number } = {},
): Promise<WorkerRun> {
  return runChild([CLI, ...args], {
    timeoutMs: opts.timeoutMs ?? 30_000,
    env: { ...(opts.faults ? { TAPNET_FAULTS: opts.faults } : {}) },
  });
}

/** Start a CLI and SIGKILL it after `ms` from its start (the CLI prints no `ready`). */
export function runCliKilled(args: string[], ms: number): Promise<WorkerRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ ready: true, code, signal, stdout, stderr, unexpected: [] });
    });
  });
}

/**
 * Every surviving VM's network works: for each ready VM, open its TAP (ensure with tap: 'fd'), let a child
 * play the guest (ARP request for its gateway from its MAC and address) and expect the answer. Returns
 * the failures (`vmId: why`).
 */
export async function checkConnectivity(m: NetworkManager, limit = 6): Promise<string[]> {
  const list = await m.list();
  const failures: string[] = [];
  let next = 0;
  const one = async (): Promise<void> => {
    for (let i = next++; i < list.length; i = next++) {
      const vm = list[i]!;
      if (!vm.ipv4 || !vm.gateway4) continue;
      let fds: number[] = [];
      try {
        const info = await m.ensure(vm.vmId, { tap: 'fd' });
        fds = info.tapFds ?? [];
        if (!fds.length) throw new Error('no TAP fd');
        const out = await arpThrough(fds[0]!, vm.mac, vm.ipv4.split('/')[0]!, vm.gateway4);
        if (!out.startsWith('reply ')) failures.push(`${vm.vmId}: ${out || 'no answer'}`);
        else if (vm.mode === 'direct' && vm.topology === 'bridge') {
          const want = m.network(vm.network).bridgeMac;
          if (out !== `reply ${want}`)
            failures.push(`${vm.vmId}: answered by ${out.slice(6)}, not the bridge ${want}`);
        }
      } catch (e) {
        failures.push(`${vm.vmId}: ${toTapnetError(e).code} ${(e as Error).message}`);
      } finally {
        if (fds.length) await closeTapFds(fds);
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, one));
  return failures;
}

/** Play a guest on a TAP fd: ARP who-has `target` from (mac, ip); resolves to the child's one line. */
export function arpThrough(fd: number, mac: string, ip: string, target: string): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [ARP_CHILD, mac, ip, target], {
      stdio: ['ignore', 'pipe', 'inherit', fd],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', () => resolve(out.trim()));
  });
}

export { repairCount };

/** Fault points a direct-mode VM passes (ensure, repair, release, reconcile). */
export const DIRECT_FAULT_POINTS = FAULT_POINTS.filter(
  (p) => !p.startsWith('cni-') && p !== 'ensure:cni-before-record',
);

/** Fault points a CNI-mode VM passes in ensure, release and reconcile. */
export const CNI_FAULT_POINTS = [
  'ensure:locked',
  'cni-add:after-netns',
  'cni-add:after-add',
  'ensure:cni-before-record',
  'ensure:after-record',
  'release:marked',
  'cni-del:after-del',
  'release:after-record',
  'reconcile:record',
] as const;

/** A reconcile that finds nothing to do (asserted): the state is a fixed point. */
export async function assertQuiet(m: NetworkManager): Promise<void> {
  const again = await m.reconcile();
  assert.deepEqual(again.errors, [], 'second reconcile: no errors');
  assert.equal(repairCount(again), 0, `second reconcile repaired again: ${JSON.stringify(again)}`);
}

/** Figures of a run, printed as one JSON line (`figures {...}`) for docs/RELIABILITY.md. */
export function printFigures(suite: string, figures: Record<string, unknown>): void {
  process.stdout.write(`figures ${JSON.stringify({ suite, ...figures })}\n`);
}

/** True when the daemon entry point exists in this build. */
export function haveDaemon(): boolean {
  return existsSync(join(ROOT, 'dist', 'src', 'daemon', 'server.js'));
}

/** A random integer in [0, n). */
export const rnd = (n: number): number => Math.floor(Math.random() * n);

/** A `tapnet serve` child over an environment, and a client of it. */
export interface DaemonProc {
  child: ChildProcess;
  socket: string;
  client: DaemonClient;
  stderr: () => string;
  /** Resolves once an API call is answered (the startup reconcile is done). */
  ready(timeoutMs?: number): Promise<void>;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (finishes calls in flight), and wait for the exit; resolves to the exit code. */
  stop(): Promise<number | null>;
}

let daemonCounter = 0;

/** Start `tapnet serve` over `env` with its socket in the environment's directory. */
export function startDaemon(
  env: TortureEnv,
  opts: { faults?: string; tcp?: string; tokenFile?: string } = {},
): DaemonProc {
  const socket = join(env.dir, `api-${daemonCounter++}.sock`);
  const cfg = writeCliConfig(env, {
    api: {
      socket,
      ...(opts.tcp ? { tcp: opts.tcp } : {}),
      ...(opts.tokenFile ? { tokenFile: opts.tokenFile } : {}),
    },
    log: { level: 'warn' },
  });
  const child = spawn(process.execPath, [CLI, '--config', cfg, 'serve'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...(opts.faults ? { TAPNET_FAULTS: opts.faults } : {}) },
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const client = new DaemonClient({ socket, timeoutMs: 30_000 });
  return {
    child,
    socket,
    client,
    stderr: () => err,
    async ready(timeoutMs = 20_000) {
      const t0 = Date.now();
      for (;;) {
        if (child.exitCode !== null || child.signalCode !== null)
          throw new Error(`the daemon exited: ${err}`);
        try {
          await client.list();
          return;
        } catch (e) {
          if (Date.now() - t0 > timeoutMs) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/**
 * Start a daemon and wait until it answers; a daemon that dies while loading its modules (another
 * engineer's build rewriting dist/ at that moment) is started again, up to 3 times.
 */
export async function startReadyDaemon(
  env: TortureEnv,
  opts: Parameters<typeof startDaemon>[1] = {},
): Promise<DaemonProc> {
  for (let attempt = 0; ; attempt++) {
    const d = startDaemon(env, opts);
    try {
      await d.ready();
      return d;
    } catch (e) {
      const loadError = /SyntaxError|ERR_MODULE_NOT_FOUND|does not provide an export/.test(d.stderr());
      if (!loadError || attempt >= 3) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
