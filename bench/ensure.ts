/**
 * The `ensure` suite (issue: step 2): a VM's whole network (TAP + IPAM + store + firewall elements) per
 * `ensure`, and `release`, at 1 and 1,000 VMs in bridge topology and at 1, 1,000 and 10,000 in routed
 * topology; against the CNI bridge + host-local plugins and netavark in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ManagerConfigInput } from '../src/manager/config.js';
import { NetworkManager } from '../src/manager/manager.js';
import { createNetns, deleteNetns } from '../src/net/netns.js';
import { type BenchRecord, flatness, fmtMs, makeRecord, msSince } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';
import { cniBridgeVms, netavarkContainers, peerCounts } from './peers.js';

const NAME = 'ensure';

interface Run {
  ensure: number[];
  release: number[];
  /** Per-VM cost of releasing all VMs at once (releaseMany): total / n. */
  releaseManyPerVm: number;
  first: number;
  last: number;
}

async function tapnetRun(topology: 'bridge' | 'routed', n: number, sequentialReleases: number): Promise<Run> {
  const tag = `bench-ens-${process.pid}-${topology}-${n}`;
  const ns = createNetns(tag);
  const stateDir = mkdtempSync(join(tmpdir(), 'tapnet-bench-'));
  const config: ManagerConfigInput = {
    stateDir,
    netns: ns.path,
    defaultNetwork: 'bench',
    networks: {
      bench:
        topology === 'bridge'
          ? { topology, bridge: 'tnb0', subnet4: '198.18.0.0/22' }
          : { topology, bridge: 'tngw0', subnet4: '198.19.0.0/16' },
    },
  };
  const m = await NetworkManager.open(config);
  try {
    await m.ensure('warmup');
    await m.release('warmup');
    const ensure: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await m.ensure(`vm-${i}`);
      ensure.push(msSince(t0));
    }
    const release: number[] = [];
    const seq = Math.min(sequentialReleases, n);
    for (let i = 0; i < seq; i++) {
      const t0 = process.hrtime.bigint();
      // wait: the kernel's deletion included, as the peers' DEL includes it (a plain release answers
      // before it; the api suite measures that).
      await m.release(`vm-${i}`, { wait: true });
      release.push(msSince(t0));
    }
    const rest = Array.from({ length: n - seq }, (_, i) => `vm-${i + seq}`);
    const t0 = process.hrtime.bigint();
    const { failed } = await m.releaseMany(rest, { wait: true });
    const total = msSince(t0);
    if (failed.length) throw failed[0]!.error;
    const f = flatness(ensure);
    return {
      ensure,
      release,
      releaseManyPerVm: rest.length ? total / rest.length : Number.NaN,
      first: f.first,
      last: f.last,
    };
  } finally {
    await m.close();
    ns.close();
    deleteNetns(tag);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const { vms } = peerCounts(opts);
  const log = (m: string): void => void process.stderr.write(`  ensure: ${m}\n`);
  const out: BenchRecord[] = [];
  const bridgeN = opts.quick ? 100 : 1000;
  const routedN = opts.quick ? [100] : [1000, 10_000];
  const seqReleases = opts.quick ? 20 : 100;

  const record = (subject: string, r: Run, baseline: boolean): void => {
    out.push(
      makeRecord(NAME, subject, 'vm setup', r.ensure, {
        baseline,
        note: `first-decile ${fmtMs(r.first)} ms, last-decile ${fmtMs(r.last)} ms (${(r.last / r.first).toFixed(2)}×)`,
        extra: { first: r.first, last: r.last },
      }),
      makeRecord(NAME, subject, 'vm teardown', r.release, { baseline, note: 'release() one at a time' }),
      makeRecord(NAME, subject, 'vm teardown (many at once)', [r.releaseManyPerVm], {
        note: 'releaseMany() of the rest: per VM = total / n (link deletions batched into one group delete)',
      }),
    );
  };

  for (const n of opts.quick ? [1, bridgeN] : [1, bridgeN]) {
    log(`tapnet bridge topology, ${n} VM(s)`);
    record(`tapnet bridge @${n}`, await tapnetRun('bridge', n, Math.min(seqReleases, n)), n === bridgeN);
  }
  for (const n of [1, ...routedN]) {
    log(`tapnet routed topology, ${n} VM(s)`);
    record(`tapnet routed @${n}`, await tapnetRun('routed', n, Math.min(seqReleases, n)), false);
  }

  log(`CNI bridge + host-local, ${vms} VMs`);
  const cni = await cniBridgeVms(vms);
  out.push(
    makeRecord(NAME, `CNI bridge+host-local @${vms}`, 'vm setup', cni.setup, {
      note: 'netns add + ADD (exec per VM)',
    }),
    makeRecord(NAME, `CNI bridge+host-local @${vms}`, 'vm teardown', cni.teardown, {
      note: 'DEL + netns delete',
    }),
  );
  log(`netavark, ${vms} containers`);
  const nv = await netavarkContainers(vms);
  out.push(
    makeRecord(NAME, `netavark @${vms}`, 'vm setup', nv.setup),
    makeRecord(NAME, `netavark @${vms}`, 'vm teardown', nv.teardown),
  );
  return out;
}

export const suite: BenchSuite = {
  name: NAME,
  description:
    'a VM network per ensure/release (TAP + IPAM + store + firewall): tapnet bridge/routed vs CNI and netavark',
  run,
};
