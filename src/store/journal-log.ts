/**
 * The journal: `<dir>/journal.jsonl`, opened once per process with O_APPEND, replayed into a
 * JournalState and kept current by reading the tail other processes appended.
 *
 * Every mutation runs under flock(LOCK_EX) on the journal's fd, synchronously and for microseconds:
 * read the new tail (pread) → check against the state → append (one write()) → unlock. Reads only read
 * the tail, without the lock, and stop before an incomplete last line (a write in flight). Under the
 * lock an incomplete last line is a torn write (its writer died or hit ENOSPC): it is skipped, and the
 * next writer starts on a fresh line. Hints (cursors) and unlocks may be written lazily: with the next
 * mutation, or at the latest on the next turn of the event loop.
 *
 * Compaction (file over `compactMinBytes` and over `compactRatio` × the live state): under the lock, the
 * state goes as a snapshot to a temp file, fsynced; a `seal` line is appended to the old file, and the
 * temp file renamed over it. Readers of the old file find the seal and re-open the path; one that was
 * current skips the snapshot (the new header names the old file and the seal's seq). A crash anywhere
 * leaves the old journal in place: a seal with the path unchanged, seen under the lock, is void.
 */

import fs from 'node:fs';
import { TapnetError } from '../errors.js';
import { compactedLines } from './journal-compact.js';
import {
  appendText,
  closeQuietly,
  fsyncFile,
  lockJournalFile,
  newJournalId,
  sameFile,
  saveDamagedLines,
  unlockJournalFile,
  writeTempJournal,
} from './journal-file.js';
import {
  encodeEntry,
  type HeaderEntry,
  JOURNAL_FORMAT,
  JOURNAL_VERSION,
  type JournalEntry,
  type NewEntry,
} from './journal-format.js';
import { JOURNAL_FILE, JournalReader } from './journal-replay.js';
import type { JournalState, LockHolder } from './journal-state.js';
import { storeError } from './statedir.js';

export { JOURNAL_FILE };

/** Tuning and mode of a journal. */
export interface JournalOptions {
  /** Never compact a journal smaller than this. Default 1 MiB. */
  compactMinBytes?: number;
  /** Compact when the file is larger than this many times the live state. Default 2. */
  compactRatio?: number;
  /** Give up (ERR_TIMEOUT) when another process holds the journal lock this long. Default 10 s. */
  lockTimeoutMs?: number;
  /** Open for reading only: never create, append or compact. */
  readOnly?: boolean;
}

/** How often a writer checks that the path still names its file (replaced or deleted by hand). */
const PATH_CHECK_MS = 50;

/** A journal file and the state it adds up to. One per state directory per process. */
export class Journal extends JournalReader {
  /** Consulted by compaction for every held lock: false (its holder is dead) drops it. */
  lockAlive: (h: LockHolder) => boolean = () => true;

  private readonly minBytes: number;
  private readonly ratio: number;
  private compactFloor = 0;
  private dirDirty = false;
  private lastPathCheck = 0;
  private flushScheduled = false;

