/**
 * Running a plugin executable, as libcni's RawExec does: the request on stdin, the result on stdout,
 * stderr passed through on success and quoted in the error on failure, a non-zero exit turned into the
 * spec's error; plus what RawExec lacks: a timeout and an AbortSignal (the plugin's whole process
 * group is killed), a retry when the executable is still being written ("text file busy"), and a cap
 * on output.
 */
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
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

/** A started plugin process, as ProcessPluginExecutor waits for it. */
export interface PluginProcess {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Settles once the plugin has exited and been reaped; rejects when it could not be started. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL its whole process group (it was started as the leader of a new one). */
  killGroup(): void;
  /** Stop reading its pipes (after a kill: a surviving grandchild may hold their other ends). */
  closePipes(): void;
}

/**
 * The contract every executor of plugin executables keeps: the request on stdin, the result on stdout,
 * stderr passed on (success) or quoted in the error (failure), a timeout and an AbortSignal that kill
 * the plugin's process group, a cap on output, "text file busy" retried, process creation timed. The
 * subclasses only start the process.
 */
export abstract class ProcessPluginExecutor implements PluginExecutor {
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

  /** Start the plugin with `stdin` fed to it; throws (or rejects `exited`) when it cannot start. */
  protected abstract start(pluginPath: string, stdin: Buffer, env: Record<string, string>): PluginProcess;

  /** The errno of a failure to start the plugin when `e` is one ('' if unknown); undefined otherwise. */
  protected abstract startErrno(e: unknown): string | undefined;

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
        const errno = this.startErrno(e);
        if (errno === undefined) throw e;
        if (errno !== 'ETXTBSY' || attempt >= this.busyRetries) throw startError(pluginPath, e, errno);
        await sleep(this.busyRetryDelayMs, opts.signal);
      }
    }
  }

  private async runOnce(
    pluginPath: string,
    stdin: Buffer,
    env: Record<string, string>,
    opts: ExecOptions,
  ): Promise<Buffer> {
    const { signal, timeoutMs } = opts;
    if (signal?.aborted) throw abortedError(signal, { plugin: pluginPath });
    const t0 = performance.now();
    const child = this.start(pluginPath, stdin, env);
    opts.onSpawned?.(performance.now() - t0);
    const { stdout, stderr } = await collect(child, pluginPath, this.maxOutputBytes, signal, timeoutMs);
    if (stderr.length > 0) this.writeStderr(stderr, pluginPath);
    return stdout;
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

/**
 * Wait for a plugin: its output (capped), its exit; kill its group on timeout, abort or overflow.
 * Resolves on exit 0 once both pipes are closed; a non-zero exit is the plugin's error; after a kill,
 * the error is thrown as soon as the plugin is reaped (a surviving grandchild may hold the pipes open).
 */
function collect(
  child: PluginProcess,
  pluginPath: string,
  maxOutputBytes: number,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): Promise<{ stdout: Buffer; stderr: Buffer }> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let failure: unknown;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let open = 2;
    let status: { code: number | null; signal: NodeJS.Signals | null } | undefined;

    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const kill = (why: unknown): void => {
      if (failure === undefined) failure = why;
      child.killGroup();
    };
    const onAbort = (): void => kill(abortedError(signal!, { plugin: pluginPath }));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs && timeoutMs > 0)
      timer = setTimeout(() => kill(timeoutError(timeoutMs, { plugin: pluginPath })), timeoutMs);

    const done = (): void => {
      if (open > 0 || status === undefined) return;
      finish(() => {
        if (failure !== undefined) return reject(failure);
        const stdout = Buffer.concat(out);
        const stderr = Buffer.concat(err);
        if (status!.code !== 0) {
          const how = describeExit(status!.code, status!.signal);
          return reject(pluginErrorFrom(stdout, stderr, how, { plugin: pluginPath }));
        }
        resolve({ stdout, stderr });
      });
    };
    const capture = (stream: Readable, into: Buffer[]): void => {
      let length = 0;
      stream.on('data', (c: Buffer) => {
        length += c.length;
        if (length > maxOutputBytes) {
          kill(
            new CniError(CNI_ERROR.UNKNOWN, `netplugin output exceeds ${maxOutputBytes} bytes`, '', {
              details: { plugin: pluginPath },
            }),
          );
          return;
        }
        into.push(c);
      });
      stream.on('error', () => undefined); // a read error ends the stream like EOF; the exit status decides
      stream.once('close', () => {
        open--;
        done();
      });
    };
    capture(child.stdout, out);
    capture(child.stderr, err);
    child.exited.then(
      (s) => {
        status = s;
        if (failure !== undefined) {
          child.closePipes();
          finish(() => reject(failure));
        } else done();
      },
      (e: unknown) => finish(() => reject(e)),
    );
  });
}

/** The error of a plugin that could not be started (libcni's words: "fork/exec"). */
function startError(pluginPath: string, e: unknown, errno: string): CniError {
  const why =
    e instanceof TapnetError && typeof e.details.reason === 'string'
      ? e.details.reason
      : ((e as Error | undefined)?.message ?? errno);
  return new CniError(
    CNI_ERROR.UNKNOWN,
    `netplugin failed with no error message: fork/exec ${pluginPath}: ${why}`,
    '',
    { cause: e, ...(errno ? { errno } : {}), details: { plugin: pluginPath } },
  );
}

/** The portable executor: plugins are executables on disk, run with Node's spawn() (fork + exec). */
export class ExecPluginExecutor extends ProcessPluginExecutor {
  protected start(pluginPath: string, stdin: Buffer, env: Record<string, string>): PluginProcess {
    // Own process group, so a timeout or abort also kills whatever the plugin started.
    const child = spawn(pluginPath, [], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    exited.catch(() => undefined); // collect() handles it
    child.stdin!.on('error', () => {
      // EPIPE: the plugin exited without reading its input; its exit status tells the rest.
    });
    child.stdin!.end(stdin);
    return {
      stdout: child.stdout!,
      stderr: child.stderr!,
      exited,
      killGroup() {
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
      },
      closePipes() {
        child.stdout!.destroy();
        child.stderr!.destroy();
      },
    };
  }

  protected startErrno(e: unknown): string | undefined {
    // Everything but our own errors comes from spawn() (ENOENT, EACCES, ETXTBSY, …).
    if (e instanceof TapnetError) return undefined;
    return (e as NodeJS.ErrnoException | undefined)?.code ?? '';
  }
}
