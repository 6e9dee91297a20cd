/**
 * The journal file: `<dir>/journal.jsonl`, opened once per process with O_APPEND, replayed into a
 * JournalState and kept current by reading the tail other processes appended.
 *
 * Every mutation runs under flock(LOCK_EX) on the journal's fd, synchronously and for microseconds:
 * read the new tail (pread) → check against the state → append one line (one write()) → unlock. Reads
 * only read the tail, without the lock, and stop before an incomplete last line (a write in flight).
 * Under the lock an incomplete last line is a torn write (its writer died or hit ENOSPC): it is skipped
 * and the next writer starts on a fresh line.
 *
 * Compaction (when the file is over `compactMinBytes` and `compactRatio` × the live state): under the
 * lock, write the state as a snapshot to a temp file, fsync it, append a `seal` line to the old file and
 * rename the new one over it. Processes reading the old file find the seal and re-open the path; one
 * that was current with the old file skips the snapshot (its header names the old file and seq). A crash
 * anywhere leaves the old journal in place (a seal followed by nothing, found under the lock with the
 * path unchanged, is void). Nothing on the hot path creates a directory entry.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TapnetError } from '../errors.js';
import { flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../sys/flock.js';
import {
  decodeLine,
  encodeEntry,
  type HeaderEntry,
  JOURNAL_FORMAT,
  JOURNAL_VERSION,
  type JournalEntry,
  type NewEntry,
} from './journal-format.js';
import { JournalState, type LockHolder } from './journal-state.js';
import { fsErrno, storeError } from './statedir.js';

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
  /** Open for reading only: never create, lock for writing or append. */
  readOnly?: boolean;
}

const MAX_PROBLEMS = 1000;
const MAX_KEPT_CORRUPT_BYTES = 1 << 20;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

const closeQuietly = (fd: number): void => {
  try {
    if (fd >= 0) fs.closeSync(fd);
  } catch {
    // nothing useful to do
  }
};

/** A journal file and the state it adds up to. One per state directory per process. */
export class Journal {
  readonly dir: string;
  readonly path: string;
  readonly state = new JournalState();
  /** Damaged lines found by the last full replay and since (ERR_STORE_CORRUPT), oldest first. */
  readonly problems: TapnetError[] = [];
  readonly stats = { torn: 0, compactions: 0, replays: 0, appends: 0 };
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
  /** Bytes consumed: the start of the next line to read. */
  private offset = 0;
  private atLineStart = true;
  private lastSeq = -1;
  private snapLeft = 0;
  private snapSeq = 0;
  /** Set while the last line read is a seal. */
  private sealSeq: number | undefined;
  private buf = Buffer.allocUnsafe(64 * 1024);
  private compactFloor = 0;
  private corrupt: string[] = [];
  private corruptBytes = 0;
  private dirDirty = false;
  private tmpCounter = 0;
  /** Entries a failed write could not record (unlocks): written before the next ones. */
  private deferred: NewEntry[] = [];

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

  /** Bytes of the journal file read so far (≈ its size). */
  get size(): number {
    return this.offset;
  }

  /** Sequence number of the last line applied. */
  get seq(): number {
    return this.lastSeq;
  }

  /** Bring the state up to date with what other processes appended (no lock). */
  refresh(): void {
    for (let hops = 0; hops < 8; hops++) {
      if (this.fd < 0 && !this.openPath()) return;
      this.readTail(false);
      if (this.sealSeq === undefined) return;
      // The last line is a seal: the file was replaced by a compaction, is being replaced, or a
      // compactor died between its seal and its rename. The lock tells these apart.
      if (!this.pathIsOurs()) this.switchFile(false);
      else {
        this.lockFd();
        try {
          this.catchUpLocked();
        } finally {
          this.unlockFd();
        }
      }
    }
  }