  private constructor(dir: string, options: JournalOptions) {
    super(dir, options.readOnly ?? false, options.lockTimeoutMs ?? 10_000);
    this.minBytes = options.compactMinBytes ?? 1 << 20;
    this.ratio = options.compactRatio ?? 2;
    if (!(this.ratio > 1) || !(this.minBytes >= 0)) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'compactRatio must be > 1 and compactMinBytes ≥ 0');
    }
  }

  /** Open (creating unless read-only) the journal in `dir` and replay it. */
  static open(dir: string, options: JournalOptions = {}): Journal {
    const j = new Journal(dir, options);
    j.refresh();
    return j;
  }

  /** Bring the state up to date with what other processes appended (no lock). */
  refresh(): void {
    const since = Date.now();
    for (;;) {
      if (this.fd < 0 && !this.openPath()) return;
      this.readTail(false);
      if (this.sealSeq === undefined) return;
      // The last line is a seal: the file was replaced by a compaction, is being replaced, or its
      // compactor died between the seal and the rename. Only the lock tells the last two apart.
      this.checkReplacing(since);
      if (!sameFile(this.path, this.ino, this.dev)) this.switchFile(false);
      else this.locked(() => undefined);
    }
  }

  /** Following compactions that keep coming is bounded like a wait for the lock. */
  private checkReplacing(since: number): void {
    if (Date.now() - since <= this.lockTimeoutMs) return;
    throw new TapnetError(
      'ERR_TIMEOUT',
      `journal ${this.path} kept being replaced for ${this.lockTimeoutMs} ms`,
      {
        details: { path: this.path, timeoutMs: this.lockTimeoutMs },
      },
    );
  }

  /**
   * Run `fn` on the current state under the journal lock and append the entries it returns (with any
   * pending ones) in one write. `fn` must be synchronous and quick: every other writer waits for it.
   */
  write<R>(fn: (state: JournalState) => { entries?: NewEntry[]; result: R }): R {
    if (this.readOnly) throw new TapnetError('ERR_INTERNAL', `journal ${this.path} is open read-only`);
    return this.locked(() => {
      const out = fn(this.state);
      const entries = this.pending.length > 0 ? [...this.pending, ...(out.entries ?? [])] : out.entries;
      if (entries && entries.length > 0) {
        this.append(entries);
        this.pending = [];
      }
      if (this.shouldCompact()) this.compact();
      return out.result;
    });
  }

  /**
   * Write `entry` with the next mutation, or on the next turn of the event loop (for hints and unlocks,
   * which nobody has to see at once). Applied to the state now. A newer lazy cursor replaces an older one.
   */
  lazy(entry: NewEntry): void {
    if (entry.op === 'cursor') {
      this.pending = this.pending.filter(
        (e) => !(e.op === 'cursor' && e.net === entry.net && e.sub === entry.sub),
      );
    }
    this.pending.push(entry);
    this.state.apply({ ...entry, seq: this.lastSeq } as JournalEntry);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Not unref'd: a short-lived process (CLI, CNI plugin) stays for this one turn, so its cursor is kept.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Write what is pending now. Errors are kept for the next write (the entries stay pending). */
  flush(): void {
    if (this.pending.length === 0 || this.fd < 0) return;
    try {
      this.write(() => ({ result: undefined }));
    } catch {
      // stays pending: the next mutation tries again
    }
  }

  /** Compact now, whatever the size (maintenance, tests). */
  compactNow(): void {
    this.write(() => ({ result: undefined })); // pending lines first
    this.locked(() => this.compact());
  }

  /** fsync the journal (and its directory after it was created or compacted). */
  async sync(): Promise<void> {
    this.flush();
    if (this.fd < 0) return;
    await fsyncFile(this.fd, this.path);
    if (this.dirDirty) {
      this.dirDirty = false;
      const d = fs.openSync(this.dir, fs.constants.O_RDONLY);
      try {
        await fsyncFile(d, this.dir);
      } finally {
        closeQuietly(d);
      }
    }
  }

  /** Write what is pending and close the file. Using the journal again re-opens and replays it. */
  close(): void {
    this.flush();
    closeQuietly(this.fd);
    this.fd = -1;
  }

  // ---- writing ----

  /** Run `fn` under the journal lock, caught up with the file. */
  private locked<R>(fn: () => R): R {
    if (this.fd < 0) this.refresh();
    if (this.fd < 0) throw storeError('open', this.path, new Error('ENOENT'));
    lockJournalFile(this.fd, this.path, this.lockTimeoutMs);
    try {
      this.catchUpLocked();
      return fn();
    } finally {
      unlockJournalFile(this.fd);
    }
  }

  /** Under the lock: read everything, follow a replaced file, start an empty one with its header. */
  private catchUpLocked(): void {
    const since = Date.now();
    for (;;) {
      this.readTail(true);
      if (this.lastSeq < 0) {
        if (this.readOnly) return;
        // No whole line at all (new file, or a header cut short by a crash): start it afresh.
        fs.ftruncateSync(this.fd, 0);
        this.offset = 0;
        this.atLineStart = true;
        appendText(this.fd, this.path, encodeEntry(this.header(0, undefined, 0, 0)));
        this.dirDirty = true;
        continue;
      }
      const now = Date.now();
      if (this.sealSeq === undefined && now - this.lastPathCheck < PATH_CHECK_MS) return;
      this.lastPathCheck = now;
      if (sameFile(this.path, this.ino, this.dev)) {
        this.sealSeq = undefined; // a seal, the path unchanged, under the lock: its compactor died
        return;
      }
      this.checkReplacing(since);
      this.switchFile(true); // compacted by another process, or replaced or removed by hand
    }
  }

  private header(seq: number, prev: string | undefined, snapLines: number, snapBytes: number): HeaderEntry {
    return {
      op: 'header',
      seq,
      format: JOURNAL_FORMAT,
      version: JOURNAL_VERSION,
      id: newJournalId(),
      ...(prev !== undefined ? { prev } : {}),
      created: new Date().toISOString(),
      snapLines,
      snapBytes,
    };
  }

  private append(entries: NewEntry[]): void {
    let seq = this.lastSeq;
    const numbered = entries.map((e) => ({ seq: ++seq, ...e }) as JournalEntry);
    const text = numbered.map(encodeEntry).join('');
    this.offset += appendText(this.fd, this.path, this.atLineStart ? text : `\n${text}`);
    this.atLineStart = true;
    this.lastSeq = seq;
    this.sealSeq = undefined;
    for (const e of numbered) this.state.apply(e);
    this.stats.writes++;
  }

  private shouldCompact(): boolean {
    return (
      this.offset > this.minBytes &&
      this.offset > this.compactFloor &&
      this.offset > this.ratio * this.state.liveBytes
    );
  }

  /** The whole file as read so far (under the lock, caught up: all of it). */
  private readAll(): Buffer {
    const all = Buffer.allocUnsafe(this.offset);
    for (let at = 0; at < all.length; ) {
      const n = fs.readSync(this.fd, all, at, all.length - at, at);
      if (n === 0) return all.subarray(0, at);
      at += n;
    }
    return all;
  }

  /** Under the lock, caught up: replace the journal with a snapshot of the state. */
  private compact(): void {
    const sealSeq = this.lastSeq + 1;
    const { lines } = compactedLines(this.readAll(), this.state.liveEntries(this.lockAlive));
    const body = Buffer.concat(lines);
    const header = this.header(sealSeq, this.id, lines.length, body.length);
    const data = Buffer.concat([Buffer.from(encodeEntry(header), 'utf8'), body]);
    let next: ReturnType<typeof writeTempJournal> | undefined;
    try {
      next = writeTempJournal(this.path, data);
      this.append([{ op: 'seal' }]);
      fs.renameSync(next.tmp, this.path);
    } catch (e) {
      if (next) {
        closeQuietly(next.fd);
        fs.rmSync(next.tmp, { force: true });
      }
      this.damage(this.offset, `compaction failed: ${storeError('compact', this.path, e).message}`, '');
      this.compactFloor = this.offset * this.ratio;
      return;
    }
    const old = this.fd;
    ({ fd: this.fd, ino: this.ino, dev: this.dev } = next);
    this.id = header.id;
    this.offset = data.length;
    this.lastSeq = sealSeq;
    this.sealSeq = undefined;
    this.atLineStart = true;
    this.snapLeft = 0;
    closeQuietly(old); // drops the old file's lock; the new file needs none (it is complete)
    this.compactFloor = data.length * this.ratio;
    this.dirDirty = true;
    this.stats.compactions++;
    saveDamagedLines(this.dir, this.damaged);
    this.damaged = [];
    this.damagedBytes = 0;
  }
}
