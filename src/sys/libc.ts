/**
 * The libc calls tapnet needs, through koffi. This directory is the only place that uses FFI.
 * Every wrapper throws a TapnetError (code ERR_SYSCALL, or a more specific code for well-known errnos)
 * carrying the syscall name and the errno name; none of them returns -1.
 *
 * All calls are synchronous and run on the calling (main) thread: that matters for setns/unshare,
 * which act on the calling thread only (see STYLE.md, rule 2).
 */
import { createRequire } from 'node:module';
import { type ErrorCode, TapnetError } from '../errors.js';
import { errnoName } from './errno.js';

export { errnoName };

const require = createRequire(import.meta.url);

// koffi's types are loose; we keep them behind this file.
// biome-ignore lint/suspicious/noExplicitAny: FFI boundary
type Fn = (...args: any[]) => any;

interface Libc {
  socket: Fn;
  bind: Fn;
  getsockname: Fn;
  setsockopt: Fn;
  send: Fn;
  recv: Fn;
  sendmsg: Fn;
  recvmsg: Fn;
  close: Fn;
  ioctlPtr: Fn;
  ioctlInt: Fn;
  open: Fn;
  setns: Fn;
  unshare: Fn;
  mount: Fn;
  umount2: Fn;
  getpid: Fn;
  gettid: Fn;
  fcntl: Fn;
  dup: Fn;
  errno: () => number;
}

let cached: Libc | undefined;

function unsupported(what: string, cause?: unknown): TapnetError {
  return new TapnetError('ERR_UNSUPPORTED_PLATFORM', `tapnet needs Linux with glibc: ${what}`, { cause });
}

/** Load libc through koffi once. Throws ERR_UNSUPPORTED_PLATFORM off Linux. */
function libc(): Libc {
  if (cached) return cached;
  if (process.platform !== 'linux') throw unsupported(`this is ${process.platform}`);
  let koffi: typeof import('koffi');
  try {
    koffi = require('koffi');
  } catch (e) {
    throw unsupported('the koffi FFI module could not be loaded', e);
  }
  const lib = koffi.load('libc.so.6');
  cached = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32 len)'),
    getsockname: lib.func('int getsockname(int fd, _Inout_ void *addr, _Inout_ uint32 *len)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32 len)'),
    send: lib.func('intptr send(int fd, const void *buf, uintptr len, int flags)'),
    recv: lib.func('intptr recv(int fd, void *buf, uintptr len, int flags)'),
    sendmsg: lib.func('intptr sendmsg(int fd, const void *msg, int flags)'),
    recvmsg: lib.func('intptr recvmsg(int fd, void *msg, int flags)'),
    close: lib.func('int close(int fd)'),
    ioctlPtr: lib.func('int ioctl(int fd, unsigned long req, void *arg)'),
    ioctlInt: lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)'),
    open: lib.func('int open(const char *path, int flags, uint32 mode)'),
    setns: lib.func('int setns(int fd, int nstype)'),
    unshare: lib.func('int unshare(int flags)'),
    mount: lib.func(
      'int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)',
    ),
    umount2: lib.func('int umount2(const char *target, int flags)'),
    getpid: lib.func('int getpid()'),
    gettid: lib.func('int gettid()'),
    fcntl: lib.func('int fcntl(int fd, int cmd, int arg)'),
    dup: lib.func('int dup(int fd)'),
    errno: () => koffi.errno(),
  };
  return cached;
}

/** The code tapnet uses for a failed call with this errno. */
export function codeForErrno(name: string): ErrorCode {
  switch (name) {
    case 'EPERM':
    case 'EACCES':
      return 'ERR_PERMISSION_DENIED';
    case 'EINVAL':
      return 'ERR_INVALID_ARGUMENT';
    case 'ENODEV':
      return 'ERR_LINK_NOT_FOUND';
    case 'EEXIST':
    case 'EBUSY':
      return 'ERR_CONFLICT';
    default:
      return 'ERR_SYSCALL';
  }
}

/** A TapnetError for a failed system call, with errno name and syscall. */
export function syscallError(syscall: string, errnum: number, what?: string): TapnetError {
  const name = errnoName(errnum);
  const msg = `${syscall}${what ? ` (${what})` : ''} failed: ${name}`;
  return new TapnetError(codeForErrno(name), msg, { errno: name, syscall, details: what ? { what } : {} });
}

function check(syscall: string, ret: number | bigint, what?: string): number {
  const n = Number(ret);
  if (n < 0) throw syscallError(syscall, libc().errno(), what);
  return n;
}

// ---- constants (x86_64 and every other Linux ABI tapnet targets) ----
export const AF_NETLINK = 16;
export const AF_UNIX = 1;
export const SOCK_RAW = 3;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_RCVBUF = 8;
export const SO_SNDBUF = 7;
export const SO_RCVTIMEO = 20;
export const SO_RCVBUFFORCE = 33;
export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_GET_STRICT_CHK = 12;
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const CLONE_NEWNS = 0x00020000;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_SHARED = 1 << 20;
export const MS_PRIVATE = 1 << 18;
export const MNT_DETACH = 2;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const FD_CLOEXEC = 1;
export const MSG_DONTWAIT = 0x40;
export const MSG_PEEK = 0x2;
export const MSG_TRUNC = 0x20;

// ---- wrappers ----

/** socket(2). */
export function socket(domain: number, type: number, protocol: number): number {
  return check('socket', libc().socket(domain, type, protocol));
}