  /**
   * Run `fn` on the current state under the journal lock and append the entries it returns, as one
   * write. `fn` must be synchronous and quick: it runs while every other process waits.
   */
  write<R>(fn: (state: JournalState) => { entries?: NewEntry[]; result: R }): R {
    if (this.readOnly) throw new TapnetError('ERR_INTERNAL', `journal ${this.path} is open read-only`);
    if (this.fd < 0) this.refresh();
    this.lockFd();
    try {
      this.catchUpLocked();
      const out = fn(this.state);
      const entries = this.deferred.length > 0 ? [...this.deferred, ...(out.entries ?? [])] : out.entries;
      if (entries && entries.length > 0) {
        this.append(entries);
        this.deferred = [];
      }
      if (this.shouldCompact()) this.compact();
      return out.result;
    } finally {
      this.unlockFd();
    }
  }

  /** Remember entries to write with the next mutation (after a failed write of them). */
  defer(entry: NewEntry): void {
    this.deferred.push(entry);
  }

  /** Compact now (under the lock), whatever the size. For tests and maintenance. */
  compactNow(): void {
    if (this.readOnly) throw new TapnetError('ERR_INTERNAL', `journal ${this.path} is open read-only`);
    if (this.fd < 0) this.refresh();
    this.lockFd();
    try {
      this.catchUpLocked();
      this.compact();
    } finally {
      this.unlockFd();
    }
  }

  /** fsync the journal (and, after it was created or compacted, its directory). */
  async sync(): Promise<void> {
    if (this.fd < 0) return;
    const fsyncFd = (fd: number): Promise<void> =>
      new Promise((resolve, reject) =>
        fs.fsync(fd, (e) => (e ? reject(storeError('sync', this.path, e)) : resolve())),
      );
    await fsyncFd(this.fd);
    if (this.dirDirty) {
      this.dirDirty = false;
      const d = fs.openSync(this.dir, fs.constants.O_RDONLY);
      try {
        await fsyncFd(d);
      } finally {
        fs.closeSync(d);
      }
    }
  }

  /** Close the file. Using the journal again re-opens it and replays it from the start. */
  close(): void {
    closeQuietly(this.fd);
    this.fd = -1;
  }

  // ---- opening and reading ----

  /** Open the path (creating it unless read-only; its header comes with the first write); false when absent. */
  private openFd(): boolean {
    const flags = this.readOnly
      ? fs.constants.O_RDONLY
      : fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
    let fd: number;
    try {
      if (!this.readOnly) fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
      fd = fs.openSync(this.path, flags, 0o644);
    } catch (e) {
      if (this.readOnly && fsErrno(e) === 'ENOENT') return false;
      throw storeError('open', this.path, e);
    }
    const st = fs.fstatSync(fd);
    this.fd = fd;
    this.ino = st.ino;
    this.dev = st.dev;
    return true;
  }

  /** Open the path and replay it from the start. */
  private openPath(): boolean {
    if (!this.openFd()) return false;
    this.resetState();
    return true;
  }

  private resetState(): void {
    this.state.clear();
    this.problems.length = 0;
    this.corrupt = [];
    this.corruptBytes = 0;
    this.offset = 0;
    this.atLineStart = true;
    this.lastSeq = -1;
    this.snapLeft = 0;
    this.sealSeq = undefined;
    this.id = '';
    this.stats.replays++;
  }

