/**
 * Starting child processes with glibc's posix_spawn(3) through koffi, instead of Node's spawn().
 *
 * Why: libuv's spawn forks the whole process, so its cost grows with our memory (1–4 ms at 50 MB RSS,
 * tens of ms at 250 MB). glibc's posix_spawn clones with CLONE_VM|CLONE_VFORK: no page tables are
 * copied, and the cost stays flat (≈0.3 ms).
 *
 * What a child gets: stdin/stdout/stderr as pipes (pipe2 with O_CLOEXEC, dup2'd onto 0/1/2 by file
 * actions), /dev/null, or ours; every other fd closed (closefrom(3), on top of O_CLOEXEC); every signal
 * at its default disposition (Node ignores SIGPIPE) and none blocked; its own process group when asked,
 * so a timeout can kill everything it started; the network namespace given by `netnsFd` (posix_spawn is
 * called while the main thread is switched into it, and clone() copies the calling thread's namespaces).
 *
 * Children are reaped on SIGCHLD without blocking the event loop (spawn-reap.ts). Parent pipe ends are
 * read and written through net.Socket (libuv pipe handles); an input that fits in the pipe is written
 * synchronously before the child starts.
 */
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { getSystemErrorMap } from 'node:util';
import { invalidArgument, TapnetError } from '../errors.js';
import { codeForErrno, errnoName, syscallError } from './libc.js';
import { withNetns } from './ns.js';
import {
  attrs,
  F_DUPFD_CLOEXEC,
  F_GETFL,
  F_SETFL,
  FA_SIZE,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  spawnLib,
} from './spawn-libc.js';
import { armReaper, disarmIfIdle, type ExitStatus, watchExit } from './spawn-reap.js';

export { decodeWaitStatus, type ExitStatus, unreapedChildren } from './spawn-reap.js';

/** Where a child's standard stream goes. */
export type StdioMode = 'pipe' | 'ignore' | 'inherit';

/** How to start a child. */
export interface SpawnOptions {
  /** argv, including argv[0]. Default: `[file]`. */
  argv?: readonly string[];
  /** Exactly the child's environment. Default: this process's environment. */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * Bytes for stdin, which is then closed (EOF). Written synchronously before the child starts when they
   * fit in the pipe; the rest is streamed. Excludes `stdin`.
   */
  input?: Uint8Array | string;
  /** stdin when there is no `input`: 'pipe' gives `Spawned.stdin`. Default 'ignore' (/dev/null). */
  stdin?: StdioMode;
  /** Default 'pipe'. */
  stdout?: StdioMode;
  /** Default 'pipe'. */
  stderr?: StdioMode;
  /** Start the child in the network namespace behind this fd (default: the calling thread's). */
  netnsFd?: number;
  /** Make the child the leader of a new process group (so killGroup reaches its children). Default true. */
  newProcessGroup?: boolean;
}

/** A running (or finished) child. */
export interface Spawned {
  readonly pid: number;
  /** The write end of its stdin, when `stdin: 'pipe'`. */
  readonly stdin: Writable | null;
  /** The read end of its stdout, when piped. */
  readonly stdout: Readable | null;
  /** The read end of its stderr, when piped. */
  readonly stderr: Readable | null;
  /** Settles when the child has exited and been reaped (never rejects). */
  readonly exited: Promise<ExitStatus>;
  /** The status once reaped, else undefined. */
  readonly status: ExitStatus | undefined;
  /** kill(2) the child (nothing once it is reaped). False when it was already gone. */
  kill(signal?: NodeJS.Signals | number): boolean;
  /** kill(2) its whole process group (it must have been started with newProcessGroup). */
  killGroup(signal?: NodeJS.Signals | number): boolean;
  /** Close our ends of its pipes (after a kill: a surviving grandchild may hold the other ends). */
  closePipes(): void;
}

function closeFd(fd: number): void {
  spawnLib().close(fd);
}

/** pipe2(O_CLOEXEC), both ends moved above 2 so that dup2 onto 0–2 never meets itself. */
function pipe(): [number, number] {
  const l = spawnLib();
  const fds = new Int32Array(2);
  if (Number(l.pipe2(fds, O_CLOEXEC)) < 0) throw syscallError('pipe2', l.errno());
  const out: [number, number] = [fds[0]!, fds[1]!];
  for (let i = 0; i < 2; i++) {
    if (out[i]! > 2) continue;
    const moved = Number(l.fcntl(out[i]!, F_DUPFD_CLOEXEC, 3));
    if (moved < 0) {
      const e = l.errno();
      closeFd(out[0]!);
      closeFd(out[1]!);
      throw syscallError('fcntl', e, 'F_DUPFD_CLOEXEC');
    }
    closeFd(out[i]!);
    out[i] = moved;
  }
  return out;
}

/** Write as much of `data` as the pipe takes now, without blocking; returns the bytes written. */
function writeNow(fd: number, data: Buffer): number {
  const l = spawnLib();
  const flags = Number(l.fcntl(fd, F_GETFL, 0));
  if (flags < 0 || Number(l.fcntl(fd, F_SETFL, flags | O_NONBLOCK)) < 0) return 0;
  let off = 0;
  while (off < data.length) {
    const n = Number(l.write(fd, off === 0 ? data : data.subarray(off), data.length - off));
    if (n <= 0) break; // EAGAIN (full) or EPIPE/EINTR: the stream takes over
    off += n;
  }
  return off;
}

function checkNoNul(what: string, s: string): string {
  if (s.includes('\0'))
    throw invalidArgument(`${what} must not contain NUL bytes`, { [what]: s.slice(0, 200) });
  return s;
}

