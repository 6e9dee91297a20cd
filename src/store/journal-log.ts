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
import path from 'node:path';
import { TapnetError } from '../errors.js';
import {
  appendText,
  closeQuietly,
  fsyncFile,
  lockJournalFile,
  newJournalId,
  openJournalFile,
  sameFile,
  saveDamagedLines,
  unlockJournalFile,
  writeTempJournal,
} from './journal-file.js';
import {
  decodeLine,
  decodeVm,
  encodeEntry,
  type HeaderEntry,
  JOURNAL_FORMAT,
  JOURNAL_VERSION,
  type JournalEntry,
  type NewEntry,
} from './journal-format.js';
import { JournalState, type LockHolder } from './journal-state.js';
import { storeError } from './statedir.js';

/** The journal's file name inside the state directory. */
export const JOURNAL_FILE = 'journal.jsonl';

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

const MAX_PROBLEMS = 1000;
const MAX_KEPT_DAMAGED_BYTES = 1 << 20;
/** How often a writer checks that the path still names its file (replaced or deleted by hand). */
const PATH_CHECK_MS = 50;

/** A journal file and the state it adds up to. One per state directory per process. */
export class Journal {
  readonly dir: string;
  readonly path: string;
  readonly state = new JournalState();
  /** Damaged lines found by the last full replay and since (ERR_STORE_CORRUPT each), oldest first. */
  readonly problems: TapnetError[] = [];
  readonly stats = { torn: 0, compactions: 0, replays: 0, writes: 0 };
  /** Consulted by compaction for every held lock: false (its holder is dead) drops it. */
  lockAlive: (h: LockHolder) => boolean = () => true;

  private readonly minBytes: number;
  private readonly ratio: number;
  private readonly lockTimeoutMs: number;
  private readonly readOnly: boolean;
  private fd = -1;
  private ino = -1;
  private dev = -1;
  private id = '';
  /** Bytes consumed: where the next line to read starts. */
  private offset = 0;
  private atLineStart = true;
  private lastSeq = -1;
  private snapLeft = 0;
  private snapSeq = 0;
  /** Set while the last line read is a seal. */
  private sealSeq: number | undefined;
  private buf = Buffer.allocUnsafe(64 * 1024);
  private compactFloor = 0;
  private damaged: string[] = [];
  private damagedBytes = 0;
  private dirDirty = false;
  private lastPathCheck = 0;
  /** Entries to write with the next mutation: lazy ones (already applied) and failed ones. */
  private pending: NewEntry[] = [];
  private flushScheduled = false;

  private constructor(dir: string, options: JournalOptions) {
    this.dir = path.resolve(dir);
    this.path = path.join(this.dir, JOURNAL_FILE);
    this.minBytes = options.compactMinBytes ?? 1 << 20;
    this.ratio = options.compactRatio ?? 2;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.readOnly = options.readOnly ?? false;
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

  /** Bytes of the journal read so far (≈ its size). */
  get size(): number {
    return this.offset;
  }

  /** Sequence number of the last line applied. */
  get seq(): number {
    return this.lastSeq;
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
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    }).unref();
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

  // ---- opening and following the file ----

  /** Open the path and replay it from the start; false when read-only and absent. */
  private openPath(): boolean {
    const f = openJournalFile(this.path, this.readOnly);
    if (!f) return false;
    ({ fd: this.fd, ino: this.ino, dev: this.dev } = f);
    this.resetState();
    return true;
  }

  private resetState(): void {
    this.state.clear();
    this.problems.length = 0;
    this.damaged = [];
    this.damagedBytes = 0;
    this.offset = 0;
    this.atLineStart = true;
    this.lastSeq = -1;
    this.snapLeft = 0;
    this.sealSeq = undefined;
    this.id = '';
    this.stats.replays++;
    for (const e of this.pending)
      if (e.op === 'cursor' || e.op === 'unlock') this.state.apply({ ...e, seq: -1 } as JournalEntry);
  }

  /**
   * Leave the current file for the one now at the path. When that is the compaction of exactly the
   * state we have (its header names our file, and our last line was the seal it follows), keep the state
   * and skip the snapshot; else replay it from the start.
   */
  private switchFile(lock: boolean): void {
    const fromId = this.id;
    const fromSeq = this.lastSeq;
    const sealed = this.sealSeq === fromSeq;
    closeQuietly(this.fd); // also drops our lock on the old file
    this.fd = -1;
    const f = openJournalFile(this.path, this.readOnly);
    if (!f) {
      this.resetState();
      return;
    }
    ({ fd: this.fd, ino: this.ino, dev: this.dev } = f);
    if (lock) lockJournalFile(this.fd, this.path, this.lockTimeoutMs);
    const header = sealed ? this.readHeader() : undefined;
    if (header && header.prev === fromId && header.seq === fromSeq) {
      this.id = header.id;
      this.offset = header.bytes + header.snapBytes;
      this.atLineStart = true;
      this.sealSeq = undefined;
      this.snapLeft = 0;
    } else this.resetState();
  }

  /** The header line of the open file, with its length in bytes. */
  private readHeader(): (HeaderEntry & { bytes: number }) | undefined {
    const n = fs.readSync(this.fd, this.buf, 0, this.buf.length, 0);
    const nl = this.buf.subarray(0, n).indexOf(10);
    if (nl < 0) return undefined;
    const d = decodeLine(this.buf.toString('utf8', 0, nl));
    return d.kind === 'entry' && d.entry.op === 'header' ? { ...d.entry, bytes: nl + 1 } : undefined;
  }

