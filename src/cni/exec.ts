/**
 * Running a plugin executable, as libcni's RawExec does: the request on stdin, the result on stdout,
 * stderr passed through on success and quoted in the error on failure, a non-zero exit turned into the
 * spec's error; plus what RawExec lacks: a timeout and an AbortSignal (the plugin's whole process
 * group is killed), a retry when the executable is still being written ("text file busy"), and a cap
 * on output.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { TapnetError } from '../errors.js';
import { CNI_ERROR, CniError, describeExit, pluginErrorFrom } from './errors.js';
import type { PluginInfo } from './types.js';
import { decodePluginInfo } from './version.js';

/** Where stderr of a successful plugin goes: a stream, a function, or nowhere (null). */
export type StderrSink = NodeJS.WritableStream | ((chunk: Buffer, pluginPath: string) => void) | null;

/** Per-invocation options. */
export interface ExecOptions {
  /** Kill the plugin after this long (ERR_TIMEOUT). 0 or undefined: no limit. */
  timeoutMs?: number;
  /** Kill the plugin when aborted (ERR_ABORTED). */
  signal?: AbortSignal;
  /** Told how long creating the process took (fork/exec in spawn()), for timing. */
  onSpawned?: (ms: number) => void;
}

/**
 * How plugins are found and run (libcni's invoke.Exec). Tests and embedders may supply their own;
 * in-process plugins bypass it.
 */
export interface PluginExecutor {
  /** Run the plugin with `stdin` and exactly `env`; resolve to its stdout, or throw its CniError. */
  execPlugin(
    pluginPath: string,
    stdin: Buffer,
    env: Record<string, string>,
    opts: ExecOptions,
  ): Promise<Buffer>;
  /** The full path of plugin `type` in `paths` (first match), or ERR_NOT_FOUND. */
  findInPath(type: string, paths: readonly string[]): string;
  /** Decode a VERSION answer. */
  decode(stdout: Buffer): PluginInfo;
}

/**
 * Find a plugin executable (invoke.FindInPath): `<path>/<type>` for each path in order, a regular file
 * (symlinks followed). The type must not hold a path separator.
 */
export function findInPath(type: string, paths: readonly string[]): string {
  if (!type) throw new TapnetError('ERR_INVALID_ARGUMENT', 'no plugin name provided');
  if (type.includes('/') || type.includes('\0')) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `invalid plugin name: ${type}`, {
      details: { plugin: type },
    });
  }
  if (paths.length === 0) {
    throw new TapnetError('ERR_NOT_FOUND', `failed to find plugin "${type}": no paths provided`, {
      details: { plugin: type, paths: [] },
    });
  }
  for (const dir of paths) {
    const full = join(dir, type);
    try {
      if (statSync(full).isFile()) return full;
    } catch {
      // not here
    }
  }
  throw new TapnetError('ERR_NOT_FOUND', `failed to find plugin "${type}" in path [${paths.join(' ')}]`, {
    details: { plugin: type, paths: [...paths] },
  });
}

