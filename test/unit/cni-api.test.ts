import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type CallTiming, CniRuntime } from '../../src/cni/api.js';
import { confListFromBytes } from '../../src/cni/conf.js';
import { CniError, isCniError } from '../../src/cni/errors.js';
import type { ExecOptions, PluginExecutor } from '../../src/cni/exec.js';
import type { CniCommand, InProcessPlugin } from '../../src/cni/inprocess.js';
import type { PluginInfo, RuntimeConf } from '../../src/cni/types.js';
import { decodePluginInfo } from '../../src/cni/version.js';
import { isTapnetError, TapnetError } from '../../src/errors.js';

interface Call {
  type: string;
  command: CniCommand;
  env: Record<string, string>;
  conf: Record<string, unknown>;
}

const RESULT = (addr: string) => ({
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/run/netns/x' }],
  ips: [{ interface: 0, address: addr, gateway: '198.18.0.1' }],
});

/** An in-process plugin that records its calls; ADD answers with `addResult` (or its prevResult). */
function fake(
  type: string,
  calls: Call[],
  behave: Partial<
    Record<
      CniCommand,
      (conf: Record<string, unknown>) => { stdout: string; exitCode?: number } | Promise<never>
    >
  > = {},
  versions = ['0.3.1', '0.4.0', '1.0.0', '1.1.0'],
): InProcessPlugin {
  return {
    type,
    supportedVersions: versions,
    async run(command, env, stdin) {
      const conf = JSON.parse(stdin.toString()) as Record<string, unknown>;
      calls.push({ type, command, env, conf });
      const b = behave[command];
      if (b) {
        const out = await b(conf);
        return { stdout: Buffer.from(out.stdout), exitCode: out.exitCode ?? 0 };
      }
      if (command === 'ADD')
        return {
          stdout: Buffer.from(
            JSON.stringify(conf.prevResult ?? { ...RESULT('198.18.0.2/24'), cniVersion: conf.cniVersion }),
          ),
          exitCode: 0,
        };
      return { stdout: Buffer.alloc(0), exitCode: 0 };
    },
  };
}

/** An executor whose "executables" are functions: records what libcni would exec. */
class FakeExecutor implements PluginExecutor {
  readonly calls: Array<{ path: string; env: Record<string, string>; stdin: string }> = [];
  constructor(
    private readonly plugins: Record<string, (env: Record<string, string>, stdin: string) => Buffer>,
  ) {}
  async execPlugin(
    pluginPath: string,
    stdin: Buffer,
    env: Record<string, string>,
    _opts: ExecOptions,
  ): Promise<Buffer> {
    this.calls.push({ path: pluginPath, env, stdin: stdin.toString() });
    return this.plugins[pluginPath.split('/').pop()!]!(env, stdin.toString());
  }
  findInPath(type: string, paths: readonly string[]): string {
    if (!(type in this.plugins)) throw new TapnetError('ERR_NOT_FOUND', `no ${type}`);
    return `${paths[0]}/${type}`;
  }
  decode(stdout: Buffer): PluginInfo {
    return decodePluginInfo(stdout);
  }
}

const list = (v: Record<string, unknown>) => confListFromBytes(Buffer.from(JSON.stringify(v)));
const rt = (id = 'ctr1'): RuntimeConf => ({ containerId: id, netns: `/run/netns/${id}`, ifName: 'eth0' });

