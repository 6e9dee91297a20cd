/**
 * The `policy` suite (issue: step 6): what a per-VM network policy costs.
 * - Install, update and removal at 1 and 10,000 VMs (routed network, 10 policy templates), with tapnet's
 *   design (shared class chains, per-VM elements only) and, for comparison, the obvious one it replaced:
 *   a chain per VM reached through a verdict map keyed by the VM's interface (measured the same way).
 * - Packet path between two VMs on a bridge (veth stand-ins, real TCP/UDP stacks): TCP throughput
 *   (iperf3) and UDP round-trip time with no policy, with a 100-rule policy whose matching rule is the
 *   last, and with the VM's class behind 100 other classes in the dispatch.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  createFirewall,
  type Firewall,
  type FirewallNetwork,
  type FirewallVm,
} from '../src/firewall/index.js';
import { createNetns, deleteNetns } from '../src/net/netns.js';
import { type CompiledPolicy, compilePolicy, parsePolicy } from '../src/policy/index.js';
import { NftContext, type NftJson, type NftObject } from '../src/sys/nftables.js';
import { type BenchRecord, flatness, fmtMs, makeRecord, median, timeSync } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';

const NAME = 'policy';
const log = (m: string): void => void process.stderr.write(`  ${NAME}: ${m}\n`);

const ip = (ns: string, ...args: string[]): string =>
  execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
const inNs = (ns: string, file: string, args: string[]): string =>
  execFileSync('ip', ['netns', 'exec', ns, file, ...args], { encoding: 'utf8' });

const BIG: FirewallNetwork = {
  name: 'big',
  topology: 'routed',
  tapPrefix: 'tr',
  subnet4: '198.18.0.0/16',
  nat: false,
  isolate: false,
};

const vmAt = (i: number): FirewallVm => ({
  network: 'big',
  ifname: `tr${i.toString(16).padStart(10, '0')}`,
  mac: `02:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
  ipv4: `198.18.${((i + 1) >> 8) & 255}.${(i + 1) & 255}`,
});

/** Ten templates: "web" style ingress rules on different ports, default deny. */
function templates(): CompiledPolicy[] {
  return Array.from({ length: 10 }, (_, k) =>
    compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [
          { direction: 'ingress', protocol: 'tcp', ports: [80, 443, 8000 + k], action: 'allow' },
          { direction: 'egress', protocol: 'udp', ports: [53], action: 'allow' },
          { direction: 'egress', protocol: 'any', peers: ['198.18.9.0/24'], action: 'allow' },
        ],
      }),
    }),
  );
}

interface InstallRun {
  install: number[];
  update: number[];
  remove: number[];
}

/** tapnet: setPolicy for n VMs in order, then updates and removals of `k` of them, at n VMs. */
function tapnetInstall(n: number, k: number): InstallRun {
  const name = `bench-pol-${process.pid}-${n}`;
  const ns = createNetns(name);
  let fw: Firewall | undefined;
  try {
    fw = createFirewall('nftables', { nsFd: ns.fd });
    fw.ensureNetwork(BIG);
    const tpl = templates();
    const install: number[] = [];
    for (let i = 0; i < n; i++) install.push(timeSync(() => fw!.setPolicy(vmAt(i), tpl[i % 10]!)));
    const update: number[] = [];
    const remove: number[] = [];
    const step = Math.max(1, Math.floor(n / k));
    for (let i = 0; i < n && update.length < k; i += step)
      update.push(timeSync(() => fw!.setPolicy(vmAt(i), tpl[(i + 1) % 10]!)));
    for (let i = 0; i < n && remove.length < k; i += step)
      remove.push(timeSync(() => fw!.removePolicy(vmAt(i))));
    return { install, update, remove };
  } finally {
    fw?.close();
    ns.close();
    deleteNetns(name);
  }
}

