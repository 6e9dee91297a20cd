/**
 * The `cni` suite (issue 4: CNI mode): per-VM setup/teardown in CNI mode through the NetworkManager
 * (namespace + Debian bridge with host-local + our tc-redirect-tap in-process) against the Go reference
 * harness (test/fixtures/go-libcni, built here) on the same conflist in the same run, the two sides
 * alternating VM by VM; tapnet's own overhead per libcni call (CallTiming: total − time inside plugins);
 * tc-redirect-tap in-process vs its standalone executable; and what starting a plugin process costs with
 * Node's spawn() vs posix_spawn, at this process's size and at ≈ 260 MB RSS.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { PluginExecutor } from '../src/cni/exec.js';
import type { CallTiming } from '../src/cni/runtime-base.js';
import { SpawnPluginExecutor } from '../src/cni/spawn-executor.js';
import { TapnetError } from '../src/errors.js';
import {
  BRIDGE_NET,
  buildGoHarness,
  DEBIAN_CNI,
  execPluginDir,
  FC_NET,
  makeWorld,
  nodeSpawnTrue,
  posixSpawnTrue,
} from './cni-run.js';
import {
  goLoopChunk,
  goSide,
  type Loop,
  NodeSpawnInNetns,
  tapnetLoop,
  tapnetSide,
  type VmSide,
} from './cni-sides.js';
import { type BenchRecord, fmtMs, makeRecord, median, percentile } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const NAME = 'cni';
const log = (m: string): void => void process.stderr.write(`  cni: ${m}\n`);

/** Run `steps` in turn, `n` rounds after `warm` untimed ones: drift and noise hit every side alike. */
async function interleave(
  n: number,
  warm: number,
  steps: ((i: number, timed: boolean) => Promise<void>)[],
): Promise<void> {
  for (let i = 0; i < warm + n; i++) for (const s of steps) await s(i, i >= warm);
}

type SpawnSeries = { create: number[]; total: number[] };

/** Node's spawn() and posix_spawn of /bin/true, alternating. */
async function spawnPair(n: number): Promise<{ node: SpawnSeries; posix: SpawnSeries }> {
  const node: SpawnSeries = { create: [], total: [] };
  const posix: SpawnSeries = { create: [], total: [] };
  for (let i = 0; i < n + 10; i++) {
    const a = await nodeSpawnTrue();
    const b = await posixSpawnTrue();
    if (i < 10) continue;
    node.create.push(a.create);
    node.total.push(a.total);
    posix.create.push(b.create);
    posix.total.push(b.total);
  }
  return { node, posix };
}

/** Keep ≈ `mb` MB of small JS objects alive (what a busy daemon's heap looks like to fork). */
function ballast(mb: number): unknown[] {
  const keep: unknown[] = [];
  while (process.memoryUsage().rss < mb * 1e6)
    keep.push(Array.from({ length: 50_000 }, (_, i) => ({ i, s: `v${i}` })));
  return keep;
}

