/**
 * Differential test against Go's libcni: our reference harness (test/fixtures/go-libcni, built here
 * offline against Debian's golang-github-appc-cni-dev) and tapnet run the same conflists; results,
 * plugin inputs and cache files are compared, and each side deletes what the other added.
 *
 * Debian ships libcni 1.1.2. Where libcni ≥ 1.2 (which tapnet follows) differs, the comparison says so:
 * 1.1.2 writes no `netns` in the cache, encodes 1.0.0 results in struct order with an empty `dns`, and
 * has no 1.1.0 result fields (mtu, table, scope…); the test conflists avoid those fields.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type CallTiming, CniRuntime } from '../../src/cni/api.js';
import { cnitoolSetup } from '../../src/cni/cnitool.js';
import { createResultFromJSON, marshalResult } from '../../src/cni/result.js';
import type { CniResult } from '../../src/cni/types.js';
import { convertResult } from '../../src/cni/version.js';
import { deleteLink, findLink } from '../../src/net/link.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const GOPATH = '/usr/share/gocode';
const DEBIAN_CNI = '/usr/lib/cni';

function goSkipReason(): string | undefined {
  if (spawnSync('go', ['version']).status !== 0) return 'go is not installed (apt-get install golang-go)';
  if (!existsSync(join(GOPATH, 'src/github.com/containernetworking/cni/libcni'))) {
    return 'Go libcni sources missing (apt-get install golang-github-appc-cni-dev)';
  }
  if (!existsSync(join(DEBIAN_CNI, 'bridge')))
    return `Debian's containernetworking-plugins not in ${DEBIAN_CNI}`;
  return undefined;
}
const skip = privSkipReason() ?? goSkipReason();

interface Envelope {
  ok: boolean;
  result?: unknown;
  error?: string;
  cniCode?: number;
  ms: number;
}

describe('cni: tapnet vs Go libcni', { skip }, () => {
  const root = mkdtempSync(join(tmpdir(), 'tapnet-cni-diff-'));
  const harness = join(root, 'go-libcni');
  const confDir = join(root, 'net.d');
  const fakes = join(root, 'bin');
  const logs = join(root, 'log');
  const ipam = join(root, 'ipam');
  const tag = `${process.pid % 10000}`;
  const spaces: TestNetns[] = [];
  const bridges: string[] = [];
  let host: NetlinkSocket;

  before(() => {
    for (const d of [confDir, fakes, logs]) mkdirSync(d);
    execFileSync('go', ['build', '-o', harness, './test/fixtures/go-libcni'], {
      cwd: repo,
      env: { ...process.env, GO111MODULE: 'off', GOPATH, GOCACHE: join(root, 'gocache'), GOFLAGS: '' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    host = NetlinkSocket.open();
    // Deterministic plugins: each logs its stdin and CNI_* environment (less the harness's own
    // CNI_CACHE_DIR, which Go's libcni passes on with the rest of its environment) per side and verb, then answers
    // with a fixed result in the configuration's version (or passes its prevResult through).
    const result = (v: string) =>
      v.startsWith('0.')
        ? `{"cniVersion":"${v}","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"198.18.30.2/24","gateway":"198.18.30.1"},{"version":"6","address":"FD00::2/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"198.18.30.1"}],"dns":{"nameservers":["198.18.30.1"],"search":["a<b>&c"]}}`
        : `{"cniVersion":"${v}","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/run/netns/x"}],"ips":[{"interface":0,"address":"198.18.30.2/24","gateway":"198.18.30.1"},{"address":"::ffff:198.18.31.2/120"}],"routes":[{"dst":"0.0.0.0/0","gw":"198.18.30.1"}],"unknown":1}`;
    for (const v of ['0.3.1', '0.4.0', '1.0.0']) {
      writeFileSync(
        join(fakes, `fixed${v.replaceAll('.', '')}`),
        `#!/bin/sh\nn=$(ls ${logs} | wc -l)\ncat > ${logs}/$SIDE-$CNI_COMMAND-$n-fixed.stdin\nenv | grep ^CNI_ | grep -v ^CNI_CACHE_DIR= | sort > ${logs}/$SIDE-$CNI_COMMAND-$n-fixed.env\n[ "$CNI_COMMAND" = ADD ] && echo '${result(v)}'\nexit 0\n`,
        { mode: 0o755 },
      );
    }
  });
  after(() => {
    for (const s of spaces) s.destroy();
    for (const b of bridges) if (host && findLink(host, b)) deleteLink(host, b);
    host?.close();
    rmSync(root, { recursive: true, force: true });
  });

  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    NETCONFPATH: confDir,
    CNI_PATH: `${fakes}:${DEBIAN_CNI}`,
    CNI_IFNAME: 'eth0',
    ...extra,
  });
  const go = (args: string[], e: Record<string, string>): Envelope => {
    const r = spawnSync(harness, args, { env: { ...process.env, SIDE: 'go', ...e }, encoding: 'utf8' });
    return JSON.parse(r.stdout) as Envelope;
  };
  const tapnet = (cacheDir: string) =>
    new CniRuntime({ pluginPaths: [fakes, DEBIAN_CNI], cacheDir, env: { SIDE: 'ts' } });
  const conf = (name: string, v: Record<string, unknown>): void =>
    writeFileSync(join(confDir, `${name}.conflist`), JSON.stringify({ name, ...v }));
  const ns = (t: string): TestNetns => {
    const s = makeTestNetns(`d${t}`);
    spaces.push(s);
    return s;
  };
  const cacheFile = (cacheDir: string): string => {
    const files = readdirSync(join(cacheDir, 'results'));
    assert.equal(files.length, 1);
    return readFileSync(join(cacheDir, 'results', files[0]!), 'utf8');
  };
  const logged = (side: string, verb: string): Array<{ stdin: string; env: string }> =>
    readdirSync(logs)
      .filter((f) => f.startsWith(`${side}-${verb}-`) && f.endsWith('.stdin'))
      .sort((a, b) => Number(a.split('-')[2]) - Number(b.split('-')[2]))
      .map((f) => ({
        stdin: readFileSync(join(logs, f), 'utf8'),
        env: readFileSync(join(logs, f.replace(/stdin$/, 'env')), 'utf8'),
      }));

  for (const v of ['0.3.1', '0.4.0', '1.0.0']) {
    it(`same conflist (${v}, chained, capabilities, CNI_ARGS): same result, same plugin input, same cache bytes`, async () => {
      rmSync(logs, { recursive: true, force: true });
      mkdirSync(logs);
      const name = `fixed-${v.replaceAll('.', '')}`;
      const type = `fixed${v.replaceAll('.', '')}`;
      conf(name, {
        cniVersion: v,
        plugins: [
          { type, capabilities: { portMappings: true, mac: false }, zeta: '<&>', n: 1e21 },
          { type, name: 'second', capabilities: { mac: true } },
        ],
      });
      const e = env({
        CNI_ARGS: 'K8S_POD_NAME=p;IgnoreUnknown=1',
        CAP_ARGS:
          '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"mac":"02:00:00:00:00:09"}',
      });
      const goCache = join(root, `go-cache-${v}`);
      const tsCache = join(root, `ts-cache-${v}`);
      const nsPath = `/run/netns/none-${v}`;
      const g = go(['add', name, nsPath], { ...e, CNI_CACHE_DIR: goCache });
      assert.ok(g.ok, g.error);
      const setup = cnitoolSetup(name, nsPath, e);
      const ours = await tapnet(tsCache).addNetworkList(setup.list, setup.rt);
      // results
      const theirs: CniResult = createResultFromJSON(JSON.stringify(g.result));
      assert.deepEqual(ours, theirs);
      // plugin inputs and environments, per invocation
      for (const verb of ['ADD']) {
        const a = logged('go', verb);
        const b = logged('ts', verb);
        assert.equal(a.length, 2);
        assert.equal(b.length, 2);
        for (let i = 0; i < 2; i++) {
          assert.equal(b[i]!.env, a[i]!.env);
          if (v.startsWith('0.'))
            assert.equal(b[i]!.stdin, a[i]!.stdin, `stdin of plugin ${i}, byte for byte`);
          else assert.deepEqual(dropEmptyDns(JSON.parse(b[i]!.stdin)), dropEmptyDns(JSON.parse(a[i]!.stdin)));
        }
      }
      // cache files: byte for byte (Debian's 1.1.2 writes no netns; libcni ≥ 1.2 and we do)
      const goFile = cacheFile(goCache);
      const tsFile = cacheFile(tsCache);
      assert.ok(tsFile.includes(`"netns":"${nsPath}"`));
      const tsComparable = goFile.includes('"netns"') ? tsFile : tsFile.replace(`,"netns":"${nsPath}"`, '');
      // … and 1.1.2 keeps an empty dns in 1.x results, which libcni ≥ 1.2 and we leave out
      const goComparable = goFile.replace(
        `"result":{"cniVersion":"${v}","dns":{},`,
        `"result":{"cniVersion":"${v}",`,
      );
      assert.equal(tsComparable, goComparable);
      // each side reads the other's cache: DEL hands the same prevResult to the plugins
      rmSync(logs, { recursive: true, force: true });
      mkdirSync(logs);
      assert.ok(go(['del', name, nsPath], { ...e, CNI_CACHE_DIR: tsCache }).ok);
      await tapnet(goCache).delNetworkList(setup.list, setup.rt);
      const gd = logged('go', 'DEL');
      const td = logged('ts', 'DEL');
      assert.equal(gd.length, 2);
      for (let i = 0; i < 2; i++) {
        if (v === '0.3.1') assert.equal(JSON.parse(td[i]!.stdin).prevResult, undefined);
        assert.deepEqual(dropEmptyDns(JSON.parse(td[i]!.stdin)), dropEmptyDns(JSON.parse(gd[i]!.stdin)));
      }
      assert.deepEqual(readdirSync(join(goCache, 'results')), []);
      assert.deepEqual(readdirSync(join(tsCache, 'results')), []);
    });
  }

  it('bridge + static: the same result (but for random MACs and veth names) and cache from both', async () => {
    const name = `bst-${tag}`;
    const br = `tdb${tag}s`;
    bridges.push(br);
    conf(name, {
      cniVersion: '1.0.0',
      plugins: [
        {
          type: 'bridge',
          bridge: br,
          isGateway: true,
          ipam: { type: 'static', addresses: [{ address: '198.18.32.2/24', gateway: '198.18.32.1' }] },
        },
      ],
    });
    const a = ns('sa');
    const b = ns('sb');
    const g = go(['add', name, `/run/netns/${a.name}`], { ...env(), CNI_CACHE_DIR: join(root, 'bst-go') });
    assert.ok(g.ok, g.error);
    // the same address cannot be in two namespaces on one bridge at once: release Go's first
    assert.ok(
      go(['del', name, `/run/netns/${a.name}`], { ...env(), CNI_CACHE_DIR: join(root, 'bst-go') }).ok,
    );
    const setup = cnitoolSetup(name, `/run/netns/${b.name}`, env());
    const ours = await tapnet(join(root, 'bst-ts')).addNetworkList(setup.list, setup.rt);
    const norm = (r: unknown, nsName: string) =>
      JSON.parse(
        JSON.stringify(r)
          .replaceAll(/"mac":"[0-9a-f:]{17}"/g, '"mac":"MAC"')
          .replaceAll(/"veth[0-9a-f]{8}"/g, '"VETH"')
          .replaceAll(`/run/netns/${nsName}`, '/run/netns/NS'),
      );
    assert.deepEqual(norm(ours, b.name), norm(createResultFromJSON(JSON.stringify(g.result)), a.name));
    await tapnet(join(root, 'bst-ts')).delNetworkList(setup.list, setup.rt);
  });

  it('Go ADDs, tapnet CHECKs and DELs; tapnet ADDs, Go CHECKs and DELs (bridge + host-local)', async () => {
    const name = `mix-${tag}`;
    const br = `tdb${tag}m`;
    bridges.push(br);
    conf(name, {
      cniVersion: '1.0.0',
      plugins: [
        {
          type: 'bridge',
          bridge: br,
          isGateway: true,
          ipam: { type: 'host-local', subnet: '198.18.33.0/24', dataDir: ipam },
        },
      ],
    });
    const cache = join(root, 'mix-cache');
    const leases = () => readdirSync(join(ipam, name)).filter((f) => /^\d/.test(f));
    const a = ns('ma');
    const b = ns('mb');
    const ts = tapnet(cache);
    const timings: string[] = [];

    const g = go(['add', name, `/run/netns/${a.name}`], { ...env(), CNI_CACHE_DIR: cache });
    assert.ok(g.ok, g.error);
    assert.equal(leases().length, 1);
    const sa = cnitoolSetup(name, `/run/netns/${a.name}`, env());
    assert.deepEqual(
      ts.getNetworkListCachedResult(sa.list, sa.rt),
      createResultFromJSON(JSON.stringify(g.result)),
    );
    await ts.checkNetworkList(sa.list, sa.rt);
    const t = {} as CallTiming;
    await ts.delNetworkList(sa.list, sa.rt, { timing: t });
    timings.push(
      `go add ${g.ms.toFixed(1)} ms (process), tapnet del ${t.totalMs.toFixed(1)} ms (plugins ${t.pluginMs.toFixed(1)})`,
    );
    assert.deepEqual(leases(), []);
    assert.equal(findLink(a.nl, 'eth0'), undefined);
    assert.deepEqual(readdirSync(join(cache, 'results')), []);

    const sb = cnitoolSetup(name, `/run/netns/${b.name}`, env());
    const t2 = {} as CallTiming;
    const ours = await ts.addNetworkList(sb.list, sb.rt, { timing: t2 });
    assert.equal(leases().length, 1);
    const cached = go(['cached', name, `/run/netns/${b.name}`], { ...env(), CNI_CACHE_DIR: cache });
    assert.deepEqual(createResultFromJSON(JSON.stringify(cached.result)), ours);
    assert.ok(go(['check', name, `/run/netns/${b.name}`], { ...env(), CNI_CACHE_DIR: cache }).ok);
    const gd = go(['del', name, `/run/netns/${b.name}`], { ...env(), CNI_CACHE_DIR: cache });
    assert.ok(gd.ok, gd.error);
    timings.push(
      `tapnet add ${t2.totalMs.toFixed(1)} ms (plugins ${t2.pluginMs.toFixed(1)}), go del ${gd.ms.toFixed(1)} ms (process)`,
    );
    assert.deepEqual(leases(), []);
    assert.equal(findLink(b.nl, 'eth0'), undefined);
    assert.deepEqual(readdirSync(join(cache, 'results')), []);
    for (const line of timings) process.stderr.write(`# ${line}\n`);
  });

  it('both refuse the same broken inputs: a missing plugin, an unknown network', async () => {
    conf(`miss-${tag}`, { cniVersion: '1.0.0', plugins: [{ type: 'no-such-plugin' }] });
    const g = go(['add', `miss-${tag}`, '/run/netns/none'], { ...env(), CNI_CACHE_DIR: join(root, 'miss') });
    assert.equal(g.ok, false);
    assert.match(g.error!, /failed to find plugin "no-such-plugin"/);
    const s = cnitoolSetup(`miss-${tag}`, '/run/netns/none', env());
    await assert.rejects(
      tapnet(join(root, 'miss')).addNetworkList(s.list, s.rt),
      (e) => (e as Error).message === g.error,
    );
    const u = go(['add', 'unknown-net', '/run/netns/none'], env());
    assert.equal(u.ok, false);
    assert.throws(
      () => cnitoolSetup('unknown-net', '/run/netns/none', env()),
      (e) => (e as Error).message === u.error,
    );
  });

  it('converts results between versions as the Go build does (live check of the golden fixture)', () => {
    const golden = JSON.parse(
      readFileSync(join(repo, 'test/fixtures/go-libcni/conversions.json'), 'utf8'),
    ) as {
      cases: Array<{ input: unknown; go: Record<string, unknown> }>;
    };
    for (const c of golden.cases) {
      const live = go(['convert', JSON.stringify(c.input)], {});
      assert.deepEqual(live.result, c.go);
      const r = createResultFromJSON(JSON.stringify(c.input));
      for (const [v, out] of Object.entries(c.go)) {
        if ((out as { error?: string }).error) continue;
        assert.deepEqual(dropEmptyDns(JSON.parse(marshalResult(convertResult(r, v)))), dropEmptyDns(out));
      }
    }
  });
});

/** libcni 1.1.2 writes `"dns":{}` in 1.x results; ≥ 1.2 leaves it out. Compare without it. */
function dropEmptyDns(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropEmptyDns);
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === 'dns' && x && typeof x === 'object' && Object.keys(x).length === 0) continue;
      o[k] = dropEmptyDns(x);
    }
    return o;
  }
  return v;
}
