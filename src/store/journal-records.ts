/**
 * VM records over the journal: each put() is one `put` line carrying the whole record (compact JSON),
 * with the same envelope, compare-and-swap, schema versioning and validation as FileRecordStore. A record
 * that cannot be read is set aside with a `quarantine` line (its text kept in the journal) and reported
 * until a new put or resolve() replaces it; a record from a newer schema is refused and left untouched.
 */

import { TapnetError } from '../errors.js';
import { validateVmId } from '../validate.js';
import type { Journal } from './journal-log.js';
import type { LiveRecord } from './journal-state.js';
import { applySchema, type Decoded, ENVELOPE, isInt } from './record-schema.js';
import { BASIC_SCHEMA } from './records.js';
import {
  type CasOptions,
  RECORD_STATES,
  type RecordInput,
  type RecordProblem,
  type RecordSchema,
  type RecordState,
  type StoredRecord,
  type VmRecordStore,
} from './types.js';

/** VmRecordStore over a journal. Safe to use from many processes at once. */
export class JournalRecordStore<T extends StoredRecord = StoredRecord> implements VmRecordStore<T> {
  private readonly schema: RecordSchema<T>;

  constructor(
    private readonly journal: Journal,
    schema?: RecordSchema<T>,
  ) {
    this.schema = schema ?? (BASIC_SCHEMA as RecordSchema<T>);
    if (!isInt(this.schema.version, 1)) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'record schema version must be an integer ≥ 1');
    }
  }

  /** The record of `vmId`, or undefined. Throws ERR_STORE_CORRUPT (after setting it aside) or ERR_STORE. */
  async get(vmId: string): Promise<T | undefined> {
    return this.getSync(vmId);
  }

  /** Synchronous get(): a read of the journal's tail and one JSON.parse. */
  getSync(vmId: string): T | undefined {
    validateVmId(vmId);
    return this.read(vmId, true);
  }

  /** Decode the record of `vmId` (after reading the tail when `refresh`); set it aside if unreadable. */
  private read(vmId: string, refresh: boolean): T | undefined {
    for (let attempt = 0; ; attempt++) {
      if (refresh || attempt > 0) this.journal.refresh();
      const r = this.journal.state.records.get(vmId);
      if (!r) return undefined;
      const d = this.decode(vmId, r);
      if (d.ok) return d.record;
      const seq = this.setAside(vmId, r, d.reason);
      if (seq === undefined && attempt < 2) continue; // rewritten meanwhile: read again
      throw new TapnetError(
        'ERR_STORE_CORRUPT',
        `VM record ${vmId} is unreadable (${d.reason}); set aside in ${this.journal.path}`,
        { details: { vmId, path: this.journal.path, quarantinedTo: this.where(seq), reason: d.reason } },
      );
    }
  }

  private where(seq: number | undefined): string {
    return `${this.journal.path}#seq=${seq ?? '?'}`;
  }

  /** Append a quarantine line for `r` unless the record changed meanwhile; its seq, or undefined. */
  private setAside(vmId: string, r: LiveRecord, reason: string): number | undefined {
    const done = this.journal.write((s) => {
      const cur = s.records.get(vmId);
      if (!cur || cur.text !== r.text) return { result: false };
      return { entries: [{ op: 'quarantine', vm: vmId, reason, text: r.text }], result: true };
    });
    return done ? this.journal.seq : undefined; // the quarantine line is the last one written
  }

  private newer(vmId: string, version: number): TapnetError {
    return new TapnetError(
      'ERR_STORE',
      `VM record ${vmId} has schema version ${version}, newer than this tapnet understands (${this.schema.version}); upgrade tapnet`,
      { details: { vmId, path: this.journal.path, version, supported: this.schema.version } },
    );
  }

  /** Check the envelope, apply migrations and the caller's validation. Newer versions throw ERR_STORE. */
  private decode(vmId: string, r: LiveRecord): Decoded<T> {
    if (r.ver > this.schema.version) throw this.newer(vmId, r.ver);
    let raw: unknown;
    try {
      raw = JSON.parse(r.text);
    } catch (e) {
      return { ok: false, reason: `not valid JSON: ${(e as Error).message}` };
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      return { ok: false, reason: 'not a JSON object' };
    const rec = raw as Record<string, unknown>;
    if (rec.vmId !== vmId) return { ok: false, reason: `vmId is ${JSON.stringify(rec.vmId)}, not its key` };
    if (!isInt(rec.version, 1) || rec.version !== r.ver) return { ok: false, reason: 'version is wrong' };
    if (!isInt(rec.generation, 1) || rec.generation !== r.gen)
      return { ok: false, reason: 'generation is wrong' };
    if (!RECORD_STATES.includes(rec.state as RecordState))
      return { ok: false, reason: 'state is not a known state' };
    return applySchema(this.schema, rec, vmId, this.journal.path);
  }

  /**
   * Write a record: one line, appended atomically. The store sets `version`, `generation` (stored + 1)
   * and `updatedAt`. With `expectedGeneration`, ERR_CONFLICT if the stored generation differs (0: must
   * not exist). Callers hold the VM's lock.
   */
  async put(input: RecordInput<T>, options: CasOptions = {}): Promise<T> {
    return this.putSync(input, options);
  }

  /** Synchronous put(). */
  putSync(input: RecordInput<T>, options: CasOptions = {}): T {
    if (typeof input !== 'object' || input === null)
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'record must be an object');
    const vmId = validateVmId(input.vmId);
    if (!RECORD_STATES.includes(input.state)) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `record state ${JSON.stringify(input.state)} is not one of ${RECORD_STATES.join(', ')}`,
      );
    }
    const version = this.schema.version;
    return this.journal.write((s) => {
      const cur = s.records.get(vmId);
      if (cur && cur.ver > version) throw this.newer(vmId, cur.ver);
      const generation = (cur?.gen ?? 0) + 1;
      this.checkGeneration(vmId, generation - 1, options);
      const record: Record<string, unknown> = {
        vmId,
        version,
        generation,
        state: input.state,
        updatedAt: new Date().toISOString(),
      };
      for (const [k, v] of Object.entries(input)) if (!ENVELOPE.has(k)) record[k] = v;
      let stored = record as unknown as T;
      if (this.schema.validate) {
        try {
          stored = this.schema.validate(record);
        } catch (e) {
          throw new TapnetError(
            'ERR_INVALID_ARGUMENT',
            `VM record ${vmId} does not match the record schema`,
            {
              cause: e,
              details: { vmId },
            },
          );
        }
      }
      let text: string;
      try {
        text = JSON.stringify(record);
      } catch (e) {
        throw new TapnetError('ERR_INVALID_ARGUMENT', `VM record ${vmId} is not JSON-serialisable`, {
          cause: e,
          details: { vmId },
        });
      }
      return {
        entries: [{ op: 'put', vm: vmId, gen: generation, ver: version, recText: text }],
        result: stored,
      };
    });
  }

  /** Remove the record; false when there was none. With `expectedGeneration`, compare-and-swap. */
  async delete(vmId: string, options: CasOptions = {}): Promise<boolean> {
    validateVmId(vmId);
    const expected = options.expectedGeneration;
    return this.journal.write((s) => {
      const cur = s.records.get(vmId);
      if (expected !== undefined) {
        if (cur && cur.ver > this.schema.version) throw this.newer(vmId, cur.ver);
        this.checkGeneration(vmId, cur?.gen ?? 0, options);
      }
      if (!cur) return { result: false };
      return { entries: [{ op: 'del', vm: vmId }], result: true };
    });
  }

  private checkGeneration(vmId: string, actual: number, options: CasOptions): void {
    const expected = options.expectedGeneration;
    if (expected === undefined || expected === actual) return;
    throw new TapnetError(
      'ERR_CONFLICT',
      `VM record ${vmId} changed: expected generation ${expected}, found ${actual === 0 ? 'no record' : actual}`,
      { details: { vmId, expected, actual } },
    );
  }

  /**
   * Every record. Unreadable ones are set aside and reported in `problems`, as are records set aside
   * earlier (their VM may still run: reconcile must not free their addresses until resolve()).
   */
  async list(): Promise<{ records: T[]; problems: RecordProblem[] }> {
    this.journal.refresh();
    const records: T[] = [];
    const problems: RecordProblem[] = [];
    for (const vmId of [...this.journal.state.records.keys()]) {
      try {
        const r = this.read(vmId, false);
        if (r) records.push(r);
      } catch (e) {
        if (!(e instanceof TapnetError) || (e.code !== 'ERR_STORE_CORRUPT' && e.code !== 'ERR_STORE'))
          throw e;
        if (e.code === 'ERR_STORE' && e.errno) throw e; // the journal itself failed
        problems.push({ vmId, error: e });
      }
    }
    const reported = new Set(problems.map((p) => p.vmId));
    for (const [vmId, q] of this.journal.state.quarantined) {
      if (reported.has(vmId)) continue;
      problems.push({
        vmId,
        error: new TapnetError(
          'ERR_STORE_CORRUPT',
          `VM record ${vmId} was set aside (${q.reason}); its VM may still exist: put a new record or resolve it`,
          { details: { vmId, path: this.journal.path, quarantinedTo: this.where(q.seq), reason: q.reason } },
        ),
      });
    }
    return { records, problems };
  }

  /** Records set aside, with the text kept for a human. */
  quarantined(): Array<{ vmId: string; reason: string; text: string }> {
    this.journal.refresh();
    return [...this.journal.state.quarantined].map(([vmId, q]) => ({ vmId, reason: q.reason, text: q.text }));
  }

  /** A human has dealt with a set-aside record: stop reporting it. False when there was none. */
  async resolve(vmId: string): Promise<boolean> {
    validateVmId(vmId);
    return this.journal.write((s) =>
      s.quarantined.has(vmId) ? { entries: [{ op: 'resolve', vm: vmId }], result: true } : { result: false },
    );
  }
}
