/**
 * The `cluster` suite (issue: step 8): ensure/release with the etcd store (every etcd round trip
 * included) against the local store, 3 hosts × K concurrent ensures, raw etcd round trips, and the
 * overlay between two hosts (UDP round trip and TCP throughput through VXLAN, against the underlay).
 *
 * Three hosts are namespaces joined by an underlay bridge (198.18.100.0/24); their managers, stores and
 * overlay agents run in this process (each with its own etcd client and session); etcd-server runs in
 * this process's namespace on 127.0.0.1, its data on the sandbox's tmpfs (and, for one comparison, on
 * disk, where every commit is fsynced).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdClient } from '../src/cluster/etcd-client.js';
import { EtcdStore } from '../src/cluster/etcd-store.js';
import { ClusterMember } from '../src/cluster/membership.js';
import { OverlayAgent, vmOverlayPublisher } from '../src/cluster/overlay.js';
import { EtcdSession } from '../src/cluster/session.js';
import type { ManagerConfigInput } from '../src/manager/config.js';
import { NetworkManager, VM_RECORD_SCHEMA } from '../src/manager/manager.js';
import type { VmRecord } from '../src/manager/types.js';
import { createNetns, deleteNetns, type Netns } from '../src/net/netns.js';
import { NetlinkSocket } from '../src/netlink/socket.js';
import { etcdSkipReason, startEtcd, type TestEtcd } from '../test/helpers/etcd.js';
import { type BenchRecord, fmtMs, makeRecord, msSince } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const NAME = 'cluster';
const HOSTS = ['a', 'b', 'c'] as const;
const VTEP = { a: '198.18.100.1', b: '198.18.100.2', c: '198.18.100.3' } as const;
const NET = { topology: 'bridge' as const, bridge: 'tn-c1', subnet4: '198.18.64.0/18', mtu: 1450 };
const log = (m: string): void => void process.stderr.write(`  cluster: ${m}\n`);
const ip = (ns: string, ...args: string[]): string =>
  execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
const inNs = (ns: string, file: string, args: string[]): string =>
  execFileSync('ip', ['netns', 'exec', ns, file, ...args], { encoding: 'utf8' });

interface Host {
  name: string;
  ns: Netns;
  nsName: string;
  store: EtcdStore<VmRecord>;
  manager: NetworkManager;
  overlay: OverlayAgent;
  nl: NetlinkSocket;
}

/** The underlay and the three host namespaces. */
function makeTopology(tag: string): { ul: string; hosts: Record<string, string>; destroy(): void } {
  const ul = `${tag}-ul`;
  createNetns(ul).close();
  ip(ul, 'link', 'set', 'lo', 'up');
  ip(ul, 'link', 'add', 'ul0', 'type', 'bridge');
  ip(ul, 'link', 'set', 'ul0', 'up');
  const hosts: Record<string, string> = {};
  for (const h of HOSTS) {
    const n = `${tag}-h${h}`;
    createNetns(n).close();
    ip(n, 'link', 'set', 'lo', 'up');
    ip(ul, 'link', 'add', `v${h}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n);
    ip(ul, 'link', 'set', `v${h}`, 'master', 'ul0', 'up');
    ip(n, 'addr', 'add', `${VTEP[h]}/24`, 'dev', 'eth0');
    ip(n, 'link', 'set', 'eth0', 'up');
    hosts[h] = n;
  }
  return {
    ul,
    hosts,
    destroy() {
      for (const n of [...Object.values(hosts), ul]) {
        try {
          deleteNetns(n);
        } catch {
          // already gone
        }
      }
    },
  };
}

async function openHost(
  h: (typeof HOSTS)[number],
  nsName: string,
  endpoints: string[],
  prefix: string,
): Promise<Host> {
  const client = new EtcdClient({ endpoints });
  const session = await EtcdSession.open(client, { ttl: 10 });
  const store = new EtcdStore<VmRecord>({
    client,
    session,
    host: `host-${h}`,
    prefix,
    schema: VM_RECORD_SCHEMA,
    publish: vmOverlayPublisher<VmRecord>(['c1'], VTEP[h]),
  });
  await ClusterMember.join({ client, session, host: `host-${h}`, vtep: VTEP[h], prefix });
  const config: ManagerConfigInput = {
    stateDir: mkdtempSync(join(tmpdir(), 'tapnet-bench-cl-')),
    netns: `/run/netns/${nsName}`,
    defaultNetwork: 'c1',
    networks: { c1: NET },
  };
  const manager = await NetworkManager.open(config, { store });
  manager.ensureNetwork(manager.network('c1'));
  const ns = manager.ns!;
  const nl = NetlinkSocket.open({ nsFd: ns.fd });
  const overlay = await OverlayAgent.start(
    { client, nl, host: `host-${h}`, vtep: VTEP[h], underlay: 'eth0', prefix },
    [{ name: 'c1', ...NET }],
  );
  return { name: h, ns, nsName, store, manager, overlay, nl };
}

async function closeHost(x: Host): Promise<void> {
  x.overlay.close();
  await x.manager.close();
  x.nl.close();
  await x.store.session.close();
  x.store.client.close();
  rmSync(x.manager.config.stateDir, { recursive: true, force: true });
}

/** Sequential ensures then releases of `n` VMs on one manager. */
async function ensureSeries(
  m: NetworkManager,
  n: number,
  tag: string,
): Promise<{ ensure: number[]; release: number[] }> {
  await m.ensure(`${tag}-warm`);
  await m.release(`${tag}-warm`);
  const ensure: number[] = [];
  const release: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await m.ensure(`${tag}-${i}`);
    ensure.push(msSince(t0));
  }
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await m.release(`${tag}-${i}`, { wait: true }); // as recorded in docs/BENCHMARKS.md: the deletion included
    release.push(msSince(t0));
  }
  return { ensure, release };
}

/** The same with the local files store in a fresh namespace: the baseline. */
async function localSeries(n: number, tag: string): Promise<{ ensure: number[]; release: number[] }> {
  const nsName = `${tag}-local`;
  createNetns(nsName).close();
  const stateDir = mkdtempSync(join(tmpdir(), 'tapnet-bench-cl-'));
  const m = await NetworkManager.open({
    stateDir,
    netns: `/run/netns/${nsName}`,
    defaultNetwork: 'c1',
    networks: { c1: NET },
  });
  try {
    return await ensureSeries(m, n, 'local');
  } finally {
    await m.close();
    deleteNetns(nsName);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** Raw etcd round trips: a serializable-free range and a create-if-absent txn, sequential. */
async function roundTrips(
  endpoints: string[],
  n: number,
  prefix: string,
): Promise<{ range: number[]; txn: number[] }> {
  const c = new EtcdClient({ endpoints });
  try {
    const range: number[] = [];
    const txn: number[] = [];
    for (let i = 0; i < n; i++) {
      const key = `${prefix}/rt/${i}`;
      let t0 = process.hrtime.bigint();
      await c.range(key);
      range.push(msSince(t0));
      t0 = process.hrtime.bigint();
      await c.txn({
        compare: [{ key, target: 'CREATE', number: 0 }],
        success: [{ put: { key, value: 'x' } }],
        failure: [{ range: { key } }],
      });
      txn.push(msSince(t0));
    }
    await c.delete(`${prefix}/rt/`, { prefix: true });
    return { range, txn };
  } finally {
    c.close();
  }
}

/** A VM with a real stack: a namespace whose eth0 is a veth port of host `h`'s bridge, published like a VM. */
async function kernelVm(x: Host, vmId: string): Promise<{ ns: string; ip: string }> {
  const vmNs = `${x.nsName}-${vmId}`;
  createNetns(vmNs).close();
  ip(vmNs, 'link', 'set', 'lo', 'up');
  const lease = await x.manager.ipam.pool({ network: 'c1', subnet: NET.subnet4 }).allocate(vmId);
  const mac = `02:be:00:00:00:0${x.name === 'a' ? 1 : 3}`;
  ip(
    x.nsName,
    'link',
    'add',
    `p-${vmId}`,
    'mtu',
    String(NET.mtu),
    'type',
    'veth',
    'peer',
    'name',
    'eth0',
    'netns',
    vmNs,
  );
  ip(x.nsName, 'link', 'set', `p-${vmId}`, 'master', NET.bridge, 'up');
  ip(vmNs, 'link', 'set', 'eth0', 'address', mac, 'mtu', String(NET.mtu), 'up');
  ip(vmNs, 'addr', 'add', lease.cidr, 'dev', 'eth0');
  await x.store.records.put(
    {
      vmId,
      state: 'ready',
      network: 'c1',
      topology: 'bridge',
      tap: `p-${vmId}`,
      mac,
      ipv4: lease.address,
      tapMode: 'persistent',
      queues: 1,
      vnetHdr: false,
      createdAt: new Date().toISOString(),
    },
    { expectedGeneration: 0 },
  );
  return { ns: vmNs, ip: lease.address };
}

const UDP_ECHO = `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address));s.bind(7,()=>process.stdout.write('ready\\n'));`;
const UDP_PING = `const s=require('dgram').createSocket('udp4');const [dst,n]=process.argv.slice(1);const out=[];let i=0,t0;
s.on('message',()=>{out.push(Number(process.hrtime.bigint()-t0)/1e6);if(++i<Number(n)){t0=process.hrtime.bigint();s.send('x',7,dst);}else{process.stdout.write(JSON.stringify(out));process.exit(0);}});
setTimeout(()=>{process.stdout.write(JSON.stringify(out));process.exit(0);},20000);t0=process.hrtime.bigint();s.send('x',7,dst);`;

/** UDP round trips from namespace `from` to `dst` (echo server in `to`), after 20 unrecorded ones. */
async function udpRtt(from: string, to: string, dst: string, n: number): Promise<number[]> {
  const server = spawn('ip', ['netns', 'exec', to, process.execPath, '-e', UDP_ECHO], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise<void>((resolve) => server.stdout!.once('data', () => resolve()));
    inNs(from, process.execPath, ['-e', UDP_PING, dst, '20']);
    return JSON.parse(inNs(from, process.execPath, ['-e', UDP_PING, dst, String(n)])) as number[];
  } finally {
    server.kill('SIGKILL');
  }
}

/** iperf3 TCP throughput in Gbit/s over `seconds` (undefined when iperf3 is missing). */
function iperf(from: string, to: string, dst: string, seconds: number): number | undefined {
  try {
    execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
  } catch {
    return undefined;
  }
  const server = spawn('ip', ['netns', 'exec', to, 'iperf3', '-s', '-1', '-p', '5201'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 50; i++) {
      try {
        const out = JSON.parse(
          inNs(from, 'iperf3', ['-c', dst, '-p', '5201', '-t', String(seconds), '-J']),
        ) as { end: { sum_received: { bits_per_second: number } } };
        return out.end.sum_received.bits_per_second / 1e9;
      } catch {
        execFileSync('sleep', ['0.1']);
      }
    }
    return undefined;
  } finally {
    server.kill('SIGKILL');
  }
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const skip = etcdSkipReason();
  if (skip) throw new Error(`cluster suite: ${skip}`);
  const n = Math.max(10, Math.round((opts.quick ? 50 : 300) * opts.scale));
  const k = Math.max(10, Math.round((opts.quick ? 50 : 300) * opts.scale));
  const out: BenchRecord[] = [];
  const tag = `bcl${process.pid}`;
  const topo = makeTopology(tag);
  let etcd: TestEtcd | undefined;
  const hosts: Host[] = [];
  const vmNs: string[] = [];
  try {
    etcd = await startEtcd([{ name: 'b0', ip: '127.0.0.1', clientPort: 23890, peerPort: 23900 }]);
    const prefix = '/bench';
    log('etcd round trips (data on tmpfs, then on disk)');
    const rt = await roundTrips(etcd.endpoints, n, prefix);
    const diskEtcd = await startEtcd(
      [{ name: 'd0', ip: '127.0.0.1', clientPort: 23891, peerPort: 23901 }],
      [],
      tmpdir(),
    );
    let disk: { range: number[]; txn: number[] };
    try {
      disk = await roundTrips(diskEtcd.endpoints, n, prefix);
    } finally {
      await diskEtcd.stop();
    }
    out.push(
      makeRecord(NAME, 'etcd range (linearizable), data on tmpfs', 'etcd round trip', rt.range, {
        baseline: true,
        note: 'HTTP/JSON gateway, keep-alive, one call at a time',
      }),
      makeRecord(NAME, 'etcd txn (create if absent), data on tmpfs', 'etcd round trip', rt.txn),
      makeRecord(
        NAME,
        `etcd txn (create if absent), data on disk (${tmpdir()})`,
        'etcd round trip',
        disk.txn,
        { note: 'every commit is an fsync of the WAL' },
      ),
    );
    for (const h of HOSTS) hosts.push(await openHost(h, topo.hosts[h]!, etcd.endpoints, prefix));
    const [a, , c] = hosts as [Host, Host, Host];

    log(`local store, ${n} sequential ensures`);
    const local = await localSeries(n, tag);
    log(`etcd store, ${n} sequential ensures on host a`);
    const cl = await ensureSeries(a.manager, n, 'seq');
    out.push(
      makeRecord(NAME, 'tapnet local files store', 'vm setup (sequential)', local.ensure, { baseline: true }),
      makeRecord(NAME, 'tapnet etcd store (3 hosts joined)', 'vm setup (sequential)', cl.ensure, {
        note: 'ensure = lock + record read + claim + record write (with its overlay entry) + TAP + nftables elements',
      }),
      makeRecord(NAME, 'tapnet local files store', 'vm teardown (sequential)', local.release, {
        baseline: true,
      }),
      makeRecord(NAME, 'tapnet etcd store (3 hosts joined)', 'vm teardown (sequential)', cl.release),
    );

    log(`3 hosts × ${k} concurrent ensures`);
    let t0 = process.hrtime.bigint();
    const per = await Promise.all(
      hosts.map(async (x) => {
        const s = process.hrtime.bigint();
        await Promise.all(Array.from({ length: k }, (_, i) => x.manager.ensure(`conc-${i}`)));
        return msSince(s);
      }),
    );
    const total = msSince(t0);
    const addrs = new Set((await Promise.all(hosts.map((x) => x.manager.list()))).flat().map((v) => v.ipv4));
    if (addrs.size !== 3 * k) throw new Error(`expected ${3 * k} distinct addresses, got ${addrs.size}`);
    await Promise.all(hosts.map((x) => x.overlay.settle()));
    const programmed = a.overlay.status()[0]!.remotes;
    t0 = process.hrtime.bigint();
    await Promise.all(
      hosts.map((x) => x.manager.releaseMany(Array.from({ length: k }, (_, i) => `conc-${i}`))),
    );
    const releaseTotal = msSince(t0);
    out.push(
      makeRecord(
        NAME,
        `tapnet etcd store, 3 hosts × ${k} at once`,
        'vm setup (concurrent, per VM)',
        [total / (3 * k)],
        {
          note: `${3 * k} ensures in ${fmtMs(total)} ms = ${((3 * k * 1000) / total).toFixed(0)}/s (hosts: ${per.map((p) => fmtMs(p)).join(', ')} ms); host a then programmed ${programmed} remote VMs`,
          extra: { total, perSecond: (3 * k * 1000) / total },
        },
      ),
      makeRecord(
        NAME,
        `tapnet etcd store, 3 hosts × ${k} at once`,
        'vm teardown (concurrent, per VM)',
        [releaseTotal / (3 * k)],
        {
          note: `releaseMany on each host at once: ${fmtMs(releaseTotal)} ms`,
        },
      ),
    );

    log('overlay: UDP round trips and TCP throughput between hosts a and c');
    const va = await kernelVm(a, 'tput-a');
    const vc = await kernelVm(c, 'tput-c');
    vmNs.push(va.ns, vc.ns);
    await Promise.all(hosts.map((x) => x.overlay.settle()));
    const pings = opts.quick ? 200 : 1000;
    const under = await udpRtt(a.nsName, c.nsName, VTEP.c, pings);
    const over = await udpRtt(va.ns, vc.ns, vc.ip, pings);
    out.push(
      makeRecord(NAME, 'underlay host a → host c', 'udp round trip', under, {
        baseline: true,
        note: 'node dgram echo, one datagram in flight',
      }),
      makeRecord(NAME, 'overlay VM on a → VM on c (VXLAN)', 'udp round trip', over),
    );
    const secs = opts.quick ? 2 : 5;
    const gUnder = iperf(a.nsName, c.nsName, VTEP.c, secs);
    const gOver = iperf(va.ns, vc.ns, vc.ip, secs);
    if (gUnder !== undefined && gOver !== undefined) {
      const perGiB = (g: number) => [((8 * 1.073741824) / g) * 1000];
      out.push(
        makeRecord(NAME, 'underlay host a → host c', 'tcp transfer of 1 GiB', perGiB(gUnder), {
          baseline: true,
          note: `iperf3 ${secs} s: ${gUnder.toFixed(2)} Gbit/s (veth MTU 1500)`,
          extra: { gbps: gUnder },
        }),
        makeRecord(NAME, 'overlay VM on a → VM on c (VXLAN)', 'tcp transfer of 1 GiB', perGiB(gOver), {
          note: `iperf3 ${secs} s: ${gOver.toFixed(2)} Gbit/s (MTU 1450)`,
          extra: { gbps: gOver },
        }),
      );
    } else log('iperf3 not installed: no throughput figures');
  } finally {
    for (const x of hosts) await closeHost(x).catch(() => undefined);
    for (const v of vmNs) {
      try {
        deleteNetns(v);
      } catch {
        // gone
      }
    }
    topo.destroy();
    await etcd?.stop();
  }
  return out;
}

export const suite: BenchSuite = {
  name: NAME,
  description:
    'cluster mode: ensure over etcd vs the local store, 3 hosts at once, etcd round trips, VXLAN overlay round trip and throughput',
  run,
};
