/**
 * Passing file descriptors over Unix sockets (SCM_RIGHTS): struct msghdr / iovec / cmsghdr built in
 * Buffers for sendmsg(2)/recvmsg(2), and connect(2) for a client socket of our own (Node's sockets read
 * ancillary data away, so the receiving side cannot be a net.Socket).
 *
 * Layouts are the LP64 ones (x86_64, aarch64 and every 64-bit Linux ABI):
 *   msghdr  { void *name; u32 namelen; (pad); iovec *iov; size_t iovlen; void *control; size_t controllen; int flags; (pad) } = 56
 *   iovec   { void *base; size_t len } = 16
 *   cmsghdr { size_t len; int level; int type; data[] }, data aligned to 8.
 */
import { createRequire } from 'node:module';
import { TapnetError } from '../errors.js';
import { errnoName } from './errno.js';
import * as libc from './libc.js';

const require = createRequire(import.meta.url);

export const SOCK_STREAM = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SCM_RIGHTS = 1;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CTRUNC = 0x8;
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** The kernel's limit on fds in one SCM_RIGHTS message (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;

const MSGHDR_SIZE = 56;
const IOVEC_SIZE = 16;
const CMSG_HDR = 16;
const align8 = (n: number) => (n + 7) & ~7;

/** CMSG_SPACE for `n` fds: the control buffer size. */
export function cmsgSpace(nfds: number): number {
  return CMSG_HDR + align8(4 * nfds);
}

// biome-ignore lint/suspicious/noExplicitAny: FFI boundary
type Fn = (...args: any[]) => any;
interface Extra {
  koffi: typeof import('koffi');
  connect: Fn;
  recvmsgAddr: Fn;
}
let extra: Extra | undefined;

