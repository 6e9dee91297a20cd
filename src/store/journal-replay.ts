/**
 * Reading the journal file: replay from the start or from a known offset, whole lines only; torn writes,
 * damaged lines, sequence checks, the header and its format version; and following the file to its
 * replacement after a compaction (skipping the snapshot when it is exactly the state already held).
 * The base of Journal (journal-log.ts), which adds locking, writing and compaction.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TapnetError } from '../errors.js';
import { closeQuietly, lockJournalFile, openJournalFile } from './journal-file.js';
import {
  decodeLineAt,
  decodeVm,
  type HeaderEntry,
  JOURNAL_FORMAT,
  JOURNAL_VERSION,
  type JournalEntry,
  type NewEntry,
} from './journal-format.js';
import { JournalState } from './journal-state.js';
import { storeError } from './statedir.js';

/** The journal's file name inside the state directory. */
export const JOURNAL_FILE = 'journal.jsonl';

const MAX_PROBLEMS = 1000;
const MAX_KEPT_DAMAGED_BYTES = 1 << 20;

/** The journal file as read by this process, and the state it adds up to. */
export abstract class JournalReader {
  readonly dir: string;
  readonly path: string;
  readonly state = new JournalState();
  /** Damaged lines found by the last full replay and since (ERR_STORE_CORRUPT each), oldest first. */
  readonly problems: TapnetError[] = [];
  readonly stats = { torn: 0, compactions: 0, replays: 0, writes: 0 };

  protected fd = -1;
  protected ino = -1;
  protected dev = -1;
  protected id = '';
  /** Bytes consumed: where the next line to read starts. */
  protected offset = 0;
  protected atLineStart = true;
  protected lastSeq = -1;
  protected snapLeft = 0;
  private snapSeq = 0;
  /** Set while the last line read is a seal. */
  protected sealSeq: number | undefined;
  private buf = Buffer.allocUnsafe(64 * 1024);
  protected damaged: string[] = [];
  protected damagedBytes = 0;
  /** Entries to write with the next mutation: lazy ones (already applied) and failed ones. */
  protected pending: NewEntry[] = [];

  protected constructor(
    dir: string,
    protected readonly readOnly: boolean,
    protected readonly lockTimeoutMs: number,
  ) {
    this.dir = path.resolve(dir);
    this.path = path.join(this.dir, JOURNAL_FILE);
  }

  /** Bytes of the journal read so far (≈ its size). */
  get size(): number {
    return this.offset;
  }

  /** Sequence number of the last line applied. */
  get seq(): number {
    return this.lastSeq;
  }

  /** Open the path and replay it from the start; false when read-only and absent. */
  protected openPath(): boolean {
    const f = openJournalFile(this.path, this.readOnly);
    if (!f) return false;
    ({ fd: this.fd, ino: this.ino, dev: this.dev } = f);
    this.resetState();
    return true;
  }

  protected resetState(): void {
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
  protected switchFile(lock: boolean): void {
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
    const d = decodeLineAt(this.buf, 0, nl);
    return d.kind === 'entry' && d.entry.op === 'header' ? { ...d.entry, bytes: nl + 1 } : undefined;
  }

  /** Read and apply every whole line after `offset`. Under the lock, a partial last line is torn. */
  protected readTail(locked: boolean): void {
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
        if (nl > start) this.applyLine(this.buf, start, nl, this.offset + start);
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

  private applyLine(buf: Buffer, start: number, end: number, at: number): void {
    const d = decodeLineAt(buf, start, end);
    const text = (): string => buf.toString('utf8', start, end);
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
      const t = text();
      if (t.startsWith(next) || next.startsWith(t)) this.stats.torn++;
      else this.damage(at, 'not a whole journal line', t, decodeVm(t));
      return;
    }
    if (d.kind === 'corrupt') {
      this.damage(at, d.reason, text(), d.vm);
      return;
    }
    const e = d.entry;
    if (e.op === 'header') {
      this.damage(at, 'a second header line', text());
      return;
    }
    if (this.snapLeft > 0) {
      // Snapshot lines keep the seq of the line they were copied from: all before the header's.
      this.snapLeft--;
      if (e.seq > this.snapSeq) this.damage(at, `snapshot line numbered ${e.seq}, after ${this.snapSeq}`, '');
    } else if (e.seq <= this.lastSeq) {
      this.damage(at, `sequence ${e.seq} does not follow ${this.lastSeq}`, text());
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
  protected damage(at: number, reason: string, text: string, vm?: string): void {
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
      // seq 0: this entry has no line of its own, so a compaction writes it afresh, never copies one.
      this.state.apply({ op: 'quarantine', seq: 0, vm, reason: reasonText, text: text0 });
    }
  }
}
