/**
 * Running the peer programs (iproute2, CNI plugins, netavark) for the benchmarks: synchronously, so the
 * timing holds nothing but the child's life, and optionally inside a network namespace: the calling
 * thread enters it, forks the child (which inherits it) and returns, all before the event loop runs
 * again (STYLE.md, rule 2). Peers only ever run here, in benchmarks, never in tapnet itself.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TapnetError } from '../../src/errors.js';
import { createNetns, deleteNetns, type Netns } from '../../src/net/netns.js';
import { withNetns } from '../../src/sys/ns.js';
import { timeSync } from '../lib/stats.js';

export interface PeerExecOptions {
  /** Written to the child's stdin. */
  input?: string;
  /** Added to (not replacing) this process's environment. */
  env?: Record<string, string>;
  /** Run the child inside this network namespace. */
  ns?: Netns;
  /** Return a non-zero exit instead of throwing. */
  allowFailure?: boolean;
}

export interface PeerExecResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run `file args…` to completion. A failed start or a non-zero exit throws ERR_SYSCALL with its stderr. */
export function execPeer(file: string, args: readonly string[], opts: PeerExecOptions = {}): PeerExecResult {
  const env = opts.env ? { ...process.env, ...opts.env } : process.env;
  const r = withNetns(opts.ns?.fd, () =>
    spawnSync(file, args, { input: opts.input ?? '', env, encoding: 'utf8', maxBuffer: 64 << 20 }),
  );
  const command = [file, ...args].join(' ');
  if (r.error) {
    throw new TapnetError('ERR_SYSCALL', `could not run ${command}: ${r.error.message}`, {
      cause: r.error,
      syscall: 'execve',
      errno: (r.error as NodeJS.ErrnoException).code,
      details: { command },
    });
  }
  const status = r.status ?? 128;
  if (status !== 0 && !opts.allowFailure) {
    const stderr = (r.stderr || r.stdout || '').trim().slice(0, 2000);
    throw new TapnetError('ERR_SYSCALL', `${command} exited with ${r.signal ?? status}: ${stderr}`, {
      syscall: 'execve',
      details: { command, status, signal: r.signal ?? undefined, stderr },
    });
  }
  return { status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Throw ERR_CONFIG naming the Debian package when a peer program is not installed. */
export function requirePeer(path: string, debianPackage: string): string {
  if (!existsSync(path)) {
    throw new TapnetError(
      'ERR_CONFIG',
      `${path} is missing: install the Debian package ${debianPackage} (npm run prebench does)`,
      { details: { path, package: debianPackage } },
    );
  }
  return path;
}

/** Milliseconds of each of `n` runs of /bin/true: what starting any child costs this process. */
export function spawnFloor(n: number): number[] {
  for (let i = 0; i < 5; i++) execPeer('/bin/true', []); // warm-up, not counted
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(timeSync(() => execPeer('/bin/true', [])));
  return out;
}

/** A scratch world for one peer run: a named namespace (the peer's "host") and a temp dir. */
export interface Scratch {
  /** Name under /run/netns. */
  name: string;
  ns: Netns;
  dir: string;
}

let seq = 0;

/** A unique namespace/link-safe tag: `b<pid36><seq>`. */
export function uniqueTag(prefix: string): string {
  return `${prefix}${process.pid.toString(36)}${(seq++).toString(36)}`;
}

/**
 * Run `fn` with a fresh named namespace (`lo` up) and temp dir, and remove both afterwards whatever
 * happens. Everything the peer leaves in that namespace (bridges, iptables chains) goes with it.
 */
export async function withScratch<T>(prefix: string, fn: (s: Scratch) => Promise<T> | T): Promise<T> {
  const name = uniqueTag(prefix);
  const dir = mkdtempSync(join(tmpdir(), `tapnet-bench-${prefix}-`));
  let ns: Netns | undefined;
  try {
    ns = createNetns(name);
    execPeer('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return await fn({ name, ns, dir });
  } finally {
    ns?.close();
    deleteNetns(name);
    rmSync(dir, { recursive: true, force: true });
  }
}
