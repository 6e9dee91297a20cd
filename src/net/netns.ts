/**
 * Named network namespaces, interoperable with iproute2: a namespace named N is a bind mount of a
 * namespace file at /run/netns/N, so `ip netns list` and `ip netns exec N …` see ours and we see theirs.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { TapnetError } from '../errors.js';
import {
  CLONE_NEWNET,
  close,
  MNT_DETACH,
  MS_BIND,
  MS_REC,
  MS_SHARED,
  mount,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_RDONLY,
  open,
  setns,
  umount2,
  unshare,
} from '../sys/libc.js';
import { SELF_NETNS, withNetns } from '../sys/ns.js';
import { validateNetnsName } from '../validate.js';

/** Where iproute2 keeps named namespaces. */
export const NETNS_RUN_DIR = '/run/netns';

/** An open network namespace. `fd` stays valid until close(). */
export class Netns {
  private closed = false;
  constructor(
    readonly fd: number,
    /** The path it was opened from. */
    readonly path: string,
    /** Its name under /run/netns, when it has one. */
    readonly name?: string,
  ) {}

  /** Run a synchronous function inside this namespace (see withNetns). */
  run<T>(fn: () => T): T {
    return withNetns(this.fd, fn);
  }

  /** Close the fd (the namespace lives on while mounted or used). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}

/** The path of a named namespace (validated name). */
export function netnsPath(name: string, runDir = NETNS_RUN_DIR): string {
  return join(runDir, validateNetnsName(name));
}

function isMountPoint(path: string): boolean {
  try {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    return mounts.split('\n').some((l) => l.split(' ')[4] === path);
  } catch {
    return false;
  }
}

/** Make /run/netns a shared mount point, as iproute2 does, so namespace mounts propagate. */
function prepareRunDir(runDir: string): void {
  mkdirSync(runDir, { recursive: true, mode: 0o755 });
  if (!isMountPoint(runDir)) mount(runDir, runDir, 'none', MS_BIND | MS_REC);
  try {
    mount('none', runDir, null, MS_SHARED | MS_REC);
  } catch {
    // Not fatal: propagation only matters to other mount namespaces.
  }
}

/**
 * Create a named network namespace (`ip netns add NAME`). Idempotent: an existing namespace of that name
 * is opened and returned. The returned Netns is open; close it when done.
 */
export function createNetns(name: string, runDir = NETNS_RUN_DIR): Netns {
  const path = netnsPath(name, runDir);
  if (existsSync(path) && isMountPoint(path)) return openNetns(path);
  prepareRunDir(runDir);
  let created = false;
  try {
    close(open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444));
    created = true;
  } catch (e) {
    if (!(e instanceof TapnetError && e.errno === 'EEXIST')) throw e;
  }
  const home = open(SELF_NETNS, O_RDONLY | O_CLOEXEC);
  try {
    unshare(CLONE_NEWNET);
    try {
      mount(SELF_NETNS, path, 'none', MS_BIND);
    } finally {
      setns(home, CLONE_NEWNET);
    }
  } catch (e) {
    if (created) {
      try {
        unlinkSync(path);
      } catch {}
    }
    throw e;
  } finally {
    close(home);
  }
  return openNetns(path);
}

/** Open a namespace by name (under /run/netns) or by path (`/proc/<pid>/ns/net`, `/run/netns/x`). */
export function openNetns(nameOrPath: string, runDir = NETNS_RUN_DIR): Netns {
  const isPath = nameOrPath.includes('/');
  const path = isPath ? nameOrPath : netnsPath(nameOrPath, runDir);
  try {
    const fd = open(path, O_RDONLY | O_CLOEXEC);
    return new Netns(fd, path, isPath ? undefined : nameOrPath);
  } catch (e) {
    if (e instanceof TapnetError && e.errno === 'ENOENT') {
      throw new TapnetError('ERR_NETNS_NOT_FOUND', `network namespace ${nameOrPath} does not exist`, {
        cause: e,
        errno: 'ENOENT',
        details: { netns: nameOrPath },
      });
    }
    throw e;
  }
}

/** The calling thread's current namespace, opened. */
export function currentNetns(): Netns {
  return new Netns(open(SELF_NETNS, O_RDONLY | O_CLOEXEC), SELF_NETNS);
}

/**
 * Delete a named namespace (`ip netns del NAME`): unmount and remove the file. Already gone is success.
 * The namespace itself disappears when no process and no fd holds it any more.
 */
export function deleteNetns(name: string, runDir = NETNS_RUN_DIR): void {
  const path = netnsPath(name, runDir);
  try {
    umount2(path, MNT_DETACH);
  } catch (e) {
    if (!(e instanceof TapnetError && (e.errno === 'EINVAL' || e.errno === 'ENOENT'))) throw e;
  }
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new TapnetError('ERR_SYSCALL', `could not remove ${path}`, { cause: e, syscall: 'unlink' });
    }
  }
}

/**
 * Whether the named namespace's file is a mounted namespace. False when it is absent, and also when it is
 * a plain file: a crash between creating the file and bind-mounting the namespace on it leaves one, and a
 * CNI plugin given such a path fails ("unknown FS magic") instead of treating the namespace as gone.
 */
export function isNetnsMounted(name: string, runDir = NETNS_RUN_DIR): boolean {
  const path = netnsPath(name, runDir);
  try {
    // A bind mount of an nsfs file sits on another device than the directory that holds it.
    return statSync(path).dev !== statSync(runDir).dev;
  } catch {
    return false;
  }
}

/** Names of the namespaces under /run/netns (`ip netns list`). */
export function listNetns(runDir = NETNS_RUN_DIR): string[] {
  try {
    return readdirSync(runDir).sort();
  } catch {
    return [];
  }
}

/** `/proc/sys/<key>` for a slash-separated key (`net/ipv4/conf/eth0.100/rp_filter`); no `..`. */
function sysctlPath(key: string): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(key) || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `bad sysctl key ${JSON.stringify(key)}`);
  }
  return `/proc/sys/${key}`;
}

/**
 * Write a sysctl of a namespace, e.g. `setSysctl(ns, 'net/ipv4/ip_forward', '1')`. /proc/sys/net belongs to
 * the namespace of whoever opens it, so the file is opened while inside and written synchronously.
 */
export function setSysctl(ns: Netns | undefined, key: string, value: string): void {
  setSysctls(ns, [[key, value]]);
}

/** Write several sysctls of a namespace with one namespace switch. Stops at the first failure. */
export function setSysctls(ns: Netns | undefined, entries: readonly (readonly [string, string])[]): void {
  const paths = entries.map(([k, v]) => [sysctlPath(k), v] as const);
  withNetns(ns?.fd, () => {
    for (const [path, value] of paths) {
      const fd = openSync(path, 'w');
      try {
        writeSync(fd, value);
      } finally {
        closeSync(fd);
      }
    }
  });
}

/** Read a sysctl of a namespace (trimmed). */
export function getSysctl(ns: Netns | undefined, key: string): string {
  const path = sysctlPath(key);
  return withNetns(ns?.fd, () => readFileSync(path, 'utf8').trim());
}
