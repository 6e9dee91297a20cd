/**
 * The plugin executor over posix_spawn (src/sys/spawn.ts): the contract of ExecPluginExecutor (the request
 * on stdin, the result on stdout, stderr passed on or quoted, a timeout and an AbortSignal killing the
 * plugin's whole process group, a cap on output, "text file busy" retried, process creation timed), but
 * the process is created without forking this one, so its cost does not grow with our memory. Plugins can
 * also be started inside a given network namespace (`hostNsFd`): the "host" side of bridge, ptp, … is
 * then that namespace, not the calling process's.
 */
import { performance } from 'node:perf_hooks';
import { TapnetError } from '../errors.js';
import { type Spawned, spawnAvailable, spawnProcess } from '../sys/spawn.js';
import { CNI_ERROR, CniError, describeExit, pluginErrorFrom } from './errors.js';
import {
  abortedError,
  type ExecExecutorOptions,
  type ExecOptions,
  ExecPluginExecutor,
  findInPath,
  type PluginExecutor,
  type StderrSink,
  timeoutError,
} from './exec.js';
import type { PluginInfo } from './types.js';
import { decodePluginInfo } from './version.js';

/** Options of the posix_spawn executor: those of ExecPluginExecutor, plus the plugins' namespace. */
export interface SpawnExecutorOptions extends ExecExecutorOptions {
  /**
   * Start plugins in this network namespace (an fd, or a function giving it at each call; undefined:
   * the calling thread's). CNI_NETNS still names the container's namespace; this is their "host".
   */
  hostNsFd?: number | (() => number | undefined);
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

/** The default executor where posix_spawn is available: plugins are executables, started without fork. */
export class SpawnPluginExecutor implements PluginExecutor {
  private readonly stderr: StderrSink;
  private readonly busyRetries: number;
  private readonly busyRetryDelayMs: number;
  private readonly maxOutputBytes: number;
  private readonly hostNsFd: SpawnExecutorOptions['hostNsFd'];

  constructor(opts: SpawnExecutorOptions = {}) {
    this.stderr = opts.stderr === undefined ? process.stderr : opts.stderr;
    this.busyRetries = opts.busyRetries ?? 5;
    this.busyRetryDelayMs = opts.busyRetryDelayMs ?? 1000;
    this.maxOutputBytes = opts.maxOutputBytes ?? 16 * 1024 * 1024;
    this.hostNsFd = opts.hostNsFd;
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
        if (!(e instanceof TapnetError) || e.syscall !== 'posix_spawn') throw e;
        if (e.errno !== 'ETXTBSY' || attempt >= this.busyRetries) throw spawnError(pluginPath, e);
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
    const nsFd = typeof this.hostNsFd === 'function' ? this.hostNsFd() : this.hostNsFd;
    const t0 = performance.now();
    // Own process group, so a timeout or abort also kills whatever the plugin started.
    const child = spawnProcess(pluginPath, {
      env,
      input: stdin,
      ...(nsFd !== undefined ? { netnsFd: nsFd } : {}),
    });
    opts.onSpawned?.(performance.now() - t0);
    return collect(child, pluginPath, this.maxOutputBytes, signal, timeoutMs).then(({ stdout, stderr }) => {
      if (stderr.length > 0) this.writeStderr(stderr, pluginPath);
      return stdout;
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

/**
 * Wait for a plugin: its output (capped), its exit; kill its group on timeout, abort or overflow. Resolves
 * on exit 0 once both pipes are closed; a non-zero exit is the plugin's error; after a kill, the error is
 * thrown as soon as the plugin is reaped (a surviving grandchild may hold the pipes open).
 */
function collect(
  child: Spawned,
  pluginPath: string,
  maxOutputBytes: number,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): Promise<{ stdout: Buffer; stderr: Buffer }> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let failure: unknown;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let open = 2;

    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const kill = (why: unknown): void => {
      if (failure === undefined) failure = why;
      child.killGroup('SIGKILL');
    };
    const onAbort = (): void => kill(abortedError(signal!, { plugin: pluginPath }));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs && timeoutMs > 0)
      timer = setTimeout(() => kill(timeoutError(timeoutMs, { plugin: pluginPath })), timeoutMs);

    const tooMuch = (): TapnetError =>
      new CniError(CNI_ERROR.UNKNOWN, `netplugin output exceeds ${maxOutputBytes} bytes`, '', {
        details: { plugin: pluginPath },
      });
    const done = (): void => {
      if (open > 0 || child.status === undefined) return;
      finish(() => {
        if (failure !== undefined) return reject(failure);
        const stdout = Buffer.concat(out);
        const stderr = Buffer.concat(err);
        const { code, signal: sig } = child.status!;
        if (code !== 0)
          return reject(pluginErrorFrom(stdout, stderr, describeExit(code, sig), { plugin: pluginPath }));
        resolve({ stdout, stderr });
      });
    };
    const closed = (): void => {
      open--;
      done();
    };
    child.stdout!.on('data', (c: Buffer) => {
      outLen += c.length;
      if (outLen > maxOutputBytes) return kill(tooMuch());
      out.push(c);
    });
    child.stderr!.on('data', (c: Buffer) => {
      errLen += c.length;
      if (errLen > maxOutputBytes) return kill(tooMuch());
      err.push(c);
    });
    for (const s of [child.stdout!, child.stderr!]) {
      s.on('error', () => undefined); // a read error ends the stream like EOF; the exit status decides
      s.once('close', closed);
    }
    void child.exited.then(() => {
      if (failure !== undefined) {
        child.closePipes();
        finish(() => reject(failure));
      } else done();
    });
  });
}

function spawnError(pluginPath: string, e: TapnetError): CniError {
  const text = typeof e.details.reason === 'string' ? e.details.reason : (e.errno ?? e.message);
  return new CniError(
    CNI_ERROR.UNKNOWN,
    `netplugin failed with no error message: fork/exec ${pluginPath}: ${text}`,
    '',
    {
      cause: e,
      ...(e.errno ? { errno: e.errno } : {}),
      details: { plugin: pluginPath },
    },
  );
}

/**
 * The executor CniRuntime uses when none is given: posix_spawn where available (always with `hostNsFd`),
 * else Node's spawn().
 */
export function defaultPluginExecutor(opts: SpawnExecutorOptions = {}): PluginExecutor {
  // Plugins in another namespace need posix_spawn: without it, they fail at exec (ERR_UNSUPPORTED_PLATFORM).
  if (spawnAvailable() || opts.hostNsFd !== undefined) return new SpawnPluginExecutor(opts);
  return new ExecPluginExecutor(opts);
}
