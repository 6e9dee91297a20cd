/**
 * A small etcd v3 client over etcd's HTTP/JSON gateway (served by etcd itself on its client URL:
 * `/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`, `/v3/watch`, …; keys and values are base64, int64s
 * are decimal strings). node:http only: no dependency.
 *
 * Failures are classified before anything is retried:
 * - not sent (connection refused or unreachable, connect timeout, a socket that failed before the request
 *   was written out, "no leader"): retried on the next endpoint with exponential backoff, within the
 *   call's retry budget;
 * - ambiguous (timeout or reset after the request went out, even on a reused keep-alive socket, "request
 *   timed out"): retried only for
 *   idempotent calls; otherwise ERR_UNAVAILABLE with details.ambiguous = true, so the caller can verify;
 * - answers (etcd said no): ERR_STORE with details.grpcCode, never retried.
 * Out of budget, every call fails with ERR_UNAVAILABLE (retryable).
 */
import http from 'node:http';
import { TapnetError } from '../errors.js';
import {
  compareBody,
  decodeKv,
  decodeRange,
  enc,
  type Json,
  type KeyValue,
  num,
  opBody,
  prefixEndB64,
  type RangeOptions,
  type RangeResult,
  rangeBody,
  type TxnOpResult,
  type TxnRequest,
  type TxnResult,
} from './etcd-codec.js';
import { EtcdWatch, type WatchOptions } from './etcd-watch.js';

export {
  type Compare,
  decodeKv,
  type KeyValue,
  prefixEndB64,
  type RangeOptions,
  type RangeResult,
  type TxnOp,
  type TxnOpResult,
  type TxnRequest,
  type TxnResult,
} from './etcd-codec.js';

/** Options of an EtcdClient. */
export interface EtcdClientOptions {
  /** Client URLs, e.g. `http://198.18.100.10:2379`; tried in turn when one fails. */
  endpoints: string[];
  /** One attempt gives up after this long. Default 2,000 ms. */
  requestTimeoutMs?: number;
  /** All attempts of one call end after this long. Default 4,000 ms. */
  retryBudgetMs?: number;
  /** First backoff between attempts; doubled up to 1 s, with jitter. Default 25 ms. */
  backoffMs?: number;
  /** Keep-alive sockets per endpoint. Default 64. */
  maxSockets?: number;
}

/** Per-call options. */
export interface CallOptions {
  /** Safe to send twice (reads, claims that recognise their own earlier success). Default false. */
  idempotent?: boolean;
  /** Use the separate connections kept for lease keep-alives, which never queue behind other calls. */
  priority?: boolean;
}

/** How one attempt failed. */
interface AttemptFailure {
  ok: false;
  kind: 'unsent' | 'ambiguous' | 'answer';
  error: TapnetError;
}

type Attempt = { ok: true; json: Json } | AttemptFailure;

/** gRPC status codes the gateway passes on. */
const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE = 4;
const GRPC_EXHAUSTED = 8;

/** An etcd v3 client over the HTTP/JSON gateway. One per process is enough; close() it. */
export class EtcdClient {
  readonly endpoints: readonly URL[];
  private readonly agent: http.Agent;
  private readonly priorityAgent: http.Agent;
  private current = 0;
  private closed = false;
  /** When an answer last arrived (any call). */
  private lastProgress = Date.now();
  private readonly watches = new Set<EtcdWatch>();
  readonly requestTimeoutMs: number;
  readonly retryBudgetMs: number;
  private readonly backoffMs: number;

