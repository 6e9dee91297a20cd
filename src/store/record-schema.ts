/**
 * The record envelope and schema handling every VmRecordStore backend shares (files, journal, etcd):
 * newer versions refused, older ones migrated, the caller's validation applied.
 */
import { TapnetError } from '../errors.js';
import type { RecordSchema, StoredRecord } from './types.js';

/** Fields the store manages; everything else is the caller's. */
export const ENVELOPE = new Set(['vmId', 'version', 'generation', 'state', 'updatedAt']);

export const isInt = (v: unknown, min: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min;

/** A decoded record, or why it cannot be read (the caller sets it aside). */
export type Decoded<T> = { ok: true; record: T } | { ok: false; reason: string };

/**
 * Apply `schema` to a record whose envelope was checked (`rec.version` an integer ≥ 1, `rec.generation`
 * set): ERR_STORE for a newer version or a failed/missing migration; `{ok: false}` when validation refuses
 * it. `where` (a file, a journal, an etcd key) goes into the error details.
 */
export function applySchema<T extends StoredRecord>(
  schema: RecordSchema<T>,
  raw: Record<string, unknown>,
  vmId: string,
  where: string,
): Decoded<T> {
  let rec = raw;
  const version = rec.version as number;
  if (version > schema.version) {
    throw new TapnetError(
      'ERR_STORE',
      `VM record ${vmId} has schema version ${version}, newer than this tapnet understands (${schema.version}); upgrade tapnet`,
      { details: { vmId, path: where, version, supported: schema.version } },
    );
  }
  if (version < schema.version) {
    if (!schema.migrate) {
      throw new TapnetError(
        'ERR_STORE',
        `VM record ${vmId} has schema version ${version} and no migration exists`,
        {
          details: { vmId, path: where, version, supported: schema.version },
        },
      );
    }
    try {
      rec = { ...schema.migrate(rec, version), vmId, generation: rec.generation, version: schema.version };
    } catch (e) {
      throw new TapnetError('ERR_STORE', `VM record ${vmId}: migration from version ${version} failed`, {
        cause: e,
        details: { vmId, path: where, version },
      });
    }
  }
  if (!schema.validate) return { ok: true, record: rec as unknown as T };
  try {
    return { ok: true, record: schema.validate(rec) };
  } catch (e) {
    return { ok: false, reason: `does not match the record schema: ${(e as Error).message ?? String(e)}` };
  }
}
