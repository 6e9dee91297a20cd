/**
 * VM records in etcd, one key per VM under its host: `hosts/<host>/vms/<vmId>` → the record as JSON.
 * The record's `generation` is the key's etcd `version` (1 after the first put, +1 per put; 0 = absent),
 * so compare-and-swap is `Txn(If(version(key) == expected)).Then(Put)`. Records are not attached to an
 * etcd lease: a host whose agent dies keeps its records (its VMs may still run).
 *
 * A record can publish an overlay entry (`overlay/<network>/<host>/<vmId>`: MAC and addresses) in the
 * same transaction as the record itself, so what other hosts program always matches a record.
 * Unreadable records are moved to `quarantine/<host>/<vmId>` in one transaction and reported.
 */

import { isTapnetError, TapnetError } from '../errors.js';
import { applySchema, type Decoded, ENVELOPE, isInt } from '../store/record-schema.js';
import { BASIC_SCHEMA } from '../store/records.js';
import {
  type CasOptions,
  RECORD_STATES,
  type RecordInput,
  type RecordProblem,
  type RecordSchema,
  type RecordState,
  type StoredRecord,
  type VmRecordStore,
} from '../store/types.js';
import { validateVmId } from '../validate.js';
import type { EtcdClient, KeyValue, TxnOp } from './etcd-client.js';
import type { ClusterKeys } from './keys.js';
import type { RecordCache } from './record-cache.js';

/** What a record publishes to the overlay: its network, and the entry while the VM is ready. */
export interface OverlayPublication {
  network: string;
  /** The entry's JSON-serialisable value; undefined withdraws it (the record is not ready). */
  entry?: Record<string, unknown>;
}

/** Decides, per record, what it publishes (undefined: nothing, e.g. a network that is not cluster-wide). */
export type OverlayPublisher<T> = (record: T) => OverlayPublication | undefined;

/** VmRecordStore over etcd for one host. */
export class EtcdRecordStore<T extends StoredRecord = StoredRecord> implements VmRecordStore<T> {
  private readonly schema: RecordSchema<T>;

