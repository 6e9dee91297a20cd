/**
 * The daemon's lifecycle without root (fake service): the socket is 0600 and exclusive, calls wait for
 * the startup, SIGTERM-style shutdown finishes calls in flight and refuses new ones, reload swaps the
 * service when the manager configuration changes; bearer-token authentication for TCP listeners.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/daemon/log.js';
import { sdNotify } from '../../src/daemon/notify.js';
import { buildOpenApi } from '../../src/daemon/openapi.js';
import { type ApiContext, authorized, createHandler } from '../../src/daemon/routes.js';
import { Daemon } from '../../src/daemon/server.js';
import { isTapnetError } from '../../src/errors.js';
import * as libc from '../../src/sys/libc.js';
import { SOCK_STREAM, sockaddrUn } from '../../src/sys/scm.js';
import { request } from '../e2e/api-harness.js';
import { FakeApi, startFakeDaemon } from './api-fake.js';

describe('daemon lifecycle (fake service)', () => {
  it('the socket is mode 0600; a second daemon on it is refused; a stale socket is replaced', async () => {
    const f = await startFakeDaemon();
    try {
      assert.equal(statSync(f.socket).mode & 0o777, 0o600);
      assert.ok(statSync(f.socket).isSocket());
      const loaded = loadConfig({ env: { TAPNET_SOCKET: f.socket }, defaultFiles: [] });
      await assert.rejects(
        Daemon.start({ loaded, logger: silentLogger(), openService: async () => ({ api: new FakeApi() }) }),
        (e: unknown) => isTapnetError(e, 'ERR_CONFLICT') && /another tapnet daemon/.test(e.message),
      );
      assert.equal((await request(f.socket, 'GET', '/healthz')).status, 200, 'the first one still serves');
    } finally {
      await f.stop();
    }
    // A socket file nobody answers on (a crashed daemon) is replaced.
    const dir = mkdtempSync(join(tmpdir(), 'tapnet-stale-'));
    const sock = join(dir, 's.sock');
    const dead = libc.socket(libc.AF_UNIX, SOCK_STREAM | libc.SOCK_CLOEXEC, 0);
    libc.bind(dead, sockaddrUn(sock)); // bound, never listening, then closed: the file stays, as after a crash
    libc.close(dead);
    try {
      assert.ok(existsSync(sock));
      const loaded = loadConfig({ env: { TAPNET_SOCKET: sock }, defaultFiles: [] });
      const d = await Daemon.start({
        loaded,
        logger: silentLogger(),
        openService: async () => ({ api: new FakeApi() }),
      });
      await d.ready;
      assert.equal((await request(sock, 'GET', '/readyz')).status, 200);
      await d.shutdown();
      assert.equal(existsSync(sock), false, 'the socket is removed on shutdown');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers /healthz at once; API calls wait for the startup reconcile; /readyz says when', async () => {
    let open!: () => void;
    const f = await startFakeDaemon({ openDelay: new Promise<void>((r) => (open = r)) });
    try {
      assert.equal((await request(f.socket, 'GET', '/healthz')).status, 200);
      const r = await request(f.socket, 'GET', '/readyz');
      assert.equal(r.status, 503);
      assert.deepEqual(r.json, { status: 'starting' });
      let answered = false;
      const pending = request(f.socket, 'PUT', '/v1/vms/early').then((x) => {
        answered = true;
        return x;
      });
      await new Promise((r2) => setTimeout(r2, 50));
      assert.equal(answered, false, 'the call waits');
      open();
      await f.daemon.ready;
      assert.equal((await pending).status, 200);
      assert.equal((await request(f.socket, 'GET', '/readyz')).status, 200);
    } finally {
      await f.stop();
    }
  });

  it('shutdown finishes calls in flight, refuses new ones with 503, closes the service and removes the socket', async () => {
    const f = await startFakeDaemon();
    let release!: () => void;
    f.api.hold = new Promise<void>((r) => (release = r));
    const inflight = request(f.socket, 'PUT', '/v1/vms/slow');
    await new Promise((r) => setTimeout(r, 30));
    const stopping = f.daemon.shutdown('test');
    const late = await request(f.socket, 'PUT', '/v1/vms/late').then(
      (r) => r.status,
      (e: NodeJS.ErrnoException) => e.code,
    );
    assert.ok(late === 503 || late === 'ECONNREFUSED' || late === 'ENOENT', String(late));
    assert.equal(f.api.closed, false, 'not closed while a call is in flight');
    release();
    const r = await inflight;
    assert.equal(r.status, 200, 'the call in flight completed');
    assert.equal(r.json.vmId, 'slow');
    await stopping;
    assert.equal(f.api.closed, true);
    assert.equal(existsSync(f.socket), false);
    assert.ok(f.logs().some((l) => l.op === 'shutdown' && l.outcome === 'ok'));
    rmSync(f.dir, { recursive: true, force: true });
  });

  it('reload waits for the calls in flight only; calls arriving meanwhile wait and go to the new service', async () => {
    const f = await startFakeDaemon();
    try {
      let release!: () => void;
      f.api.hold = new Promise<void>((r) => (release = r));
      const inflight = request(f.socket, 'PUT', '/v1/vms/before');
      await new Promise((r) => setTimeout(r, 30));
      writeFileSync(f.configFile, `stateDir: ${f.dir}/other\n`);
      const reloading = f.daemon.reload();
      await new Promise((r) => setTimeout(r, 30));
      assert.deepEqual((await request(f.socket, 'GET', '/readyz')).json, { status: 'reloading' });
      const waiting = request(f.socket, 'PUT', '/v1/vms/after');
      await new Promise((r) => setTimeout(r, 30));
      const t0 = Date.now();
      release();
      assert.equal((await inflight).status, 200);
      await reloading;
      assert.ok(Date.now() - t0 < 2000, 'the reload did not wait for the calls queued behind it');
      assert.equal((await waiting).status, 200);
      assert.ok(f.opened[0]!.vms.has('before'));
      assert.ok(f.opened[1]!.vms.has('after'), 'served by the new service');
    } finally {
      await f.stop();
    }
  });

  it('reload: a changed manager configuration opens a new service; a broken file keeps the old one', async () => {
    const f = await startFakeDaemon();
    try {
      const first = f.api;
      writeFileSync(f.configFile, `stateDir: ${f.dir}/state2\nlog:\n  level: warn\n`);
      await f.daemon.reload();
      assert.equal(f.opened.length, 2);
      assert.equal(first.closed, true);
      assert.equal(f.daemon.logger.level, 'warn');
      assert.equal((await request(f.socket, 'PUT', '/v1/vms/after-reload')).status, 200);
      assert.ok(f.api.vms.has('after-reload'), 'served by the new service');
      writeFileSync(f.configFile, 'stateDir: [not, a, path\n');
      await f.daemon.reload();
      assert.equal(f.opened.length, 2, 'no new service for a broken file');
      assert.equal((await request(f.socket, 'GET', '/readyz')).status, 200);
      writeFileSync(f.configFile, `stateDir: ${f.dir}/state2\nlog:\n  level: debug\n`);
      await f.daemon.reload();
      assert.equal(f.opened.length, 2, 'only the log level changed: same service');
      assert.equal(f.daemon.logger.level, 'debug');
    } finally {
      await f.stop();
    }
  });
});

describe('sd_notify', () => {
  it('sends READY=1 to $NOTIFY_SOCKET (a path or an abstract name), and is a no-op without it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tapnet-notify-'));
    const path = join(dir, 'notify');
    for (const name of [path, `@tapnet-test-${process.pid}`]) {
      const fd = libc.socket(libc.AF_UNIX, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC, 0);
      try {
        libc.bind(fd, sockaddrUn(name));
        assert.equal(sdNotify('READY=1\nSTATUS=serving', { NOTIFY_SOCKET: name }), true);
        const buf = Buffer.alloc(256);
        const n = libc.recvOrAgain(fd, buf, libc.MSG_DONTWAIT);
        assert.equal(buf.subarray(0, n).toString(), 'READY=1\nSTATUS=serving');
      } finally {
        libc.close(fd);
      }
    }
    assert.equal(sdNotify('READY=1', {}), false);
    assert.equal(sdNotify('READY=1', { NOTIFY_SOCKET: join(dir, 'nobody') }), false);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('bearer tokens on TCP listeners', () => {
  it('authorized(): exact match only', () => {
    const token = 'correct-horse-battery-staple';
    assert.equal(authorized(`Bearer ${token}`, token), true);
    assert.equal(authorized(`bearer ${token}`, token), true);
    assert.equal(authorized(`Bearer ${token}x`, token), false);
    assert.equal(authorized(`Basic ${token}`, token), false);
    assert.equal(authorized(undefined, token), false);
    assert.equal(authorized('Bearer ', token), false);
    assert.equal(authorized(`Bearer ${token}`, undefined), false, 'no token configured: nobody gets in');
  });

  it('a TCP-kind listener refuses requests without the token, and never passes fds', async () => {
    const api = new FakeApi();
    const ctx: ApiContext = {
      use: (fn) => fn(api),
      ready: () => 'ready',
      logger: silentLogger(),
      maxBodyBytes: 65536,
      openapi: buildOpenApi(),
      config: () => [],
      startedAt: Date.now(),
    };
    const token = 'a-token-of-twenty-chars';
    const server = http.createServer(createHandler(ctx, { kind: 'tcp', token: () => token }));
    const dir = mkdtempSync(join(tmpdir(), 'tapnet-tcp-'));
    const sock = join(dir, 'tcp-like.sock');
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const none = await request(sock, 'GET', '/v1/vms');
      assert.equal(none.status, 401);
      assert.equal(none.json.code, 'ERR_PERMISSION_DENIED');
      assert.match(String(none.headers['www-authenticate']), /^Bearer/);
      assert.equal(
        (
          await request(sock, 'GET', '/healthz', undefined, {
            authorization: 'Bearer wrong-token-of-20-chars',
          })
        ).status,
        401,
      );
      const ok = await request(sock, 'PUT', '/v1/vms/t1', {}, { authorization: `Bearer ${token}` });
      assert.equal(ok.status, 200);
      const fd = await request(sock, 'POST', '/v1/vms/t1/tap-fd', {}, { authorization: `Bearer ${token}` });
      assert.equal(fd.status, 404);
      assert.match(fd.json.message, /only be passed over the Unix socket/);
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