/** The design tapnet did not take: a chain per VM (3 rules) + `goto` elements in verdict maps keyed by the TAP. */
function perVmChainInstall(n: number): number[] {
  const name = `bench-polx-${process.pid}-${n}`;
  const ns = createNetns(name);
  const ctx = NftContext.open({ nsFd: ns.fd });
  const T = { family: 'inet', table: 'x' };
  try {
    ctx.run({
      nftables: [
        { add: { table: { family: 'inet', name: 'x' } } },
        { add: { chain: { ...T, name: 'fwd', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } } },
        { add: { map: { ...T, name: 'eg', type: 'ifname', map: 'verdict' } } },
        { add: { map: { ...T, name: 'in', type: 'ifname', map: 'verdict' } } },
        {
          add: {
            rule: {
              ...T,
              chain: 'fwd',
              expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: '@eg' } }],
            },
          },
        },
        {
          add: {
            rule: {
              ...T,
              chain: 'fwd',
              expr: [{ vmap: { key: { meta: { key: 'oifname' } }, data: '@in' } }],
            },
          },
        },
      ],
    });
    const body = (k: number) => [
      [{ match: { op: '==', left: { ct: { key: 'direction' } }, right: 'reply' } }, { return: null }],
      [
        {
          match: {
            op: '==',
            left: { payload: { protocol: 'th', field: 'dport' } },
            right: { set: [80, 443, 8000 + k] },
          },
        },
        { return: null },
      ],
      [{ drop: null }],
    ];
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const tap = vmAt(i).ifname;
      const cmds: NftObject[] = [];
      for (const d of ['e', 'i']) {
        const chain = `${d}_${tap}`;
        cmds.push({ add: { chain: { ...T, name: chain } } });
        for (const r of body(i % 10)) cmds.push({ add: { rule: { ...T, chain, expr: r as NftJson[] } } });
        cmds.push({
          add: {
            element: { ...T, name: d === 'e' ? 'eg' : 'in', elem: [[tap, { goto: { target: chain } }]] },
          },
        });
      }
      out.push(timeSync(() => ctx.run({ nftables: cmds })));
    }
    return out;
  } finally {
    ctx.close();
    ns.close();
    deleteNetns(name);
  }
}

// ---- packet path ----

const UDP_ECHO = `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address));s.bind(7,()=>process.stdout.write('ready\\n'));`;
const UDP_PING = `const s=require('dgram').createSocket('udp4');const [dst,n]=process.argv.slice(1);const out=[];let i=0,t0;
s.on('message',()=>{out.push(Number(process.hrtime.bigint()-t0)/1e6);if(++i<Number(n)){t0=process.hrtime.bigint();s.send('x',7,dst);}else{process.stdout.write(JSON.stringify(out));process.exit(0);}});
setTimeout(()=>{process.stdout.write(JSON.stringify(out));process.exit(0);},30000);t0=process.hrtime.bigint();s.send('x',7,dst);`;

interface Pair {
  host: string;
  a: string;
  b: string;
  fw: Firewall;
  vmB: FirewallVm;
  close(): void;
}

