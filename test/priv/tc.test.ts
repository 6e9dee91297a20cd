import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { after, before, describe, it, type TestContext } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  addFilter,
  addQdisc,
  delFilter,
  delQdisc,
  ensureQdisc,
  FILTER_PRIO,
  type Filter,
  INGRESS_PARENT,
  ingressQdisc,
  listFilters,
  listQdiscs,
  redirectIngress,
  removeEgressRate,
  removeIngressPolice,
  removeRedirectIngress,
  setEgressRate,
  setIngressPolice,
} from '../../src/net/tc.js';
import { TC_H_INGRESS, TC_H_ROOT } from '../../src/netlink/constants.js';
import { formatHandle } from '../../src/netlink/tc.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();

interface TcQdiscJson {
  kind: string;
  handle: string;
  parent?: string;
  root?: boolean;
  options?: { rate?: number; burst?: number; limit?: number; burst_raw?: string };
  bytes: number;
  packets: number;
  drops: number;
  overlimits: number;
  requeues: number;
  backlog: number;
  qlen: number;
}

/**
 * The kernel lacks a tc module (CONFIG_NET_CLS_MATCHALL, CONFIG_NET_ACT_POLICE…): it answers ENOENT with
 * "TC classifier not found" / "Failed to load TC action module". Such subtests skip with the reason.
 */
function missingModule(t: TestContext, e: unknown, what: string): boolean {
  if (isTapnetError(e) && e.errno === 'ENOENT' && e.extack) {
    t.skip(`kernel lacks ${what}: ${e.extack}`);
    return true;
  }
  return false;
}

/** Run a node script inside a named namespace; resolves with its stdout. */
function nodeIn(ns: string, script: string, args: string[] = [], onReady?: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (onReady && out.includes('ready')) {
        const cb = onReady;
        onReady = undefined;
        cb();
      }
    });
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`node in ${ns} exited ${code}: ${err}`)),
    );
  });
}

/** UDP server: counts datagrams for `ms`, echoes each; prints "ready", then the count and bytes. */
const UDP_SERVER = `
const s = require('node:dgram').createSocket('udp4'); let n = 0, bytes = 0;
s.on('message', (m, r) => { n++; bytes += m.length; s.send(m, r.port, r.address); });
s.bind(Number(process.argv[1]), () => { console.log('ready'); setTimeout(() => { console.log(n, bytes); process.exit(0); }, Number(process.argv[2])); });`;

/** UDP client: sends `count` datagrams of `size` bytes back to back; prints how many echoes came back. */
const UDP_CLIENT = `
const [host, port, count, size] = process.argv.slice(1); const s = require('node:dgram').createSocket('udp4'); let echoes = 0;
s.on('message', () => echoes++);
s.bind(0, () => { const buf = Buffer.alloc(Number(size), 120); let i = 0;
  const send = () => { if (i++ < Number(count)) s.send(buf, Number(port), host, send); else setTimeout(() => { console.log(echoes); process.exit(0); }, 500); };
  send(); });`;

let nextPort = 5555;

/** Start a server in `serverNs`, run a client in `clientNs`; returns [datagrams received, bytes, echoes]. */
async function udp(
  clientNs: string,
  serverNs: string,
  host: string,
  count: number,
  size: number,
  serverMs = 2500,
): Promise<[number, number, number]> {
  let ready!: () => void;
  const isReady = new Promise<void>((r) => {
    ready = r;
  });
  // A fresh port each time: datagrams of an earlier run still queued behind ARP must not be counted.
  const port = String(nextPort++);
  const server = nodeIn(serverNs, UDP_SERVER, [port, String(serverMs)], ready);
  await isReady;
  const client = await nodeIn(clientNs, UDP_CLIENT, [host, port, String(count), String(size)]);
  const [n, bytes] = (await server).trim().split('\n').at(-1)!.split(' ').map(Number);
  return [n!, bytes!, Number(client.trim())];
}

