/**
 * One etcd watch over the HTTP/JSON gateway (`POST /v3/watch`: a long response of one JSON object per
 * line), kept alive across etcd restarts and lost connections: it reconnects with backoff and resumes at
 * the revision after the last event it received, so no event is lost or repeated. When the history it
 * needs was compacted away, it asks its owner to reload (onResync) and goes on from there.
 */
import http from 'node:http';
import { TapnetError } from '../errors.js';
import { decodeKv, type KeyValue } from './etcd-codec.js';

/** One change seen by a watch. */
export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
  /** The pair before the change (when the watch asked for prevKv). */
  prevKv?: KeyValue;
}

/** What to watch and whom to tell. */
export interface WatchOptions {
  /** Every key under `key`. */
  prefix?: boolean;
  /** Deliver changes from this revision on (default: those after the watch is created). */
  startRevision?: number;
  prevKv?: boolean;
  /** Each batch of events, in order; a returned promise is awaited before the next batch. */
  onEvents(events: WatchEvent[], revision: number): void | Promise<void>;
  /**
   * The history needed to resume was compacted: reload the watched range and return the revision the
   * reload saw; the watch goes on after it. Without it, the watch resumes at the compaction point.
   */
  onResync?(): Promise<number>;
  /** Connected (created on the server), or disconnected (after every failed or lost connection, with why). */
  onState?(state: 'connected' | 'disconnected', error?: TapnetError): void;
}

/** How a watch reaches etcd (the client's endpoint rotation). */
export interface WatchTransport {
  endpoint(): URL;
  /** Move on from `failed`, if the client is still on it. */
  rotate(failed?: URL): void;
  backoffMs: number;
}

type Json = Record<string, unknown>;

/** A running watch. Get one from EtcdClient.watch(); close() it. */
export class EtcdWatch {
  /** Resolves when the server first confirmed the watch (rejects never; see onState for errors). */
  readonly ready: Promise<void>;
  private resolveReady!: () => void;
  private req: http.ClientRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** The endpoint of the current (or last) connection. */
  private endpoint: URL | undefined;
  /** The revision to resume from (undefined until the first creation without startRevision). */
  private nextRev: number | undefined;
  private queue: Promise<void> = Promise.resolve();
  private delay: number;
  /** Whether the server has confirmed the current connection. */
  connected = false;
  /** Events delivered so far (for status and tests). */
  eventCount = 0;
  /** Reconnections so far. */
  reconnects = 0;

  constructor(
    private readonly transport: WatchTransport,
    private readonly range: { key: string; rangeEnd?: string },
    private readonly options: WatchOptions,
    private readonly onClose: () => void,
  ) {
    this.ready = new Promise((r) => {
      this.resolveReady = r;
    });
    this.nextRev = options.startRevision;
    this.delay = transport.backoffMs;
    this.connect();
  }

  /** The last revision this watch has seen (0 before it was created). */
  get revision(): number {
    return (this.nextRev ?? 1) - 1;
  }

  /** Stop watching. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.req?.destroy();
    this.onClose();
  }

  /** Wait until every batch received so far has been handled. */
  drain(): Promise<void> {
    return this.queue;
  }

  private connect(): void {
    if (this.closed) return;
    const ep = this.transport.endpoint();
    this.endpoint = ep;
    const create: Json = { key: this.range.key };
    if (this.range.rangeEnd) create.range_end = this.range.rangeEnd;
    if (this.nextRev !== undefined) create.start_revision = String(this.nextRev);
    if (this.options.prevKv) create.prev_kv = true;
    const data = JSON.stringify({ create_request: create });
    let buf = '';
    let ended = false;
    const lost = (why: string): void => {
      if (ended) return;
      ended = true;
      req.destroy();
      this.disconnected(
        new TapnetError('ERR_UNAVAILABLE', `etcd watch on ${ep.origin}: ${why}`, {
          details: { endpoint: ep.origin },
        }),
      );
    };
    const quiet = (): void => {
      ended = true;
      req.destroy();
    };
    const req = http.request(
      {
        host: ep.hostname,
        port: ep.port || 2379,
        path: '/v3/watch',
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          lost(`HTTP ${res.statusCode}`);
          return;
        }
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line && !ended && this.onLine(line, lost, quiet) === 'stop') return;
          }
        });
        res.on('end', () => lost('the stream ended'));
        res.on('error', (e) => lost(e.message));
      },
    );
    req.on('socket', (s) => s.setKeepAlive(true, 2_000));
    req.on('error', (e: NodeJS.ErrnoException) => lost(`${e.code ?? 'error'}: ${e.message}`));
    this.req = req;
    req.end(data);
  }

  /** Handle one response line; 'stop' when the connection is being replaced. */
  private onLine(line: string, lost: (why: string) => void, quiet: () => void): 'go' | 'stop' {
    let msg: Json;
    try {
      msg = JSON.parse(line) as Json;
    } catch {
      lost('unreadable watch response');
      return 'stop';
    }
    if (msg.error) {
      lost(String((msg.error as Json).message ?? 'watch error'));
      return 'stop';
    }
    const r = (msg.result ?? {}) as Json;
    const revision = Number((r.header as Json | undefined)?.revision ?? 0);
    if (r.created) {
      if (this.nextRev === undefined) this.nextRev = revision + 1;
      this.connected = true;
      this.delay = this.transport.backoffMs;
      this.options.onState?.('connected');
      this.resolveReady();
    }
    const compacted = Number(r.compact_revision ?? 0);
    if (r.canceled || compacted > 0) {
      if (compacted > 0) {
        quiet();
        this.resync(compacted);
      } else lost(`watch canceled: ${String(r.cancel_reason ?? 'no reason given')}`);
      return 'stop';
    }
    const raw = Array.isArray(r.events) ? (r.events as Json[]) : [];
    if (raw.length === 0) return 'go';
    const events: WatchEvent[] = raw.map((e) => {
      const ev: WatchEvent = { type: e.type === 'DELETE' ? 'delete' : 'put', kv: decodeKv(e.kv) };
      if (e.prev_kv) ev.prevKv = decodeKv(e.prev_kv);
      return ev;
    });
    this.nextRev = Math.max(this.nextRev ?? 0, events[events.length - 1]!.kv.modRevision + 1);
    this.eventCount += events.length;
    this.queue = this.queue
      .then(() => this.options.onEvents(events, revision))
      .catch((e: unknown) => {
        this.options.onState?.(
          'disconnected',
          new TapnetError('ERR_INTERNAL', `watch handler failed: ${String(e)}`, { cause: e }),
        );
      });
    return 'go';
  }

  private resync(compacted: number): void {
    const run = async (): Promise<void> => {
      await this.queue;
      if (this.options.onResync) this.nextRev = (await this.options.onResync()) + 1;
      else this.nextRev = compacted;
    };
    this.queue = run().then(
      () => this.connect(),
      (e: unknown) => {
        this.disconnected(
          new TapnetError('ERR_UNAVAILABLE', `watch resync failed: ${String(e)}`, { cause: e }),
        );
      },
    );
  }

  private disconnected(error: TapnetError): void {
    if (this.closed) return;
    this.connected = false;
    this.options.onState?.('disconnected', error);
    this.transport.rotate(this.endpoint);
    const wait = Math.min(this.delay, 2_000) * (0.5 + Math.random() / 2);
    this.delay *= 2;
    this.reconnects++;
    this.timer = setTimeout(() => this.connect(), wait);
  }
}
