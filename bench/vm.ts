/**
 * The `vm` suite (issue: step 5): real QEMU microVMs on a tapnet network.
 * - Boot to network-ready, per VM: from spawning QEMU to the first HTTP answer from the guest, seen from
 *   the host side (a poller in the network's namespace), for microvm and q35, one VM at a time and three
 *   in parallel; the guest's own ready marker on the serial console is recorded alongside.
 * - Host↔guest TCP throughput with iperf3 (in the guest fixture when the iperf3 package is installed),
 *   with and without the virtio-net header on the TAP (vnet_hdr), and with vhost-net where it exists.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vhostNetAvailable } from '../src/guest/qemu.js';
import { NetworkManager } from '../src/manager/manager.js';
import { createNetns, deleteNetns, type Netns, setSysctl } from '../src/net/netns.js';
import { loadGuestFixture } from '../src/vm/fixture.js';
import { QemuVm } from '../src/vm/qemu.js';
import type { VmMachine } from '../src/vm/qemu-args.js';
import { type BenchRecord, makeRecord } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const NAME = 'vm';
const BRIDGE = 'tnvmbench0';
const log = (m: string): void => void process.stderr.write(`  vm: ${m}\n`);
const epoch = (): number => performance.timeOrigin + performance.now();

interface Net {
  m: NetworkManager;
  ns: Netns;
  gateway: string;
}

async function withNetwork<T>(fn: (n: Net) => Promise<T>): Promise<T> {
  const tag = `bench-vm-${process.pid}`;
  const ns = createNetns(tag);
  const stateDir = mkdtempSync(join(tmpdir(), 'tapnet-bench-vm-'));
  const m = await NetworkManager.open({
    stateDir,
    netns: ns.path,
    defaultNetwork: 'bench',
    networks: { bench: { bridge: BRIDGE, subnet4: '198.18.40.0/24' } },
  });
  try {
    const net = m.network();
    m.ensureNetwork(net);
    // The poller's first SYN finds no neighbour entry yet: re-probe ARP every 20 ms, not every second.
    setSysctl(ns, `net/ipv4/neigh/${BRIDGE}/retrans_time_ms`, '20');
    return await fn({ m, ns, gateway: net.gateway4! });
  } finally {
    await m.releaseMany((await m.list()).map((i) => i.vmId));
    await m.close();
    ns.close();
    deleteNetns(tag);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** Spawn a process inside the namespace (forked while this thread is in it). */
function spawnIn(
  ns: Netns,
  cmd: string,
  args: string[],
  stderr: 'inherit' | 'ignore' = 'inherit',
): ChildProcess {
  return ns.run(() => spawn(cmd, args, { stdio: ['ignore', 'pipe', stderr] }));
}

/** A child in the namespace that GETs http://<ip>/ until it answers, printing `<ip> <epoch ms>` for each. */
const POLLER = `
const http = require('http');
const ips = process.argv.slice(1);
let left = ips.length;
for (const ip of ips) {
  const once = () => {
    const req = http.get({ host: ip, path: '/', timeout: 250 }, (r) => {
      r.resume();
      r.on('end', () => {
        console.log(ip + ' ' + (performance.timeOrigin + performance.now()));
        if (--left === 0) process.exit(0);
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => setTimeout(once, 5));
  };
  once();
}
setTimeout(() => process.exit(1), 120000);
`;

interface BootSample {
  http: number;
  marker: number;
}

/** Boot `count` VMs at once; per VM: ms from spawn to the first HTTP answer and to the ready marker. */
async function bootRound(n: Net, machine: VmMachine, count: number, round: number): Promise<BootSample[]> {
  const infos = await Promise.all(
    Array.from({ length: count }, (_, i) => n.m.ensure(`boot-${machine}-${round}-${i}`, { tap: 'fd' })),
  );
  const ips = infos.map((i) => i.ipv4!.split('/')[0]!);
  const poller = spawnIn(n.ns, process.execPath, ['-e', POLLER, ...ips]);
  const answered = new Map<string, number>();
  let buf = '';
  poller.stdout!.setEncoding('utf8');
  poller.stdout!.on('data', (d: string) => {
    buf += d;
    for (const line of buf.split('\n').slice(0, -1)) {
      const [ip, t] = line.split(' ');
      answered.set(ip!, Number(t));
    }
    buf = buf.slice(buf.lastIndexOf('\n') + 1);
  });
  const pollerDone = new Promise<number | null>((r) => poller.on('exit', r));
  const vms: QemuVm[] = [];
  try {
    const started = infos.map(async (info) => {
      const t0 = epoch();
      const vm = await QemuVm.start({ name: info.vmId, machine, network: { mode: 'fd', info } });
      vms.push(vm);
      return { t0, vm };
    });
    const boots = await Promise.all(started);
    if ((await pollerDone) !== 0) throw new Error('the HTTP poller gave up');
    return boots.map(({ t0, vm }) => ({ http: answered.get(vm.ipv4!)! - t0, marker: vm.readyMs }));
  } finally {
    poller.kill();
    await Promise.all(vms.map((v) => v.stop()));
    await n.m.releaseMany(infos.map((i) => i.vmId));
  }
}

interface Iperf {
  bitsPerSecond: number;
}

