/**
 * File operations of the journal, each one or two system calls, all synchronous: open, flock with a
 * bounded wait, one-write() appends, the compaction's temp file, and keeping damaged lines for a human.
 * Errors become ERR_STORE with the errno (storeError), like the rest of the local store.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TapnetError } from '../errors.js';
import { flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../sys/flock.js';
import { fsErrno, storeError } from './statedir.js';

const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** An open journal file and its identity. */
export interface OpenedFile {
  fd: number;
  ino: number;
  dev: number;
}

/** A fresh random identity for a journal file (its header's `id`). */
export const newJournalId = (): string => randomBytes(8).toString('hex');

/** close(2), ignoring errors (the fd may already be closed). */
export function closeQuietly(fd: number): void {
  try {
    if (fd >= 0) fs.closeSync(fd);
  } catch {
    // nothing useful to do
  }
}

/**
 * Open the journal: read-only, or read-write with O_APPEND, creating it (and its directory) if missing.
 * Returns undefined when read-only and absent.
 */
export function openJournalFile(file: string, readOnly: boolean): OpenedFile | undefined {
  const flags = readOnly
    ? fs.constants.O_RDONLY
    : fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
  let fd: number;
  try {
    if (!readOnly) fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    fd = fs.openSync(file, flags, 0o644);
  } catch (e) {
    if (readOnly && fsErrno(e) === 'ENOENT') return undefined;
    throw storeError('open', file, e);
  }
  const st = fs.fstatSync(fd);
  return { fd, ino: st.ino, dev: st.dev };
}

/**
 * flock(LOCK_EX) on the journal, waiting synchronously (Atomics.wait, no event-loop turn: the caller
 * never awaits while holding it) with back-off up to `timeoutMs`, then ERR_TIMEOUT.
 */
export function lockJournalFile(fd: number, file: string, timeoutMs: number): void {
  if (flock(fd, LOCK_EX | LOCK_NB)) return;
  const deadline = Date.now() + timeoutMs;
  for (let wait = 0.05; ; wait = Math.min(wait * 2, 10)) {
    Atomics.wait(SLEEPER, 0, 0, wait);
    if (flock(fd, LOCK_EX | LOCK_NB)) return;
    if (Date.now() > deadline) {
      throw new TapnetError(
        'ERR_TIMEOUT',
        `journal ${file} stayed locked by another process for ${timeoutMs} ms`,
        {
          details: { path: file, timeoutMs },
        },
      );
    }
  }
}

/** Drop the flock. */
export function unlockJournalFile(fd: number): void {
  if (fd >= 0) flock(fd, LOCK_UN);
}

/** True when `file` still names the inode (ino, dev). */
export function sameFile(file: string, ino: number, dev: number): boolean {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(file, { throwIfNoEntry: false });
  } catch (e) {
    throw storeError('stat', file, e);
  }
  return st !== undefined && st.ino === ino && st.dev === dev;
}

/** Append `text` with one write(); a short write (disk full) is ERR_STORE. Returns the bytes written. */
export function appendText(fd: number, file: string, text: string): number {
  const data = Buffer.from(text, 'utf8');
  let n: number;
  try {
    n = fs.writeSync(fd, data, 0, data.length);
  } catch (e) {
    throw storeError('append to', file, e);
  }
  // A short write (the disk filled up mid-line): write the rest, so that the kernel either takes it or
  // says why not (ENOSPC, EDQUOT, …). A line left torn is skipped by readers, and the next writer
  // starts a fresh one.
  for (let off = n; off < data.length; off += n) {
    try {
      n = fs.writeSync(fd, data, off, data.length - off);
    } catch (e) {
      throw storeError('append to', file, e);
    }
    if (n === 0) {
      throw new TapnetError(
        'ERR_STORE',
        `state store: wrote only ${off} of ${data.length} bytes to ${file} (disk full?)`,
        { details: { path: file, op: 'append to' } },
      );
    }
  }
  return data.length;
}

/**
 * Write a compacted journal to a temp file next to `file` and fsync it; the caller renames it over
 * `file`. Returns the open file (O_APPEND: it becomes the journal) and the temp path.
 */
export function writeTempJournal(file: string, data: Buffer): OpenedFile & { tmp: string } {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${newJournalId()}.tmp`);
  let fd = -1;
  try {
    fd = fs.openSync(
      tmp,
      fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_EXCL,
      0o644,
    );
    for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off, data.length - off);
    fs.fsyncSync(fd); // the old journal goes away with the rename: the new one must be on disk first
    const st = fs.fstatSync(fd);
    return { fd, ino: st.ino, dev: st.dev, tmp };
  } catch (e) {
    closeQuietly(fd);
    fs.rmSync(tmp, { force: true });
    throw storeError('write', tmp, e);
  }
}

/** Keep damaged lines in `<dir>/quarantine/journal.<time>.<pid>.jsonl` (best effort). */
export function saveDamagedLines(dir: string, lines: string[]): void {
  if (lines.length === 0) return;
  try {
    const qdir = path.join(dir, 'quarantine');
    fs.mkdirSync(qdir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    fs.writeFileSync(path.join(qdir, `journal.${stamp}.${process.pid}.jsonl`), `${lines.join('\n')}\n`, {
      flag: 'wx',
    });
  } catch {
    // they were reported when found
  }
}

/** fsync(2) without blocking the event loop. */
export function fsyncFile(fd: number, file: string): Promise<void> {
  return new Promise((resolve, reject) =>
    fs.fsync(fd, (e) => (e ? reject(storeError('sync', file, e)) : resolve())),
  );
}

/** Remove compaction temp files older than `maxAgeMs` in `dir` (left by a crash). Returns how many. */
export function cleanJournalTemp(dir: string, base: string, maxAgeMs: number): number {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (!name.startsWith(`.${base}.`) || !name.endsWith('.tmp')) continue;
    const p = path.join(dir, name);
    try {
      if (Date.now() - fs.lstatSync(p).mtimeMs >= maxAgeMs) {
        fs.unlinkSync(p);
        n++;
      }
    } catch {
      // raced with another cleaner: fine
    }
  }
  return n;
}