  /** Read and apply every whole line after `offset`. Under the lock, a partial last line is torn. */
  private readTail(locked: boolean): void {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.buf, 0, this.buf.length, this.offset);
      } catch (e) {
        throw storeError('read', this.path, e);
      }
      if (n === 0) return;
      const end = this.buf.lastIndexOf(10, n - 1);
      if (end < 0) {
        if (n === this.buf.length) {
          this.buf = Buffer.allocUnsafe(this.buf.length * 2); // a line longer than the buffer
          continue;
        }
        if (locked) this.skipTorn(n);
        return;
      }
      for (let start = 0; start <= end; ) {
        const nl = this.buf.indexOf(10, start);
        if (nl > start) this.applyLine(this.buf.toString('utf8', start, nl), this.offset + start);
        start = nl + 1;
      }
      this.offset += end + 1;
      this.atLineStart = true;
      if (n < this.buf.length) {
        if (end + 1 < n && locked) this.skipTorn(n - end - 1);
        return;
      }
    }
  }

  /** Under the lock, `n` bytes at the end without a newline are a torn write: step over them. */
  private skipTorn(n: number): void {
    this.stats.torn++;
    this.offset += n;
    this.atLineStart = false;
  }

  private applyLine(text: string, at: number): void {
    const d = decodeLine(text);
    if (this.lastSeq < 0) {
      if (d.kind !== 'entry' || d.entry.op !== 'header') {
        throw new TapnetError('ERR_STORE_CORRUPT', `${this.path} is not a tapnet journal (bad first line)`, {
          details: { path: this.path },
        });
      }
      this.useHeader(d.entry);
      return;
    }
    if (d.kind === 'torn') {
      // A write cut short (and finished by a later writer's newline) is a prefix of the line that would
      // have come next; anything else without a checksum is damage.
      const next = `{"seq":${this.lastSeq + 1},`;
      if (text.startsWith(next) || next.startsWith(text)) this.stats.torn++;
      else this.damage(at, 'not a whole journal line', text, decodeVm(text));
      return;
    }
    if (d.kind === 'corrupt') {
      this.damage(at, d.reason, text, d.vm);
      return;
    }
    const e = d.entry;
    if (e.op === 'header') {
      this.damage(at, 'a second header line', text);
      return;
    }
    if (this.snapLeft > 0) {
      this.snapLeft--;
      if (e.seq !== this.snapSeq) this.damage(at, `snapshot line numbered ${e.seq}, not ${this.snapSeq}`, '');
    } else if (e.seq <= this.lastSeq) {
      this.damage(at, `sequence ${e.seq} does not follow ${this.lastSeq}`, text);
      return;
    } else this.lastSeq = e.seq;
    this.sealSeq = e.op === 'seal' ? e.seq : undefined;
    this.state.apply(e);
  }

  private useHeader(h: HeaderEntry): void {
    if (h.format !== JOURNAL_FORMAT) {
      throw new TapnetError('ERR_STORE_CORRUPT', `${this.path} is not a tapnet journal`, {
        details: { path: this.path, format: h.format },
      });
    }
    if (h.version > JOURNAL_VERSION || h.version < 1) {
      throw new TapnetError(
        'ERR_STORE',
        `journal ${this.path} has format version ${h.version}, which this tapnet does not understand (${JOURNAL_VERSION}); upgrade tapnet`,
        { details: { path: this.path, version: h.version, supported: JOURNAL_VERSION } },
      );
    }
    this.id = h.id;
    this.lastSeq = h.seq;
    this.snapSeq = h.seq;
    this.snapLeft = h.snapLines;
  }

  /** A damaged line: report it, keep its text for the quarantine, set aside the VM it is about. */
  private damage(at: number, reason: string, text: string, vm?: string): void {
    if (this.problems.length < MAX_PROBLEMS) {
      this.problems.push(
        new TapnetError('ERR_STORE_CORRUPT', `journal ${this.path}: line at byte ${at} skipped: ${reason}`, {
          details: { path: this.path, offset: at, reason, ...(vm ? { vmId: vm } : {}) },
        }),
      );
    }
    if (text && this.damagedBytes < MAX_KEPT_DAMAGED_BYTES) {
      this.damaged.push(text);
      this.damagedBytes += text.length;
    }
    if (vm) {
      // Its latest state is unknown: set its record aside, as the file store quarantines a bad file.
      const reasonText = `a journal line about it (byte ${at}) is damaged: ${reason}`;
      const text0 = this.state.records.get(vm)?.text ?? '';
      this.state.apply({ op: 'quarantine', seq: this.lastSeq, vm, reason: reasonText, text: text0 });
    }
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

  /** Under the lock, caught up: replace the journal with a snapshot of the state. */
  private compact(): void {
    const sealSeq = this.lastSeq + 1;
    const lines = this.state.snapshotLines(sealSeq, this.lockAlive);
    const snapText = lines.join('');
    const header = this.header(sealSeq, this.id, lines.length, Buffer.byteLength(snapText));
    const data = Buffer.from(encodeEntry(header) + snapText, 'utf8');
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
