/**
 * The state directory on local disk: safe paths, atomic writes (temp file in the same directory, then
 * rename), quarantine of unreadable files, and an explicit sync(). Everything the local backends write
 * goes through here.
 *
 * Hot-path calls use the synchronous fs API on purpose: each is one metadata operation on the page cache
 * (a few µs), cheaper than a thread-pool round trip, and nothing here ever calls fsync except sync().
 * A crash (kill -9, power loss) can lose recent writes but never leave a half-written file: after a
 * reboot the kernel objects are gone as well, and reconcile rebuilds from what the records say.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TapnetError } from '../errors.js';

/** Where tapnet keeps its state unless told otherwise. */
export const DEFAULT_STATE_DIR = '/var/lib/tapnet';

/** Version of the directory layout (file names and formats). A newer one is refused. */
export const STORE_LAYOUT = 1;

/** Name of the file that records the layout version, at the top of the state directory. */
export const LAYOUT_FILE = 'tapnet-store.json';

/** Temp files older than this are leftovers of a crash and are removed by cleanTemp(). */
const TEMP_MAX_AGE_MS = 60_000;

const HINTS: Record<string, string> = {
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exhausted',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a path component is not a directory',
  EIO: 'I/O error',
};

/** The errno name of a Node fs error ('ENOENT', …), or undefined. */
export function fsErrno(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Wrap a failed fs call as ERR_STORE with its errno, syscall and path. TapnetErrors pass through. */
export function storeError(op: string, file: string, e: unknown): TapnetError {
  if (e instanceof TapnetError) return e;
  const errno = fsErrno(e);
  const syscall = (e as { syscall?: unknown } | null)?.syscall;
  const hint = errno && HINTS[errno] ? ` (${HINTS[errno]})` : '';
  return new TapnetError('ERR_STORE', `state store: cannot ${op} ${file}: ${errno ?? String(e)}${hint}`, {
    cause: e,
    errno,
    syscall: typeof syscall === 'string' ? syscall : undefined,
    details: { path: file, op },
  });
}

/** A path segment we are willing to join: no separators, not `.`/`..`, nothing invisible. */
const SEGMENT_RE = /^[A-Za-z0-9_.:-]{1,200}$/;

/** One state directory; create with openStateDir(). */
export class StateDir {
  /** Absolute path of the directory. */
  readonly root: string;
  private readonly madeDirs = new Set<string>();
  private readonly dirtyFiles = new Set<string>();
  private readonly dirtyDirs = new Set<string>();
  private tmpCounter = 0;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /**
   * The path of `segments` under the root. Every segment must already have passed validateVmId /
   * validateName or be a canonical address; this re-checks the characters and that the result is inside
   * the state directory, and throws ERR_INTERNAL otherwise (a caller skipped validation: a bug).
   */
  path(...segments: string[]): string {
    for (const s of segments) {
      if (!SEGMENT_RE.test(s) || s === '.' || s === '..') {
        throw new TapnetError('ERR_INTERNAL', `state store: unsafe path segment ${JSON.stringify(s)}`, {
          details: { segment: s },
        });
      }
    }
    const p = path.join(this.root, ...segments);
    const prefix = this.root.endsWith(path.sep) ? this.root : this.root + path.sep;
    if (!p.startsWith(prefix) || p.length === prefix.length) {
      throw new TapnetError('ERR_INTERNAL', `state store: ${p} is outside ${this.root}`, {
        details: { path: p },
      });
    }
    return p;
  }

  /** mkdir -p, once per directory per process. */
  ensureDir(dir: string): void {
    if (this.madeDirs.has(dir)) return;
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw storeError('create directory', dir, e);
    }
    this.madeDirs.add(dir);
    this.dirtyDirs.add(path.dirname(dir));
  }

  /** Forget that `dir` exists (after a failure that suggests it was removed behind our back). */
  forgetDir(dir: string): void {
    this.madeDirs.delete(dir);
  }

  /** A fresh temp name next to `file` (same directory, so rename is atomic). Dot-prefixed: never listed. */
  tempPath(file: string): string {
    return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${++this.tmpCounter}.tmp`);
  }

  /**
   * Write `data` to `file` atomically: readers see the old content or the new, never a mix, even after
   * kill -9 at any instant. No fsync (see sync()).
   */
  writeAtomic(file: string, data: string): void {
    const dir = path.dirname(file);
    for (let attempt = 0; ; attempt++) {
      this.ensureDir(dir);
      const tmp = this.tempPath(file);
      try {
        fs.writeFileSync(tmp, data, { flag: 'wx', mode: 0o644 });
        fs.renameSync(tmp, file);
        break;
      } catch (e) {
        try {
          fs.unlinkSync(tmp);
        } catch {
          // it may not exist; the error below is the one that matters
        }
        if (fsErrno(e) !== 'ENOENT' || attempt > 0) throw storeError('write', file, e);
        this.forgetDir(dir); // the directory was removed behind our back: make it again, once
      }
    }
    this.markDirty(file);
  }

  /**
   * writeAtomic() with the file system calls on libuv's thread pool, for writes on a request's hot path,
   * where a blocking open(O_CREAT) (ext4 may wait for a journal commit) would stall the event loop. Not
   * marked for sync(): the kernel's writeback makes it durable, as it does the VM records.
   */
  async writeAtomicAsync(file: string, data: string): Promise<void> {
    const dir = path.dirname(file);
    for (let attempt = 0; ; attempt++) {
      this.ensureDir(dir);
      const tmp = this.tempPath(file);
      try {
        await fs.promises.writeFile(tmp, data, { flag: 'wx', mode: 0o644 });
        await fs.promises.rename(tmp, file);
        break;
      } catch (e) {
        await fs.promises.unlink(tmp).catch(() => undefined);
        if (fsErrno(e) !== 'ENOENT' || attempt > 0) throw storeError('write', file, e);
        this.forgetDir(dir); // the directory was removed behind our back: make it again, once
      }
    }
  }

  /**
   * Create `file` as a symlink whose target is `value`, atomically and only if `file` does not exist
   * (symlink(2) fails with EEXIST): create-if-absent with content in one system call, the same trick
   * Mercurial's lock uses. Returns false when it exists.
   */
  createLink(file: string, value: string): boolean {
    const dir = path.dirname(file);
    for (let attempt = 0; ; attempt++) {
      try {
        fs.symlinkSync(value, file);
        break;
      } catch (e) {
        if (fsErrno(e) === 'EEXIST') return false;
        if (fsErrno(e) !== 'ENOENT' || attempt > 0) throw storeError('create', file, e);
        this.forgetDir(dir); // removed behind our back (or never made): make it and try once more
        this.ensureDir(dir);
      }
    }
    this.dirtyDirs.add(dir);
    return true;
  }

  /** The target of a symlink written by createLink(), or undefined when absent. */
  readLink(file: string): string | undefined {
    try {
      return fs.readlinkSync(file);
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return undefined;
      throw storeError('read', file, e);
    }
  }

  /**
   * Open (creating if needed) a small file that is rewritten in place with writeFixed(); the fd stays
   * open. For hints only (the IPAM cursor): an in-place write is one pwrite(2), which a kill cannot tear,
   * but a power loss might; readers must tolerate garbage.
   */
  openFixed(file: string): number {
    this.ensureDir(path.dirname(file));
    try {
      return fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o644);
    } catch (e) {
      throw storeError('open', file, e);
    }
  }

  /** Read up to `size` bytes from the start of a file opened with openFixed(), as trimmed text. */
  readFixed(fd: number, file: string, size: number): string {
    const buf = Buffer.alloc(size);
    try {
      const n = fs.readSync(fd, buf, 0, size, 0);
      return buf.toString('latin1', 0, n).trim();
    } catch (e) {
      throw storeError('read', file, e);
    }
  }

  /** Overwrite the first `size` bytes of a file opened with openFixed() with `text`, padded. */
  writeFixed(fd: number, file: string, text: string, size: number): void {
    if (text.length >= size)
      throw new TapnetError('ERR_INTERNAL', `${text.length} bytes do not fit in ${size}`);
    try {
      fs.writeSync(fd, `${text.padEnd(size - 1)}\n`, 0, 'latin1');
    } catch (e) {
      throw storeError('write', file, e);
    }
    this.dirtyFiles.add(file);
  }

  /** unlink(2); false when already absent. */
  remove(file: string): boolean {
    try {
      fs.unlinkSync(file);
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return false;
      throw storeError('remove', file, e);
    }
    this.dirtyFiles.delete(file);
    this.dirtyDirs.add(path.dirname(file));
    return true;
  }

  /** File content as text, or undefined when absent. */
  readText(file: string): string | undefined {
    try {
      // stat first: a missing file is the common case on ensure, and a thrown ENOENT costs 3x a stat.
      if (!fs.statSync(file, { throwIfNoEntry: false })) return undefined;
      return fs.readFileSync(file, 'utf8');
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return undefined;
      throw storeError('read', file, e);
    }
  }

  /** Names in `dir` (no temp files, nothing dot-prefixed); [] when it does not exist. */
  list(dir: string): string[] {
    try {
      return fs.readdirSync(dir).filter((n) => !n.startsWith('.'));
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return [];
      throw storeError('list', dir, e);
    }
  }

  /**
   * Move an unreadable file aside into `<root>/quarantine/` so it can be inspected and no longer stops
   * anything. Returns the new path, or undefined when the file was already gone.
   */
  quarantine(file: string): string | undefined {
    const qdir = this.path('quarantine');
    this.ensureDir(qdir);
    const rel = path.relative(this.root, file).split(path.sep).join('_');
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const dest = path.join(qdir, `${rel}.${stamp}.${process.pid}.${++this.tmpCounter}`);
    try {
      fs.renameSync(file, dest);
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return undefined;
      throw storeError('quarantine', file, e);
    }
    this.dirtyDirs.add(path.dirname(file));
    this.dirtyDirs.add(qdir);
    return dest;
  }

  /** Put a quarantined file back if `file` is still absent (link(2) never replaces). */
  restore(quarantined: string, file: string): boolean {
    try {
      fs.linkSync(quarantined, file);
      fs.unlinkSync(quarantined);
      return true;
    } catch (e) {
      if (fsErrno(e) === 'EEXIST') {
        fs.rmSync(quarantined, { force: true });
        return false;
      }
      throw storeError('restore', file, e);
    }
  }

  /** Remember that `file` (and its directory) must be flushed by the next sync(). */
  markDirty(file: string): void {
    this.dirtyFiles.add(file);
    this.dirtyDirs.add(path.dirname(file));
  }

  /**
   * Make everything written through this StateDir so far durable: fsync each written file, then each
   * touched directory (so the renames and new names survive a power loss). Not on the hot path.
   */
  async sync(): Promise<void> {
    const files = [...this.dirtyFiles];
    const dirs = [...this.dirtyDirs];
    this.dirtyFiles.clear();
    this.dirtyDirs.clear();
    const fsyncPath = async (p: string): Promise<void> => {
      let h: fs.promises.FileHandle | undefined;
      try {
        h = await fs.promises.open(p, fs.constants.O_RDONLY);
        await h.sync();
      } catch (e) {
        if (fsErrno(e) !== 'ENOENT') throw storeError('sync', p, e);
      } finally {
        await h?.close();
      }
    };
    const batch = 64;
    for (let i = 0; i < files.length; i += batch) await Promise.all(files.slice(i, i + batch).map(fsyncPath));
    // Deepest first, so a new directory's entry in its parent is flushed after its own content.
    dirs.sort((a, b) => b.length - a.length);
    for (const d of dirs) await fsyncPath(d);
  }

  /** Remove temp files older than a minute left in `dir` by a crashed writer. Returns how many. */
  cleanTemp(dir: string, maxAgeMs = TEMP_MAX_AGE_MS): number {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return 0;
      throw storeError('list', dir, e);
    }
    let n = 0;
    const now = Date.now();
    for (const name of names) {
      if (!name.startsWith('.') || !name.endsWith('.tmp')) continue;
      const p = path.join(dir, name);
      try {
        const st = fs.lstatSync(p);
        if (now - st.mtimeMs >= maxAgeMs) {
          fs.unlinkSync(p);
          n++;
        }
      } catch {
        // raced with its writer or another cleaner: fine
      }
    }
    return n;
  }
}

/**
 * Open (creating if needed) the state directory at `root` and check its layout version: a directory
 * written by a newer tapnet is refused with ERR_STORE rather than misread.
 */
export function openStateDir(root: string = DEFAULT_STATE_DIR): StateDir {
  if (typeof root !== 'string' || root.length === 0 || root.includes('\0')) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `state directory ${JSON.stringify(root)} is not a path`);
  }
  const dir = new StateDir(root);
  dir.ensureDir(dir.root);
  const file = dir.path(LAYOUT_FILE);
  const text = dir.readText(file);
  let layout: unknown;
  if (text !== undefined) {
    try {
      layout = (JSON.parse(text) as { layout?: unknown }).layout;
    } catch {
      layout = undefined;
    }
    if (typeof layout === 'number' && layout > STORE_LAYOUT) {
      throw new TapnetError(
        'ERR_STORE',
        `state directory ${dir.root} has layout ${layout}, newer than this tapnet understands (${STORE_LAYOUT}); upgrade tapnet`,
        { details: { path: file, layout, supported: STORE_LAYOUT } },
      );
    }
  }
  if (layout !== STORE_LAYOUT) {
    if (text !== undefined && typeof layout !== 'number') dir.quarantine(file); // garbage: keep it for a look
    dir.writeAtomic(file, `${JSON.stringify({ layout: STORE_LAYOUT, by: 'tapnet' }, null, 2)}\n`);
  }
  return dir;
}