/** Two VMs on a bridge: a (198.18.0.10) and b (198.18.0.11), veth ports tna/tnb. */
function makePair(): Pair {
  const base = `bench-polp-${process.pid}`;
  const names = [`${base}-h`, `${base}-a`, `${base}-b`];
  const handles = names.map((n) => createNetns(n));
  const [host, a, b] = names as [string, string, string];
  let fw: Firewall | undefined;
  try {
    ip(host, 'link', 'set', 'lo', 'up');
    ip(host, 'link', 'add', 'br0', 'type', 'bridge');
    ip(host, 'link', 'set', 'br0', 'up');
    for (const [ns, key, last] of [
      [a, 'a', 10],
      [b, 'b', 11],
    ] as const) {
      ip(host, 'link', 'add', `tn${key}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip(host, 'link', 'set', `tn${key}`, 'master', 'br0', 'up');
      ip(ns, 'link', 'set', 'lo', 'up');
      ip(ns, 'link', 'set', 'eth0', 'address', `02:00:00:00:00:${last.toString(16)}`, 'up');
      ip(ns, 'addr', 'add', `198.18.0.${last}/24`, 'dev', 'eth0');
    }
    fw = createFirewall('nftables', { nsFd: handles[0]!.fd });
    fw.ensureNetwork({
      name: 'p',
      topology: 'bridge',
      bridge: 'br0',
      tapPrefix: 'tn',
      subnet4: '198.18.0.0/24',
      nat: false,
      isolate: false,
    });
    const vmB: FirewallVm = { network: 'p', ifname: 'tnb', mac: '02:00:00:00:00:0b', ipv4: '198.18.0.11' };
    const f = fw;
    return {
      host,
      a,
      b,
      fw: f,
      vmB,
      close() {
        f.close();
        for (const h of handles) h.close();
        for (const n of names) deleteNetns(n);
      },
    };
  } catch (e) {
    fw?.close();
    for (const h of handles) h.close();
    for (const n of names) deleteNetns(n);
    throw e;
  }
}

async function udpRtt(p: Pair, n: number): Promise<number[]> {
  const server: ChildProcess = spawn('ip', ['netns', 'exec', p.b, process.execPath, '-e', UDP_ECHO], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise<void>((resolve) => server.stdout!.once('data', () => resolve()));
    inNs(p.a, process.execPath, ['-e', UDP_PING, '198.18.0.11', '50']);
    return JSON.parse(inNs(p.a, process.execPath, ['-e', UDP_PING, '198.18.0.11', String(n)])) as number[];
  } finally {
    server.kill('SIGKILL');
  }
}

/** iperf3 TCP a → b, Gbit/s (undefined without iperf3). */
function iperf(p: Pair, seconds: number): number | undefined {
  try {
    execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
  } catch {
    return undefined;
  }
  const server = spawn('ip', ['netns', 'exec', p.b, 'iperf3', '-s', '-1', '-p', '5201'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 50; i++) {
      try {
        const out = JSON.parse(
          inNs(p.a, 'iperf3', ['-c', '198.18.0.11', '-p', '5201', '-t', String(seconds), '-J']),
        ) as {
          end: { sum_received: { bits_per_second: number } };
        };
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

/** 99 rules that do not match a → b, then the ones that allow iperf3 and the UDP echo. */
function hundredRules(): CompiledPolicy {
  const rules: unknown[] = Array.from({ length: 99 }, (_, i) => ({
    direction: 'ingress',
    protocol: 'tcp',
    ports: [10_000 + i],
    peers: [`198.19.${i}.0/24`],
    action: 'deny',
  }));
  rules.push({ direction: 'ingress', protocol: 'any', action: 'allow', priority: 2000 });
  return compilePolicy({ vm: parsePolicy({ default: 'deny', rules }) });
}

async function packetPath(seconds: number, pings: number, rounds: number): Promise<BenchRecord[]> {
  const p = makePair();
  const out: BenchRecord[] = [];
  try {
    const open = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'any', action: 'allow' }],
      }),
    });
    // b's simple class first, then 100 other classes: each new class is inserted ahead of it in dispatch.
    p.fw.setPolicy(p.vmB, open);
    for (let i = 0; i < 100; i++) {
      p.fw.setPolicy(
        {
          network: 'p',
          ifname: `tnx${i}`,
          mac: `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`,
          ipv4: `198.18.0.${100 + i}`,
        },
        compilePolicy({
          vm: parsePolicy({
            default: 'deny',
            rules: [{ direction: 'ingress', protocol: 'tcp', ports: [20_000 + i], action: 'allow' }],
          }),
        }),
      );
    }
    const hundred = hundredRules();
    const cases: Array<[string, () => void]> = [
      ['no policy', () => p.fw.removePolicy(p.vmB)],
      ['100 rules (match on the last)', () => p.fw.setPolicy(p.vmB, hundred)],
      ['1 rule, class behind 100 others', () => p.fw.setPolicy(p.vmB, open)],
    ];
    const results = new Map<string, { gbps: number[]; rtt: number[] }>(
      cases.map(([l]) => [l, { gbps: [], rtt: [] }]),
    );
    for (let round = 0; round < rounds; round++) {
      for (const [label, setup] of cases) {
        setup();
        log(`packet path, round ${round + 1}/${rounds}: ${label}`);
        const r = results.get(label)!;
        const gbps = iperf(p, seconds);
        if (gbps !== undefined) r.gbps.push(gbps);
        r.rtt.push(...(await udpRtt(p, pings)));
      }
    }
    const base = median(results.get('no policy')!.gbps);
    for (const [label] of cases) {
      const r = results.get(label)!;
      const gbps = median(r.gbps);
      out.push(
        makeRecord(NAME, label, 'udp round trip a → b', r.rtt, {
          ...(label === 'no policy' ? { baseline: true } : {}),
          note:
            r.gbps.length === 0
              ? 'iperf3 missing: no throughput'
              : `TCP a → b: ${gbps.toFixed(2)} Gbit/s (median of ${r.gbps.length} × ${seconds} s iperf3 runs${label === 'no policy' ? '' : `; ${((gbps / base) * 100).toFixed(0)}% of no policy`})`,
          extra: { ...(r.gbps.length ? { tcpGbps: gbps } : {}), rttMedianMs: median(r.rtt) },
        }),
      );
    }
  } finally {
    p.close();
  }
  return out;
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const n = opts.quick ? 1000 : Math.max(100, Math.round(10_000 * opts.scale));
  const k = opts.quick ? 100 : 500;
  const out: BenchRecord[] = [];

  log(`tapnet: install ${n} VMs' policies, update and remove ${k}`);
  const r = tapnetInstall(n, k);
  const flat = flatness(r.install, { window: Math.min(100, Math.ceil(n / 10)) });
  out.push(
    makeRecord(NAME, 'tapnet (1st VM)', 'policy install', r.install.slice(0, 1), {
      note: 'first VM: creates the shared chains and its classes in the same batch',
    }),
    makeRecord(NAME, `tapnet (first 100 of ${n})`, 'policy install', r.install.slice(1, 101), {
      baseline: true,
    }),
    makeRecord(NAME, `tapnet (last 100 of ${n})`, 'policy install', r.install.slice(-100), {
      note: `setPolicy: per-VM elements only; first window ${fmtMs(flat.first)} ms → last ${fmtMs(flat.last)} ms (${flat.growth.toFixed(2)}×)`,
      extra: { flatFirst: flat.first, flatLast: flat.last, flatGrowth: flat.growth },
    }),
    makeRecord(NAME, `tapnet (at ${n} VMs)`, 'policy update', r.update, {
      note: 'move a VM to another class: one atomic batch',
    }),
    makeRecord(NAME, `tapnet (at ${n} VMs)`, 'policy remove', r.remove),
  );

  // Capped: its cost grows with every VM (about 15 ms per VM at 1,000 already), the run would take hours.
  const m = opts.quick ? 1000 : Math.min(n, 2000);
  log(`alternative: a chain per VM behind verdict maps, ${m} VMs`);
  const alt = perVmChainInstall(m);
  const aflat = flatness(alt, { window: Math.min(100, Math.ceil(m / 10)) });
  out.push(
    makeRecord(NAME, `chain per VM + goto vmap (first 100 of ${m})`, 'policy install', alt.slice(1, 101)),
    makeRecord(NAME, `chain per VM + goto vmap (last 100 of ${m})`, 'policy install', alt.slice(-100), {
      note: `not tapnet's design, for comparison: libnftables lists every chain per command and the kernel re-validates every goto element per commit (${fmtMs(aflat.first)} → ${fmtMs(aflat.last)} ms, ${aflat.growth.toFixed(1)}×)`,
      extra: { flatFirst: aflat.first, flatLast: aflat.last, flatGrowth: aflat.growth },
    }),
  );

  out.push(...(await packetPath(opts.quick ? 1 : 3, opts.quick ? 500 : 3000, opts.quick ? 1 : 3)));
  return out;
}

export const suite: BenchSuite = {
  name: NAME,
  description: 'per-VM policy install/update/remove at 1 and 10,000 VMs; packet path with 0 vs 100 rules',
  run,
};