describe('traffic control against the kernel', { skip }, () => {
  // Topology (tc-redirect-tap's, with veths standing in for the TAP and the VM):
  //   A: x0 198.18.0.1/24 ── x1 [T] y1 ── y0 198.18.0.2/24 :B   with x1 and y1 only joined by tc redirects.
  let t: TestNetns;
  let a: TestNetns;
  let b: TestNetns;
  let x1 = 0;
  let y1 = 0;
  const tc = <T>(...args: string[]): T =>
    JSON.parse(execFileSync('tc', ['-n', t.name, '-j', ...args], { encoding: 'utf8' }) || '[]') as T;
  const ifindex = (ns: TestNetns, name: string): number =>
    ns.ipJson<{ ifindex: number }[]>('link', 'show', 'dev', name)[0]!.ifindex;

  before(() => {
    t = makeTestNetns('tc');
    a = makeTestNetns('tca');
    b = makeTestNetns('tcb');
    for (const [peer, inner, outer, addr] of [
      [a, 'x0', 'x1', '198.18.0.1/24'],
      [b, 'y0', 'y1', '198.18.0.2/24'],
    ] as const) {
      execFileSync('ip', [
        'netns',
        'exec',
        peer.name,
        'sysctl',
        '-qw',
        'net.ipv6.conf.all.disable_ipv6=1',
        'net.ipv6.conf.default.disable_ipv6=1',
      ]);
      t.ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner, 'netns', peer.name);
      t.ip('link', 'set', outer, 'up');
      peer.ip('addr', 'add', addr, 'dev', inner);
      peer.ip('link', 'set', inner, 'up');
    }
    x1 = ifindex(t, 'x1');
    y1 = ifindex(t, 'y1');
  });
  after(() => {
    for (const ns of [a, b, t]) ns?.destroy();
  });

  it('ingress qdisc: add, ensure is idempotent, add again conflicts, delete twice succeeds', () => {
    addQdisc(t.nl, x1, { kind: 'ingress' });
    ensureQdisc(t.nl, x1, { kind: 'ingress' });
    assert.throws(
      () => addQdisc(t.nl, x1, { kind: 'ingress' }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    const q = ingressQdisc(t.nl, x1);
    assert.equal(q?.kind, 'ingress');
    const seen = tc<TcQdiscJson[]>('qdisc', 'show', 'dev', 'x1').find((j) => j.kind === 'ingress');
    assert.equal(seen?.handle, formatHandle(q!.handle));
    assert.equal(seen?.parent, formatHandle(q!.parent));
    delQdisc(t.nl, x1, { kind: 'ingress' });
    delQdisc(t.nl, x1, { kind: 'ingress' });
    assert.equal(ingressQdisc(t.nl, x1), undefined);
    assert.ok(!tc<TcQdiscJson[]>('qdisc', 'show', 'dev', 'x1').some((j) => j.kind === 'ingress'));
  });

  it('an existing clsact qdisc is kept and serves as the ingress hook', () => {
    addQdisc(t.nl, y1, { kind: 'clsact' });
    ensureQdisc(t.nl, y1, { kind: 'ingress' });
    assert.equal(ingressQdisc(t.nl, y1)?.kind, 'clsact');
    delQdisc(t.nl, y1, { kind: 'ingress' }); // not ours: nothing happens
    assert.equal(ingressQdisc(t.nl, y1)?.kind, 'clsact');
    delQdisc(t.nl, y1, { kind: 'clsact' });
    assert.equal(ingressQdisc(t.nl, y1), undefined);
  });

  it('unknown devices are ERR_LINK_NOT_FOUND; deleting on them is success', () => {
    assert.throws(
      () => addQdisc(t.nl, 999_999, { kind: 'ingress' }),
      (e) => isTapnetError(e, 'ERR_LINK_NOT_FOUND'),
    );
    delQdisc(t.nl, 999_999, { kind: 'ingress' });
    delFilter(t.nl, x1, { prio: 7 });
  });

  it('redirectIngress both ways joins two namespaces at layer 2, as tc-redirect-tap does', async () => {
    // Before: x1 and y1 are unrelated, nothing crosses.
    const [before] = await udp(a.name, b.name, '198.18.0.2', 3, 100, 1500);
    assert.equal(before, 0);

    redirectIngress(t.nl, x1, y1);
    redirectIngress(t.nl, y1, x1);
    redirectIngress(t.nl, x1, y1); // idempotent

    const filters = listFilters(t.nl, x1).filter((f) => f.actions.length > 0);
    assert.equal(filters.length, 1);
    const [f] = filters as [Filter];
    assert.equal(f.prio, FILTER_PRIO.redirect);
    assert.deepEqual(f.u32?.keys, [{ mask: 0, value: 0, off: 0, offmask: 0 }]);
    const act = f.actions[0]!;
    assert.ok(act.kind === 'mirred' && 'ifindex' in act);
    assert.deepEqual(
      [act.mode, act.direction, act.ifindex, act.control],
      ['redirect', 'egress', y1, 'stolen'],
    );

    const [received, bytes, echoes] = await udp(a.name, b.name, '198.18.0.2', 20, 200);
    assert.deepEqual([received, bytes, echoes], [20, 4000, 20]);

    // tc sees the same filter, and the packet counters of the action agree with ours.
    const json = tc<
      {
        pref: number;
        options?: { actions?: { kind: string; to_dev: string; stats: { packets: number } }[] };
      }[]
    >('-s', 'filter', 'show', 'dev', 'x1', 'ingress');
    const node = json.find((j) => j.options?.actions);
    assert.equal(node?.pref, FILTER_PRIO.redirect);
    assert.equal(node?.options?.actions?.[0]?.kind, 'mirred');
    assert.equal(node?.options?.actions?.[0]?.to_dev, 'y1');
    const ours = listFilters(t.nl, x1).find((x) => x.actions.length > 0)!.actions[0]!.stats!;
    assert.equal(ours.packets, node?.options?.actions?.[0]?.stats.packets);
    assert.ok(ours.packets >= 21, `redirected ${ours.packets} packets (20 datagrams + ARP)`);

    // Re-pointing the redirect replaces the action in place (same handle, new target).
    const handle = f.handle;
    redirectIngress(t.nl, x1, 1); // lo
    const moved = listFilters(t.nl, x1).find((x) => x.actions.length > 0)!;
    assert.equal(moved.handle, handle);
    assert.equal((moved.actions[0] as { ifindex: number }).ifindex, 1);
    redirectIngress(t.nl, x1, y1);
  });

  it('setEgressRate: tbf values are what tc reports, shaping drops the excess, counters agree with tc -s', async (tt) => {
    // Towards A (the "guest"): 1 Mbit/s, 8 KiB burst, 16 KiB queue.
    setEgressRate(t.nl, x1, { rateBps: 125_000, burstBytes: 8192, limitBytes: 16_384 });
    setEgressRate(t.nl, x1, { rateBps: 125_000, burstBytes: 8192, limitBytes: 16_384 }); // idempotent
    const tbf = () => listQdiscs(t.nl, x1).find((q) => q.parent === TC_H_ROOT)!;
    const q = tbf();
    assert.equal(q.kind, 'tbf');
    const j = tc<TcQdiscJson[]>('-r', 'qdisc', 'show', 'dev', 'x1').find((x) => x.root)!;
    assert.equal(j.kind, 'tbf');
    assert.equal(j.handle, formatHandle(q.handle));
    assert.deepEqual(
      {
        rate: q.tbf?.rateBps,
        burst: q.tbf?.burstBytes,
        limit: q.tbf?.limitBytes,
        raw: q.tbf?.bufferTicks.toString(16),
      },
      { rate: j.options?.rate, burst: j.options?.burst, limit: j.options?.limit, raw: j.options?.burst_raw },
    );
    assert.deepEqual([q.tbf?.rateBps, q.tbf?.burstBytes, q.tbf?.limitBytes], [125_000, 8192, 16_384]);

    // B blasts 200 × 1000-byte datagrams at A through the redirect: far more than bucket + queue hold.
    const [received, bytes] = await udp(b.name, a.name, '198.18.0.1', 200, 1000, 2000);
    assert.ok(received > 5 && received < 100, `A received ${received} of 200 datagrams (${bytes} bytes)`);
    const s = tbf().stats!;
    tt.diagnostic(
      `tbf 1 Mbit/s, 8 KiB burst, 16 KiB queue: ${received}/200 datagrams passed; stats ${JSON.stringify(s)}`,
    );
    assert.ok(s.drops > 0 && s.overlimits > 0, JSON.stringify(s));
    const js = tc<TcQdiscJson[]>('-s', 'qdisc', 'show', 'dev', 'x1').find((x) => x.root)!;
    assert.deepEqual(
      [s.bytes, s.packets, s.drops, s.overlimits, s.requeues, s.backlog, s.qlen],
      [js.bytes, js.packets, js.drops, js.overlimits, js.requeues, js.backlog, js.qlen],
    );

    // Changing the rate changes the qdisc in place; above 4 GB/s the 64-bit rate is used.
    setEgressRate(t.nl, x1, { rateBps: 5_000_000_000, burstBytes: 1 << 20 });
    const big = tbf();
    assert.equal(big.handle, q.handle);
    const jb = tc<TcQdiscJson[]>('-r', 'qdisc', 'show', 'dev', 'x1').find((x) => x.root)!;
    assert.deepEqual(
      [big.tbf?.rateBps, big.tbf?.burstBytes, big.tbf?.limitBytes],
      [jb.options?.rate, jb.options?.burst, jb.options?.limit],
    );
    assert.equal(big.tbf?.rateBps, 5_000_000_000);
    assert.equal(big.tbf?.limitBytes, 5_000_000_000 * 0.025 + (1 << 20));

    removeEgressRate(t.nl, x1);
    removeEgressRate(t.nl, x1);
    assert.notEqual(listQdiscs(t.nl, x1).find((x) => x.parent === TC_H_ROOT)?.kind, 'tbf');
    assert.notEqual(tc<TcQdiscJson[]>('qdisc', 'show', 'dev', 'x1').find((x) => x.root)?.kind, 'tbf');
  });

  it('rejects a burst smaller than a frame and a zero rate before touching the kernel', () => {
    assert.throws(
      () => setEgressRate(t.nl, x1, { rateBps: 125_000, burstBytes: 1000 }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => setIngressPolice(t.nl, x1, { rateBps: 0, burstBytes: 10_000 }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => redirectIngress(t.nl, x1, x1),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });

  it('setIngressPolice: police values are what tc reports; excess from the guest is dropped, the rest still redirected', async (tt) => {
    try {
      setIngressPolice(t.nl, x1, { rateBps: 125_000, burstBytes: 10_000 });
    } catch (e) {
      if (missingModule(tt, e, 'the police action (CONFIG_NET_ACT_POLICE)')) return;
      throw e;
    }
    setIngressPolice(t.nl, x1, { rateBps: 125_000, burstBytes: 10_000 }); // idempotent
    const police = () =>
      listFilters(t.nl, x1).find((f) => f.prio === FILTER_PRIO.police && f.actions.length > 0)!;
    const p = police().actions[0]!;
    assert.ok(p.kind === 'police' && 'rateBps' in p);
    const j = tc<
      {
        pref: number;
        options?: {
          actions?: { kind: string; rate: number; burst: number; control_action?: { type: string } }[];
        };
      }[]
    >('filter', 'show', 'dev', 'x1', 'ingress').find(
      (x) => x.pref === FILTER_PRIO.police && x.options?.actions,
    )!;
    const ja = j.options!.actions![0]!;
    assert.equal(ja.kind, 'police');
    assert.deepEqual([p.rateBps, p.burstBytes], [ja.rate, ja.burst]);
    assert.deepEqual([p.exceed, p.conform], ['drop', 'continue']);

    // A (the guest) blasts at B: police drops what exceeds, conforming packets reach B via the redirect.
    const [received] = await udp(a.name, b.name, '198.18.0.2', 200, 1000, 2000);
    assert.ok(received > 3 && received < 100, `B received ${received} of 200`);
    const stats = police().actions[0]!.stats!;
    assert.ok(stats.drops > 0, JSON.stringify(stats));

    removeIngressPolice(t.nl, x1);
    removeIngressPolice(t.nl, x1);
    assert.ok(!listFilters(t.nl, x1).some((f) => f.prio === FILTER_PRIO.police));
  });

  it('matchall redirect (when the kernel has it)', async (tt) => {
    ensureQdisc(t.nl, y1, { kind: 'ingress' });
    try {
      addFilter(
        t.nl,
        y1,
        { kind: 'matchall', actions: [{ kind: 'mirred', mode: 'mirror', direction: 'egress', ifindex: x1 }] },
        { prio: 5 },
      );
    } catch (e) {
      if (missingModule(tt, e, 'the matchall classifier (CONFIG_NET_CLS_MATCHALL)')) return;
      throw e;
    }
    const f = listFilters(t.nl, y1).find((x) => x.prio === 5)!;
    assert.equal(f.kind, 'matchall');
    assert.equal(f.actions[0]?.kind, 'mirred');
    delFilter(t.nl, y1, { prio: 5 });
  });

  it('removing the redirects leaves no filter and no ingress qdisc; B is unreachable again', async () => {
    removeRedirectIngress(t.nl, x1);
    removeRedirectIngress(t.nl, y1);
    removeRedirectIngress(t.nl, y1);
    for (const [dev, idx] of [
      ['x1', x1],
      ['y1', y1],
    ] as const) {
      assert.deepEqual(listFilters(t.nl, idx), []);
      assert.equal(ingressQdisc(t.nl, idx), undefined);
      assert.deepEqual(tc('filter', 'show', 'dev', dev, 'ingress'), []);
      assert.ok(!listQdiscs(t.nl, idx).some((q) => q.parent === TC_H_INGRESS));
    }
    assert.deepEqual(listFilters(t.nl, x1, INGRESS_PARENT), []);
    const [received] = await udp(a.name, b.name, '198.18.0.2', 3, 100, 1500);
    assert.equal(received, 0);
  });
});
