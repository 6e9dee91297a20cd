/**
 * VM records on local disk: one pretty-printed JSON file per VM, `<state>/vms/<vmId>.json`, replaced
 * atomically on every write. Unreadable files are quarantined and reported; a record from a newer
 * schema is refused without being touched; an older one is migrated in memory.
 */

import { TapnetError } from '../errors.js';
import { validateVmId } from '../validate.js';
import { applySchema, ENVELOPE, isInt } from './record-schema.js';
import type { StateDir } from './statedir.js';
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

/** Names StateDir.quarantine() gives record files: `vms_<vmId>.json.<time>.<pid>.<n>`. */
const QUARANTINED_RE = /^vms_([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\.json\.[0-9TZ-]+\.\d+\.\d+$/;

/** The default schema: version 1, envelope checks only. */
export const BASIC_SCHEMA: RecordSchema<StoredRecord> = { version: 1 };

/** VmRecordStore over a state directory. All methods are safe to call concurrently from many processes. */
export class FileRecordStore<T extends StoredRecord = StoredRecord> implements VmRecordStore<T> {
  private readonly schema: RecordSchema<T>;

  constructor(
    private readonly dir: StateDir,
    schema?: RecordSchema<T>,
  ) {
    this.schema = schema ?? (BASIC_SCHEMA as RecordSchema<T>);
    if (!isInt(this.schema.version, 1)) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', `record schema version must be an integer ≥ 1`);
    }
  }

  /** Directory of the record files. */
  get directory(): string {
    return this.dir.path('vms');
  }

  private file(vmId: string): string {
    return this.dir.path('vms', `${validateVmId(vmId)}.json`);
  }

  /** The record of `vmId`, or undefined. Throws ERR_STORE_CORRUPT (after quarantining) or ERR_STORE. */
  async get(vmId: string): Promise<T | undefined> {
    return this.getSync(vmId);
  }

  /** Synchronous get(): one small file read. */
  getSync(vmId: string): T | undefined {
    const file = this.file(vmId);
    for (let attempt = 0; ; attempt++) {
      const text = this.dir.readText(file);
      if (text === undefined) return undefined;
      const decoded = this.decode(vmId, file, text);
      if (decoded.ok) return decoded.record;
      const qpath = this.dir.quarantine(file);
      if (qpath === undefined) continue; // replaced or deleted meanwhile: read again
      // A writer may have replaced the bad file between our read and the rename: put a good one back.
      if (attempt < 2 && this.dir.readText(qpath) !== text) {
        this.dir.restore(qpath, file);
        continue;
      }
      throw new TapnetError(
        'ERR_STORE_CORRUPT',
        `VM record ${vmId} is unreadable (${decoded.reason}); moved to ${qpath}`,
        {
          details: { vmId, path: file, quarantinedTo: qpath, reason: decoded.reason },
        },
      );
    }
  }

  /** Check the envelope, apply migrations and the caller's validation. Newer versions throw ERR_STORE. */
  private decode(
    vmId: string,
    file: string,
    text: string,
  ): { ok: true; record: T } | { ok: false; reason: string } {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      return { ok: false, reason: `not valid JSON: ${(e as Error).message}` };
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      return { ok: false, reason: 'not a JSON object' };
    const rec = raw as Record<string, unknown>;
    if (rec.vmId !== vmId)
      return { ok: false, reason: `vmId is ${JSON.stringify(rec.vmId)}, not the file's name` };
    if (!isInt(rec.version, 1)) return { ok: false, reason: 'version is not an integer ≥ 1' };
    if (!isInt(rec.generation, 1)) return { ok: false, reason: 'generation is not an integer ≥ 1' };
    if (!RECORD_STATES.includes(rec.state as RecordState))
      return { ok: false, reason: 'state is not a known state' };
    return applySchema(this.schema, rec, vmId, file);
  }

  /**
   * Write a record atomically (temp file + rename, no fsync). The store sets `version` to the schema's,
   * `generation` to the stored one + 1 and `updatedAt`. With `expectedGeneration`, fails with
   * ERR_CONFLICT if the stored generation differs (0: must not exist). Callers hold the VM's lock.
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
    const file = this.file(vmId);
    const current = this.getSync(vmId);
    const currentGeneration = current?.generation ?? 0;
    this.checkGeneration(vmId, currentGeneration, options);
    const record: Record<string, unknown> = {
      vmId,
      version: this.schema.version,
      generation: currentGeneration + 1,
      state: input.state,
      updatedAt: new Date().toISOString(),
    };
    for (const [k, v] of Object.entries(input)) if (!ENVELOPE.has(k)) record[k] = v;
    let stored: T = record as unknown as T;
    if (this.schema.validate) {
      try {
        stored = this.schema.validate(record);
      } catch (e) {
        throw new TapnetError('ERR_INVALID_ARGUMENT', `VM record ${vmId} does not match the record schema`, {
          cause: e,
          details: { vmId },
        });
      }
    }
    let text: string;
    try {
      text = `${JSON.stringify(record, null, 2)}\n`;
    } catch (e) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', `VM record ${vmId} is not JSON-serialisable`, {
        cause: e,
        details: { vmId },
      });
    }
    this.dir.writeAtomic(file, text);
    return stored;
  }

  /** Remove the record; false when there was none. With `expectedGeneration`, compare-and-swap. */
  async delete(vmId: string, options: CasOptions = {}): Promise<boolean> {
    const file = this.file(vmId);
    if (options.expectedGeneration !== undefined) {
      this.checkGeneration(vmId, this.getSync(vmId)?.generation ?? 0, options);
    }
    return this.dir.remove(file);
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
   * Every record. Unreadable ones are quarantined and reported in `problems` (so are files whose names
   * are not `<valid VM ID>.json`: reported, left alone); one bad file never hides the others.
   */
  async list(): Promise<{ records: T[]; problems: RecordProblem[] }> {
    const records: T[] = [];
    const problems: RecordProblem[] = [];
    for (const name of this.dir.list(this.directory)) {
      const vmId = name.endsWith('.json') ? name.slice(0, -5) : name;
      try {
        if (vmId === name)
          throw new TapnetError('ERR_STORE_CORRUPT', `stray file ${name} in the records directory`);
        validateVmId(vmId);
      } catch {
        problems.push({
          vmId,
          error: new TapnetError(
            'ERR_STORE_CORRUPT',
            `stray file ${name} in ${this.directory} (not <VM ID>.json); left alone`,
            {
              details: { path: `${this.directory}/${name}` },
            },
          ),
        });
        continue;
      }
      try {
        const r = this.getSync(vmId);
        if (r) records.push(r);
      } catch (e) {
        if (!(e instanceof TapnetError) || (e.code !== 'ERR_STORE_CORRUPT' && e.code !== 'ERR_STORE'))
          throw e;
        if (e.code === 'ERR_STORE' && e.errno) throw e; // the directory itself failed: not one record's problem
        problems.push({ vmId, error: e });
      }
    }
    this.addQuarantined(records, problems);
    return { records, problems };
  }

  /**
   * A record quarantined earlier stays a problem until a human deletes or restores the file (and as
   * long as no new record for that VM was written): its VM may still run, so reconcile must not give
   * its addresses away.
   */
  private addQuarantined(records: T[], problems: RecordProblem[]): void {
    const known = new Set([...records.map((r) => r.vmId), ...problems.map((p) => p.vmId)]);
    const qdir = this.dir.path('quarantine');
    for (const name of this.dir.list(qdir)) {
      const m = QUARANTINED_RE.exec(name);
      if (!m || known.has(m[1]!)) continue;
      const vmId = m[1]!;
      known.add(vmId);
      problems.push({
        vmId,
        error: new TapnetError(
          'ERR_STORE_CORRUPT',
          `VM record ${vmId} was quarantined to ${qdir}/${name}; its VM may still exist: restore or delete the file`,
          { details: { vmId, quarantinedTo: `${qdir}/${name}` } },
        ),
      });
    }
  }
}