/** Options of the default executor. */
export interface ExecExecutorOptions {
  /** Where stderr of successful plugins goes (libcni: the caller's stderr). Default process.stderr. */
  stderr?: StderrSink;
  /** Retries when the executable is busy being written (ETXTBSY). Default 5. */
  busyRetries?: number;
  /** Wait between those retries. Default 1000 ms, as libcni. */
  busyRetryDelayMs?: number;
  /** Kill a plugin whose stdout or stderr exceeds this many bytes. Default 16 MiB. */
  maxOutputBytes?: number;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(signal));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(abortedError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** ERR_ABORTED for a plugin call whose AbortSignal fired. */
export function abortedError(signal: AbortSignal, details: Record<string, unknown> = {}): TapnetError {
  return new TapnetError('ERR_ABORTED', 'CNI plugin call aborted', { cause: signal.reason, details });
}

/** ERR_TIMEOUT for a plugin call that outlived its time limit. */
export function timeoutError(ms: number, details: Record<string, unknown> = {}): TapnetError {
  return new TapnetError('ERR_TIMEOUT', `CNI plugin did not finish within ${ms} ms`, {
    details: { ...details, timeoutMs: ms },
  });
}

/** The default executor: plugins are executables on disk, run with spawn(2). */
export class ExecPluginExecutor implements PluginExecutor {
  private readonly stderr: StderrSink;
  private readonly busyRetries: number;
  private readonly busyRetryDelayMs: number;
  private readonly maxOutputBytes: number;

  constructor(opts: ExecExecutorOptions = {}) {
    this.stderr = opts.stderr === undefined ? process.stderr : opts.stderr;
    this.busyRetries = opts.busyRetries ?? 5;
    this.busyRetryDelayMs = opts.busyRetryDelayMs ?? 1000;
    this.maxOutputBytes = opts.maxOutputBytes ?? 16 * 1024 * 1024;
  }

  findInPath(type: string, paths: readonly string[]): string {
    return findInPath(type, paths);
  }

  decode(stdout: Buffer): PluginInfo {
    return decodePluginInfo(stdout);
  }

  async execPlugin(
    pluginPath: string,
    stdin: Buffer,
    env: Record<string, string>,
    opts: ExecOptions = {},
  ): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.runOnce(pluginPath, stdin, env, opts);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ETXTBSY' || attempt >= this.busyRetries) {
          throw e instanceof TapnetError ? e : spawnError(pluginPath, e);
        }
        await sleep(this.busyRetryDelayMs, opts.signal);
      }
    }
  }

  private runOnce(
    pluginPath: string,
    stdin: Buffer,
    env: Record<string, string>,
    opts: ExecOptions,
  ): Promise<Buffer> {
    const { signal, timeoutMs } = opts;
    if (signal?.aborted) return Promise.reject(abortedError(signal, { plugin: pluginPath }));
    // Own process group, so a timeout or abort also kills whatever the plugin started.
    const t0 = performance.now();
    const child = spawn(pluginPath, [], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    opts.onSpawned?.(performance.now() - t0);
    return new Promise<Buffer>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outLen = 0;
      let errLen = 0;
      let failure: unknown;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;

      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const kill = (why: unknown): void => {
        if (failure === undefined) failure = why;
        killGroup(child);
      };
      const onAbort = (): void => kill(abortedError(signal!, { plugin: pluginPath }));
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs && timeoutMs > 0)
        timer = setTimeout(() => kill(timeoutError(timeoutMs, { plugin: pluginPath })), timeoutMs);

      const tooMuch = (): TapnetError =>
        new CniError(CNI_ERROR.UNKNOWN, `netplugin output exceeds ${this.maxOutputBytes} bytes`, '', {
          details: { plugin: pluginPath },
        });
      child.stdout!.on('data', (c: Buffer) => {
        outLen += c.length;
        if (outLen > this.maxOutputBytes) return kill(tooMuch());
        out.push(c);
      });
      child.stderr!.on('data', (c: Buffer) => {
        errLen += c.length;
        if (errLen > this.maxOutputBytes) return kill(tooMuch());
        err.push(c);
      });
      child.stdin!.on('error', () => {
        // EPIPE: the plugin exited without reading its input; its exit status tells the rest.
      });
      child.on('error', (e) => finish(() => reject(e)));
      // After a kill, do not wait for pipes that a surviving grandchild may hold open.
      child.on('exit', () => {
        if (failure !== undefined) finish(() => reject(failure));
      });
      child.on('close', (code, sig) => {
        finish(() => {
          if (failure !== undefined) return reject(failure);
          const stdout = Buffer.concat(out);
          const stderr = Buffer.concat(err);
          if (code !== 0)
            return reject(pluginErrorFrom(stdout, stderr, describeExit(code, sig), { plugin: pluginPath }));
          if (stderr.length > 0) this.writeStderr(stderr, pluginPath);
          resolve(stdout);
        });
      });
      child.stdin!.end(stdin);
    });
  }

  private writeStderr(chunk: Buffer, pluginPath: string): void {
    const sink = this.stderr;
    if (!sink) return;
    try {
      if (typeof sink === 'function') sink(chunk, pluginPath);
      else sink.write(chunk);
    } catch {
      // stderr is informational only
    }
  }
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

function spawnError(pluginPath: string, e: unknown): CniError {
  const err = e as NodeJS.ErrnoException;
  return new CniError(
    CNI_ERROR.UNKNOWN,
    `netplugin failed with no error message: fork/exec ${pluginPath}: ${err.message}`,
    '',
    {
      cause: e,
      ...(err.code ? { errno: err.code } : {}),
      details: { plugin: pluginPath },
    },
  );
}
