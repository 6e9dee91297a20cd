/**
 * flock(2) through koffi, for the state store's cross-process locks. A separate file from libc.ts so
 * the store does not depend on the netlink/ioctl surface; same conventions: synchronous, on the calling
 * thread, TapnetError with the errno name on failure.
 *
 * Why flock and not a pid file: the kernel drops an flock when its last fd closes, so a process killed
 * with SIGKILL can never leave a lock held, and no pid (which may be reused, or live in another pid
 * namespace) has to be trusted.
 */
import { createRequire } from 'node:module';
import { TapnetError } from '../errors.js';
import { errnoName, syscallError } from './libc.js';

const require = createRequire(import.meta.url);

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

// biome-ignore lint/suspicious/noExplicitAny: FFI boundary
type Fn = (...args: any[]) => any;

let cached: { flock: Fn; errno: () => number } | undefined;

function lib(): { flock: Fn; errno: () => number } {
  if (cached) return cached;
  if (process.platform !== 'linux') {
    throw new TapnetError(
      'ERR_UNSUPPORTED_PLATFORM',
      `tapnet needs Linux with glibc: this is ${process.platform}`,
    );
  }
  let koffi: typeof import('koffi');
  try {
    koffi = require('koffi');
  } catch (e) {
    throw new TapnetError('ERR_UNSUPPORTED_PLATFORM', 'the koffi FFI module could not be loaded', {
      cause: e,
    });
  }
  const libc = koffi.load('libc.so.6');
  cached = { flock: libc.func('int flock(int fd, int operation)'), errno: () => koffi.errno() };
  return cached;
}

/**
 * flock(2) on an open fd. With LOCK_NB, returns false when another open file description holds a
 * conflicting lock (EWOULDBLOCK); otherwise true. EINTR is retried; other errors throw ERR_SYSCALL.
 */
export function flock(fd: number, operation: number): boolean {
  const l = lib();
  for (;;) {
    if (Number(l.flock(fd, operation)) === 0) return true;
    const e = l.errno();
    const name = errnoName(e);
    if (name === 'EINTR') continue;
    if (name === 'EAGAIN' || name === 'EWOULDBLOCK') return false;
    throw syscallError('flock', e);
  }
}