  constructor(options: EtcdClientOptions) {
    if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'etcd needs at least one endpoint (http://host:port)');
    }
    this.endpoints = options.endpoints.map((e) => {
      let u: URL;
      try {
        u = new URL(e);
      } catch {
        throw new TapnetError('ERR_INVALID_ARGUMENT', `etcd endpoint ${JSON.stringify(e)} is not a URL`, {
          details: { value: e },
        });
      }
      if (u.protocol !== 'http:' || u.pathname !== '/' || u.search || u.username) {
        throw new TapnetError(
          'ERR_INVALID_ARGUMENT',
          `etcd endpoint ${JSON.stringify(e)} must be http://host:port`,
          {
            details: { value: e },
          },
        );
      }
      return u;
    });
    this.requestTimeoutMs = options.requestTimeoutMs ?? 2_000;
    this.retryBudgetMs = options.retryBudgetMs ?? 4_000;
    this.backoffMs = options.backoffMs ?? 25;
    this.agent = new http.Agent({
      keepAlive: true,
      maxSockets: options.maxSockets ?? 64,
      keepAliveMsecs: 5_000,
    });
    this.priorityAgent = new http.Agent({ keepAlive: true, maxSockets: 4, keepAliveMsecs: 5_000 });
  }

  /** The endpoint calls go to now. */
  get endpoint(): URL {
    return this.endpoints[this.current]!;
  }

  /** Read one key or a range. `POST /v3/kv/range` (etcdctl get). */
  async range(key: string, options: RangeOptions = {}): Promise<RangeResult> {
    return decodeRange(await this.call('/v3/kv/range', rangeBody(key, options), { idempotent: true }));
  }

  /** Write a key. `POST /v3/kv/put` (etcdctl put). Returns the revision and the previous pair if asked. */
  async put(
    key: string,
    value: string,
    options: { lease?: string; prevKv?: boolean } & CallOptions = {},
  ): Promise<{ revision: number; prevKv?: KeyValue }> {
    const body: Json = { key: enc(key), value: enc(value) };
    if (options.lease && options.lease !== '0') body.lease = options.lease;
    if (options.prevKv) body.prev_kv = true;
    const r = await this.call('/v3/kv/put', body, { idempotent: options.idempotent ?? !options.prevKv });
    const out: { revision: number; prevKv?: KeyValue } = { revision: num((r.header as Json)?.revision) };
    if (r.prev_kv) out.prevKv = decodeKv(r.prev_kv);
    return out;
  }

  /** Delete a key or every key under a prefix. `POST /v3/kv/deleterange` (etcdctl del [--prefix]). */
  async delete(key: string, options: { prefix?: boolean } = {}): Promise<number> {
    const body: Json = { key: enc(key) };
    if (options.prefix) body.range_end = prefixEndB64(key);
    const r = await this.call('/v3/kv/deleterange', body, { idempotent: true });
    return num(r.deleted);
  }

  /** A transaction. `POST /v3/kv/txn` (etcdctl txn). */
  async txn(t: TxnRequest, options: CallOptions = {}): Promise<TxnResult> {
    const body: Json = { compare: t.compare.map(compareBody), success: t.success.map(opBody) };
    if (t.failure?.length) body.failure = t.failure.map(opBody);
    const r = await this.call('/v3/kv/txn', body, options);
    const responses = (Array.isArray(r.responses) ? r.responses : []).map((x: Json): TxnOpResult => {
      if (x.response_range) return { range: decodeRange(x.response_range as Json) };
      if (x.response_delete_range) {
        const d = x.response_delete_range as Json;
        return {
          deleted: num(d.deleted),
          prevKvs: Array.isArray(d.prev_kvs) ? d.prev_kvs.map(decodeKv) : [],
        };
      }
      if (x.response_put) {
        const p = x.response_put as Json;
        return p.prev_kv ? { prevKvs: [decodeKv(p.prev_kv)] } : {};
      }
      return {};
    });
    return { succeeded: r.succeeded === true, revision: num((r.header as Json)?.revision), responses };
  }

  /** Grant a lease of `ttl` seconds. `POST /v3/lease/grant` (etcdctl lease grant). ID as decimal text. */
  async leaseGrant(ttl: number): Promise<{ id: string; ttl: number }> {
    const r = await this.call('/v3/lease/grant', { TTL: String(ttl) }, { idempotent: true, priority: true });
    if (r.error) throw new TapnetError('ERR_STORE', `etcd refused a lease: ${String(r.error)}`);
    return { id: String(r.ID), ttl: num(r.TTL) };
  }

  /** Renew a lease once; returns its new TTL, 0 when it has expired. `POST /v3/lease/keepalive`. */
  async leaseKeepAlive(id: string): Promise<number> {
    const r = await this.call('/v3/lease/keepalive', { ID: id }, { idempotent: true, priority: true });
    const result = (r.result ?? r) as Json;
    return num(result.TTL);
  }

  /** Revoke a lease (its keys go with it); already gone is success. `POST /v3/lease/revoke`. */
  async leaseRevoke(id: string): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: id }, { idempotent: true, priority: true });
    } catch (e) {
      if (e instanceof TapnetError && e.details.grpcCode === 5) return; // lease not found
      throw e;
    }
  }

  /** Remaining and granted TTL of a lease (-1: expired or unknown). `POST /v3/lease/timetolive`. */
  async leaseTimeToLive(id: string): Promise<{ ttl: number; grantedTtl: number }> {
    const r = await this.call('/v3/lease/timetolive', { ID: id }, { idempotent: true, priority: true });
    return { ttl: r.TTL === undefined ? -1 : num(r.TTL), grantedTtl: num(r.grantedTTL) };
  }

  /** The member's status (version, leader, revision). `POST /v3/maintenance/status` (etcdctl endpoint status). */
  async status(): Promise<{ version: string; leader: string; revision: number }> {
    const r = await this.call('/v3/maintenance/status', {}, { idempotent: true });
    return {
      version: String(r.version ?? ''),
      leader: String(r.leader ?? ''),
      revision: num((r.header as Json)?.revision),
    };
  }

  /** Watch a key or prefix, reconnecting with backoff (see EtcdWatch). `POST /v3/watch` (etcdctl watch). */
  watch(key: string, options: WatchOptions): EtcdWatch {
    this.check();
    const w = new EtcdWatch(
      { endpoint: () => this.endpoint, rotate: (failed) => this.rotate(failed), backoffMs: this.backoffMs },
      { key: enc(key), ...(options.prefix ? { rangeEnd: prefixEndB64(key) } : {}) },
      options,
      () => this.watches.delete(w),
    );
    this.watches.add(w);
    return w;
  }

  /** Close every socket and watch. Calls after close() fail with ERR_INTERNAL. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    this.agent.destroy();
    this.priorityAgent.destroy();
  }

  private check(): void {
    if (this.closed) throw new TapnetError('ERR_INTERNAL', 'the etcd client is closed');
  }

  /**
   * Move on from `failed` (default: the current endpoint) to the next one. Only when `failed` is still
   * the current endpoint: calls that failed together on one member move the client once, not once each
   * (which could carry it round to the dead member again).
   */
  private rotate(failed: URL = this.endpoint): void {
    if (this.endpoint === failed) this.current = (this.current + 1) % this.endpoints.length;
  }

  /** POST `body` to `path`, retrying what may be retried within the budget. */
  async call(path: string, body: Json, options: CallOptions = {}): Promise<Json> {
    this.check();
    const deadline = Date.now() + this.retryBudgetMs;
    let delay = this.backoffMs;
    let last: TapnetError | undefined;
    for (;;) {
      const ep = this.endpoint;
      const f = await this.once(ep, path, body, options.priority ? this.priorityAgent : this.agent);
      if (f.ok) return f.json;
      if (f.kind === 'answer') throw f.error;
      last = f.error;
      if (f.kind === 'ambiguous' && !options.idempotent) throw f.error;
      this.rotate(ep);
      const wait = Math.min(delay, 1_000) * (0.5 + Math.random() / 2);
      if (this.closed || Date.now() + wait >= deadline) break;
      await new Promise((r) => setTimeout(r, wait));
      delay *= 2;
    }
    throw new TapnetError(
      'ERR_UNAVAILABLE',
      `etcd cannot be reached (${last?.message ?? 'no attempt'}); retry later`,
      {
        cause: last,
        details: {
          ...last?.details,
          endpoints: this.endpoints.map((u) => u.origin),
          budgetMs: this.retryBudgetMs,
        },
      },
    );
  }

  private once(ep: URL, path: string, body: Json, agent: http.Agent): Promise<Attempt> {
    return new Promise((resolve) => {
      const data = JSON.stringify(body);
      let sent = false;
      let settled = false;
      const where = { endpoint: ep.origin, path };
      const fail = (
        kind: 'unsent' | 'ambiguous',
        message: string,
        extra: Record<string, unknown> = {},
      ): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        const details = { ...where, ...extra, ...(kind === 'ambiguous' ? { ambiguous: true } : {}) };
        resolve({
          ok: false,
          kind,
          error: new TapnetError('ERR_UNAVAILABLE', `etcd ${ep.origin}${path}: ${message}`, { details }),
        });
      };
      const req = http.request(
        {
          host: ep.hostname,
          port: ep.port || 2379,
          path,
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', () => fail('ambiguous', 'the answer was cut off'));
          res.on('end', () => {
            if (settled) return;
            settled = true;
            this.lastProgress = Date.now();
            clearTimeout(timer);
            let json: Json;
            try {
              json = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Json;
            } catch {
              resolve({
                ok: false,
                kind: 'ambiguous',
                error: new TapnetError('ERR_UNAVAILABLE', `etcd ${ep.origin}${path}: unreadable answer`, {
                  details: { ...where, ambiguous: true },
                }),
              });
              return;
            }
            if (res.statusCode === 200 && !json.error) resolve({ ok: true, json });
            else resolve(this.answerError(res.statusCode ?? 0, json, where));
          });
        },
      );
      // Waiting for a pooled socket is not waiting for etcd: that wait fails only when no call has
      // made progress for a whole request timeout (etcd stuck), not because this process is busy.
      // A timer that fires looks once more after the poll phase: a starved event loop may hold the answer.
      const expire = (kind: () => 'unsent' | 'ambiguous', message: string): void =>
        void setImmediate(() => {
          if (!settled) fail(kind(), message);
        });
      const waitSocket = (): NodeJS.Timeout =>
        setTimeout(() => {
          if (Date.now() - this.lastProgress < this.requestTimeoutMs) timer = waitSocket();
          else
            expire(() => 'unsent', `no connection to etcd made progress within ${this.requestTimeoutMs} ms`);
        }, this.requestTimeoutMs);
      let timer = waitSocket();
      req.on('socket', () => {
        clearTimeout(timer);
        timer = setTimeout(
          () => expire(() => (sent ? 'ambiguous' : 'unsent'), `no answer within ${this.requestTimeoutMs} ms`),
          this.requestTimeoutMs,
        );
      });
      req.on('finish', () => {
        sent = true;
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        const code = e.code ?? '';
        const beforeConnect = [
          'ECONNREFUSED',
          'EHOSTUNREACH',
          'ENETUNREACH',
          'EADDRNOTAVAIL',
          'ENOTFOUND',
        ].includes(code);
        // A reset of a reused keep-alive socket is not proof that the request never arrived: etcd killed
        // (or restarted) after reading it resets the socket in the same way, with the write applied. So
        // once the request was written out, the outcome is unknown, as for any reset (etcd does not
        // close idle client connections, so the benign idle race of HTTP keep-alive does not arise).
        fail(beforeConnect || !sent ? 'unsent' : 'ambiguous', `${code || 'error'}: ${e.message}`, {
          errno: code,
        });
      });
      req.end(data);
    });
  }

  private answerError(status: number, json: Json, where: Record<string, unknown>): AttemptFailure {
    const err = (typeof json.error === 'object' && json.error !== null ? json.error : json) as Json;
    const message = String(err.message ?? err.error ?? `HTTP ${status}`);
    const grpcCode = num(err.code);
    const details = { ...where, grpcCode, httpStatus: status, etcdMessage: message };
    if (
      grpcCode === GRPC_UNAVAILABLE ||
      grpcCode === GRPC_DEADLINE ||
      grpcCode === GRPC_EXHAUSTED ||
      status === 503
    ) {
      // "no leader" and "too many requests" were refused before being proposed; a timeout may have committed.
      const unsent = /no leader|not capable|too many requests|leader changed/i.test(message);
      return {
        ok: false,
        kind: unsent ? 'unsent' : 'ambiguous',
        error: new TapnetError('ERR_UNAVAILABLE', `etcd: ${message}`, {
          details: unsent ? details : { ...details, ambiguous: true },
        }),
      };
    }
    return {
      ok: false,
      kind: 'answer',
      error: new TapnetError('ERR_STORE', `etcd refused the request: ${message}`, { details }),
    };
  }
}
