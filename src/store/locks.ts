/**
 * Per-key locks across processes for the local backend: an in-process FIFO queue per key (KeyedMutex),
 * then flock(2) on `<state>/locks/<scope>/<name>.lock`. The kernel drops an flock when its holder dies,
 * so a crashed CLI or daemon never leaves a VM locked. A lock file lives as long as its VM (creating an
 * inode on every acquire would cost more than the rest of the lock); release({ forget: true }) removes
 * it, and the inode check after flock makes that removal safe against a waiter that opened the old file.
 * `grep FLOCK /proc/locks` shows what is held right now.
 */
import fs from 'node:fs';
import { isTapnetError, TapnetError } from '../errors.js';
import { flock, LOCK_EX, LOCK_NB } from '../sys/flock.js';
import { validateName, validateVmId } from '../validate.js';
import { abortedError, KeyedMutex, timeoutError } from './mutex.js';
import type { StateDir } from './statedir.js';
import { fsErrno, storeError } from './statedir.js';
import type { HeldLock, LockOptions, LockScope, LockService } from './types.js';

// libuv adds O_CLOEXEC to every open(2), so the fd never leaks into child processes.
const OPEN_FLAGS = fs.constants.O_CREAT | fs.constants.O_RDWR | fs.constants.O_NOFOLLOW;

/**
 * Try once to take an exclusive flock on `file`, creating it. Returns the fd that holds the lock, or
 * undefined when another process holds it.
 */
export function tryLockFile(file: string): number | undefined {
  for (;;) {
    let fd: number;
    try {
      fd = fs.openSync(file, OPEN_FLAGS, 0o644);
    } catch (e) {
      throw storeError('open lock file', file, e);
    }
    let keep = false;
    try {
      if (!flock(fd, LOCK_EX | LOCK_NB)) return undefined;
      // The holder before us may have unlinked the file after we opened it: then we locked a dead inode.
      const mine = fs.fstatSync(fd);
      let now: fs.Stats | undefined;
      try {
        now = fs.statSync(file);
      } catch (e) {
        if (fsErrno(e) !== 'ENOENT') throw storeError('stat lock file', file, e);
      }
      if (now && now.ino === mine.ino && now.dev === mine.dev) {
        keep = true;
        return fd;
      }
    } finally {
      if (!keep) fs.closeSync(fd);
    }
  }
}

/**
 * Release a lock taken by tryLockFile by closing its fd; with `remove`, first unlink the file while
 * still holding the lock (waiters that opened it notice the inode change and retry).
 */
export function unlockFile(file: string, fd: number, remove = false): void {
  if (remove) {
    try {
      fs.unlinkSync(file);
    } catch {
      // best effort: a leftover lock file is harmless (flock is what counts)
    }
  }
  try {
    fs.closeSync(fd);
  } catch {
    // nothing useful to do
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait (polling with back-off) until the flock on `file` is ours; returns its fd. */
export async function lockFile(file: string, options: LockOptions & { what?: string } = {}): Promise<number> {
  const what = options.what ?? file;
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  let delay = 1;
  for (;;) {
    if (options.signal?.aborted) throw abortedError(what, options.signal);
    const fd = tryLockFile(file);
    if (fd !== undefined) return fd;
    if (deadline !== undefined && Date.now() >= deadline) throw timeoutError(what, options.timeoutMs!);
    let wait = delay + Math.random() * delay;
    if (deadline !== undefined) wait = Math.max(0, Math.min(wait, deadline - Date.now()));
    await sleepOrAbort(wait, options.signal);
    delay = Math.min(delay * 2, 25);
  }
}

function sleepOrAbort(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return sleep(ms);
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal!.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** LockService over a state directory: in-process queue, then flock across processes. */
export class LocalLockService implements LockService {
  private readonly mutex = new KeyedMutex();

  constructor(private readonly dir: StateDir) {}

  /**
   * Wait for the lock of one VM (scope 'vm', a VM ID) or one network (scope 'network', a network name).
   * Not re-entrant. Rejects with ERR_ABORTED / ERR_TIMEOUT, and releases nothing it did not take.
   */
  async acquire(scope: LockScope, name: string, options: LockOptions = {}): Promise<HeldLock> {
    if (scope === 'vm') validateVmId(name);
    else if (scope === 'network') validateName(name, 'network name');
    else throw new TapnetError('ERR_INVALID_ARGUMENT', `unknown lock scope ${JSON.stringify(scope)}`);
    const what = `the ${scope} lock of ${name}`;
    const dir = this.dir.path('locks', scope);
    const file = this.dir.path('locks', scope, `${name}.lock`);
    const releaseLocal = await this.mutex.acquire(`${scope}/${name}`, { ...options, what });
    let fd: number;
    try {
      this.dir.ensureDir(dir);
      fd = await lockFile(file, { ...options, what }).catch((e: unknown) => {
        if (!isTapnetError(e, 'ERR_STORE') || e.errno !== 'ENOENT') throw e;
        this.dir.forgetDir(dir); // the directory was removed behind our back: make it again, once
        this.dir.ensureDir(dir);
        return lockFile(file, { ...options, what });
      });
    } catch (e) {
      releaseLocal();
      throw e;
    }
    let held = true;
    return {
      scope,
      name,
      release: (opts) => {
        if (!held) return;
        held = false;
        unlockFile(file, fd, opts?.forget === true);
        releaseLocal();
      },
    };
  }

  /**
   * Remove every lock file nobody holds (each is taken with flock first, so this is safe while other
   * processes use the store; files are recreated on demand). For gc/reconcile, since lock files of VMs
   * released without `forget` stay behind. Returns how many were removed.
   */
  prune(): number {
    let n = 0;
    for (const scope of SCOPES) {
      const dir = this.dir.path('locks', scope);
      for (const name of this.dir.list(dir)) {
        if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.lock$/.test(name)) continue;
        if (this.mutex.isHeld(`${scope}/${name.slice(0, -5)}`)) continue;
        const file = this.dir.path('locks', scope, name);
        let fd: number | undefined;
        try {
          fd = tryLockFile(file); // undefined: held by another process (or another fd of ours)
        } catch {
          continue; // vanished or unreadable: not ours to fix here
        }
        if (fd === undefined) continue;
        unlockFile(file, fd, true);
        n++;
      }
    }
    return n;
  }
}

/** Every lock scope (a directory under `<state>/locks`). */
const SCOPES: readonly LockScope[] = ['vm', 'network'];

/** Run `fn` while holding the lock of (`scope`, `name`); the lock is released however `fn` ends. */
export async function withLock<R>(
  locks: LockService,
  scope: LockScope,
  name: string,
  fn: () => Promise<R> | R,
  options?: LockOptions,
): Promise<R> {
  const lock = await locks.acquire(scope, name, options);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
