/**
 * A small world for policy traffic tests, inside private namespaces: a host namespace with a bridge
 * (198.18.0.1/24, fd00:18::1/64) whose ports lead to "VM" namespaces over veth pairs (a real TCP/IP stack
 * behind each port, so connections, conntrack and resets are real), a routed "VM" (a /32 route over its
 * own veth), and an upstream namespace holding 198.18.9.2 and 198.19.0.2.
 *
 *   vm-a 198.18.0.10 ─ tna ─┐
 *   vm-b 198.18.0.11 ─ tnb ─┼─ br0 198.18.0.1 (host) ── vup ── upstream 198.18.9.2, 198.19.0.2
 *   vm-r 198.18.8.2 ─ tr01 ─┘ (routed, /32)
 *
 * Servers and clients are short node scripts run in a namespace with `ip netns exec`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  createFirewall,
  type Firewall,
  type FirewallNetwork,
  type FirewallVm,
} from '../../src/firewall/index.js';
import { setSysctl } from '../../src/net/netns.js';
import { makeTestNetns, type TestNetns } from '../helpers/priv.js';

export const BRIDGED: FirewallNetwork = {
  name: 'pb',
  topology: 'bridge',
  bridge: 'br0',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/24',
  subnet6: 'fd00:18::/64',
  nat: false,
  isolate: false,
};
export const ROUTED: FirewallNetwork = {
  name: 'pr',
  topology: 'routed',
  tapPrefix: 'tr',
  subnet4: '198.18.8.0/24',
  nat: false,
  isolate: false,
};

export interface Topo {
  host: TestNetns;
  up: TestNetns;
  vms: Record<'a' | 'b' | 'r', { ns: TestNetns; vm: FirewallVm }>;
  fw: Firewall;
  destroy(): void;
}

/** Build the world above; the firewall has both networks ensured and the VM ports registered. */
export function makeTopo(tag: string): Topo {
  const host = makeTestNetns(`${tag}h`);
  const up = makeTestNetns(`${tag}u`);
  const made: TestNetns[] = [host, up];
  try {
    host.ip('link', 'add', 'br0', 'address', '02:00:00:00:00:fe', 'type', 'bridge');
    host.ip('addr', 'add', '198.18.0.1/24', 'dev', 'br0');
    host.ip('addr', 'add', 'fd00:18::1/64', 'dev', 'br0', 'nodad');
    host.ip('link', 'set', 'br0', 'up');
    host.ip('link', 'add', 'vup', 'type', 'veth', 'peer', 'name', 'vdn', 'netns', up.name);
    host.ip('addr', 'add', '198.18.9.1/24', 'dev', 'vup');
    host.ip('addr', 'add', '198.19.0.1/24', 'dev', 'vup');
    host.ip('link', 'set', 'vup', 'up');
    up.ip('addr', 'add', '198.18.9.2/24', 'dev', 'vdn');
    up.ip('addr', 'add', '198.19.0.2/24', 'dev', 'vdn');
    up.ip('link', 'set', 'vdn', 'up');
    up.ip('route', 'add', '198.18.0.0/16', 'via', '198.18.9.1');
    setSysctl(host.ns, 'net/ipv4/ip_forward', '1');
    setSysctl(host.ns, 'net/ipv6/conf/all/forwarding', '1');

    const vm = (key: 'a' | 'b', last: number) => {
      const ns = makeTestNetns(`${tag}${key}`);
      made.push(ns);
      const mac = `02:00:00:00:00:${last.toString(16).padStart(2, '0')}`;
      host.ip('link', 'add', `tn${key}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name);
      host.ip('link', 'set', `tn${key}`, 'master', 'br0', 'up');
      ns.ip('link', 'set', 'eth0', 'address', mac, 'up');
      ns.ip('addr', 'add', `198.18.0.${last}/24`, 'dev', 'eth0');
      ns.ip('addr', 'add', `fd00:18::${last}/64`, 'dev', 'eth0', 'nodad');
      ns.ip('route', 'add', 'default', 'via', '198.18.0.1');
      const v: FirewallVm = {
        network: BRIDGED.name,
        ifname: `tn${key}`,
        mac,
        ipv4: `198.18.0.${last}`,
        ipv6: `fd00:18::${last}`,
      };
      return { ns, vm: v };
    };
    const a = vm('a', 10);
    const b = vm('b', 11);
    const rns = makeTestNetns(`${tag}r`);
    made.push(rns);
    host.ip('link', 'add', 'tr01', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', rns.name);
    host.ip('link', 'set', 'tr01', 'up');
    host.ip('route', 'add', '198.18.8.2/32', 'dev', 'tr01');
    rns.ip('link', 'set', 'eth0', 'address', '02:00:00:00:08:02', 'up');
    rns.ip('addr', 'add', '198.18.8.2/32', 'dev', 'eth0');
    rns.ip('route', 'add', '198.18.0.1/32', 'dev', 'eth0');
    rns.ip('route', 'add', 'default', 'via', '198.18.0.1', 'dev', 'eth0', 'onlink');
    setSysctl(host.ns, 'net/ipv4/conf/tr01/proxy_arp', '1');
    const r = {
      ns: rns,
      vm: { network: ROUTED.name, ifname: 'tr01', mac: '02:00:00:00:08:02', ipv4: '198.18.8.2' },
    };

    const fw = createFirewall('nftables', { nsFd: host.ns.fd });
    fw.ensureNetwork(BRIDGED);
    fw.ensureNetwork(ROUTED);
    fw.addVms([a.vm, b.vm]);
    fw.addVm(r.vm);
    return {
      host,
      up,
      vms: { a, b, r },
      fw,
      destroy() {
        fw.close();
        for (const t of made.reverse()) t.destroy();
      },
    };
  } catch (e) {
    for (const t of made.reverse()) t.destroy();
    throw e;
  }
}

/** TCP echo servers on these ports and a UDP echo server on `udp`, in a namespace, until stopped. */
const SERVER = `
const net = require('net'), dgram = require('dgram');
const [ports, udp, addrs] = [JSON.parse(process.argv[1]), JSON.parse(process.argv[2]), JSON.parse(process.argv[3])];
let n = 0; const ready = () => { if (++n === ports.length * 2 + udp.length * addrs.length) console.log('ready'); };
for (const p of ports) for (const host of ['0.0.0.0', '::']) {
  net.createServer((s) => { s.on('data', (d) => s.write(d)); s.on('error', () => {}); })
    .listen({ port: p, host, ipv6Only: host === '::' }, ready);
}
// UDP answers from the address it was sent to: one socket per address.
for (const p of udp) for (const a of addrs) {
  const s = dgram.createSocket(a.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  s.bind(p, a, ready);
}
`;

/** Start echo servers in `ns`; resolves once they listen. Kill the returned process when done. */
export function startServers(ns: TestNetns, tcp: number[], udp: number[] = []): Promise<ChildProcess> {
  const addrs = ns
    .ipJson<Array<{ addr_info: Array<{ local: string; scope: string }> }>>('addr', 'show')
    .flatMap((l) => l.addr_info.filter((a) => a.scope === 'global').map((a) => a.local));
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns.name,
      process.execPath,
      '-e',
      SERVER,
      JSON.stringify(tcp),
      JSON.stringify(udp),
      JSON.stringify(addrs),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('servers did not start')), 5000);
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('error', reject);
  });
}

export type Outcome = 'ok' | 'refused' | 'timeout' | 'unreachable';

/** One TCP connect + echo from `ns` (or UDP datagram + echo); what happened. */
const PROBE = `
const [proto, host, port, ms] = [process.argv[1], process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const done = (o) => { console.log(o); process.exit(0); };
setTimeout(() => done('timeout'), ms);
if (proto === 'tcp') {
  const s = require('net').connect({ host, port }, () => s.write('ping'));
  s.on('data', () => done('ok'));
  s.on('error', (e) => done(e.code === 'ECONNREFUSED' ? 'refused' : e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH' ? 'unreachable' : e.code));
} else {
  const s = require('dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', () => done('ok'));
  s.on('error', (e) => done(e.code === 'ECONNREFUSED' ? 'refused' : e.code === 'EHOSTUNREACH' ? 'unreachable' : e.code));
  s.connect(port, host, () => s.send('ping'));
}
`;

/** Try `proto` to host:port from a namespace (undefined: the host namespace), within `ms`. */
export function probe(
  from: TestNetns,
  proto: 'tcp' | 'udp',
  host: string,
  port: number,
  ms = 700,
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'ip',
      ['netns', 'exec', from.name, process.execPath, '-e', PROBE, proto, host, String(port), String(ms)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', () => resolve(out.trim() as Outcome));
  });
}

/**
 * A long-lived TCP connection from `from` to host:port: `ping()` sends one message and resolves with
 * whether its echo came back within `ms` over the same connection.
 */
const PERSISTENT = `
const [host, port] = [process.argv[1], Number(process.argv[2])];
const s = require('net').connect({ host, port }, () => console.log('connected'));
let waiting = null;
s.on('data', () => { if (waiting) { clearTimeout(waiting); waiting = null; console.log('echo'); } });
s.on('error', (e) => console.log('error ' + e.code));
s.on('close', () => console.log('closed'));
process.stdin.on('data', (d) => {
  for (const line of d.toString().split('\\n').filter(Boolean)) {
    const ms = Number(line);
    s.write('x');
    waiting = setTimeout(() => { waiting = null; console.log('lost'); }, ms);
  }
});
`;

export interface Persistent {
  ping(ms?: number): Promise<'echo' | 'lost' | string>;
  close(): void;
}

export function persistentConnection(from: TestNetns, host: string, port: number): Promise<Persistent> {
  const child = spawn(
    'ip',
    ['netns', 'exec', from.name, process.execPath, '-e', PERSISTENT, host, String(port)],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  child.stdout!.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n').filter(Boolean)) {
      const w = waiters.shift();
      if (w) w(l);
      else lines.push(l);
    }
  });
  const next = () =>
    new Promise<string>((resolve) => (lines.length ? resolve(lines.shift()!) : waiters.push(resolve)));
  return next().then((first) => {
    if (first !== 'connected') throw new Error(`persistent connection: ${first}`);
    return {
      ping(ms = 500) {
        child.stdin!.write(`${ms}\n`);
        return next();
      },
      close() {
        child.kill();
      },
    };
  });
}

/** `nft -j list table inet tapnet` in the host namespace, as objects (the test oracle). */
export function listTable(t: TestNetns): Array<Record<string, Record<string, unknown>>> {
  const out = execFileSync('ip', ['netns', 'exec', t.name, 'nft', '-j', 'list', 'table', 'inet', 'tapnet'], {
    encoding: 'utf8',
  });
  return (JSON.parse(out) as { nftables: Array<Record<string, Record<string, unknown>>> }).nftables;
}