  constructor(
    private readonly client: EtcdClient,
    private readonly keys: ClusterKeys,
    readonly host: string,
    schema?: RecordSchema<T>,
    private readonly publish?: OverlayPublisher<T>,
    /** Copies of the records whose lock this process holds (shared with EtcdLockService). */
    private readonly cache?: RecordCache,
  ) {
    this.schema = schema ?? (BASIC_SCHEMA as RecordSchema<T>);
    if (!isInt(this.schema.version, 1))
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'record schema version must be an integer ≥ 1');
    keys.recordsDir(host);
  }

  async get(vmId: string): Promise<T | undefined> {
    const key = this.keys.record(this.host, vmId);
    for (let attempt = 0; ; attempt++) {
      const cached = attempt === 0 ? this.cache?.get(vmId) : undefined;
      const kv = cached !== undefined ? (cached ?? undefined) : (await this.client.range(key)).kvs[0];
      if (!kv) return undefined;
      const d = this.decode(vmId, key, kv);
      if (d.ok) return d.record;
      this.cache?.drop(vmId);
      if (await this.quarantine(vmId, key, kv, d.reason)) {
        throw new TapnetError(
          'ERR_STORE_CORRUPT',
          `VM record ${vmId} is unreadable (${d.reason}); moved to ${this.keys.quarantine(this.host, vmId)}`,
          {
            details: {
              vmId,
              path: key,
              quarantinedTo: this.keys.quarantine(this.host, vmId),
              reason: d.reason,
            },
          },
        );
      }
      if (attempt >= 2)
        throw new TapnetError('ERR_STORE', `VM record ${vmId} keeps changing while unreadable`, {
          details: { vmId, path: key },
        });
    }
  }

  /** Move an unreadable record aside, if it is still the one we read. */
  private async quarantine(vmId: string, key: string, kv: KeyValue, reason: string): Promise<boolean> {
    const r = await this.client.txn({
      compare: [{ key, target: 'MOD', number: kv.modRevision }],
      success: [
        {
          put: {
            key: this.keys.quarantine(this.host, vmId),
            value: JSON.stringify({ reason, text: kv.value, at: new Date().toISOString() }),
          },
        },
        { delete: { key } },
      ],
    });
    return r.succeeded;
  }

  private decode(vmId: string, key: string, kv: KeyValue): Decoded<T> {
    let raw: unknown;
    try {
      raw = JSON.parse(kv.value);
    } catch (e) {
      return { ok: false, reason: `not valid JSON: ${(e as Error).message}` };
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      return { ok: false, reason: 'not a JSON object' };
    const rec = raw as Record<string, unknown>;
    if (rec.vmId !== vmId) return { ok: false, reason: `vmId is ${JSON.stringify(rec.vmId)}, not the key's` };
    if (!isInt(rec.version, 1)) return { ok: false, reason: 'version is not an integer ≥ 1' };
    if (!RECORD_STATES.includes(rec.state as RecordState))
      return { ok: false, reason: 'state is not a known state' };
    rec.generation = kv.version; // the etcd version is the generation
    return applySchema(this.schema, rec, vmId, key);
  }

  /** Overlay operations that go with writing `record` (or with deleting it: `gone`). */
  private overlayOps(record: T, gone: boolean): TxnOp[] {
    const pub = this.publish?.(record);
    if (!pub) return [];
    const key = this.keys.overlayEntry(pub.network, this.host, record.vmId);
    if (gone || record.state !== 'ready' || pub.entry === undefined) return [{ delete: { key } }];
    return [{ put: { key, value: JSON.stringify(pub.entry) } }];
  }

  async put(input: RecordInput<T>, options: CasOptions = {}): Promise<T> {
    if (typeof input !== 'object' || input === null)
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'record must be an object');
    const vmId = validateVmId(input.vmId);
    if (!RECORD_STATES.includes(input.state)) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `record state ${JSON.stringify(input.state)} is not one of ${RECORD_STATES.join(', ')}`,
      );
    }
    const key = this.keys.record(this.host, vmId);
    let expected = options.expectedGeneration;
    if (expected !== undefined && !isInt(expected, 0))
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'expectedGeneration must be an integer ≥ 0');
    for (let attempt = 0; ; attempt++) {
      // Unconditional: compare with what is there now, and retry if it moved meanwhile.
      const cas = expected ?? (await this.client.range(key)).kvs[0]?.version ?? 0;
      const record: Record<string, unknown> = {
        vmId,
        version: this.schema.version,
        generation: cas + 1,
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
            { cause: e, details: { vmId } },
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
      let r: Awaited<ReturnType<EtcdClient['txn']>>;
      try {
        r = await this.client.txn({
          compare: [{ key, target: 'VERSION', number: cas }],
          success: [{ put: { key, value: text } }, ...this.overlayOps(stored, false)],
          failure: [{ range: { key } }],
        });
      } catch (e) {
        this.cache?.drop(vmId);
        // Sent but unanswered: it may have been applied. Look, and answer only what we know.
        if (isTapnetError(e, 'ERR_UNAVAILABLE') && e.details.ambiguous) {
          // Still unreachable: the write's outcome stays unknown, and the error says so (ambiguous).
          const now = (await this.client.range(key).catch(() => Promise.reject(e))).kvs[0];
          if (now && now.value === text) return stored;
          if ((now?.version ?? 0) === cas && attempt < 1) continue; // not applied: one more try
        }
        throw e;
      }
      if (r.succeeded) {
        this.cache?.update(vmId, {
          key,
          value: text,
          createRevision: cas === 0 ? r.revision : 0,
          modRevision: r.revision,
          version: cas + 1,
          lease: '0',
        });
        return stored;
      }
      const actual = r.responses[0]?.range?.kvs[0]?.version ?? 0;
      if (options.expectedGeneration === undefined && attempt < 5) {
        expected = undefined;
        continue;
      }
      throw new TapnetError(
        'ERR_CONFLICT',
        `VM record ${vmId} changed: expected generation ${cas}, found ${actual === 0 ? 'no record' : actual}`,
        {
          details: { vmId, expected: cas, actual },
        },
      );
    }
  }

  async delete(vmId: string, options: CasOptions = {}): Promise<boolean> {
    const key = this.keys.record(this.host, vmId);
    const expected = options.expectedGeneration;
    for (let attempt = 0; attempt < 5; attempt++) {
      const cached = attempt === 0 ? this.cache?.get(vmId) : undefined;
      const kv = cached !== undefined ? (cached ?? undefined) : (await this.client.range(key)).kvs[0];
      const actual = kv?.version ?? 0;
      if (expected !== undefined && expected !== actual) {
        throw new TapnetError(
          'ERR_CONFLICT',
          `VM record ${vmId} changed: expected generation ${expected}, found ${actual === 0 ? 'no record' : actual}`,
          {
            details: { vmId, expected, actual },
          },
        );
      }
      if (!kv) return false;
      let extra: TxnOp[] = [];
      const d = this.decode(vmId, key, kv);
      if (d.ok) extra = this.overlayOps(d.record, true);
      const r = await this.client.txn(
        {
          compare: [{ key, target: 'MOD', number: kv.modRevision }],
          success: [{ delete: { key } }, ...extra],
        },
        { idempotent: true },
      );
      if (r.succeeded) {
        this.cache?.update(vmId, null);
        return true;
      }
    }
    throw new TapnetError('ERR_CONFLICT', `VM record ${vmId} kept changing while being deleted`, {
      details: { vmId },
    });
  }

  async list(): Promise<{ records: T[]; problems: RecordProblem[] }> {
    const dir = this.keys.recordsDir(this.host);
    const records: T[] = [];
    const problems: RecordProblem[] = [];
    for (const kv of (await this.client.range(dir, { prefix: true })).kvs) {
      const vmId = kv.key.slice(dir.length);
      try {
        validateVmId(vmId);
      } catch {
        problems.push({
          vmId,
          error: new TapnetError('ERR_STORE_CORRUPT', `stray key ${kv.key} (not <VM ID>); left alone`, {
            details: { path: kv.key },
          }),
        });
        continue;
      }
      try {
        const d = this.decode(vmId, kv.key, kv);
        if (d.ok) {
          records.push(d.record);
          continue;
        }
        const r = await this.get(vmId); // quarantines and throws, unless it was rewritten meanwhile
        if (r) records.push(r);
      } catch (e) {
        if (!isTapnetError(e, 'ERR_STORE_CORRUPT', 'ERR_STORE')) throw e;
        problems.push({ vmId, error: e });
      }
    }
    await this.addQuarantined(records, problems);
    return { records, problems };
  }

  /** Quarantined records with no new record stay problems: their VM may still run. */
  private async addQuarantined(records: T[], problems: RecordProblem[]): Promise<void> {
    const known = new Set([...records.map((r) => r.vmId), ...problems.map((p) => p.vmId)]);
    const qdir = this.keys.quarantineDir(this.host);
    for (const kv of (await this.client.range(qdir, { prefix: true, keysOnly: true })).kvs) {
      const vmId = kv.key.slice(qdir.length);
      if (known.has(vmId)) continue;
      known.add(vmId);
      problems.push({
        vmId,
        error: new TapnetError(
          'ERR_STORE_CORRUPT',
          `VM record ${vmId} was quarantined to ${kv.key}; its VM may still exist: restore or delete the key`,
          {
            details: { vmId, quarantinedTo: kv.key },
          },
        ),
      });
    }
  }

  /**
   * Write the overlay entry of every ready record again (after this host left and rejoins, or after the
   * entries were withdrawn). Returns how many were written.
   */
  async republish(): Promise<number> {
    if (!this.publish) return 0;
    const { records } = await this.list();
    let n = 0;
    for (const r of records) {
      const ops = this.overlayOps(r, false);
      if (ops.length === 0) continue;
      await this.client.txn({
        compare: [{ key: this.keys.record(this.host, r.vmId), target: 'VERSION', number: r.generation }],
        success: ops,
      });
      n++;
    }
    return n;
  }
}
