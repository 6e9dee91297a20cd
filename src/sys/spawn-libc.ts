/**
 * The libc calls behind src/sys/spawn.ts (posix_spawn, its file actions and attributes, pipe2, waitpid),
 * through koffi, loaded on first use; and the spawn attributes every child gets, built once.
 */
import { createRequire } from 'node:module';
import { TapnetError } from '../errors.js';

const require = createRequire(import.meta.url);

// biome-ignore lint/suspicious/noExplicitAny: FFI boundary
type Fn = (...args: any[]) => any;

/** The bound functions (raw: they return -1 or an error number; callers check). */
export interface SpawnLib {
  pipe2: Fn;
  write: Fn;
  close: Fn;
  fcntl: Fn;
  waitpid: Fn;
  posixSpawn: Fn;
  faInit: Fn;
  faDestroy: Fn;
  faDup2: Fn;
  faOpen: Fn;
  faClosefrom: Fn | undefined;
  attrInit: Fn;
  attrSetflags: Fn;
  attrSetpgroup: Fn;
  attrSetsigdefault: Fn;
  attrSetsigmask: Fn;
  errno: () => number;
}

let lib: SpawnLib | undefined;

/** The bindings; ERR_UNSUPPORTED_PLATFORM off Linux/glibc or without koffi. */
export function spawnLib(): SpawnLib {
  if (lib) return lib;
  if (process.platform !== 'linux') {
    throw new TapnetError(
      'ERR_UNSUPPORTED_PLATFORM',
      `posix_spawn needs Linux with glibc: this is ${process.platform}`,
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
  const c = koffi.load('libc.so.6');
  let faClosefrom: Fn | undefined;
  try {
    // glibc ≥ 2.34
    faClosefrom = c.func('int posix_spawn_file_actions_addclosefrom_np(void *fa, int from)');
  } catch {
    faClosefrom = undefined;
  }
  lib = {
    pipe2: c.func('int pipe2(_Out_ int *fds, int flags)'),
    write: c.func('intptr write(int fd, const void *buf, uintptr len)'),
    close: c.func('int close(int fd)'),
    fcntl: c.func('int fcntl(int fd, int cmd, int arg)'),
    waitpid: c.func('int waitpid(int pid, _Out_ int *status, int options)'),
    posixSpawn: c.func(
      'int posix_spawn(_Out_ int *pid, const char *path, void *fa, void *attr, const char **argv, const char **envp)',
    ),
    faInit: c.func('int posix_spawn_file_actions_init(void *fa)'),
    faDestroy: c.func('int posix_spawn_file_actions_destroy(void *fa)'),
    faDup2: c.func('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)'),
    faOpen: c.func(
      'int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int flags, uint32 mode)',
    ),
    faClosefrom,
    attrInit: c.func('int posix_spawnattr_init(void *attr)'),
    attrSetflags: c.func('int posix_spawnattr_setflags(void *attr, short flags)'),
    attrSetpgroup: c.func('int posix_spawnattr_setpgroup(void *attr, int pgroup)'),
    attrSetsigdefault: c.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
    attrSetsigmask: c.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
    errno: () => koffi.errno(),
  };
  return lib;
}

// glibc's posix_spawn flags, fcntl commands and waitpid options (the same on every Linux ABI).
const POSIX_SPAWN_SETPGROUP = 0x02;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const O_RDWR = 2;
export const F_DUPFD_CLOEXEC = 1030;
export const F_SETFL = 4;
export const F_GETFL = 3;
export const WNOHANG = 1;
/** Bigger than glibc's posix_spawn_file_actions_t (80 bytes on 64-bit) and posix_spawnattr_t (336). */
export const FA_SIZE = 128;
const ATTR_SIZE = 512;

let defaultAttrs: { group: Buffer; plain: Buffer } | undefined;

/** The spawn attributes, built once: default signal dispositions, empty mask, and optionally a new group. */
export function attrs(): { group: Buffer; plain: Buffer } {
  if (defaultAttrs) return defaultAttrs;
  const l = spawnLib();
  // Every signal 1–64 back to SIG_DFL, glibc's internal 32 and 33 included (sigfillset leaves them out,
  // and glibc would then hand them to the child ignored); no signal blocked.
  const all = Buffer.alloc(128);
  all.fill(0xff, 0, 8);
  const none = Buffer.alloc(128);
  const make = (group: boolean): Buffer => {
    const a = Buffer.alloc(ATTR_SIZE);
    l.attrInit(a);
    let flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (group) {
      flags |= POSIX_SPAWN_SETPGROUP;
      l.attrSetpgroup(a, 0);
    }
    l.attrSetsigdefault(a, all);
    l.attrSetsigmask(a, none);
    l.attrSetflags(a, flags);
    return a;
  };
  defaultAttrs = { group: make(true), plain: make(false) };
  return defaultAttrs;
}