  /** True when the path still names the file we have open. */
  private pathIsOurs(): boolean {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(this.path, { throwIfNoEntry: false });
    } catch (e) {
      throw storeError('stat', this.path, e);
    }
    return st !== undefined && st.ino === this.ino && st.dev === this.dev;
  }

  /**
   * Leave the current file for the one now at the path. When that is the compaction of exactly the
   * state we have (its header names our file and our last seq, which was a seal), keep the state and
   * skip the snapshot; else replay the new file from the start.
   */
  private switchFile(lockNew: boolean): void {
    const fromId = this.id;
    const fromSeq = this.lastSeq;
    const sealed = this.sealSeq !== undefined && this.sealSeq === fromSeq;
    closeQuietly(this.fd); // releases our lock on the old file, if held
    this.fd = -1;
    if (!this.openFd()) {
      this.resetState();
      return;
    }
    if (lockNew) this.lockFd();
    const header = sealed ? this.readHeader() : undefined;
    if (header && header.prev === fromId && header.seq === fromSeq) {
      this.id = header.id;
      this.offset = header.bytes + header.snapBytes;
      this.atLineStart = true;
      this.sealSeq = undefined;
      this.snapLeft = 0;
    } else this.resetState();
  }

  /** The header line of the open file, with its length in bytes, or undefined. */
  private readHeader(): (HeaderEntry & { bytes: number }) | undefined {
    const n = fs.readSync(this.fd, this.buf, 0, this.buf.length, 0);
    const nl = this.buf.subarray(0, n).indexOf(10);
    if (nl < 0) return undefined;
    const d = decodeLine(this.buf.toString('utf8', 0, nl));
    if (d.kind !== 'entry' || d.entry.op !== 'header') return undefined;
    return { ...d.entry, bytes: nl + 1 };
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
          this.buf = Buffer.allocUnsafe(this.buf.length * 2); // one line longer than the buffer
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

  /** Under the lock: `n` bytes at the end with no newline are a torn write. Step over them. */
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
      this.stats.torn++; // a cut-short write that a later writer finished with a newline
      return;
    }
    if (d.kind === 'corrupt') {
      this.report(at, d.reason, text, d.vm);
      return;
    }
    const e = d.entry;
    if (e.op === 'header') {
      this.report(at, 'a second header line', text);
      return;
    }
    if (this.snapLeft > 0) {
      this.snapLeft--;
      if (e.seq !== this.snapSeq)
        this.report(at, `snapshot line numbered ${e.seq}, not ${this.snapSeq}`, text);
    } else if (e.seq <= this.lastSeq) {
      this.report(at, `sequence ${e.seq} does not follow ${this.lastSeq}`, text);
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

  /** Record a damaged line; keep its text for the quarantine; set aside the VM it is about. */
  private report(at: number, reason: string, text: string, vm?: string): void {
    if (this.problems.length < MAX_PROBLEMS) {
      this.problems.push(
        new TapnetError('ERR_STORE_CORRUPT', `journal ${this.path}: line at byte ${at} skipped: ${reason}`, {
          details: { path: this.path, offset: at, reason, ...(vm ? { vmId: vm } : {}) },
        }),
      );
    }
    if (this.corruptBytes < MAX_KEPT_CORRUPT_BYTES) {
      this.corrupt.push(text);
      this.corruptBytes += text.length;
    }
    if (vm) {
      // Its latest state is unknown: set its record aside, as the file store quarantines a bad file.
      const cur = this.state.records.get(vm);
      this.state.apply({
        op: 'quarantine',
        seq: this.lastSeq,
        vm,
        reason: `a journal line about it (byte ${at}) is damaged: ${reason}`,
        text: cur?.text ?? '',
      });
    }
  }

  // ---- locking and writing ----

  private lockFd(): void {
    if (flock(this.fd, LOCK_EX | LOCK_NB)) return;
    const deadline = Date.now() + this.lockTimeoutMs;
    for (let wait = 0.05; ; wait = Math.min(wait * 2, 10)) {
      Atomics.wait(SLEEPER, 0, 0, wait); // sleep without returning to the event loop: never await here
      if (flock(this.fd, LOCK_EX | LOCK_NB)) return;
      if (Date.now() > deadline) {
        throw new TapnetError(
          'ERR_TIMEOUT',
          `journal ${this.path} stayed locked by another process for ${this.lockTimeoutMs} ms`,
          { details: { path: this.path, timeoutMs: this.lockTimeoutMs } },
        );
      }
    }
  }

  private unlockFd(): void {
    if (this.fd >= 0) flock(this.fd, LOCK_UN);
  }

  /** Under the lock: read everything, follow a replaced file, write the header of an empty one. */
  private catchUpLocked(): void {
    for (let hops = 0; ; hops++) {
      this.readTail(true);
      if (this.lastSeq < 0) {
        // No whole line at all (new file, or a header cut short by a crash): start it afresh.
        fs.ftruncateSync(this.fd, 0);
        this.offset = 0;
        this.atLineStart = true;
        this.appendText(
          encodeEntry({
            op: 'header',
            seq: 0,
            format: JOURNAL_FORMAT,
            version: JOURNAL_VERSION,
            id: randomBytes(8).toString('hex'),
            created: new Date().toISOString(),
            snapLines: 0,
            snapBytes: 0,
          }),
          false,
        );
        this.dirDirty = true;
        continue;
      }
      if (this.pathIsOurs()) {
        this.sealSeq = undefined; // a seal with the path unchanged under the lock: its compactor died
        return;
      }
      if (hops >= 8) throw new TapnetError('ERR_STORE', `journal ${this.path} keeps being replaced`);
      this.switchFile(true);
    }
  }

  /** One write() at the end of the file. `advance`: our offset follows (the caller applies). */
  private appendText(text: string, advance = true): number {
    const data = Buffer.from(this.atLineStart ? text : `\n${text}`, 'utf8');
    let n: number;
    try {
      n = fs.writeSync(this.fd, data, 0, data.length);
    } catch (e) {
      throw storeError('append to', this.path, e);
    }
    if (n !== data.length) {
      throw new TapnetError(
        'ERR_STORE',
        `state store: wrote only ${n} of ${data.length} bytes to ${this.path} (disk full?)`,
        {
          details: { path: this.path, op: 'append to' },
        },
      );
    }
    if (advance) {
      this.offset += n;
      this.atLineStart = true;
    }
    return n;
  }

  private append(entries: NewEntry[]): void {
    let seq = this.lastSeq;
    const numbered = entries.map((e) => ({ seq: ++seq, ...e }) as JournalEntry);
    this.appendText(numbered.map(encodeEntry).join(''));
    this.lastSeq = seq;
    this.sealSeq = undefined;
    for (const e of numbered) this.state.apply(e);
    this.stats.appends++;
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
    const id = randomBytes(8).toString('hex');
    const header = encodeEntry({
      op: 'header',
      seq: sealSeq,
      format: JOURNAL_FORMAT,
      version: JOURNAL_VERSION,
      id,
      prev: this.id,
      created: new Date().toISOString(),
      snapLines: lines.length,
      snapBytes: Buffer.byteLength(snapText),
    });
    const data = Buffer.from(header + snapText, 'utf8');
    const tmp = path.join(this.dir, `.${JOURNAL_FILE}.${process.pid}.${++this.tmpCounter}.tmp`);
    let fd = -1;
    try {
      fd = fs.openSync(
        tmp,
        fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_EXCL,
        0o644,
      );
      for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off, data.length - off);
      fs.fsyncSync(fd); // the old journal goes away with the rename: the new one must be on disk first
      this.append([{ op: 'seal' }]);
      fs.renameSync(tmp, this.path);
    } catch (e) {
      closeQuietly(fd);
      fs.rmSync(tmp, { force: true });
      this.report(this.offset, `compaction failed: ${storeError('compact', this.path, e).message}`, '');
      this.compactFloor = this.offset * this.ratio;
      return;
    }
    const old = this.fd;
    const st = fs.fstatSync(fd);
    this.fd = fd;
    this.ino = st.ino;
    this.dev = st.dev;
    this.id = id;
    this.offset = data.length;
    this.lastSeq = sealSeq;
    this.sealSeq = undefined;
    this.atLineStart = true;
    this.snapLeft = 0;
    closeQuietly(old); // releases the lock of the old file; the new one needs none (it is complete)
    this.compactFloor = data.length * this.ratio;
    this.dirDirty = true;
    this.stats.compactions++;
    this.saveCorrupt();
  }

  /** Damaged lines leave the journal with a compaction: keep them in `<dir>/quarantine/` for a human. */
  private saveCorrupt(): void {
    if (this.corrupt.length === 0) return;
    const kept = this.corrupt.filter((t) => t.length > 0);
    this.corrupt = [];
    this.corruptBytes = 0;
    if (kept.length === 0) return;
    try {
      const qdir = path.join(this.dir, 'quarantine');
      fs.mkdirSync(qdir, { recursive: true });
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      fs.writeFileSync(path.join(qdir, `journal.${stamp}.${process.pid}.jsonl`), `${kept.join('\n')}\n`, {
        flag: 'wx',
      });
    } catch {
      // best effort: the problems were reported when found
    }
  }
}
