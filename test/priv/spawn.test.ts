// posix_spawn through koffi (src/sys/spawn.ts): what a child gets (argv, exactly its environment, pipes,
// default signals, no inherited fds, its own process group, the namespace it was asked for) and that
// every child is reaped, whatever way it ends. The namespace cases need root inside the sandbox.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { isTapnetError } from '../../src/errors.js';
import { close, dup, O_RDONLY, open } from '../../src/sys/libc.js';
import { type Spawned, spawnProcess, unreapedChildren } from '../../src/sys/spawn.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const sh = (script: string, opts: Parameters<typeof spawnProcess>[1] = {}): Spawned =>
  spawnProcess('/bin/sh', {
    argv: ['sh', '-c', script],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    ...opts,
  });

function drain(s: Readable | null): Promise<Buffer> {
  if (!s) return Promise.resolve(Buffer.alloc(0));
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

async function run(
  child: Spawned,
): Promise<{ out: string; err: string; code: number | null; signal: string | null }> {
  const [out, err, st] = await Promise.all([drain(child.stdout), drain(child.stderr), child.exited]);
  return { out: out.toString(), err: err.toString(), ...st };
}

/** The pids whose parent is `pid` (zombies included). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
    if (text) out.push(...text.split(' ').map(Number));
  }
  return out;
}

const alive = (pid: number): boolean => {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
};

async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}

describe('posix_spawn: what the child gets and how it ends', () => {
  after(() => {
    assert.equal(unreapedChildren(), 0);
    assert.deepEqual(childrenOf(process.pid), [], 'no zombie or straggler below this process');
  });

  it('argv, and exactly the environment given', async () => {
    const r = await run(
      spawnProcess('/usr/bin/env', {
        argv: ['env', '-0'],
        env: { A: '1', EMPTY: '', 'WITH SPACE': 'x=y z' },
      }),
    );
    assert.deepEqual(r.out.split('\0').filter(Boolean).sort(), ['A=1', 'EMPTY=', 'WITH SPACE=x=y z']);
    const a = await run(
      sh('printf "%s|" "$0" "$@"', { argv: ['sh', '-c', 'printf "%s|" "$0" "$@"', 'zero', 'o n e', ''] }),
    );
    assert.equal(a.out, 'zero|o n e||');
    assert.throws(
      () => spawnProcess('/bin/true', { argv: ['true', 'a\0b'] }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => spawnProcess('/bin/true', { env: { 'A=B': 'c' } }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });

  it('exit codes and the signal that killed it', async () => {
    for (const code of [0, 1, 42, 255]) assert.equal((await run(sh(`exit ${code}`))).code, code);
    const seg = await run(sh('kill -SEGV $$'));
    assert.deepEqual([seg.code, seg.signal], [null, 'SIGSEGV']);
    const c = sh('exec sleep 30');
    await until(() => readFileSync(`/proc/${c.pid}/cmdline`, 'utf8').startsWith('sleep'));
    assert.ok(c.kill('SIGTERM'));
    assert.deepEqual(await c.exited, { code: null, signal: 'SIGTERM' });
    assert.equal(c.kill('SIGTERM'), false, 'nothing is sent once it is reaped');
  });

  it('failures to start are thrown at once with their errno', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tapnet-spawn-'));
    const noexec = join(dir, 'noexec');
    writeFileSync(noexec, '#!/bin/sh\n', { mode: 0o644 });
    const noshebang = join(dir, 'noshebang');
    writeFileSync(noshebang, 'echo hi\n', { mode: 0o755 });
    after(() => rmSync(dir, { recursive: true, force: true }));
    assert.throws(
      () => spawnProcess('/nonexistent/plugin'),
      (e) => isTapnetError(e) && e.errno === 'ENOENT' && e.syscall === 'posix_spawn',
    );
    assert.throws(
      () => spawnProcess(noexec),
      (e) => isTapnetError(e, 'ERR_PERMISSION_DENIED') && e.errno === 'EACCES',
    );
    assert.throws(
      () => spawnProcess(noshebang),
      (e) => isTapnetError(e) && e.errno === 'ENOEXEC',
    );
    assert.equal(unreapedChildren(), 0);
  });

  it('large outputs on both pipes at once, and an input bigger than a pipe', async () => {
    const r = await run(sh('head -c 20000000 /dev/zero; head -c 7000000 /dev/zero >&2'));
    assert.equal(r.out.length, 20_000_000);
    assert.equal(r.err.length, 7_000_000);
    const input = Buffer.alloc(3_000_000, 0x61);
    const c = await run(sh('wc -c', { input }));
    assert.equal(c.out.trim(), '3000000');
    const small = await run(sh('cat', { input: '{"cniVersion":"1.0.0"}' }));
    assert.equal(small.out, '{"cniVersion":"1.0.0"}');
    const p = sh('read line; echo "got $line"', { stdin: 'pipe' });
    p.stdin!.end('hello\n');
    assert.equal((await run(p)).out, 'got hello\n');
  });

  it('default signal dispositions, an empty mask, and no fd of ours beyond 0-2', async () => {
    // Node ignores SIGPIPE; a child must not inherit that.
    const leak = dup(open('/proc/self/status', O_RDONLY)); // dup: no FD_CLOEXEC
    try {
      const r = await run(sh('grep -E "^Sig(Ign|Blk):" /proc/self/status; ls /proc/self/fd'));
      const lines = r.out.trim().split('\n');
      assert.deepEqual(lines.slice(0, 2).sort(), ['SigBlk:\t0000000000000000', 'SigIgn:\t0000000000000000']);
      // ls itself opens one fd for the directory
      assert.ok(
        lines
          .slice(2)
          .map(Number)
          .filter((fd) => fd > 2).length <= 1,
        lines.join(' '),
      );
    } finally {
      close(leak);
    }
  });

  it('stdio: ignore gives /dev/null, inherit gives ours', async () => {
    const c = sh('readlink /proc/self/fd/0 >&2; echo x', { stdout: 'ignore', stdin: 'ignore' });
    assert.equal(c.stdout, null);
    const r = await run(c);
    assert.equal(r.err.trim(), '/dev/null');
  });

  it('its own process group: killGroup reaches what it started', async () => {
    const c = sh('sleep 30 & echo $!; wait');
    const first = await new Promise<string>((resolve) =>
      c.stdout!.once('data', (d: Buffer) => resolve(d.toString())),
    );
    const grandchild = Number(first.trim());
    const pgid = (pid: number): number =>
      Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[2]);
    assert.equal(pgid(c.pid), c.pid);
    assert.equal(pgid(grandchild), c.pid);
    assert.ok(c.killGroup('SIGKILL'));
    assert.deepEqual(await c.exited, { code: null, signal: 'SIGKILL' });
    assert.ok(await until(() => !alive(grandchild)), 'the grandchild was killed too');
    c.closePipes();
    const same = spawnProcess('/bin/sh', {
      argv: ['sh', '-c', 'cut -d" " -f5 /proc/self/stat'],
      newProcessGroup: false,
    });
    assert.equal(
      Number((await run(same)).out),
      Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[2]),
    );
  });

  it('many children at once, all reaped, alongside children of node:child_process', async () => {
    const theirs = Array.from(
      { length: 10 },
      (_, i) =>
        new Promise<number | null>((resolve) => execFile('/bin/sh', ['-c', `exit ${i}`]).on('exit', resolve)),
    );
    const rs = await Promise.all(
      Array.from({ length: 100 }, (_, i) => run(sh(`echo ${i}; exit $((${i} % 7))`))),
    );
    assert.deepEqual(
      await Promise.all(theirs),
      Array.from({ length: 10 }, (_, i) => i),
    );
    for (const [i, r] of rs.entries()) assert.deepEqual([r.out, r.code], [`${i}\n`, i % 7]);
    assert.equal(unreapedChildren(), 0);
  });

  it('from a worker thread (no signals there: reaped by polling)', async () => {
    const url = new URL('../../src/sys/spawn.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(url)}).then(async ({ spawnProcess, unreapedChildren }) => {
        const c = spawnProcess('/bin/sh', { argv: ['sh', '-c', 'exit 5'] });
        c.stdout.resume(); c.stderr.resume();
        const st = await c.exited;
        parentPort.postMessage({ st, left: unreapedChildren() });
      });`;
    const w = new Worker(code, { eval: true });
    const msg = await new Promise<{ st: unknown; left: number }>((resolve) => w.once('message', resolve));
    await w.terminate();
    assert.deepEqual(msg, { st: { code: 5, signal: null }, left: 0 });
  });
});

describe('posix_spawn into a network namespace', { skip: privSkipReason() }, () => {
  let t: TestNetns;
  before(() => {
    t = makeTestNetns('spawn');
    t.ip('link', 'add', 'spawndummy0', 'type', 'bridge');
  });
  after(() => t?.destroy());

  it('the child is in the namespace it was given; this thread is back in its own', async () => {
    const home = readlinkSync('/proc/thread-self/ns/net');
    const want = `net:[${statSync(`/run/netns/${t.name}`).ino}]`;
    const r = await run(sh('readlink /proc/self/ns/net; cat /proc/net/dev', { netnsFd: t.ns.fd }));
    const [nsLink, ...dev] = r.out.trim().split('\n');
    assert.equal(nsLink, want);
    assert.ok(
      dev.some((l) => l.trim().startsWith('spawndummy0:')),
      'it sees the namespace’s links',
    );
    assert.equal(readlinkSync('/proc/thread-self/ns/net'), home);
    const plain = await run(sh('readlink /proc/self/ns/net'));
    assert.equal(plain.out.trim(), home, 'without netnsFd: ours');
  });

  it('a failed start in a namespace also returns this thread home', () => {
    const home = readlinkSync('/proc/thread-self/ns/net');
    assert.throws(
      () => spawnProcess('/nonexistent', { netnsFd: t.ns.fd }),
      (e) => isTapnetError(e) && e.errno === 'ENOENT',
    );
    assert.equal(readlinkSync('/proc/thread-self/ns/net'), home);
  });

  it('what the child starts stays in that namespace', async () => {
    const want = `net:[${statSync(`/run/netns/${t.name}`).ino}]`;
    const r = await run(sh('sh -c "readlink /proc/self/ns/net"', { netnsFd: t.ns.fd }));
    assert.equal(r.out.trim(), want);
  });
});
