/**
 * The plugin executor over posix_spawn (src/sys/spawn.ts): the contract of ExecPluginExecutor (the request
 * on stdin, the result on stdout, stderr passed on or quoted, a timeout and an AbortSignal killing the
 * plugin's whole process group, a cap on output, "text file busy" retried, process creation timed), but
 * the process is created without forking this one, so its cost does not grow with our memory. Plugins can
 * also be started inside a given network namespace (`hostNsFd`): the "host" side of bridge, ptp, … is
 * then that namespace, not the calling process's.
 */
import { TapnetError } from '../errors.js';
import { spawnAvailable, spawnProcess } from '../sys/spawn.js';
import {
  type ExecExecutorOptions,
  ExecPluginExecutor,
  type PluginExecutor,
  type PluginProcess,
  ProcessPluginExecutor,
} from './exec.js';

/** Options of the posix_spawn executor: those of ExecPluginExecutor, plus the plugins' namespace. */
export interface SpawnExecutorOptions extends ExecExecutorOptions {
  /**
   * Start plugins in this network namespace (an fd, or a function giving it at each call; undefined:
   * the calling thread's). CNI_NETNS still names the container's namespace; this is their "host".
   */
  hostNsFd?: number | (() => number | undefined);
}

/** The default executor where posix_spawn is available: plugins are executables, started without fork. */
export class SpawnPluginExecutor extends ProcessPluginExecutor {
  private readonly hostNsFd: SpawnExecutorOptions['hostNsFd'];

  constructor(opts: SpawnExecutorOptions = {}) {
    super(opts);
    this.hostNsFd = opts.hostNsFd;
  }

  protected start(pluginPath: string, stdin: Buffer, env: Record<string, string>): PluginProcess {
    const nsFd = typeof this.hostNsFd === 'function' ? this.hostNsFd() : this.hostNsFd;
    // Own process group, so a timeout or abort also kills whatever the plugin started.
    const child = spawnProcess(pluginPath, {
      env,
      input: stdin,
      ...(nsFd !== undefined ? { netnsFd: nsFd } : {}),
    });
    return {
      stdout: child.stdout!,
      stderr: child.stderr!,
      exited: child.exited,
      killGroup: () => void child.killGroup('SIGKILL'),
      closePipes: () => child.closePipes(),
    };
  }

  protected startErrno(e: unknown): string | undefined {
    return e instanceof TapnetError && e.syscall === 'posix_spawn' ? (e.errno ?? '') : undefined;
  }
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