function envList(env: Readonly<Record<string, string | undefined>>): (string | null)[] {
  const out: (string | null)[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (!k || k.includes('='))
      throw invalidArgument('environment variable names must be non-empty without "="', { name: k });
    out.push(checkNoNul('environment', `${k}=${v}`));
  }
  out.push(null);
  return out;
}

/** A TapnetError for a failed posix_spawn, with the errno name (ENOENT, EACCES, ETXTBSY, …). */
function spawnFailed(file: string, errnum: number): TapnetError {
  const name = errnoName(errnum);
  const text = getSystemErrorMap().get(-errnum)?.[1] ?? name;
  return new TapnetError(codeForErrno(name), `posix_spawn ${file}: ${text}`, {
    errno: name,
    syscall: 'posix_spawn',
    details: { file, reason: text },
  });
}

function pipeSocket(fd: number, readable: boolean): Socket {
  return new Socket({ fd, readable, writable: !readable });
}

/**
 * Start `file` with posix_spawn (like `spawn()` of node:child_process, without forking this process).
 * Throws synchronously when the child could not start (errno ENOENT, EACCES, ETXTBSY, ENOEXEC, …);
 * the child's exit is reported by `exited`. Call it from the main thread when using `netnsFd`.
 */
export function spawnProcess(file: string, opts: SpawnOptions = {}): Spawned {
  const l = spawnLib();
  checkNoNul('file', file);
  const argv: (string | null)[] = [...(opts.argv ?? [file])].map((a) => checkNoNul('argument', a));
  argv.push(null);
  const envp = envList(opts.env ?? process.env);
  const input =
    opts.input === undefined
      ? undefined
      : typeof opts.input === 'string'
        ? Buffer.from(opts.input)
        : Buffer.from(opts.input);
  const stdinMode: StdioMode = input !== undefined ? 'pipe' : (opts.stdin ?? 'ignore');
  const modes: StdioMode[] = [stdinMode, opts.stdout ?? 'pipe', opts.stderr ?? 'pipe'];
  const group = opts.newProcessGroup ?? true;

  const pipes: ([number, number] | undefined)[] = [undefined, undefined, undefined];
  const fa = Buffer.alloc(FA_SIZE);
  let faReady = false;
  let armed = false;
  let pid: number | undefined;
  let written = 0;
  try {
    for (let i = 0; i < 3; i++) if (modes[i] === 'pipe') pipes[i] = pipe();
    l.faInit(fa);
    faReady = true;
    for (let i = 0; i < 3; i++) {
      const p = pipes[i];
      if (p) l.faDup2(fa, i === 0 ? p[0] : p[1], i);
      else if (modes[i] === 'ignore') l.faOpen(fa, i, '/dev/null', O_RDWR, 0);
    }
    if (l.faClosefrom) l.faClosefrom(fa, 3);
    if (input && input.length > 0) written = writeNow(pipes[0]![1], input);
    const pidOut = new Int32Array(1);
    const attr = group ? attrs().group : attrs().plain;
    armReaper();
    armed = true;
    const err = Number(withNetns(opts.netnsFd, () => l.posixSpawn(pidOut, file, fa, attr, argv, envp)));
    if (err !== 0) throw spawnFailed(file, err);
    pid = pidOut[0]!;
  } catch (e) {
    if (armed) disarmIfIdle();
    for (const p of pipes) if (p) for (const fd of p) closeFd(fd);
    throw e;
  } finally {
    if (faReady) l.faDestroy(fa);
  }
  // Our copies of the child's ends go now (the child has its own); ours are handed to the streams.
  for (let i = 0; i < 3; i++) {
    const p = pipes[i];
    if (p) closeFd(i === 0 ? p[0] : p[1]);
  }
  return started(pid, pipes, group, input ? input.subarray(written) : undefined);
}

function started(
  pid: number,
  pipes: ([number, number] | undefined)[],
  group: boolean,
  rest: Buffer | undefined,
): Spawned {
  let status: ExitStatus | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    watchExit(pid, (s) => {
      status = s;
      resolve(s);
    });
  });
  let stdin: Socket | null = null;
  if (pipes[0]) {
    const wfd = pipes[0][1];
    if (rest !== undefined && rest.length === 0) {
      closeFd(wfd); // all of the input is in the pipe: EOF after it
    } else {
      stdin = pipeSocket(wfd, false);
      // EPIPE: the child exited without reading its input; its exit status tells the rest.
      stdin.on('error', () => undefined);
      if (rest !== undefined) stdin.end(rest);
    }
  }
  const stdout = pipes[1] ? pipeSocket(pipes[1][0], true) : null;
  const stderr = pipes[2] ? pipeSocket(pipes[2][0], true) : null;
  const send = (target: number, signal: NodeJS.Signals | number): boolean => {
    try {
      process.kill(target, signal);
      return true;
    } catch {
      return false;
    }
  };
  return {
    pid,
    stdin,
    stdout,
    stderr,
    exited,
    get status() {
      return status;
    },
    kill: (signal = 'SIGTERM') => status === undefined && send(pid, signal),
    // The group id stays reserved while any member lives, so this is safe even after the leader is reaped.
    killGroup: (signal = 'SIGKILL') => {
      if (!group)
        throw new TapnetError('ERR_INTERNAL', 'killGroup() of a child started without its own process group');
      return send(-pid, signal);
    },
    closePipes: () => {
      stdin?.destroy();
      stdout?.destroy();
      stderr?.destroy();
    },
  };
}

/** True when posix_spawn can be used here (Linux, glibc, koffi). Never throws. */
export function spawnAvailable(): boolean {
  try {
    spawnLib();
    attrs();
    return true;
  } catch {
    return false;
  }
}
