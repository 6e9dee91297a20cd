/**
 * The two sides of the `cni` suite (bench/cni.ts), step by step so that the suite can alternate them:
 * tapnet's NetworkManager in CNI mode and the Go reference harness per VM, and the libcni calls alone in
 * a loop (tapnet's CniRuntime with a given executor; the harness's `cycle` in one warm Go process).
 */
import { join } from 'node:path';
import { CniRuntime } from '../src/cni/api.js';
import { loadNetworkConf } from '../src/cni/conf.js';
import { ExecPluginExecutor, type PluginExecutor } from '../src/cni/exec.js';
import { inProcessPlugins } from '../src/cni/plugins/index.js';
import type { CallTiming } from '../src/cni/runtime-base.js';
import { TapnetError } from '../src/errors.js';
import { NetworkManager } from '../src/manager/manager.js';
import { createNetns, NETNS_RUN_DIR } from '../src/net/netns.js';
import { withNetns } from '../src/sys/ns.js';
import { DEBIAN_CNI, FC_NET, ipBinary, mustRun, type World } from './cni-run.js';
import { msSince } from './lib/stats.js';

/** Node's spawn() forks the calling thread, so entering the namespace around the (synchronous) spawn works. */
export class NodeSpawnInNetns implements PluginExecutor {
  private readonly inner = new ExecPluginExecutor({ stderr: null });
  constructor(private readonly nsFd: number) {}
  findInPath(type: string, paths: readonly string[]): string {
    return this.inner.findInPath(type, paths);
  }
  decode(stdout: Buffer) {
    return this.inner.decode(stdout);
  }
  execPlugin(path: string, stdin: Buffer, env: Record<string, string>, opts = {}): Promise<Buffer> {
    let p: Promise<Buffer> | undefined;
    withNetns(this.nsFd, () => {
      p = this.inner.execPlugin(path, stdin, env, opts);
    });
    return p!;
  }
}

export interface PerVm {
  setup: number[];
  teardown: number[];
  /** The libcni call alone (tapnet: CallTiming.totalMs; Go: the harness's own `ms`). */
  add: number[];
  del: number[];
  addTiming: CallTiming[];
  delTiming: CallTiming[];
}

const emptyPerVm = (): PerVm => ({ setup: [], teardown: [], add: [], del: [], addTiming: [], delTiming: [] });

/** Per-VM steps of one side: set up VM i, tear it down; `timed` false for warm-up. */
export interface VmSide {
  out: PerVm;
  setup(i: number, timed: boolean): Promise<void>;
  teardown(i: number, timed: boolean): Promise<void>;
  close(): Promise<void>;
}

/** VMs through NetworkManager.ensure/release in CNI mode (the plugins' host: the world's namespace). */
export async function tapnetSide(w: World): Promise<VmSide> {
  const m = await NetworkManager.open({
    stateDir: join(w.dir, 'state'),
    netns: `${NETNS_RUN_DIR}/${w.tag}`,
    firewall: 'none',
    defaultNetwork: 'fc',
    networks: {
      fc: {
        mode: 'cni',
        cni: {
          network: FC_NET,
          confDir: w.confDir,
          cacheDir: w.cacheDir,
          pluginPaths: [DEBIAN_CNI],
          netnsPrefix: w.tag,
        },
      },
    },
  });
  const out = emptyPerVm();
  return {
    out,
    async setup(i, timed) {
      const t0 = process.hrtime.bigint();
      const info = await m.ensure(`vm-${i}`);
      const ms = msSince(t0);
      if (!info.tap || !info.ipv4)
        throw new TapnetError('ERR_INTERNAL', `ensure vm-${i} gave no TAP or address`);
      if (!timed) return;
      out.setup.push(ms);
      out.addTiming.push(m.cni.lastTiming!);
      out.add.push(m.cni.lastTiming!.totalMs);
    },
    async teardown(i, timed) {
      const t0 = process.hrtime.bigint();
      await m.release(`vm-${i}`);
      const ms = msSince(t0);
      if (!timed) return;
      out.teardown.push(ms);
      out.delTiming.push(m.cni.lastTiming!);
      out.del.push(m.cni.lastTiming!.totalMs);
    },
    close: () => m.close(),
  };
}

function goEnv(w: World, pluginDir: string, id: string): Record<string, string | undefined> {
  return {
    ...process.env,
    NETCONFPATH: w.confDir,
    CNI_PATH: pluginDir,
    CNI_CACHE_DIR: w.cacheDir,
    CNI_IFNAME: 'eth0',
    CNI_CONTAINERID: id,
  };
}

