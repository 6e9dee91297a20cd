/**
 * Fuzzing the daemon's HTTP API through its public entry point (Daemon.start over a fake service, on a
 * Unix socket in a temp dir): random methods, paths with hostile and percent-encoded VM ids, content
 * types, bodies of every wrong type, giant and deeply nested JSON. Every answer is a status < 500 except
 * what the service itself throws, with `{code, message}` whose code is in the error table; the daemon
 * never crashes, never leaves a request hanging, and no promise is left rejected.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { validateBody } from '../../src/daemon/http.js';
import { ensureBodySchema } from '../../src/daemon/schemas.js';
import { ERROR_CODES, isTapnetError } from '../../src/errors.js';
import { deepJson, HOSTILE_IDS, WRONG_TYPES } from '../torture/corpus.js';
import { type FakeDaemon, startFakeDaemon } from './api-fake.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

interface Answer {
  status: number;
  body: string;
}

function send(
  socket: string,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
): Promise<Answer> {
  // A body always goes with its length: Node's client sends a GET body unframed otherwise.
  const h = body !== undefined ? { ...headers, 'content-length': String(Buffer.byteLength(body)) } : headers;
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: h, timeout: 10_000 }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      // The server may close early on a body it refused (413): that is an answer, not a hang.
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET')
        resolve({ status: 413, body: '{"code":"ERR_INVALID_ARGUMENT","message":"closed"}' });
      else reject(e);
    });
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

function checkAnswer(a: Answer, what: string): void {
  assert.ok(a.status >= 200 && a.status < 600, `${what}: status ${a.status}`);
  assert.notEqual(a.status, 500, `${what}: 500 ${a.body.slice(0, 300)}`);
  if (a.status >= 400) {
    const b = JSON.parse(a.body) as { code?: string; message?: string };
    assert.ok(b.code && b.code in ERROR_CODES, `${what}: error body ${a.body.slice(0, 300)}`);
    assert.equal(typeof b.message, 'string');
    assert.ok(!/\n\s+at /.test(a.body), `${what}: a stack trace leaked`);
  }
}

describe('fuzz: HTTP API bodies and paths', () => {
  let f: FakeDaemon;
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  before(async () => {
    process.on('unhandledRejection', onRejection);
    f = await startFakeDaemon();
  });
  after(async () => {
    process.off('unhandledRejection', onRejection);
    await f?.stop();
  });

  it('random requests: typed errors, no 500, no hang, no unhandled rejection', {
    timeout: 120_000,
  }, async () => {
    const segment = fc.oneof(
      fc.constantFrom(
        ...HOSTILE_IDS.map((s) => encodeURIComponent(s)),
        'vm-1',
        '%',
        '%zz',
        '..%2F..%2Fetc',
        '%2e%2e',
        'a%00b',
        '%C0%AE%C0%AE',
        '.',
      ),
      fc.string({ maxLength: 20 }).map(encodeURIComponent),
    );
    const bodyArb = fc.oneof(
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null'),
      fc
        .record(
          {
            network: fc.oneof(fc.constantFrom(...HOSTILE_IDS), fc.jsonValue()),
            ipv4: fc.oneof(
              fc.constantFrom('198.18.0.5', '198.18.0.5/24', '999.1.1.1', '::1', ''),
              fc.jsonValue(),
            ),
            ipv6: fc.jsonValue(),
            mac: fc.oneof(
              fc.constantFrom('02:00:00:00:00:01', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', 'zz'),
              fc.jsonValue(),
            ),
            tap: fc.constantFrom('persistent', 'fd', 'x', 1),
            tapUid: fc.oneof(fc.integer(), fc.double(), fc.jsonValue()),
            queues: fc.oneof(fc.integer({ min: -1, max: 300 }), fc.jsonValue()),
            vnetHdr: fc.jsonValue(),
            extra: fc.jsonValue(),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'),
        fc.constantFrom('/v1/vms/', '/v1/vms/', '/v1/', '/'),
        segment,
        fc.constantFrom('', '/stats', '/tap-fd', '/x'),
        fc.option(bodyArb),
        fc.constantFrom(
          'application/json',
          'application/json; charset=utf-8',
          'text/plain',
          '',
          'APPLICATION/JSON',
        ),
        async (method, prefix, seg, suffix, body, type) => {
          const path = `${prefix}${seg}${suffix}`;
          const a = await send(
            f.socket,
            method,
            path,
            body ?? undefined,
            type ? { 'content-type': type } : {},
          );
          if (method !== 'HEAD') checkAnswer(a, `${method} ${path}`);
        },
      ),
      { numRuns: RUNS },
    );
    assert.deepEqual(rejections, []);
  });

  it('hostile bodies: giant, deeply nested, wrong types, wrong content type: 400/413/415', {
    timeout: 60_000,
  }, async () => {
    const bodies: [string, string | Buffer][] = [
      ['giant', JSON.stringify({ network: 'x'.repeat(2 << 20) })],
      ['deep array', deepJson(200_000)],
      ['deep object', `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`],
      ['NUL', '{"network":"a\u0000b"}'],
      ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
      ['proto pollution', '{"__proto__":{"tap":"fd"},"constructor":{"prototype":{"x":1}}}'],
      ['duplicate keys', '{"tap":"persistent","tap":"fd"}'],
      ...WRONG_TYPES.map((v): [string, string] => [`wrong type ${JSON.stringify(v)}`, JSON.stringify(v)]),
    ];
    for (const [what, body] of bodies) {
      const a = await send(f.socket, 'PUT', '/v1/vms/vm-fuzz', body, { 'content-type': 'application/json' });
      checkAnswer(a, what);
    }
    const wrongType = await send(f.socket, 'PUT', '/v1/vms/vm-fuzz', '{}', { 'content-type': 'text/yaml' });
    assert.equal(wrongType.status, 415);
    assert.deepEqual(rejections, []);
    assert.equal((await send(f.socket, 'GET', '/healthz')).status, 200, 'the daemon still answers');
  });

  it('validateBody: every input is the parsed body or ERR_INVALID_ARGUMENT', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        try {
          validateBody(ensureBodySchema, v);
        } catch (e) {
          assert.ok(isTapnetError(e, 'ERR_INVALID_ARGUMENT'), String(e));
        }
      }),
      { numRuns: RUNS },
    );
  });
});
