/**
 * The etcd v3 HTTP/JSON gateway's wire format, as tapnet uses it: the request bodies of range, put,
 * delete and transactions, and the decoding of answers (keys and values are base64, int64s are decimal
 * strings, and proto3 leaves out false and zero). Pure.
 */

/** A key-value pair as etcd stores it (text keys and values). */
export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  /** Writes since creation: 1 after the first put. */
  version: number;
  /** The lease the key is attached to ('0': none). */
  lease: string;
}

/** Options of a range read. */
export interface RangeOptions {
  /** Every key starting with `key`. */
  prefix?: boolean;
  limit?: number;
  /** Served by the member without a quorum round (may be slightly stale). */
  serializable?: boolean;
  keysOnly?: boolean;
  countOnly?: boolean;
  sort?: { target: 'KEY' | 'CREATE' | 'MOD' | 'VERSION'; order: 'ASCEND' | 'DESCEND' };
  maxCreateRevision?: number;
}

/** The answer to a range read. */
export interface RangeResult {
  kvs: KeyValue[];
  count: number;
  more: boolean;
  /** The store revision the read saw. */
  revision: number;
}

/** One comparison of a transaction. */
export interface Compare {
  key: string;
  target: 'CREATE' | 'MOD' | 'VERSION' | 'VALUE';
  result?: 'EQUAL' | 'NOT_EQUAL' | 'GREATER' | 'LESS';
  /** The revision or version to compare with (CREATE/MOD/VERSION). */
  number?: number;
  /** The value to compare with (VALUE). */
  value?: string;
}

/** One operation of a transaction. */
export type TxnOp =
  | { put: { key: string; value: string; lease?: string; prevKv?: boolean } }
  | { range: { key: string } & RangeOptions }
  | { delete: { key: string; prefix?: boolean; prevKv?: boolean } };

/** A transaction: if every compare holds, `success` runs, else `failure`. */
export interface TxnRequest {
  compare: Compare[];
  success: TxnOp[];
  failure?: TxnOp[];
}

/** The answer of one transaction operation (only what tapnet reads). */
export interface TxnOpResult {
  range?: RangeResult;
  deleted?: number;
  prevKvs?: KeyValue[];
}

/** The answer to a transaction. */
export interface TxnResult {
  succeeded: boolean;
  revision: number;
  responses: TxnOpResult[];
}

/** A JSON object as the gateway sends and takes it. */
export type Json = Record<string, unknown>;

/** Text → base64, as the gateway wants keys and values. */
export const enc = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
/** base64 → text. */
export const dec = (s: unknown): string =>
  typeof s === 'string' ? Buffer.from(s, 'base64').toString('utf8') : '';
/** An int64 the gateway sent as a decimal string. */
export const num = (v: unknown): number => (v === undefined || v === null ? 0 : Number(v));

/** The exclusive end of the range of keys starting with `prefix` (clientv3.GetPrefixRangeEnd), base64. */
export function prefixEndB64(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const out = Buffer.from(b.subarray(0, i + 1));
      out[i]! += 1;
      return out.toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

/** Decode a gateway key-value object. */
export function decodeKv(o: unknown): KeyValue {
  const kv = (o ?? {}) as Json;
  return {
    key: dec(kv.key),
    value: dec(kv.value),
    createRevision: num(kv.create_revision),
    modRevision: num(kv.mod_revision),
    version: num(kv.version),
    lease: String(kv.lease ?? '0'),
  };
}

export function rangeBody(key: string, o: RangeOptions): Json {
  const body: Json = { key: enc(key) };
  if (o.prefix) body.range_end = prefixEndB64(key);
  if (o.limit !== undefined) body.limit = String(o.limit);
  if (o.serializable) body.serializable = true;
  if (o.keysOnly) body.keys_only = true;
  if (o.countOnly) body.count_only = true;
  if (o.sort) {
    body.sort_target = o.sort.target;
    body.sort_order = o.sort.order;
  }
  if (o.maxCreateRevision !== undefined) body.max_create_revision = String(o.maxCreateRevision);
  return body;
}

export function decodeRange(r: Json): RangeResult {
  const header = (r.header ?? {}) as Json;
  const kvs = Array.isArray(r.kvs) ? r.kvs.map(decodeKv) : [];
  return { kvs, count: num(r.count), more: r.more === true, revision: num(header.revision) };
}

export function opBody(op: TxnOp): Json {
  if ('put' in op) {
    const p: Json = { key: enc(op.put.key), value: enc(op.put.value) };
    if (op.put.lease && op.put.lease !== '0') p.lease = op.put.lease;
    if (op.put.prevKv) p.prev_kv = true;
    return { request_put: p };
  }
  if ('range' in op) return { request_range: rangeBody(op.range.key, op.range) };
  const d: Json = { key: enc(op.delete.key) };
  if (op.delete.prefix) d.range_end = prefixEndB64(op.delete.key);
  if (op.delete.prevKv) d.prev_kv = true;
  return { request_delete_range: d };
}

export function compareBody(c: Compare): Json {
  const body: Json = { key: enc(c.key), target: c.target, result: c.result ?? 'EQUAL' };
  if (c.target === 'CREATE') body.create_revision = String(c.number ?? 0);
  else if (c.target === 'MOD') body.mod_revision = String(c.number ?? 0);
  else if (c.target === 'VERSION') body.version = String(c.number ?? 0);
  else body.value = enc(c.value ?? '');
  return body;
}
