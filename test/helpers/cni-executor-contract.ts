/**
 * The contract of a plugin executor (libcni's RawExec, plus a timeout, an AbortSignal, a cap on output
 * and "text file busy" retried): the same cases and assertions for every executor
 * (test/unit/cni-exec.test.ts: Node spawn(); test/unit/cni-spawn-executor.test.ts: posix_spawn).
 */
import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CniRuntime } from '../../src/cni/api.js';
import { confListFromBytes } from '../../src/cni/conf.js';
import { isCniError } from '../../src/cni/errors.js';
import { type ExecExecutorOptions, findInPath, type PluginExecutor } from '../../src/cni/exec.js';
import type { CniCommand } from '../../src/cni/inprocess.js';
import { buildEnv } from '../../src/cni/invoke.js';
import { isTapnetError } from '../../src/errors.js';

/** A temp directory of shell-script plugins, and the environment a plugin call gets. */
export function pluginBin(prefix: string) {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const bin = join(root, 'bin');
  mkdirSync(bin);
  return {
    root,
    bin,
    /** Write `bin/<name>` running `script` under /bin/sh; returns its path. */
    plugin(name: string, script: string): string {
      const p = join(bin, name);
      writeFileSync(p, `#!/bin/sh\n${script}\n`, { mode: 0o755 });
      return p;
    },
    env: (command: CniCommand = 'ADD') =>
      buildEnv(
        { command, containerId: 'c1', netns: '/run/netns/x', ifName: 'eth0', path: bin },
        { PATH: process.env.PATH },
      ),
    /** Whether `pid` runs (a zombie does not). */
    alive: (pid: number): boolean =>
      existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2]!.startsWith('Z'),
    remove: () => rmSync(root, { recursive: true, force: true }),
  };
}