/** connect(2) and an address-taking recvmsg(2) for worker-thread calls; libc.ts has the rest. */
function ffi(): Extra {
  if (extra) return extra;
  if (!libc.available()) throw new TapnetError('ERR_UNSUPPORTED_PLATFORM', 'tapnet needs Linux with glibc');
  if (!['x64', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64'].includes(process.arch)) {
    throw new TapnetError(
      'ERR_UNSUPPORTED_PLATFORM',
      `fd passing needs a 64-bit Linux ABI, not ${process.arch}`,
    );
  }
  const koffi = require('koffi') as typeof import('koffi');
  const lib = koffi.load('libc.so.6');
  extra = {
    koffi,
    connect: lib.func('int connect(int fd, const void *addr, uint32 len)'),
    recvmsgAddr: lib.func('intptr recvmsg(int fd, uintptr msg, int flags)'),
  };
  return extra;
}

function address(b: Buffer): bigint {
  return ffi().koffi.address(b) as bigint;
}

/** A msghdr over one data buffer and an optional control buffer. Keep every buffer alive during the call. */
function msghdr(data: Buffer, control: Buffer | undefined): { hdr: Buffer; iov: Buffer } {
  const iov = Buffer.alloc(IOVEC_SIZE);
  iov.writeBigUInt64LE(address(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  const hdr = Buffer.alloc(MSGHDR_SIZE);
  hdr.writeBigUInt64LE(address(iov), 16);
  hdr.writeBigUInt64LE(1n, 24);
  if (control) {
    hdr.writeBigUInt64LE(address(control), 32);
    hdr.writeBigUInt64LE(BigInt(control.length), 40);
  }
  return { hdr, iov };
}

/** The control buffer of one SCM_RIGHTS message carrying `fds`. */
export function encodeScmRights(fds: readonly number[]): Buffer {
  if (fds.length === 0 || fds.length > SCM_MAX_FD) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `SCM_RIGHTS carries 1-${SCM_MAX_FD} fds, not ${fds.length}`,
    );
  }
  const b = Buffer.alloc(cmsgSpace(fds.length));
  b.writeBigUInt64LE(BigInt(CMSG_HDR + 4 * fds.length), 0);
  b.writeInt32LE(libc.SOL_SOCKET, 8);
  b.writeInt32LE(SCM_RIGHTS, 12);
  for (const [i, fd] of fds.entries()) b.writeInt32LE(fd, CMSG_HDR + 4 * i);
  return b;
}

/** The fds of every SCM_RIGHTS message in the first `len` bytes of a control buffer. */
export function decodeScmRights(control: Buffer, len: number): number[] {
  const fds: number[] = [];
  let off = 0;
  while (off + CMSG_HDR <= len) {
    const clen = Number(control.readBigUInt64LE(off));
    if (clen < CMSG_HDR || off + clen > len) break;
    if (control.readInt32LE(off + 8) === libc.SOL_SOCKET && control.readInt32LE(off + 12) === SCM_RIGHTS) {
      for (let p = off + CMSG_HDR; p + 4 <= off + clen; p += 4) fds.push(control.readInt32LE(p));
    }
    off += align8(clen);
  }
  return fds;
}

/**
 * sendmsg(2) of `data` with `fds` attached (SCM_RIGHTS): the receiver gets its own copies of the fds,
 * attached to the first byte. Returns the bytes sent (may be fewer than data.length on a non-blocking
 * socket; the fds went with them). Throws ERR_SYSCALL with errno (EAGAIN when the socket is full).
 */
export function sendWithFds(sockFd: number, data: Buffer, fds: readonly number[]): number {
  const control = encodeScmRights(fds);
  const { hdr, iov } = msghdr(data, control);
  const n = libc.sendmsg(sockFd, hdr, MSG_NOSIGNAL);
  void iov; // kept alive until here
  return n;
}

/** What recvWithFds returns. */
export interface Received {
  /** The bytes read (empty at end of stream). */
  data: Buffer;
  /** Received fds (close-on-exec set); yours to close. */
  fds: number[];
  /** The control buffer was too small: some fds were dropped by the kernel. */
  truncated: boolean;
}

function received(data: Buffer, control: Buffer, hdr: Buffer, n: number): Received {
  const clen = Number(hdr.readBigUInt64LE(40));
  const flags = hdr.readInt32LE(48);
  return {
    data: data.subarray(0, n),
    fds: decodeScmRights(control, clen),
    truncated: (flags & MSG_CTRUNC) !== 0,
  };
}

/** recvmsg(2) of up to `maxBytes` and up to `maxFds` fds, on the calling thread (blocks on a blocking socket). */
export function recvWithFds(sockFd: number, maxBytes = 65536, maxFds = SCM_MAX_FD, flags = 0): Received {
  const data = Buffer.alloc(maxBytes);
  const control = Buffer.alloc(cmsgSpace(maxFds));
  const { hdr, iov } = msghdr(data, control);
  const n = libc.recvmsg(sockFd, hdr, flags | MSG_CMSG_CLOEXEC);
  void iov;
  return received(data, control, hdr, n);
}

/**
 * recvmsg(2) on a worker thread, for a blocking socket: the event loop keeps running while it waits.
 * Set SO_RCVTIMEO on the socket to bound the wait (then it fails with ERR_TIMEOUT).
 */
export function recvWithFdsAsync(sockFd: number, maxBytes = 65536, maxFds = SCM_MAX_FD): Promise<Received> {
  const { recvmsgAddr } = ffi();
  const data = Buffer.alloc(maxBytes);
  const control = Buffer.alloc(cmsgSpace(maxFds));
  const { hdr, iov } = msghdr(data, control);
  return new Promise((resolve, reject) => {
    (recvmsgAddr as unknown as { async: Fn }).async(
      sockFd,
      address(hdr),
      MSG_CMSG_CLOEXEC,
      (err: unknown, ret: number | bigint) => {
        void iov;
        if (err)
          return reject(
            new TapnetError('ERR_SYSCALL', `recvmsg failed: ${String(err)}`, {
              syscall: 'recvmsg',
              cause: err,
            }),
          );
        const n = Number(ret);
        // errno of a worker-thread call is not observable; with SO_RCVTIMEO set, -1 is almost always the timeout.
        if (n < 0)
          return reject(
            new TapnetError('ERR_TIMEOUT', 'recvmsg: no answer in time (or the socket failed)', {
              syscall: 'recvmsg',
            }),
          );
        resolve(received(data, control, hdr, n));
      },
    );
  });
}

/** struct sockaddr_un for a filesystem path (or an abstract name starting with `@`). */
export function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path.startsWith('@') ? `\0${path.slice(1)}` : path);
  if (bytes.length === 0 || bytes.length > 107) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `Unix socket path must be 1-107 bytes: ${JSON.stringify(path)}`,
    );
  }
  const b = Buffer.alloc(2 + bytes.length + (path.startsWith('@') ? 0 : 1));
  b.writeUInt16LE(libc.AF_UNIX, 0);
  bytes.copy(b, 2);
  return b;
}

/** struct sockaddr_in / sockaddr_in6 for an address given as bytes (4 or 16) and a port. */
export function sockaddrInet(addr: Uint8Array, port: number): Buffer {
  if (addr.length === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    Buffer.from(addr).copy(b, 4);
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  Buffer.from(addr).copy(b, 8);
  return b;
}

/** connect(2) of an open socket to a raw sockaddr. Throws ERR_SYSCALL with errno (ENOENT, ECONNREFUSED, …). */
export function connect(sockFd: number, addr: Buffer, what?: string): void {
  const { connect: c, koffi } = ffi();
  const r = Number(c(sockFd, addr, addr.length));
  if (r < 0) {
    const name = errnoName(koffi.errno());
    const code =
      name === 'ENOENT' || name === 'ECONNREFUSED'
        ? 'ERR_NOT_FOUND'
        : name === 'EACCES' || name === 'EPERM'
          ? 'ERR_PERMISSION_DENIED'
          : 'ERR_SYSCALL';
    throw new TapnetError(code, `connect${what ? ` (${what})` : ''} failed: ${name}`, {
      errno: name,
      syscall: 'connect',
    });
  }
}

/** A blocking, close-on-exec Unix socket connected to `path` (`socket(AF_UNIX, type)` + `connect`). */
export function connectUnix(path: string, type = SOCK_STREAM): number {
  const fd = libc.socket(libc.AF_UNIX, type | libc.SOCK_CLOEXEC, 0);
  try {
    connect(fd, sockaddrUn(path), path);
    return fd;
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}