/** One iperf3 run from the guest against the host side; `reverse`: host → guest. */
async function iperf(vm: QemuVm, server: string, seconds: number, reverse: boolean): Promise<Iperf> {
  const r = await vm.exec(
    `iperf3 -c ${server} -t ${seconds} -J${reverse ? ' -R' : ''}`,
    (seconds + 20) * 1000,
  );
  const start = r.output.indexOf('{');
  if (r.status !== 0 || start < 0) throw new Error(`iperf3 in ${vm.name} failed: ${r.output.slice(-500)}`);
  const doc = JSON.parse(r.output.slice(start)) as { end: { sum_received: { bits_per_second: number } } };
  return { bitsPerSecond: doc.end.sum_received.bits_per_second };
}

/** Milliseconds to move one GiB at `bps` (so the table's "lower is better" holds); Gbit/s in extra. */
const msPerGiB = (bps: number) => ((8 * 2 ** 30) / bps) * 1000;

async function throughput(n: Net, opts: BenchOptions): Promise<BenchRecord[]> {
  const out: BenchRecord[] = [];
  const variants: { label: string; vnetHdr: boolean; vhost: boolean }[] = [
    { label: 'vnet_hdr on', vnetHdr: true, vhost: false },
    { label: 'vnet_hdr off', vnetHdr: false, vhost: false },
  ];
  if (vhostNetAvailable()) variants.push({ label: 'vnet_hdr on + vhost-net', vnetHdr: true, vhost: true });
  const seconds = opts.quick ? 2 : 4;
  const rounds = opts.quick ? 1 : 3;
  // --forceflush: its stdout is a pipe, and "Server listening" must arrive before the clients start.
  const server = spawnIn(n.ns, 'iperf3', ['-s', '-B', n.gateway, '--forceflush'], 'ignore');
  await new Promise((r) => server.stdout!.once('data', r));
  try {
    for (const v of variants) {
      const info = await n.m.ensure(`iperf-${v.vnetHdr ? 'hdr' : 'nohdr'}${v.vhost ? '-vhost' : ''}`, {
        tap: 'fd',
        vnetHdr: v.vnetHdr,
      });
      const vm = await QemuVm.start({ name: info.vmId, network: { mode: 'fd', info }, vhost: v.vhost });
      try {
        for (const [dir, reverse] of [
          ['host → guest', true],
          ['guest → host', false],
        ] as const) {
          const runs: number[] = [];
          for (let i = 0; i < rounds; i++)
            runs.push((await iperf(vm, n.gateway, seconds, reverse)).bitsPerSecond);
          const gbps = runs.map((b) => b / 1e9);
          const med = [...gbps].sort((a, b) => a - b)[Math.floor(gbps.length / 2)]!;
          log(`${v.label}, ${dir}: ${gbps.map((g) => g.toFixed(2)).join(' / ')} Gbit/s`);
          out.push(
            makeRecord(NAME, `QEMU microvm TCG, ${v.label}`, `tcp ${dir} (ms per GiB)`, runs.map(msPerGiB), {
              baseline: v.vnetHdr && !v.vhost,
              note: `iperf3 ${seconds} s × ${rounds}: median ${med.toFixed(2)} Gbit/s (${gbps.map((g) => g.toFixed(2)).join(', ')})`,
              extra: { gbps_median: med, seconds, rounds },
            }),
          );
        }
      } finally {
        await vm.stop();
        await n.m.release(info.vmId);
      }
    }
  } finally {
    server.kill();
  }
  return out;
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const fixture = loadGuestFixture();
  const out: BenchRecord[] = [];
  await withNetwork(async (n) => {
    const rounds = opts.quick ? 2 : Math.max(3, Math.round(5 * opts.scale));
    const configs: { machine: VmMachine; count: number }[] = [
      { machine: 'microvm', count: 1 },
      { machine: 'q35', count: 1 },
      { machine: 'microvm', count: 3 },
    ];
    for (const cfg of configs) {
      const samples: BootSample[] = [];
      const r = cfg.count === 1 ? rounds : Math.max(1, Math.ceil(rounds / 2));
      for (let i = 0; i < r; i++) samples.push(...(await bootRound(n, cfg.machine, cfg.count, i)));
      const subject = `QEMU ${cfg.machine} TCG${cfg.count > 1 ? `, ${cfg.count} at once` : ''}`;
      const http = samples.map((s) => s.http);
      const marker = samples.map((s) => s.marker);
      log(`${subject}: HTTP ${http.map((x) => x.toFixed(0)).join(' ')} ms`);
      out.push(
        makeRecord(NAME, subject, 'boot → first HTTP answer', http, {
          baseline: cfg.machine === 'microvm' && cfg.count === 1,
          note: `QEMU spawn → first HTTP answer from the host side; serial ready marker median ${marker.sort((a, b) => a - b)[Math.floor(marker.length / 2)]!.toFixed(0)} ms`,
        }),
      );
    }
    if (fixture.iperf3) out.push(...(await throughput(n, opts)));
    else log('no iperf3 in the guest fixture (install the iperf3 package and rebuild): throughput skipped');
  });
  return out;
}

export const suite: BenchSuite = {
  name: NAME,
  description:
    'real QEMU microVMs: boot to first HTTP answer (microvm, q35, 3 at once) and iperf3 throughput with/without vnet_hdr',
  run,
};