describe('cni runtime API', () => {
  const root = mkdtempSync(join(tmpdir(), 'tapnet-cni-api-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  const runtime = (
    plugins: InProcessPlugin[],
    extra: Partial<ConstructorParameters<typeof CniRuntime>[0]> = {},
  ) =>
    new CniRuntime({
      pluginPaths: ['/p1', '/p2'],
      cacheDir: join(root, `c${n++}`),
      inProcessPlugins: plugins,
      inheritEnv: false,
      env: { KEEP: 'me', CNI_COMMAND: 'overridden' },
      ...extra,
    });

  it('ADD chains results, injects name/cniVersion, passes runtimeConfig only for declared capabilities, caches', async () => {
    const calls: Call[] = [];
    const r = runtime([fake('a', calls), fake('b', calls), fake('c', calls)]);
    const l = list({
      cniVersion: '1.0.0',
      name: 'net1',
      plugins: [
        { type: 'a', capabilities: { portMappings: true, mac: false }, own: 1 },
        { type: 'b', capabilities: { mac: true, bandwidth: true } },
        { type: 'c' },
      ],
    });
    const timing = {} as CallTiming;
    const rc = {
      ...rt(),
      args: [
        ['K', 'V'],
        ['IgnoreUnknown', '1'],
      ] as Array<[string, string]>,
      capabilityArgs: {
        portMappings: [{ hostPort: 1, containerPort: 2 }],
        mac: '02:00:00:00:00:09',
        ips: ['x'],
      },
    };
    const res = await r.addNetworkList(l, rc, { timing });
    assert.deepEqual(res, RESULT('198.18.0.2/24'));
    assert.deepEqual(
      calls.map((c) => `${c.type}:${c.command}`),
      ['a:ADD', 'b:ADD', 'c:ADD'],
    );
    assert.deepEqual(calls[0]!.conf, {
      capabilities: { mac: false, portMappings: true },
      cniVersion: '1.0.0',
      name: 'net1',
      own: 1,
      type: 'a',
      runtimeConfig: { portMappings: [{ containerPort: 2, hostPort: 1 }] },
    });
    assert.deepEqual(calls[1]!.conf.runtimeConfig, { mac: '02:00:00:00:00:09' });
    assert.equal('runtimeConfig' in calls[2]!.conf, false);
    assert.equal('prevResult' in calls[0]!.conf, false);
    assert.deepEqual(calls[1]!.conf.prevResult, RESULT('198.18.0.2/24'));
    assert.deepEqual(calls[0]!.env, {
      KEEP: 'me',
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'ctr1',
      CNI_NETNS: '/run/netns/ctr1',
      CNI_ARGS: 'K=V;IgnoreUnknown=1',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/p1:/p2',
    });
    assert.deepEqual(r.getNetworkListCachedResult(l, rc), res);
    assert.deepEqual(
      r.getCachedAttachments('ctr1').map((a) => a.network),
      ['net1'],
    );
    assert.equal(timing.invocations.length, 3);
    assert.ok(timing.invocations.every((i) => i.inProcess && i.ok && i.command === 'ADD'));
    assert.ok(timing.pluginMs <= timing.totalMs);
    assert.ok(Math.abs(timing.totalMs - timing.pluginMs - timing.overheadMs) < 1e-9);
  });

  it('DEL runs in reverse with the cached result as prevResult, then forgets it; DEL again still succeeds', async () => {
    const calls: Call[] = [];
    const r = runtime([fake('a', calls), fake('b', calls)]);
    const l = list({ cniVersion: '0.4.0', name: 'net2', plugins: [{ type: 'a' }, { type: 'b' }] });
    await r.addNetworkList(l, rt());
    calls.length = 0;
    await r.delNetworkList(l, rt());
    assert.deepEqual(
      calls.map((c) => `${c.type}:${c.command}`),
      ['b:DEL', 'a:DEL'],
    );
    assert.equal((calls[0]!.conf.prevResult as { cniVersion: string }).cniVersion, '0.4.0');
    assert.deepEqual(calls[0]!.conf.prevResult, calls[1]!.conf.prevResult);
    assert.equal(r.getNetworkListCachedResult(l, rt()), undefined);
    calls.length = 0;
    await r.delNetworkList(l, rt());
    assert.equal(calls.length, 2);
    assert.ok(calls.every((c) => !('prevResult' in c.conf)));
  });

  it('DEL of a 0.3.x list sends no prevResult; a corrupt cache entry is dropped, not fatal', async () => {
    const calls: Call[] = [];
    const r = runtime([fake('a', calls)]);
    const old = list({ cniVersion: '0.3.1', name: 'old', plugins: [{ type: 'a' }] });
    await r.addNetworkList(old, rt());
    calls.length = 0;
    await r.delNetworkList(old, rt());
    assert.equal('prevResult' in calls[0]!.conf, false);
    const l = list({ cniVersion: '1.0.0', name: 'corrupt', plugins: [{ type: 'a' }] });
    const file = r.cache.filePath('corrupt', 'ctr1', 'eth0');
    writeFileSync(file, 'garbage');
    calls.length = 0;
    await r.delNetworkList(l, rt());
    assert.equal(existsSync(file), false);
    assert.equal('prevResult' in calls[0]!.conf, false);
  });

  it('CHECK needs ≥ 0.4.0, honours disableCheck and checks against the cached result', async () => {
    const calls: Call[] = [];
    const r = runtime([
      fake('a', calls, { CHECK: () => ({ stdout: '{"code":120,"msg":"veth gone"}', exitCode: 1 }) }),
      fake('b', calls),
    ]);
    await assert.rejects(
      r.checkNetworkList(list({ cniVersion: '0.3.1', name: 'n', plugins: [{ type: 'b' }] }), rt()),
      (e) => isCniError(e, 1) && /does not support the CHECK command/.test(e.message),
    );
    const dis = list({ cniVersion: '1.0.0', name: 'n', disableCheck: true, plugins: [{ type: 'a' }] });
    const timing = {} as CallTiming;
    await r.checkNetworkList(dis, rt(), { timing });
    assert.equal(timing.invocations.length, 0);
    const ok = list({ cniVersion: '1.0.0', name: 'ok', plugins: [{ type: 'b' }] });
    await r.addNetworkList(ok, rt());
    await r.checkNetworkList(ok, rt());
    assert.deepEqual(calls.at(-1)!.conf.prevResult, RESULT('198.18.0.2/24'));
    const bad = list({
      cniVersion: '1.0.0',
      name: 'bad',
      plugins: [{ type: 'b' }, { type: 'a', name: 'mine' }],
    });
    await assert.rejects(
      r.checkNetworkList(bad, rt()),
      (e) => isCniError(e, 120) && /^plugin type="a" name="mine" failed \(check\): veth gone/.test(e.message),
    );
  });

  it('ADD failing half-way reports the plugin and its spec code, caches nothing', async () => {
    const calls: Call[] = [];
    const r = runtime([
      fake('a', calls),
      fake('b', calls, {
        ADD: () => ({
          stdout: '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no subnet"}',
          exitCode: 1,
        }),
      }),
      fake('c', calls),
    ]);
    const l = list({
      cniVersion: '1.0.0',
      name: 'half',
      plugins: [{ type: 'a' }, { type: 'b' }, { type: 'c' }],
    });
    await assert.rejects(
      r.addNetworkList(l, rt()),
      (e) =>
        isCniError(e, 7) &&
        e.message === 'plugin type="b" failed (add): bad config; no subnet' &&
        e.details.plugin === 'b',
    );
    assert.deepEqual(
      calls.map((c) => c.type),
      ['a', 'b'],
    );
    assert.equal(r.getNetworkListCachedResult(l, rt()), undefined);
  });

  it('validates attachment parameters before running anything', async () => {
    const calls: Call[] = [];
    const r = runtime([fake('a', calls)]);
    const l = list({ cniVersion: '1.0.0', name: 'v', plugins: [{ type: 'a' }] });
    await assert.rejects(r.addNetworkList(l, { ...rt(), containerId: '../etc' }), (e) => isCniError(e, 4));
    await assert.rejects(r.addNetworkList(l, { ...rt(), ifName: 'way-too-long-name' }), (e) =>
      isCniError(e, 4),
    );
    await assert.rejects(
      r.addNetworkList(list({ cniVersion: '1.0.0', name: 'bad name', plugins: [{ type: 'a' }] }), rt()),
      (e) => isCniError(e, 7),
    );
    await assert.rejects(r.addNetworkList(l, { ...rt(), args: [['A;B', 'x']] }), (e) => isCniError(e, 4));
    const bad = { ...l.plugins[0]!, network: { ...l.plugins[0]!.network, name: '../x' } };
    await assert.rejects(r.addNetwork(bad, rt()), (e) => isCniError(e, 7));
    await assert.rejects(r.delNetwork(bad, rt()), (e) => isCniError(e, 7));
    assert.equal(calls.length, 0);
  });

  it('GC deletes stale cached attachments of the network and sends GC with the valid ones (1.1.0)', async () => {
    const calls: Call[] = [];
    const r = runtime([fake('a', calls), fake('b', calls)]);
    const l = list({ cniVersion: '1.1.0', name: 'gcnet', plugins: [{ type: 'a' }, { type: 'b' }] });
    const other = list({ cniVersion: '1.1.0', name: 'other', plugins: [{ type: 'a' }] });
    for (const id of ['k1', 'k2', 'k3']) await r.addNetworkList(l, rt(id));
    await r.addNetworkList(other, rt('k1'));
    calls.length = 0;
    await r.gcNetworkList(l, { validAttachments: [{ containerID: 'k2', ifname: 'eth0' }] });
    const dels = calls.filter((c) => c.command === 'DEL').map((c) => `${c.type}:${c.env.CNI_CONTAINERID}`);
    assert.deepEqual(dels, ['b:k1', 'a:k1', 'b:k3', 'a:k3']);
    const gcs = calls.filter((c) => c.command === 'GC');
    assert.deepEqual(
      gcs.map((c) => c.type),
      ['a', 'b'],
    );
    assert.deepEqual(gcs[0]!.conf['cni.dev/valid-attachments'], [{ containerID: 'k2', ifname: 'eth0' }]);
    assert.deepEqual(gcs[0]!.conf['cni.dev/attachments'], [{ containerID: 'k2', ifname: 'eth0' }]);
    assert.equal(gcs[0]!.env.CNI_CONTAINERID, '');
    assert.deepEqual(
      r.getCachedAttachments().map((a) => `${a.network}/${a.containerId}`),
      ['gcnet/k2', 'other/k1'],
    );
    // older lists get the cache sweep but no GC verb; disableGC does nothing at all
    calls.length = 0;
    await r.gcNetworkList(list({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'a' }] }));
    assert.deepEqual(
      calls.map((c) => c.command),
      ['DEL'],
    );
    calls.length = 0;
    await r.gcNetworkList(
      list({ cniVersion: '1.1.0', name: 'gcnet', disableGC: true, plugins: [{ type: 'a' }] }),
    );
    assert.equal(calls.length, 0);
  });

  it('GC keeps going and reports every failure together', async () => {
    const calls: Call[] = [];
    const fails = () => ({ stdout: '{"code":5,"msg":"io"}', exitCode: 1 });
    const r = runtime([fake('a', calls, { GC: fails }), fake('b', calls, { GC: fails })]);
    const l = list({ cniVersion: '1.1.0', name: 'g', plugins: [{ type: 'a' }, { type: 'b' }] });
    await assert.rejects(
      r.gcNetworkList(l),
      (e) => isTapnetError(e, 'ERR_TEARDOWN') && (e.details.failures as unknown[]).length === 2,
    );
    assert.deepEqual(
      calls.map((c) => c.type),
      ['a', 'b'],
    );
  });

  it('STATUS asks every plugin (1.1.0) and surfaces code 50/51; older lists are always ready', async () => {
    const calls: Call[] = [];
    const r = runtime([
      fake('a', calls),
      fake('b', calls, { STATUS: () => ({ stdout: '{"code":50,"msg":"no addresses left"}', exitCode: 1 }) }),
    ]);
    await r.getStatusNetworkList(list({ cniVersion: '1.1.0', name: 's', plugins: [{ type: 'a' }] }));
    assert.deepEqual(calls.at(-1)!.conf, { cniVersion: '1.1.0', name: 's', type: 'a' });
    assert.equal(calls.at(-1)!.env.CNI_COMMAND, 'STATUS');
    await assert.rejects(
      r.getStatusNetworkList(
        list({ cniVersion: '1.1.0', name: 's', plugins: [{ type: 'a' }, { type: 'b' }] }),
      ),
      (e) => isCniError(e, 50),
    );
    calls.length = 0;
    await r.getStatusNetworkList(list({ cniVersion: '1.0.0', name: 's', plugins: [{ type: 'b' }] }));
    assert.equal(calls.length, 0);
  });

  it('verify() names every missing plugin with the directories looked in, and every version mismatch', async () => {
    const r = runtime([fake('a', []), fake('old', [], {}, ['0.3.1'])]);
    const good = list({
      cniVersion: '1.0.0',
      name: 'g',
      plugins: [
        { type: 'a', capabilities: { portMappings: true, mac: false } },
        { type: 'a', capabilities: { bandwidth: true } },
      ],
    });
    const rep = await r.verify(good);
    assert.deepEqual(rep.capabilities, ['bandwidth', 'portMappings']);
    assert.deepEqual(rep.plugins, [
      { type: 'a', inProcess: true, supportedVersions: ['0.3.1', '0.4.0', '1.0.0', '1.1.0'] },
    ]);
    assert.deepEqual(await r.validateNetworkList(good), ['bandwidth', 'portMappings']);
    const bad = list({
      cniVersion: '1.0.0',
      name: 'b',
      plugins: [{ type: 'nope' }, { type: 'old' }, { type: 'gone' }],
    });
    await assert.rejects(r.verify(bad), (e) => {
      assert.ok(isTapnetError(e, 'ERR_NOT_FOUND'));
      assert.match(
        e.message,
        /plugin "nope" not found in \/p1, \/p2; plugin "gone" not found in \/p1, \/p2; plugin "old" \(in-process\) does not support config version "1.0.0" \(supports 0.3.1\)/,
      );
      assert.deepEqual(e.details.missing, [
        { type: 'nope', lookedIn: ['/p1', '/p2'] },
        { type: 'gone', lookedIn: ['/p1', '/p2'] },
      ]);
      return true;
    });
    await assert.rejects(
      r.verify(list({ cniVersion: '1.0.0', name: 'b', plugins: [{ type: 'old' }] })),
      (e) => isCniError(e, 1),
    );
  });

  it('execs what is not in-process: the executor gets the path, env and stdin; VERSION of an old plugin is 0.1.0', async () => {
    const exec = new FakeExecutor({
      ext: (env) => Buffer.from(env.CNI_COMMAND === 'ADD' ? JSON.stringify(RESULT('198.18.0.9/24')) : ''),
      ancient: () => {
        throw new CniError(4, 'unknown CNI_COMMAND: VERSION');
      },
      modern: () => Buffer.from('{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'),
    });
    const calls: Call[] = [];
    const r = runtime([fake('a', calls)], { executor: exec });
    const l = list({ cniVersion: '1.0.0', name: 'mix', plugins: [{ type: 'a' }, { type: 'ext' }] });
    const timing = {} as CallTiming;
    const res = await r.addNetworkList(l, rt(), { timing });
    assert.deepEqual(res, RESULT('198.18.0.9/24'));
    assert.equal(exec.calls[0]!.path, '/p1/ext');
    assert.equal(exec.calls[0]!.env.CNI_COMMAND, 'ADD');
    assert.deepEqual(JSON.parse(exec.calls[0]!.stdin).prevResult, RESULT('198.18.0.2/24'));
    assert.deepEqual(
      timing.invocations.map((i) => [i.type, i.inProcess, i.path]),
      [
        ['a', true, undefined],
        ['ext', false, '/p1/ext'],
      ],
    );
    assert.deepEqual((await r.getVersionInfo('ancient')).supportedVersions, ['0.1.0']);
    assert.deepEqual((await r.getVersionInfo('modern')).supportedVersions, ['1.0.0', '1.1.0']);
    const v = exec.calls.at(-1)!;
    assert.equal(v.stdin, '{"cniVersion":"1.1.0"}');
    assert.deepEqual(
      [v.env.CNI_COMMAND, v.env.CNI_NETNS, v.env.CNI_IFNAME, v.env.CNI_PATH],
      ['VERSION', 'dummy', 'dummy', 'dummy'],
    );
    await assert.rejects(
      r.verify(list({ cniVersion: '1.0.0', name: 'm', plugins: [{ type: 'ancient' }, { type: 'missing' }] })),
      (e) =>
        isTapnetError(e, 'ERR_NOT_FOUND') &&
        /"ancient" \(\/p1\/ancient\) does not support config version "1.0.0" \(supports 0.1.0\)/.test(
          e.message,
        ),
    );
  });

  it('an in-process plugin wins over an executable of the same type', async () => {
    const exec = new FakeExecutor({ a: () => Buffer.from('{}') });
    const calls: Call[] = [];
    const r = runtime([fake('a', calls)], { executor: exec });
    await r.addNetworkList(list({ cniVersion: '1.0.0', name: 'w', plugins: [{ type: 'a' }] }), rt());
    assert.equal(exec.calls.length, 0);
    assert.equal(calls.length, 1);
  });

  it('in-process failures: thrown errors become code 999; timeouts and aborts are ERR_TIMEOUT / ERR_ABORTED', async () => {
    const hang = () => new Promise<never>(() => {});
    const r = runtime([
      fake('boom', [], { ADD: () => Promise.reject(new Error('kaboom')) }),
      fake('hang', [], { ADD: hang, DEL: hang }),
    ]);
    await assert.rejects(
      r.addNetworkList(list({ cniVersion: '1.0.0', name: 'x', plugins: [{ type: 'boom' }] }), rt()),
      (e) => isCniError(e, 999) && /kaboom/.test(e.message),
    );
    const h = list({ cniVersion: '1.0.0', name: 'h', plugins: [{ type: 'hang' }] });
    const timing = {} as CallTiming;
    await assert.rejects(
      r.addNetworkList(h, rt(), { timeoutMs: 30, timing }),
      (e) => isTapnetError(e, 'ERR_TIMEOUT') && e.details.plugin === 'hang',
    );
    assert.equal(timing.invocations[0]?.ok, false);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop')), 20);
    await assert.rejects(r.delNetworkList(h, rt(), { signal: ac.signal }), (e) =>
      isTapnetError(e, 'ERR_ABORTED'),
    );
    await assert.rejects(r.delNetworkList(h, rt(), { signal: AbortSignal.abort() }), (e) =>
      isTapnetError(e, 'ERR_ABORTED'),
    );
  });

  it('single-network variants cache under the configuration’s own name', async () => {
    const calls: Call[] = [];
    const r = runtime([fake('a', calls)]);
    const l = list({ cniVersion: '1.0.0', name: 'one', plugins: [{ type: 'a', name: 'one' }] });
    const net = { ...l.plugins[0]!, network: { ...l.plugins[0]!.network, cniVersion: '1.0.0' } };
    await r.addNetwork(net, rt());
    assert.ok(r.getNetworkCachedResult(net, rt()));
    assert.equal(r.getNetworkCachedConfig(net, rt())?.config.toString(), net.bytes.toString());
    await r.checkNetwork(net, rt());
    await r.delNetwork(net, rt());
    assert.equal(r.getNetworkCachedResult(net, rt()), undefined);
    assert.deepEqual(
      calls.map((c) => c.command),
      ['ADD', 'CHECK', 'DEL'],
    );
    assert.deepEqual(await r.validateNetwork(net), []);
  });

  it('publishes each plugin execution on tapnet:cni:exec', async () => {
    const seen: unknown[] = [];
    const onMsg = (m: unknown) => seen.push(m);
    subscribe('tapnet:cni:exec', onMsg);
    try {
      const r = runtime([fake('a', [])]);
      await r.addNetworkList(list({ cniVersion: '1.0.0', name: 'obs', plugins: [{ type: 'a' }] }), rt());
    } finally {
      unsubscribe('tapnet:cni:exec', onMsg);
    }
    assert.equal(seen.length, 1);
    assert.deepEqual(
      { ...(seen[0] as object), durationMs: 0 },
      { plugin: 'a', command: 'ADD', network: 'obs', outcome: 'ok', durationMs: 0 },
    );
  });
});