/** A full GC now, so that a major collection does not land inside the measurements. */
function settle(): void {
  setFlagsFromString('--expose_gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
}

const rssMb = (): number => Math.round(process.memoryUsage().rss / 1e6);
const stat = (xs: number[]): string =>
  `median ${fmtMs(median(xs))} ms, p95 ${fmtMs(
    percentile(
      [...xs].sort((a, b) => a - b),
      95,
    ),
  )} ms`;
const invocationMs = (ts: CallTiming[], type: string): number[] =>
  ts.flatMap((t) => t.invocations.filter((i) => i.type === type).map((i) => i.ms));

/** Alternate tapnet loop steps with chunks of the Go `cycle` (10 chunks), two warm-up steps first. */
async function loopsWithGo(
  n: number,
  loops: Loop[],
  go: ((k: number) => Promise<void>) | undefined,
): Promise<void> {
  for (const l of loops) for (let i = 0; i < 2; i++) await l.step(false);
  const chunk = Math.max(1, Math.ceil(n / 10));
  for (let done = 0; done < n; done += chunk) {
    const k = Math.min(chunk, n - done);
    for (let j = 0; j < k; j++) for (const l of loops) await l.step(true);
    await go?.(k);
  }
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const scale = opts.scale > 0 ? opts.scale : 1;
  const vms = opts.quick ? 10 : Math.max(5, Math.round(100 * scale));
  const loops = opts.quick ? 10 : Math.max(5, Math.round(100 * scale));
  const nodeLoops = opts.quick ? 5 : Math.max(5, Math.round(30 * scale));
  const spawns = opts.quick ? 50 : 300;
  const out: BenchRecord[] = [];
  const rec = (
    subject: string,
    op: string,
    xs: number[],
    more: Parameters<typeof makeRecord>[4] = {},
  ): void => {
    out.push(makeRecord(NAME, subject, op, xs, more));
  };
  const tot = (ts: CallTiming[]) => ts.map((x) => x.totalMs);
  const ovh = (ts: CallTiming[]) => ts.map((x) => x.overheadMs);
  const spawnPart = (ts: CallTiming[]) => ts.map((x) => x.spawnMs);

  settle();
  const small = rssMb();
  log(`spawn /bin/true ×${spawns} at ${small} MB RSS (Node spawn() and posix_spawn alternating)`);
  const s1 = await spawnPair(spawns);

  const tw = await makeWorld('cnit');
  const gw = await makeWorld('cnig');
  let tside: VmSide | undefined;
  try {
    const harness = buildGoHarness(gw.dir);
    const plugins = execPluginDir(gw.dir);
    tside = await tapnetSide(tw);
    const t = tside;
    const g = goSide(gw, harness, plugins.dir);
    log(`per VM, ${vms} VMs: tapnet NetworkManager and the Go harness alternating`);
    for (const side of [t, g]) {
      for (let i = 0; i < 2; i++) await side.setup(1000 + i, false);
      for (let i = 0; i < 2; i++) await side.teardown(1000 + i, false);
    }
    settle();
    await interleave(vms, 0, [t.setup, g.setup]);
    await interleave(vms, 0, [t.teardown, g.teardown]);
    if (tw.leases() || gw.leases())
      throw new TapnetError('ERR_INTERNAL', 'host-local kept leases after teardown');

    const spawnEx = new SpawnPluginExecutor({ stderr: null, hostNsFd: tw.host.fd });
    const nodeEx = new NodeSpawnInNetns(tw.host.fd);
    const loop = (net: string, executor: PluginExecutor, label: string, inProcess = true): Loop =>
      tapnetLoop(tw, net, {
        executor,
        inProcess,
        pluginPaths: inProcess ? [DEBIAN_CNI] : [plugins.dir],
        label,
      });
    log(
      `bridge → tc-redirect-tap loops ×${loops}: tapnet in-process; ×${nodeLoops}: tc-redirect-tap exec'd, Go`,
    );
    const tl = loop(FC_NET, spawnEx, 'in');
    await loopsWithGo(loops, [tl], undefined);
    const tx = loop(FC_NET, spawnEx, 'ex', false);
    const gl = { add: [] as number[], del: [] as number[] };
    await loopsWithGo(nodeLoops, [tx], (k) => goLoopChunk(gw, harness, plugins.dir, FC_NET, k, gl));
    log(`bridge-only loops ×${loops}: tapnet posix_spawn / Node spawn() / Go alternating`);
    const bp = loop(BRIDGE_NET, spawnEx, 'bp');
    const bn = loop(BRIDGE_NET, nodeEx, 'bn');
    const bg = { add: [] as number[], del: [] as number[] };
    settle();
    await loopsWithGo(loops, [bp, bn], (k) => goLoopChunk(gw, harness, plugins.dir, BRIDGE_NET, k, bg));

    let keep: unknown[] | undefined = ballast(260);
    settle();
    const big = rssMb();
    log(`at ${big} MB RSS: spawn /bin/true ×${spawns}, bridge-only loops ×${loops}`);
    const s2 = await spawnPair(spawns);
    const bpBig = loop(BRIDGE_NET, spawnEx, 'bpb');
    const bnBig = loop(BRIDGE_NET, nodeEx, 'bnb');
    await loopsWithGo(loops, [bpBig, bnBig], undefined);
    keep = undefined;
    void keep;

    const goNote =
      "tc-redirect-tap exec'd as dist/cni/tc-redirect-tap (Node, one bundled file): Go cannot run ours in-process";
    rec('tapnet NetworkManager (CNI mode)', 'vm setup', t.out.setup, {
      baseline: true,
      note: `ensure(): netns create + ADD (bridge+host-local exec'd by posix_spawn in the manager's netns, tc-redirect-tap in-process) + record`,
    });
    rec('Go libcni harness (per VM)', 'vm setup', g.out.setup, {
      note: `\`ip netns add\` + harness ADD process; ${goNote}`,
    });
    rec('tapnet NetworkManager (CNI mode)', 'vm teardown', t.out.teardown, {
      baseline: true,
      note: 'release(): DEL + netns delete + record',
    });
    rec('Go libcni harness (per VM)', 'vm teardown', g.out.teardown, {
      note: 'harness DEL process + `ip netns del`',
    });
    rec('tapnet, per VM', 'ADD (libcni call)', t.out.add, { baseline: true });
    rec('Go harness, per VM (its own ms)', 'ADD (libcni call)', g.out.add, {
      note: 'time inside the harness process (conflist load + AddNetworkList)',
    });
    rec('tapnet, warm loop', 'ADD (libcni call)', tot(tl.add));
    rec("tapnet, tc-redirect-tap exec'd, warm loop", 'ADD (libcni call)', tot(tx.add));
    rec('Go harness, warm loop (cycle)', 'ADD (libcni call)', gl.add);
    rec('tapnet, per VM', 'DEL (libcni call)', t.out.del, { baseline: true });
    rec('Go harness, per VM (its own ms)', 'DEL (libcni call)', g.out.del);
    rec('tapnet, warm loop', 'DEL (libcni call)', tot(tl.del));
    rec("tapnet, tc-redirect-tap exec'd, warm loop", 'DEL (libcni call)', tot(tx.del));
    rec('Go harness, warm loop (cycle)', 'DEL (libcni call)', gl.del);
    rec('tapnet, per VM', 'ADD overhead (total − plugins)', ovh(t.out.addTiming), { note: 'target ≤ 1 ms' });
    rec('tapnet, warm loop', 'ADD overhead (total − plugins)', ovh(tl.add));
    rec('tapnet, per VM', 'DEL overhead (total − plugins)', ovh(t.out.delTiming), { note: 'target ≤ 1 ms' });
    rec('tapnet, warm loop', 'DEL overhead (total − plugins)', ovh(tl.del));
    rec('in-process', 'tc-redirect-tap ADD', invocationMs(tl.add, 'tc-redirect-tap'), { baseline: true });
    rec("exec'd standalone (posix_spawn)", 'tc-redirect-tap ADD', invocationMs(tx.add, 'tc-redirect-tap'));
    rec('in-process', 'tc-redirect-tap DEL', invocationMs(tl.del, 'tc-redirect-tap'), { baseline: true });
    rec("exec'd standalone (posix_spawn)", 'tc-redirect-tap DEL', invocationMs(tx.del, 'tc-redirect-tap'));
    for (const [label, p, nd, pBig, nBig, goXs] of [
      ['ADD', bp.add, bn.add, bpBig.add, bnBig.add, bg.add],
      ['DEL', bp.del, bn.del, bpBig.del, bnBig.del, bg.del],
    ] as const) {
      const op = `bridge-only ${label} (libcni call)`;
      rec(`tapnet posix_spawn @${small} MB`, op, tot(p), {
        baseline: true,
        note: `overhead ${stat(ovh(p))}`,
      });
      rec(`tapnet Node spawn() @${small} MB`, op, tot(nd), { note: `overhead ${stat(ovh(nd))}` });
      rec(`tapnet posix_spawn @${big} MB`, op, tot(pBig), { note: `overhead ${stat(ovh(pBig))}` });
      rec(`tapnet Node spawn() @${big} MB`, op, tot(nBig), { note: `overhead ${stat(ovh(nBig))}` });
      rec('Go harness, warm loop (cycle)', op, [...goXs]);
      const sop = `bridge-only ${label}: process creation (spawnMs)`;
      rec(`tapnet posix_spawn @${small} MB`, sop, spawnPart(p), {
        baseline: true,
        note: 'one process per call (bridge; host-local is started by bridge itself)',
      });
      rec(`tapnet Node spawn() @${small} MB`, sop, spawnPart(nd));
      rec(`tapnet posix_spawn @${big} MB`, sop, spawnPart(pBig));
      rec(`tapnet Node spawn() @${big} MB`, sop, spawnPart(nBig));
    }
    for (const [what, key] of [
      ['create', 'create'],
      ['to exit', 'total'],
    ] as const) {
      const op = `spawn /bin/true (${what})`;
      rec(`posix_spawn @${small} MB`, op, s1.posix[key], { baseline: true });
      rec(`Node spawn() @${small} MB`, op, s1.node[key]);
      rec(`posix_spawn @${big} MB`, op, s2.posix[key]);
      rec(`Node spawn() @${big} MB`, op, s2.node[key]);
    }
  } finally {
    await tside?.close();
    tw.close();
    gw.close();
  }
  return out;
}

export const suite: BenchSuite = {
  name: NAME,
  description:
    'CNI mode per VM (netns + bridge + tc-redirect-tap) vs the Go libcni harness; overhead per call; plugin process creation',
  run,
};