/** bind(2) with a raw sockaddr. */
export function bind(fd: number, addr: Buffer): void {
  check('bind', libc().bind(fd, addr, addr.length));
}

/** getsockname(2) into a buffer of the right size; returns the buffer. */
export function getsockname(fd: number, size: number): Buffer {
  const addr = Buffer.alloc(size);
  const len = [size];
  check('getsockname', libc().getsockname(fd, addr, len));
  return addr;
}

/** setsockopt(2) with an int value. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  check('setsockopt', libc().setsockopt(fd, level, name, v, 4));
}

/** setsockopt(2) with raw bytes (e.g. struct timeval). */
export function setsockoptBuf(fd: number, level: number, name: number, value: Buffer): void {
  check('setsockopt', libc().setsockopt(fd, level, name, value, value.length));
}

/** send(2) the whole buffer; returns bytes sent. */
export function send(fd: number, buf: Uint8Array, len = buf.length, flags = 0): number {
  return check('send', libc().send(fd, buf, len, flags));
}

/** recv(2) into `buf`; returns bytes received (with MSG_TRUNC, the real length). */
export function recv(fd: number, buf: Uint8Array, flags = 0): number {
  return check('recv', libc().recv(fd, buf, buf.length, flags));
}

/** recv(2) that returns -1 instead of throwing for EAGAIN (non-blocking polls and timeouts). */
export function recvOrAgain(fd: number, buf: Uint8Array, flags = 0): number {
  const n = Number(libc().recv(fd, buf, buf.length, flags));
  if (n >= 0) return n;
  const e = libc().errno();
  if (errnoName(e) === 'EAGAIN') return -1;
  throw syscallError('recv', e);
}

/** send(2) on a worker thread: for requests the kernel answers slowly (link deletion waits for RCU). */
export function sendAsync(fd: number, buf: Buffer): Promise<number> {
  return callAsync('send', libc().send, [fd, buf, buf.length, 0]);
}

/** recv(2) on a worker thread. */
export function recvAsync(fd: number, buf: Buffer): Promise<number> {
  return callAsync('recv', libc().recv, [fd, buf, buf.length, 0]);
}

function callAsync(syscall: string, fn: Fn, args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    (fn as unknown as { async: (...a: unknown[]) => void }).async(
      ...args,
      (err: unknown, ret: number | bigint) => {
        if (err)
          return reject(
            new TapnetError('ERR_SYSCALL', `${syscall} failed: ${String(err)}`, { syscall, cause: err }),
          );
        const n = Number(ret);
        // errno of a worker-thread call is not observable here; report the failure without it.
        if (n < 0) return reject(new TapnetError('ERR_SYSCALL', `${syscall} failed`, { syscall }));
        resolve(n);
      },
    );
  });
}

/** sendmsg(2) with a prepared struct msghdr. */
export function sendmsg(fd: number, msghdr: Buffer, flags = 0): number {
  return check('sendmsg', libc().sendmsg(fd, msghdr, flags));
}

/** recvmsg(2) with a prepared struct msghdr. */
export function recvmsg(fd: number, msghdr: Buffer, flags = 0): number {
  return check('recvmsg', libc().recvmsg(fd, msghdr, flags));
}

/** close(2); EBADF is reported, EINTR is not retried (Linux closes the fd anyway). */
export function close(fd: number): void {
  const r = Number(libc().close(fd));
  if (r < 0) {
    const e = libc().errno();
    if (errnoName(e) !== 'EINTR') throw syscallError('close', e);
  }
}

/** ioctl(2) with a pointer argument (struct ifreq, …). */
export function ioctl(fd: number, request: number, arg: Buffer, what?: string): number {
  return check('ioctl', libc().ioctlPtr(fd, request, arg), what);
}

/** ioctl(2) with an integer argument (TUNSETPERSIST, TUNSETOWNER, …). */
export function ioctlInt(fd: number, request: number, arg: number, what?: string): number {
  return check('ioctl', libc().ioctlInt(fd, request, arg), what);
}

/** open(2). */
export function open(path: string, flags: number, mode = 0): number {
  return check('open', libc().open(path, flags, mode), path);
}

/** setns(2): moves the calling thread into the namespace behind `fd`. */
export function setns(fd: number, nstype: number): void {
  check('setns', libc().setns(fd, nstype));
}

/** unshare(2): the calling thread gets new namespaces of the given kinds. */
export function unshare(flags: number): void {
  check('unshare', libc().unshare(flags));
}

/** mount(2). */
export function mount(src: string | null, target: string, fstype: string | null, flags: number): void {
  check('mount', libc().mount(src, target, fstype, flags, null), target);
}

/** umount2(2). */
export function umount2(target: string, flags: number): void {
  check('umount2', libc().umount2(target, flags), target);
}

/** getpid(2). */
export function getpid(): number {
  return libc().getpid();
}

/** gettid(2): the calling thread's id (the main thread's equals the pid). */
export function gettid(): number {
  return libc().gettid();
}

/** Set or clear FD_CLOEXEC on an fd. */
export function setCloexec(fd: number, on: boolean): void {
  const flags = check('fcntl', libc().fcntl(fd, F_GETFD, 0));
  check('fcntl', libc().fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC));
}

/** dup(2). The new fd does not have FD_CLOEXEC. */
export function dup(fd: number): number {
  return check('dup', libc().dup(fd));
}

/** True when libc can be loaded here (Linux with glibc and koffi). Never throws. */
export function available(): boolean {
  try {
    libc();
    return true;
  } catch {
    return false;
  }
}
