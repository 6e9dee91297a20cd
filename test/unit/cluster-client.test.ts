/**
 * The etcd client against a fake HTTP/JSON gateway on 127.0.0.1: base64 decoding, which failures are
 * retried (not sent / "no leader": always; sent but unanswered: only idempotent calls), answers that are
 * never retried, endpoint rotation, the retry budget, and a watch that resumes after its stream ends.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { EtcdClient, prefixEndB64 } from '../../src/cluster/etcd-client.js';
import type { WatchEvent } from '../../src/cluster/etcd-watch.js';
import { isTapnetError } from '../../src/errors.js';

type Handler = (path: string, body: Record<string, unknown>, res: http.ServerResponse) => void;

const b64 = (s: string) => Buffer.from(s).toString('base64');
const servers: http.Server[] = [];

/** A fake gateway; `handler` answers each request. Returns its URL and the requests it saw. */
async function fake(
  handler: Handler,
): Promise<{ url: string; seen: Array<{ path: string; body: Record<string, unknown> }> }> {
  const seen: Array<{ path: string; body: Record<string, unknown> }> = [];
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => {
      data += c;
    });
    req.on('end', () => {
      const body = JSON.parse(data || '{}') as Record<string, unknown>;
      seen.push({ path: req.url!, body });
      handler(req.url!, body, res);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

const json = (res: http.ServerResponse, status: number, o: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(o));
};
const grpcError = (res: http.ServerResponse, status: number, code: number, message: string): void =>
  json(res, status, { error: message, code, message });

describe('etcd client (fake gateway)', () => {
  after(() => {
    for (const s of servers) s.close();
  });

  it('decodes base64 keys and values and int64 strings; prefix ranges end one past the prefix', async () => {
    const f = await fake((_p, _b, res) =>
      json(res, 200, {
        header: { revision: '42' },
        kvs: [
          { key: b64('/t/a'), value: b64('{"x":1}'), create_revision: '7', mod_revision: '9', version: '3' },
        ],
        count: '1',
      }),
    );
    const c = new EtcdClient({ endpoints: [f.url] });
    const r = await c.range('/t/', { prefix: true });
    c.close();
    assert.deepEqual(r.kvs[0], {
      key: '/t/a',
      value: '{"x":1}',
      createRevision: 7,
      modRevision: 9,
      version: 3,
      lease: '0',
    });
    assert.equal(r.revision, 42);
    assert.equal(f.seen[0]!.body.range_end, b64('/t0'));
    assert.equal(prefixEndB64('/t/'), b64('/t0'));
  });

  it('retries "no leader" (never applied) even for a write, and not a timeout answer of a write', async () => {
    let n = 0;
    const f = await fake((_p, _b, res) =>
      ++n <= 2
        ? grpcError(res, 503, 14, 'etcdserver: no leader')
        : json(res, 200, { header: { revision: '5' }, succeeded: true }),
    );
    const c = new EtcdClient({ endpoints: [f.url], backoffMs: 1 });
    const r = await c.txn({ compare: [], success: [{ put: { key: 'k', value: 'v' } }] });
    assert.equal(r.succeeded, true);
    assert.equal(n, 3);
    let m = 0;
    const g = await fake((_p, _b, res) => {
      m++;
      grpcError(res, 503, 14, 'etcdserver: request timed out');
    });
    const c2 = new EtcdClient({ endpoints: [g.url], backoffMs: 1, retryBudgetMs: 300 });
    await assert.rejects(
      c2.txn({ compare: [], success: [] }),
      (e) => isTapnetError(e, 'ERR_UNAVAILABLE') && e.details.ambiguous === true,
    );
    assert.equal(m, 1, 'a write that may have been applied is not sent again');
    await assert.rejects(c2.txn({ compare: [], success: [] }, { idempotent: true }), (e) =>
      isTapnetError(e, 'ERR_UNAVAILABLE'),
    );
    assert.ok(m > 2, 'an idempotent one is');
    c.close();
    c2.close();
  });

  it('an answer (etcd said no) is ERR_STORE with the gRPC code, never retried', async () => {
    const f = await fake((_p, _b, res) =>
      grpcError(res, 400, 3, 'etcdserver: too many operations in txn request'),
    );
    const c = new EtcdClient({ endpoints: [f.url] });
    await assert.rejects(c.range('k'), (e) => isTapnetError(e, 'ERR_STORE') && e.details.grpcCode === 3);
    assert.equal(f.seen.length, 1);
    c.close();
  });

  it('rotates to the next endpoint when one refuses connections; fails within the budget when all do', async () => {
    const dead = await fake(() => undefined);
    const deadUrl = dead.url;
    servers.pop()!.close();
    const f = await fake((_p, _b, res) => json(res, 200, { header: { revision: '1' } }));
    const c = new EtcdClient({ endpoints: [deadUrl, f.url], backoffMs: 1 });
    await c.range('k');
    assert.equal(c.endpoint.origin, f.url);
    c.close();
    const c2 = new EtcdClient({ endpoints: [deadUrl], backoffMs: 5, retryBudgetMs: 200 });
    const t0 = Date.now();
    await assert.rejects(
      c2.put('k', 'v'),
      (e) => isTapnetError(e, 'ERR_UNAVAILABLE') && Array.isArray(e.details.endpoints),
    );
    assert.ok(Date.now() - t0 < 1_000);
    c2.close();
  });

  it('calls failing together on one member move the client on once, not round to that member again', async () => {
    const sick = await fake((_p, _b, res) => grpcError(res, 503, 14, 'etcdserver: no leader'));
    const well = await fake((_p, _b, res) => json(res, 200, { header: { revision: '1' } }));
    const c = new EtcdClient({ endpoints: [sick.url, well.url], backoffMs: 20 });
    await Promise.all(Array.from({ length: 6 }, () => c.range('k')));
    assert.equal(sick.seen.length, 6, 'each call tried the sick member once, then stayed on the well one');
    assert.equal(well.seen.length, 6);
    assert.equal(c.endpoint.origin, well.url);
    c.close();
  });

  it('a request that is never answered: ambiguous for writes after the timeout', async () => {
    const f = await fake(() => undefined);
    const c = new EtcdClient({ endpoints: [f.url], requestTimeoutMs: 100, retryBudgetMs: 250, backoffMs: 1 });
    await assert.rejects(
      c.put('k', 'v', { prevKv: true }),
      (e) => isTapnetError(e, 'ERR_UNAVAILABLE') && e.details.ambiguous === true,
    );
    const before = f.seen.length;
    await assert.rejects(c.range('k'), (e) => isTapnetError(e, 'ERR_UNAVAILABLE'));
    assert.ok(f.seen.length - before >= 2, 'reads are tried again');
    c.close();
  });

  it('a keep-alive connection reset after a write went out is ambiguous: the write is not sent again', async () => {
    // etcd killed after reading (and applying) a write resets the connection just as an idle close does.
    let writes = 0;
    const f = await fake((p, _b, res) => {
      if (p === '/v3/kv/range') return json(res, 200, { header: { revision: '1' } });
      writes++;
      res.socket!.destroy();
    });
    const c = new EtcdClient({ endpoints: [f.url], backoffMs: 1, retryBudgetMs: 300 });
    await c.range('k'); // leaves a keep-alive socket for the write to reuse
    await assert.rejects(
      c.txn({ compare: [], success: [{ put: { key: 'k', value: 'v' } }] }),
      (e) => isTapnetError(e, 'ERR_UNAVAILABLE') && e.details.ambiguous === true,
    );
    assert.equal(writes, 1, 'a write that may have been applied is not sent again');
    c.close();
  });

  it('refuses endpoints that are not http://host:port', () => {
    assert.throws(
      () => new EtcdClient({ endpoints: [] }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => new EtcdClient({ endpoints: ['https://x:2379'] }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => new EtcdClient({ endpoints: ['http://x:2379/v3'] }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });

  it('a watch resumes after its stream ends, from the revision after the last event', async () => {
    let conn = 0;
    const f = await fake((_p, _b, res) => {
      conn++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ result: { header: { revision: '10' }, created: true } })}\n`);
      if (conn === 1) {
        const ev = (k: string, rev: number) => ({
          kv: {
            key: b64(k),
            value: b64('v'),
            mod_revision: String(rev),
            create_revision: String(rev),
            version: '1',
          },
        });
        res.write(
          `${JSON.stringify({ result: { header: { revision: '12' }, events: [ev('/w/a', 11), ev('/w/b', 12)] } })}\n`,
        );
        res.end();
      } else {
        res.write(
          `${JSON.stringify({ result: { header: { revision: '13' }, events: [{ type: 'DELETE', kv: { key: b64('/w/a'), mod_revision: '13' } }] } })}\n`,
        );
      }
    });
    const c = new EtcdClient({ endpoints: [f.url], backoffMs: 5 });
    const seen: WatchEvent[] = [];
    const w = c.watch('/w/', { prefix: true, onEvents: (ev) => void seen.push(...ev) });
    await w.ready;
    for (let i = 0; i < 100 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    c.close();
    assert.deepEqual(
      seen.map((e) => `${e.type} ${e.kv.key}`),
      ['put /w/a', 'put /w/b', 'delete /w/a'],
    );
    const creates = f.seen.map((s) => (s.body.create_request as Record<string, unknown>).start_revision);
    assert.deepEqual(creates.slice(0, 2), [undefined, '13']);
    assert.equal(w.reconnects, 1);
  });
});