/** Register the contract's tests for the executors `make` builds. */
export function executorContract(title: string, make: (o: ExecExecutorOptions) => PluginExecutor): void {
  const { root, bin, plugin, env, alive, remove } = pluginBin('tapnet-cni-contract-');

  describe(title, () => {
    after(remove);
    const ex = make({ stderr: null });

    it('finds plugins in path order, regular files only (symlinks followed)', () => {
      const a = join(root, 'pa');
      const b = join(root, 'pb');
      mkdirSync(join(a, 'dirplugin'), { recursive: true });
      mkdirSync(b);
      writeFileSync(join(b, 'dirplugin'), '');
      writeFileSync(join(b, 'both'), '');
      writeFileSync(join(a, 'both'), '');
      symlinkSync(join(b, 'both'), join(a, 'link'));
      assert.equal(findInPath('dirplugin', [a, b]), join(b, 'dirplugin'));
      assert.equal(findInPath('both', [a, b]), join(a, 'both'));
      assert.equal(findInPath('link', [a, b]), join(a, 'link'));
      assert.throws(
        () => findInPath('nope', [a, b]),
        (e) =>
          isTapnetError(e, 'ERR_NOT_FOUND') &&
          e.message === `failed to find plugin "nope" in path [${a} ${b}]`,
      );
      assert.throws(
        () => findInPath('../bin/x', [a]),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
      );
      assert.throws(
        () => findInPath('x', []),
        (e) => isTapnetError(e, 'ERR_NOT_FOUND'),
      );
    });

    it('hands the plugin its stdin and exactly the environment built for it', async () => {
      const p = plugin('echo-env', 'cat >/dev/null; env');
      const out = (await ex.execPlugin(p, Buffer.from('{}'), env(), {})).toString();
      const got = Object.fromEntries(
        out
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      for (const [k, v] of Object.entries({
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: 'c1',
        CNI_NETNS: '/run/netns/x',
        CNI_IFNAME: 'eth0',
        CNI_ARGS: '',
        CNI_PATH: bin,
      })) {
        assert.equal(got[k], v, k);
      }
      const cat = plugin('cat', 'cat');
      assert.equal((await ex.execPlugin(cat, Buffer.from('x'.repeat(300_000)), env(), {})).length, 300_000);
    });

    it('a crash without output: the exit status and stderr in the error (code 0)', async () => {
      const p = plugin('crash', 'echo "panic: boom" >&2; exit 2');
      await assert.rejects(
        ex.execPlugin(p, Buffer.from('{}'), env(), {}),
        (e) => isCniError(e, 0) && e.message === 'netplugin failed: "panic: boom\\n": exit status 2',
      );
      const killed = plugin('suicide', 'kill -9 $$');
      await assert.rejects(
        ex.execPlugin(killed, Buffer.from('{}'), env(), {}),
        (e) => isCniError(e) && /signal: killed/.test(e.message),
      );
    });

    it('the spec error a plugin prints is its error; garbage is reported as such', async () => {
      const p = plugin(
        'err',
        'echo \'{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"retry"}\'; exit 1',
      );
      await assert.rejects(
        ex.execPlugin(p, Buffer.from('{}'), env(), {}),
        (e) => isCniError(e, 11) && e.message === 'busy; retry',
      );
      const g = plugin('garbage', 'echo "%%% not json"; exit 1');
      await assert.rejects(
        ex.execPlugin(g, Buffer.from('{}'), env(), {}),
        (e) => isCniError(e, 0) && /error parsing its diagnostic message "%%% not json\\n"/.test(e.message),
      );
    });

    it('a plugin that succeeds with garbage fails the ADD with code 6', async () => {
      plugin('okgarbage', 'cat >/dev/null; echo "hello"');
      const rt = new CniRuntime({ pluginPaths: [bin], cacheDir: join(root, 'cache'), executor: ex });
      const l = confListFromBytes(
        Buffer.from('{"cniVersion":"1.0.0","name":"g","plugins":[{"type":"okgarbage"}]}'),
      );
      await assert.rejects(
        rt.addNetworkList(l, { containerId: 'c', netns: '/x', ifName: 'eth0' }),
        (e) =>
          isCniError(e, 6) &&
          /^plugin type="okgarbage" failed \(add\): failed to unmarshal raw result/.test(e.message),
      );
    });

    it('kills a hung plugin and everything it started at the timeout (ERR_TIMEOUT), or on abort', async () => {
      const pidFile = join(root, 'hang.pid');
      const p = plugin('hang', `sleep 30 & echo $! > ${pidFile}; wait`);
      const t0 = Date.now();
      await assert.rejects(
        ex.execPlugin(p, Buffer.from('{}'), env(), { timeoutMs: 300 }),
        (e) => isTapnetError(e, 'ERR_TIMEOUT') && e.details.timeoutMs === 300,
      );
      assert.ok(Date.now() - t0 < 3000);
      const child = Number(readFileSync(pidFile, 'utf8'));
      for (let i = 0; i < 50 && alive(child); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(!alive(child), 'the plugin’s own child was killed too');
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 100);
      await assert.rejects(ex.execPlugin(p, Buffer.from('{}'), env(), { signal: ac.signal }), (e) =>
        isTapnetError(e, 'ERR_ABORTED'),
      );
      await assert.rejects(ex.execPlugin(p, Buffer.from('{}'), env(), { signal: AbortSignal.abort() }), (e) =>
        isTapnetError(e, 'ERR_ABORTED'),
      );
    });

    it('passes stderr of a successful plugin on; caps runaway output', async () => {
      const chunks: string[] = [];
      const withSink = make({ stderr: (c, path) => chunks.push(`${path}:${c}`) });
      const p = plugin('chatty', 'echo warn >&2; echo "{}"');
      assert.equal((await withSink.execPlugin(p, Buffer.from('{}'), env(), {})).toString(), '{}\n');
      assert.deepEqual(chunks, [`${p}:warn\n`]);
      const flood = plugin('flood', 'yes');
      const capped = make({ stderr: null, maxOutputBytes: 100_000 });
      await assert.rejects(
        capped.execPlugin(flood, Buffer.from('{}'), env(), {}),
        (e) => isCniError(e) && /exceeds 100000 bytes/.test(e.message),
      );
    });

    it('retries while the executable is busy being written ("text file busy"), then runs it', async () => {
      const p = join(bin, 'being-written');
      const fd = openSync(p, 'w', 0o755);
      writeSync(fd, '#!/bin/sh\necho \'{"ok":1}\'\n');
      chmodSync(p, 0o755);
      setTimeout(() => closeSync(fd), 150);
      const busy = make({ stderr: null, busyRetryDelayMs: 100 });
      assert.equal((await busy.execPlugin(p, Buffer.from('{}'), env(), {})).toString(), '{"ok":1}\n');
      const fd2 = openSync(join(bin, 'always-busy'), 'w', 0o755);
      try {
        const quick = make({ stderr: null, busyRetryDelayMs: 10, busyRetries: 2 });
        await assert.rejects(
          quick.execPlugin(join(bin, 'always-busy'), Buffer.from('{}'), env(), {}),
          (e) => isCniError(e) && e.errno === 'ETXTBSY',
        );
      } finally {
        closeSync(fd2);
      }
    });

    it('a plugin that cannot be executed: the errno in the error', async () => {
      const p = join(bin, 'noexec');
      writeFileSync(p, '#!/bin/sh\n', { mode: 0o644 });
      await assert.rejects(
        ex.execPlugin(p, Buffer.from('{}'), env(), {}),
        (e) => isCniError(e, 0) && e.errno === 'EACCES',
      );
    });
  });
}
