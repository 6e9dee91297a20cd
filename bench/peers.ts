/**
 * The `peers` suite: what the tools tapnet is compared with cost on this machine, on their own.
 * The functions are re-exported so the tapnet suites (tap.ts, ensure.ts) can run a peer in the same run
 * and print ratios against it.
 */

import { type BenchRecord, flatness, fmtMs, makeRecord } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';
import { cniBridgeVms, cniChainVms } from './peers/cni.js';
import { spawnFloor } from './peers/exec.js';
import { ipBatchTaps, ipSequenceTaps, type PeerTimings } from './peers/ip.js';
import { netavarkContainers } from './peers/netavark.js';

export { type CniTimings, cniBridgeVms, cniChainVms, cniVms } from './peers/cni.js';
export { spawnFloor } from './peers/exec.js';
export { type BatchTimings, ipBatchTaps, ipSequenceTaps, type PeerTimings } from './peers/ip.js';
export { netavarkContainers } from './peers/netavark.js';

/** Item counts of a run: TAPs for iproute2, VMs/containers for CNI and netavark. */
export function peerCounts(opts: BenchOptions): { taps: number; vms: number; rounds: number } {
  const scale = opts.scale > 0 ? opts.scale : 1;
  return {
    taps: opts.quick ? 100 : Math.max(1, Math.round(1000 * scale)),
    vms: opts.quick ? 20 : Math.min(1000, Math.max(1, Math.round(100 * scale))),
    rounds: opts.quick ? 1 : 3,
  };
}

/** `<item> setup` and `<item> teardown` records of one subject's per-item timings. */
export function setupTeardownRecords(
  suite: string,
  subject: string,
  item: string,
  t: PeerTimings,
  more: { baseline?: boolean; note?: string } = {},
): BenchRecord[] {
  return [
    makeRecord(suite, subject, `${item} setup`, t.setup, more),
    makeRecord(suite, subject, `${item} teardown`, t.teardown, { baseline: more.baseline }),
  ];
}

const NAME = 'peers';

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const { taps, vms, rounds } = peerCounts(opts);
  const out: BenchRecord[] = [];
  const log = (m: string): void => void process.stderr.write(`  peers: ${m}\n`);

  log(`spawning /bin/true ×${vms}`);
  out.push(
    makeRecord(NAME, 'node spawnSync', 'start /bin/true', spawnFloor(vms), {
      note: 'the floor under every peer below: each runs as child processes of this Node process',
    }),
  );

  log(`ip, one process per command, ${taps} TAPs`);
  const seq = await ipSequenceTaps(taps);
  out.push(
    ...setupTeardownRecords(NAME, 'ip (3 commands/TAP)', 'tap', seq, {
      note: 'ip tuntap add dev X mode tap; ip link set X master br0; ip link set X up / ip link del X',
    }),
  );

  log(`ip -batch, ${taps} TAPs × ${rounds} round(s)`);
  const batch = await ipBatchTaps(taps, { rounds });
  out.push(
    ...setupTeardownRecords(NAME, 'ip -batch', 'tap', batch, {
      baseline: true,
      note: `one ip -batch process for all ${taps} TAPs (per TAP = total/n, one sample per round); totals ${batch.setupTotal.map(fmtMs).join(', ')} / ${batch.teardownTotal.map(fmtMs).join(', ')} ms`,
    }),
  );

  log(`ip -batch + link del group, ${taps} TAPs × ${rounds} round(s)`);
  const group = await ipBatchTaps(taps, { rounds, teardown: 'group' });
  out.push(
    makeRecord(NAME, 'ip link del group', 'tap teardown', group.teardown, {
      note: `all ${taps} TAPs in one link group, one RTM_DELLINK (per TAP = total/n)`,
    }),
  );

  log(`CNI bridge + host-local, ${vms} VMs`);
  const cni = await cniBridgeVms(vms);
  const growth = flatness(cni.add, { window: Math.min(100, Math.ceil(vms / 10)) });
  out.push(
    ...setupTeardownRecords(NAME, 'cni bridge', 'vm', cni, {
      baseline: true,
      note: 'netns create + bridge ADD / bridge DEL + netns delete',
    }),
    makeRecord(NAME, 'cni bridge', 'netns create', cni.netnsAdd),
    makeRecord(NAME, 'cni bridge', 'plugin ADD', cni.add, {
      note: `ADD as the range fills: first ${growth.window} ${fmtMs(growth.first)} ms → last ${growth.window} ${fmtMs(growth.last)} ms (${growth.growth.toFixed(2)}×)`,
      extra: {
        first_window_ms: growth.first,
        last_window_ms: growth.last,
        window: growth.window,
        growth: growth.growth,
      },
    }),
    makeRecord(NAME, 'cni bridge', 'plugin DEL', cni.del),
    makeRecord(NAME, 'cni bridge', 'netns delete', cni.netnsDel),
  );

  log(`CNI bridge → firewall → tuning, ${vms} VMs`);
  const chain = await cniChainVms(vms);
  out.push(
    ...setupTeardownRecords(NAME, 'cni bridge+firewall+tuning', 'vm', chain, {
      note: 'the three plugins chained with prevResult, firewall on iptables',
    }),
  );

  log(`netavark, ${vms} containers`);
  const nv = await netavarkContainers(vms);
  out.push(
    ...setupTeardownRecords(NAME, 'netavark', 'vm', nv, {
      note: 'netavark setup / teardown per container (namespace made apart), NETAVARK_FW=iptables',
    }),
  );
  return out;
}

/** The peers on their own: iproute2 (sequence, batch, group delete), CNI bridge and chain, netavark. */
export const suite: BenchSuite = {
  name: NAME,
  description: 'iproute2, CNI plugins and netavark on this machine, per TAP / per VM',
  run,
};
