/**
 * Passing fds over the API's Unix socket (SCM_RIGHTS), without root: the cmsghdr codec, and
 * DaemonClient.ensureWithTapFds() receiving the fake service's fds (ordinary files) in queue order, usable
 * here and in a child process; none leaked on either side, also when the call fails.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DaemonClient } from '../../src/daemon/client.js';
import { rawJsonResponse } from '../../src/daemon/fdpass.js';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import { cmsgSpace, decodeScmRights, encodeScmRights, SCM_MAX_FD } from '../../src/sys/scm.js';
import { type FakeDaemon, openFdCount, startFakeDaemon } from './api-fake.js';

describe('SCM_RIGHTS codec', () => {
  it('encodes one cmsghdr per message and decodes it back', () => {
    const b = encodeScmRights([7, 8, 9]);
    assert.equal(b.length, cmsgSpace(3));
    assert.equal(b.length, 16 + 16); // 12 bytes of fds aligned to 8
    assert.equal(b.readBigUInt64LE(0), 28n); // CMSG_LEN(12)
    assert.equal(b.readInt32LE(8), 1); // SOL_SOCKET
    assert.equal(b.readInt32LE(12), 1); // SCM_RIGHTS
    assert.deepEqual(decodeScmRights(b, b.length), [7, 8, 9]);
    const two = Buffer.concat([encodeScmRights([3]), encodeScmRights([4, 5])]);
    assert.deepEqual(decodeScmRights(two, two.length), [3, 4, 5]);
    assert.deepEqual(decodeScmRights(two, 10), [], 'a truncated header is ignored');
    assert.throws(() => encodeScmRights([]), /1-253 fds/);
    assert.throws(() => encodeScmRights(Array(SCM_MAX_FD + 1).fill(3)), /1-253 fds/);
  });

  it('the raw response names the fd count and closes the connection', () => {
    const text = rawJsonResponse(200, { vmId: 'a', fds: 2 }, 2).toString();
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\nx-tapnet-fds: 2\r\n/);
    assert.match(text, /\r\nconnection: close\r\n/);
    assert.match(text, /\r\ncontent-length: 21\r\n/);
    assert.ok(text.endsWith('\r\n\r\n{"vmId":"a","fds":2}\n'));
  });
});

describe('POST /v1/vms/{vmId}/tap-fd through DaemonClient', () => {
  let f: FakeDaemon;
  before(async () => {
    f = await startFakeDaemon();
  });
  after(async () => {
    await f?.stop();
  });

  it('receives the fds in queue order; they work here and in a child process', async () => {
    const files = [join(f.dir, 'queue0'), join(f.dir, 'queue1')];
    writeFileSync(files[0]!, 'queue zero');
    writeFileSync(files[1]!, 'queue one');
    f.api.fdFiles = files;
    const before = openFdCount();
    const c = new DaemonClient({ socket: f.socket });
    try {
      const info = await c.ensureWithTapFds('fdvm', { queues: 2 });
      assert.equal(info.vmId, 'fdvm');
      assert.equal(info.tapMode, 'fd');
      assert.equal(info.tapFds.length, 2);
      assert.equal('fds' in info, false);
      const read = (fd: number) => {
        const b = Buffer.alloc(64);
        return b.subarray(0, readSync(fd, b, 0, 64, 0)).toString();
      };
      assert.equal(read(info.tapFds[0]!), 'queue zero');
      assert.equal(read(info.tapFds[1]!), 'queue one');
      // A VMM gets it as fd 3.
      const child = spawnSync(
        process.execPath,
        [
          '-e',
          "const b=Buffer.alloc(64);process.stdout.write(b.subarray(0,require('fs').readSync(3,b,0,64,0)))",
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit', info.tapFds[1]!],
          encoding: 'utf8',
        },
      );
      assert.equal(child.stdout, 'queue one');
      for (const fd of info.tapFds) closeSync(fd);
    } finally {
      await c.close();
    }
    await new Promise((r) => setTimeout(r, 50)); // the daemon side closes its copies asynchronously
    assert.equal(openFdCount(), before, 'no fd leaked (client and daemon share this process)');
  });

  it('errors come back with the daemon’s code and no fd', async () => {
    const before = openFdCount();
    const c = new DaemonClient({ socket: f.socket });
    try {
      f.api.failNext = new TapnetError('ERR_IPAM_EXHAUSTED', 'no free address');
      await assert.rejects(
        c.ensureWithTapFds('full'),
        (e: unknown) => isTapnetError(e, 'ERR_IPAM_EXHAUSTED') && e.details.httpStatus === 507,
      );
      await assert.rejects(
        c.ensureWithTapFds('x', { bogus: 1 } as never),
        (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT') && /bogus/.test(e.message),
      );
      await assert.rejects(c.ensureWithTapFds('../x'), (e: unknown) =>
        isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
      );
      const other = new DaemonClient({ socket: `${f.dir}/nobody.sock` });
      await assert.rejects(
        other.ensureWithTapFds('x'),
        (e: unknown) => isTapnetError(e, 'ERR_NOT_FOUND') && /cannot reach/.test(e.message),
      );
    } finally {
      await c.close();
    }
    assert.equal(openFdCount(), before);
  });

  it('several clients at once each get their own fds', async () => {
    writeFileSync(join(f.dir, 'q'), 'q');
    f.api.fdFiles = [join(f.dir, 'q')];
    const c = new DaemonClient({ socket: f.socket });
    try {
      const infos = await Promise.all(Array.from({ length: 8 }, (_, i) => c.ensureWithTapFds(`par${i}`)));
      const fds = infos.flatMap((i) => i.tapFds);
      assert.equal(new Set(fds).size, 8);
      for (const fd of fds) closeSync(fd);
    } finally {
      await c.close();
    }
  });
});