/** VMs with the Go harness, as cnitool would: `ip netns add` + harness ADD; harness DEL + `ip netns del`. */
export function goSide(w: World, harness: string, pluginDir: string): VmSide {
  const ip = ipBinary();
  const out = emptyPerVm();
  const nsPath = (i: number): string => `${NETNS_RUN_DIR}/${w.tag}-v${i}`;
  return {
    out,
    async setup(i, timed) {
      const ns = `${w.tag}-v${i}`;
      const a = await mustRun(ip, ['netns', 'add', ns]);
      w.vmNetns.add(ns);
      const add = await mustRun(harness, ['add', FC_NET, nsPath(i)], {
        env: goEnv(w, pluginDir, `vm-${i}`),
        netnsFd: w.host.fd,
      });
      const env = JSON.parse(add.stdout) as {
        ms: number;
        result?: { ips?: unknown[]; interfaces?: { name: string }[] };
      };
      if (!env.result?.ips?.length || !env.result.interfaces?.some((x) => x.name.startsWith('tap')))
        throw new TapnetError('ERR_INTERNAL', `Go ADD for vm-${i} gave no address or TAP: ${add.stdout}`);
      if (!timed) return;
      out.setup.push(a.ms + add.ms);
      out.add.push(env.ms);
    },
    async teardown(i, timed) {
      const del = await mustRun(harness, ['del', FC_NET, nsPath(i)], {
        env: goEnv(w, pluginDir, `vm-${i}`),
        netnsFd: w.host.fd,
      });
      const d = await mustRun(ip, ['netns', 'del', `${w.tag}-v${i}`]);
      w.vmNetns.delete(`${w.tag}-v${i}`);
      if (!timed) return;
      out.teardown.push(del.ms + d.ms);
      out.del.push((JSON.parse(del.stdout) as { ms: number }).ms);
    },
    close: async () => undefined,
  };
}

/** Steps of (ADD, DEL) of a conflist in one namespace through tapnet's CniRuntime: the libcni calls alone. */
export interface Loop {
  add: CallTiming[];
  del: CallTiming[];
  step(timed: boolean): Promise<void>;
}

/** A Loop over `net` with the given executor (tc-redirect-tap in-process or exec'd). */
export function tapnetLoop(
  w: World,
  net: string,
  how: { executor: PluginExecutor; inProcess: boolean; pluginPaths: string[]; label: string },
): Loop {
  const rt = new CniRuntime({
    pluginPaths: how.pluginPaths,
    cacheDir: join(w.dir, `cache-${how.label}`),
    inProcessPlugins: how.inProcess ? inProcessPlugins : [],
    executor: how.executor,
  });
  const list = loadNetworkConf(w.confDir, net);
  const ns = `${w.tag}-l${how.label}`;
  createNetns(ns).close();
  w.vmNetns.add(ns);
  const conf = { containerId: `loop-${how.label}`, netns: `${NETNS_RUN_DIR}/${ns}`, ifName: 'eth0' };
  const loop: Loop = {
    add: [],
    del: [],
    async step(timed) {
      const a = {} as CallTiming;
      await rt.addNetworkList(list, conf, { timing: a });
      const d = {} as CallTiming;
      await rt.delNetworkList(list, conf, { timing: d });
      if (timed) {
        loop.add.push(a);
        loop.del.push(d);
      }
    },
  };
  return loop;
}

/** `k` iterations of the same loop in one warm Go process (`go-libcni cycle`), the first not counted. */
export async function goLoopChunk(
  w: World,
  harness: string,
  pluginDir: string,
  net: string,
  k: number,
  into: { add: number[]; del: number[] },
): Promise<void> {
  const ns = `${w.tag}-lgo-${net}`;
  if (!w.vmNetns.has(ns)) {
    createNetns(ns).close();
    w.vmNetns.add(ns);
  }
  const r = await mustRun(harness, ['cycle', net, `${NETNS_RUN_DIR}/${ns}`, String(k + 1)], {
    env: goEnv(w, pluginDir, `loop-go-${net}`),
    netnsFd: w.host.fd,
  });
  const it = ((JSON.parse(r.stdout) as { iterations?: number[] }).iterations ?? []).slice(2);
  for (let i = 0; i < it.length; i += 2) {
    into.add.push(it[i]!);
    into.del.push(it[i + 1]!);
  }
}
