/**
 * Every route of the API over a real Unix socket, with a fake service: status codes, bodies, validation,
 * errors as {code, message} without stack traces, one log line per operation, concurrent clients.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DaemonClient } from '../../src/daemon/client.js';
import { TapnetError } from '../../src/errors.js';
import { request } from '../e2e/api-harness.js';
import { type FakeDaemon, startFakeDaemon } from './api-fake.js';

describe('API routes (fake service, real Unix socket)', () => {
  let f: FakeDaemon;
  const call = (method: string, path: string, body?: unknown, headers?: Record<string, string>) =>
    request(f.socket, method, path, body, headers);
  before(async () => {
    f = await startFakeDaemon();
  });
  after(async () => {
    await f?.stop();
  });

  it('health, readiness, OpenAPI', async () => {
    const h = await call('GET', '/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.json.status, 'ok');
    assert.equal(h.json.pid, process.pid);
    assert.deepEqual((await call('GET', '/readyz')).json, { status: 'ready' });
    const o = await call('GET', '/openapi');
    assert.equal(o.status, 200);
    assert.equal(o.json.openapi, '3.1.0');
    assert.deepEqual((await call('GET', '/openapi.json')).json, o.json);
  });

  it('PUT ensures (idempotent), GET reads, GET /v1/vms lists, DELETE releases (204 also when unknown)', async () => {
    const a = await call('PUT', '/v1/vms/vm1');
    assert.equal(a.status, 200);
    assert.equal(a.headers['content-type'], 'application/json');
    assert.equal(a.json.vmId, 'vm1');
    const again = await call('PUT', '/v1/vms/vm1', {});
    assert.deepEqual(again.json, a.json);
    const b = await call('PUT', '/v1/vms/vm2', {
      ipv4: '198.18.0.99',
      mac: '02:aa:bb:cc:dd:ee',
      queues: 2,
      vnetHdr: false,
    });
    assert.equal(b.status, 200);
    assert.equal(b.json.ipv4, '198.18.0.99');
    assert.equal(b.json.queues, 2);
    assert.deepEqual((await call('GET', '/v1/vms/vm2')).json, b.json);
    assert.deepEqual(
      (await call('GET', '/v1/vms')).json.map((i: { vmId: string }) => i.vmId),
      ['vm1', 'vm2'],
    );
    const s = await call('GET', '/v1/vms/vm1/stats');
    assert.equal(s.status, 200);
    assert.equal(s.json.guestRx.bytes, 1500);
    const d = await call('DELETE', '/v1/vms/vm1');
    assert.equal(d.status, 204);
    assert.equal(d.text, '');
    assert.equal((await call('DELETE', '/v1/vms/vm1')).status, 204);
    assert.equal((await call('DELETE', '/v1/vms/never-existed')).status, 204);
    // ?wait=true: answer once the kernel has deleted the TAP; anything but a boolean is refused.
    assert.equal((await call('DELETE', '/v1/vms/vm2?wait=true')).status, 204);
    assert.ok(f.api.calls.includes('release vm2 wait'));
    const bad = await call('DELETE', '/v1/vms/vm2?wait=soon');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, 'ERR_INVALID_ARGUMENT');
    const g = await call('GET', '/v1/vms/vm1');
    assert.equal(g.status, 404);
    assert.deepEqual(g.json, {
      code: 'ERR_NOT_FOUND',
      message: 'VM vm1 has no network',
      details: { vmId: 'vm1' },
    });
    assert.equal((await call('GET', '/v1/vms/vm1/stats')).json.code, 'ERR_NOT_FOUND');
  });

  it('gc, verify, doctor, config', async () => {
    const gc = await call('POST', '/v1/gc');
    assert.equal(gc.status, 200);
    assert.deepEqual(gc.json.orphanTaps, ['tnorphan']);
    assert.equal((await call('GET', '/v1/verify')).json.ok, true);
    assert.equal((await call('GET', '/v1/doctor')).json.checks[0].id, 'fake');
    const cfg = (await call('GET', '/v1/config')).json as { key: string; source: string }[];
    assert.equal(cfg.find((e) => e.key === 'api.socket')!.source, 'env TAPNET_SOCKET');
    assert.equal(cfg.find((e) => e.key === 'stateDir')!.source, `file ${f.configFile}`);
  });

  it('bad requests get 4xx with {code, message} and never a stack trace', async () => {
    const cases: [string, string, unknown, Record<string, string> | undefined, number, string, RegExp][] = [
      ['PUT', '/v1/vms/vm3', '{"ipv4": ', undefined, 400, 'ERR_INVALID_ARGUMENT', /not valid JSON/],
      ['PUT', '/v1/vms/vm3', { bogus: 1 }, undefined, 400, 'ERR_INVALID_ARGUMENT', /bogus: unknown field/],
      ['PUT', '/v1/vms/vm3', { queues: 0 }, undefined, 400, 'ERR_INVALID_ARGUMENT', /queues: /],
      [
        'PUT',
        '/v1/vms/vm3',
        { queues: 'two' },
        undefined,
        400,
        'ERR_INVALID_ARGUMENT',
        /queues: .*expected number/,
      ],
      ['PUT', '/v1/vms/vm3', { tap: 'magic' }, undefined, 400, 'ERR_INVALID_ARGUMENT', /tap: /],
      [
        'PUT',
        '/v1/vms/vm3',
        { tap: 'fd' },
        undefined,
        400,
        'ERR_INVALID_ARGUMENT',
        /POST \/v1\/vms\/\{vmId\}\/tap-fd/,
      ],
      ['PUT', '/v1/vms/vm3', [1, 2], undefined, 400, 'ERR_INVALID_ARGUMENT', /expected object/],
      [
        'PUT',
        '/v1/vms/vm3',
        'network=x',
        { 'content-type': 'text/plain' },
        415,
        'ERR_INVALID_ARGUMENT',
        /application\/json/,
      ],
      [
        'PUT',
        '/v1/vms/vm3',
        { network: 'x'.repeat(70_000) },
        undefined,
        413,
        'ERR_INVALID_ARGUMENT',
        /larger than/,
      ],
      ['PUT', '/v1/vms/..%2F..%2Fetc', {}, undefined, 400, 'ERR_INVALID_ARGUMENT', /VM id/],
      ['PUT', '/v1/vms/%ZZ', {}, undefined, 400, 'ERR_INVALID_ARGUMENT', /VM id/],
      ['GET', '/v1/nothing', undefined, undefined, 404, 'ERR_NOT_FOUND', /no route GET \/v1\/nothing/],
      ['GET', '/v1/vms/vm3/nothing', undefined, undefined, 404, 'ERR_NOT_FOUND', /no route/],
      ['POST', '/v1/vms', undefined, undefined, 405, 'ERR_INVALID_ARGUMENT', /POST is not allowed/],
      ['PATCH', '/v1/vms/vm3', {}, undefined, 405, 'ERR_INVALID_ARGUMENT', /PATCH is not allowed/],
    ];
    for (const [method, path, body, headers, status, code, re] of cases) {
      const r = await call(method, path, body, headers);
      assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
      assert.equal(r.json.code, code, `${method} ${path}`);
      assert.match(r.json.message, re, `${method} ${path}`);
      assert.doesNotMatch(r.text, /\n\s+at /, 'no stack trace');
    }
    const issues = (await call('PUT', '/v1/vms/vm3', { bogus: 1, queues: -1 })).json.details.issues;
    assert.deepEqual(issues.map((i: { field: string }) => i.field).sort(), ['bogus', 'queues']);
    assert.equal((await call('PATCH', '/v1/vms/vm3', {})).headers.allow, 'PUT, GET, DELETE');
    assert.equal(f.api.vms.has('vm3'), false, 'no bad request reached the service');
  });

  it('service errors map to statuses by code; unexpected errors are 500 ERR_INTERNAL without a stack', async () => {
    const cases: [unknown, number, string][] = [
      [new TapnetError('ERR_IPAM_EXHAUSTED', 'no free address in 198.18.0.0/24'), 507, 'ERR_IPAM_EXHAUSTED'],
      [new TapnetError('ERR_IPAM_CONFLICT', 'taken'), 409, 'ERR_IPAM_CONFLICT'],
      [new TapnetError('ERR_CONFLICT', 'other network'), 409, 'ERR_CONFLICT'],
      [new TapnetError('ERR_NOT_FOUND', 'no network named x'), 404, 'ERR_NOT_FOUND'],
      [new TapnetError('ERR_CAPACITY', 'bridge full'), 507, 'ERR_CAPACITY'],
      [
        new TapnetError('ERR_PERMISSION_DENIED', 'EPERM', { errno: 'EPERM', syscall: 'ioctl' }),
        403,
        'ERR_PERMISSION_DENIED',
      ],
      [
        new TapnetError('ERR_TEARDOWN', '2 steps failed', {
          details: { failures: [{ code: 'ERR_NETLINK' }] },
        }),
        500,
        'ERR_TEARDOWN',
      ],
      [new Error('boom'), 500, 'ERR_INTERNAL'],
    ];
    for (const [err, status, code] of cases) {
      f.api.failNext = err;
      const r = await call('PUT', '/v1/vms/vm4');
      assert.equal(r.status, status, code);
      assert.equal(r.json.code, code);
      assert.doesNotMatch(r.text, /\n\s+at |stack/);
    }
    f.api.failNext = new TapnetError('ERR_PERMISSION_DENIED', 'EPERM', { errno: 'EPERM', syscall: 'ioctl' });
    const r = await call('DELETE', '/v1/vms/vm4');
    assert.deepEqual(r.json, {
      code: 'ERR_PERMISSION_DENIED',
      message: 'EPERM',
      errno: 'EPERM',
      syscall: 'ioctl',
    });
  });

  it('DaemonClient: the same answers as TapnetErrors with the daemon’s code', async () => {
    const c = new DaemonClient({ socket: f.socket });
    try {
      const info = await c.ensure('vm5', { network: 'default' });
      assert.equal(info.vmId, 'vm5');
      assert.equal((await c.get('vm5'))?.tap, info.tap);
      assert.equal(await c.get('nope'), undefined);
      f.api.failNext = new TapnetError('ERR_IPAM_EXHAUSTED', 'full');
      await assert.rejects(
        c.ensure('vm6'),
        (e: unknown) =>
          e instanceof TapnetError && e.code === 'ERR_IPAM_EXHAUSTED' && e.details.httpStatus === 507,
      );
      await assert.rejects(
        c.ensure('../x'),
        (e: unknown) => e instanceof TapnetError && e.code === 'ERR_INVALID_ARGUMENT',
      );
      await c.release('vm5');
      assert.equal(await c.get('vm5'), undefined);
      assert.equal((await c.health()).status, 'ok');
    } finally {
      await c.close();
    }
    assert.equal(await DaemonClient.probe(f.socket), 'answering');
    assert.equal(await DaemonClient.probe(`${f.dir}/none.sock`), 'absent');
  });

  it('32 concurrent clients: every call answered, none lost', async () => {
    const clients = Array.from({ length: 32 }, () => new DaemonClient({ socket: f.socket }));
    try {
      const infos = await Promise.all(clients.map((c, i) => c.ensure(`c${i}`)));
      assert.equal(new Set(infos.map((i) => i.ipv4)).size, 32);
      await Promise.all(clients.map((c, i) => c.release(`c${i}`)));
      assert.equal([...f.api.vms.keys()].filter((k) => k.startsWith('c')).length, 0);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  it('one log line per operation, with vmId, duration and outcome', async () => {
    await call('PUT', '/v1/vms/logged', { network: 'default' });
    await call('PUT', '/v1/vms/logged', { bogus: true });
    const lines = f.logs().filter((l) => l.vmId === 'logged');
    assert.equal(lines.length, 2);
    assert.equal(lines[0]!.op, 'ensure');
    assert.equal(lines[0]!.outcome, 'ok');
    assert.equal(lines[0]!.network, 'default');
    assert.equal(lines[0]!.status, 200);
    assert.equal(typeof lines[0]!.durationMs, 'number');
    assert.equal(lines[1]!.outcome, 'error');
    assert.equal(lines[1]!.code, 'ERR_INVALID_ARGUMENT');
    assert.equal(lines[1]!.level, 40);
  });
});
