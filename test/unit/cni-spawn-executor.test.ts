// The executors' contract (test/helpers/cni-executor-contract.ts) held by SpawnPluginExecutor, which
// starts plugins with posix_spawn; plus what only it has to prove: nothing left unreaped, process
// creation timed, the default executor choice, many plugins at once.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isCniError } from '../../src/cni/errors.js';
import { defaultPluginExecutor, SpawnPluginExecutor } from '../../src/cni/spawn-executor.js';
import { isTapnetError } from '../../src/errors.js';
import { unreapedChildren } from '../../src/sys/spawn.js';
import { executorContract, pluginBin } from '../helpers/cni-executor-contract.js';

const { bin, plugin, env, remove } = pluginBin('tapnet-cni-spawn-');

executorContract(
  'cni plugin executables through posix_spawn (SpawnPluginExecutor)',
  (o) => new SpawnPluginExecutor(o),
);

describe('SpawnPluginExecutor beyond the contract', () => {
  after(remove);
  const ex = new SpawnPluginExecutor({ stderr: null });

  it('leaves no child unreaped (and none in /proc) after successes, failures, kills and spawn errors', async () => {
    const ok = plugin('ok', 'cat >/dev/null; echo "{}"');
    const bad = plugin('bad', 'exit 7');
    const hang = plugin('hang2', 'sleep 30');
    await ex.execPlugin(ok, Buffer.from('{}'), env(), {});
    await assert.rejects(ex.execPlugin(bad, Buffer.from('{}'), env(), {}), (e) => isCniError(e, 0));
    await assert.rejects(ex.execPlugin(hang, Buffer.from('{}'), env(), { timeoutMs: 50 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    await assert.rejects(
      ex.execPlugin(join(bin, 'missing'), Buffer.from('{}'), env(), {}),
      (e) =>
        isCniError(e, 0) &&
        e.errno === 'ENOENT' &&
        /fork\/exec .*missing: no such file or directory/.test(e.message),
    );
    assert.equal(unreapedChildren(), 0);
    assert.deepEqual(childrenOf(process.pid), [], 'no zombie or straggler below this process');
  });

  it('times process creation (onSpawned) and returns large outputs whole', async () => {
    const big = plugin('big', 'head -c 5000000 /dev/zero');
    let spawnMs = -1;
    const out = await ex.execPlugin(big, Buffer.from('{}'), env(), { onSpawned: (ms) => (spawnMs = ms) });
    assert.equal(out.length, 5_000_000);
    assert.ok(spawnMs > 0 && spawnMs < 1000, `spawn took ${spawnMs} ms`);
  });

  it('runs 64 plugins at once, each with its own input and output', async () => {
    const echo = plugin('echo-in', 'cat');
    const outs = await Promise.all(
      Array.from({ length: 64 }, (_, i) => ex.execPlugin(echo, Buffer.from(`{"i":${i}}`), env(), {})),
    );
    for (const [i, o] of outs.entries()) assert.equal(o.toString(), `{"i":${i}}`);
    assert.equal(unreapedChildren(), 0);
  });

  it('is the default executor here; refuses an environment with NUL bytes', async () => {
    assert.ok(defaultPluginExecutor() instanceof SpawnPluginExecutor);
    const p = plugin('nul', 'true');
    await assert.rejects(ex.execPlugin(p, Buffer.from('{}'), { A: 'x\0y' }, {}), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });
});

/** The pids whose parent is `pid` (zombies included), from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
    if (text) out.push(...text.split(' ').map(Number));
  }
  return out;
}
