import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isTapnetError } from '../../src/errors.js';
import {
  addFdb,
  addNeighbour,
  addProxyNeighbour,
  appendFdb,
  delFdb,
  delNeighbour,
  delProxyNeighbour,
  ensureFdb,
  ensureNeighbour,
  listFdb,
  listNeighbours,
  listProxyNeighbours,
  type Neighbour,
} from '../../src/net/neigh.js';
import { NTF_MASTER, NTF_ROUTER, NTF_SELF, NUD_PERMANENT } from '../../src/netlink/constants.js';
import { neighStateNames } from '../../src/netlink/neigh.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();

interface IpNeigh {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
  router?: null;
  proxy?: null;
}
interface BridgeFdb {
  mac: string;
  ifname: string;
  dst?: string;
  port?: number;
  vni?: number;
  flags: string[];
  master?: string;
  state: string;
}

describe('neighbours, proxy entries and FDB against the kernel', { skip }, () => {
  // T: n0 198.18.2.254/24 ── n1 198.18.2.1/24 in A;  T: m0 ── m1 (only for a route elsewhere);
  //    br0 with port p0 (peer p1);  vx0 vxlan id 42.
  let t: TestNetns;
  let a: TestNetns;
  const idx: Record<string, number> = {};
  const ipT = <T>(...args: string[]): T => t.ipJson<T>(...args);
  const fdbJson = (): BridgeFdb[] =>
    JSON.parse(
      execFileSync('bridge', ['-n', t.name, '-j', 'fdb', 'show'], { encoding: 'utf8' }) || '[]',
    ) as BridgeFdb[];

  before(() => {
    t = makeTestNetns('nb');
    a = makeTestNetns('nba');
    t.ip('link', 'add', 'n0', 'type', 'veth', 'peer', 'name', 'n1', 'netns', a.name);
    t.ip('link', 'add', 'm0', 'type', 'veth', 'peer', 'name', 'm1');
    t.ip('link', 'add', 'br0', 'type', 'bridge');
    t.ip('link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1');
    t.ip('link', 'set', 'p0', 'master', 'br0');
    t.ip(
      'link',
      'add',
      'vx0',
      'type',
      'vxlan',
      'id',
      '42',
      'dstport',
      '4789',
      'local',
      '198.18.2.254',
      'nolearning',
    );
    for (const d of ['n0', 'm0', 'm1', 'br0', 'p0', 'p1', 'vx0']) t.ip('link', 'set', d, 'up');
    t.ip('addr', 'add', '198.18.2.254/24', 'dev', 'n0');
    a.ip('addr', 'add', '198.18.2.1/24', 'dev', 'n1');
    a.ip('link', 'set', 'n1', 'up');
    for (const d of ['n0', 'm0', 'br0', 'p0', 'vx0'])
      idx[d] = ipT<{ ifindex: number }[]>('link', 'show', 'dev', d)[0]!.ifindex;
  });
  after(() => {
    a?.destroy();
    t?.destroy();
  });

  const shown = (ns: Neighbour[]) =>
    ns
      .map((n) => ({
        dst: n.dst,
        lladdr: n.lladdr,
        state: neighStateNames(n.state),
        router: (n.flags & NTF_ROUTER) !== 0,
      }))
      .sort((x, y) => String(x.dst).localeCompare(String(y.dst)));
  const ipShown = (js: IpNeigh[]) =>
    js
      .map((j) => ({ dst: j.dst, lladdr: j.lladdr, state: j.state, router: 'router' in j }))
      .sort((x, y) => x.dst.localeCompare(y.dst));

  it('static ARP and NDP entries: add, conflict, replace, list = ip -j neigh, delete twice', () => {
    addNeighbour(t.nl, { ifindex: idx.n0!, address: '198.18.2.10', lladdr: '02:00:00:00:02:10' });
    assert.throws(
      () => addNeighbour(t.nl, { ifindex: idx.n0!, address: '198.18.2.10', lladdr: '02:00:00:00:02:11' }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    ensureNeighbour(t.nl, { ifindex: idx.n0!, address: '198.18.2.10', lladdr: '02:00:00:00:02:12' });
    ensureNeighbour(t.nl, {
      ifindex: idx.n0!,
      address: '198.18.2.11',
      lladdr: '02:00:00:00:02:13',
      state: 'stale',
    });
    ensureNeighbour(t.nl, {
      ifindex: idx.n0!,
      address: '2001:db8::10',
      lladdr: '02:00:00:00:02:14',
      state: 'reachable',
      router: true,
    });
    ensureNeighbour(t.nl, {
      ifindex: idx.n0!,
      address: '2001:db8::10',
      lladdr: '02:00:00:00:02:14',
      state: 'reachable',
      router: true,
    });

    const ours = listNeighbours(t.nl, { ifindex: idx.n0! });
    const theirs = ipT<IpNeigh[]>('neigh', 'show', 'dev', 'n0');
    assert.deepEqual(shown(ours), ipShown(theirs));
    assert.deepEqual(shown(ours), [
      { dst: '198.18.2.10', lladdr: '02:00:00:00:02:12', state: ['PERMANENT'], router: false },
      { dst: '198.18.2.11', lladdr: '02:00:00:00:02:13', state: ['STALE'], router: false },
      { dst: '2001:db8::10', lladdr: '02:00:00:00:02:14', state: ['REACHABLE'], router: true },
    ]);
    assert.deepEqual(
      listNeighbours(t.nl, { ifindex: idx.n0!, family: 6 }).map((n) => n.dst),
      ['2001:db8::10'],
    );
    assert.deepEqual(listNeighbours(t.nl, { ifindex: idx.m0! }), []);

    for (const addr of ['198.18.2.10', '198.18.2.11', '2001:db8::10']) {
      delNeighbour(t.nl, idx.n0!, addr);
      delNeighbour(t.nl, idx.n0!, addr);
    }
    assert.deepEqual(listNeighbours(t.nl, { ifindex: idx.n0! }), []);
    assert.deepEqual(ipT('neigh', 'show', 'dev', 'n0'), []);
  });

  it('refuses bad input before touching the kernel', () => {
    const bad = (fn: () => void) => assert.throws(fn, (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'));
    bad(() => addNeighbour(t.nl, { ifindex: idx.n0!, address: '198.18.2.300', lladdr: '02:00:00:00:02:10' }));
    bad(() => addNeighbour(t.nl, { ifindex: idx.n0!, address: '198.18.2.3', lladdr: 'zz' }));
    bad(() =>
      addNeighbour(t.nl, {
        ifindex: idx.n0!,
        address: '198.18.2.3',
        lladdr: '02:00:00:00:02:10',
        state: 'bogus' as 'stale',
      }),
    );
    bad(() => addFdb(t.nl, { ifindex: idx.vx0!, mac: '02:00:00:00:00:01', dst: 'host.example' }));
    bad(() => addFdb(t.nl, { ifindex: idx.vx0!, mac: '02:00:00:00:00:01', vni: 1 << 24 }));
  });

  it('proxy ARP entry: listed as ip shows it, and the host answers ARP for the address', async () => {
    // The target must be routed elsewhere (m0) and forwarding on, as for any proxy ARP.
    execFileSync('ip', [
      'netns',
      'exec',
      t.name,
      'sysctl',
      '-qw',
      'net.ipv4.ip_forward=1',
      'net.ipv4.neigh.n0.proxy_delay=0',
    ]);
    t.ip('route', 'add', '198.18.2.50/32', 'dev', 'm0');
    t.ip('route', 'add', '198.18.2.51/32', 'dev', 'm0'); // routed the same way, but no proxy entry
    addProxyNeighbour(t.nl, idx.n0!, '198.18.2.50');
    addProxyNeighbour(t.nl, idx.n0!, '2001:db8::50');
    addProxyNeighbour(t.nl, idx.n0!, '198.18.2.50'); // idempotent: the kernel updates a proxy entry in place

    const ours = listProxyNeighbours(t.nl, idx.n0!)
      .map((n) => n.dst)
      .sort();
    const theirs = ipT<IpNeigh[]>('neigh', 'show', 'proxy')
      .filter((j) => j.dev === 'n0')
      .map((j) => j.dst)
      .sort();
    assert.deepEqual(ours, theirs);
    assert.deepEqual(ours, ['198.18.2.50', '2001:db8::50']);
    assert.deepEqual(listProxyNeighbours(t.nl, idx.m0!), []);

    // A sends to .50 and .51: only the ARP request for .50 is answered by T, with n0's MAC.
    execFileSync('ip', [
      'netns',
      'exec',
      a.name,
      process.execPath,
      '-e',
      "const s=require('node:dgram').createSocket('udp4');s.send('x',9,'198.18.2.51');s.send('x',9,'198.18.2.50',()=>setTimeout(()=>s.close(),200))",
    ]);
    const n0mac = ipT<{ address: string }[]>('link', 'show', 'dev', 'n0')[0]!.address;
    let seen: IpNeigh | undefined;
    for (let i = 0; i < 40 && !seen?.lladdr; i++) {
      seen = a.ipJson<IpNeigh[]>('neigh', 'show', '198.18.2.50', 'dev', 'n1')[0];
      if (!seen?.lladdr) await sleep(50);
    }
    assert.equal(seen?.lladdr, n0mac);
    assert.equal(a.ipJson<IpNeigh[]>('neigh', 'show', '198.18.2.51', 'dev', 'n1')[0]?.lladdr, undefined);

    delProxyNeighbour(t.nl, idx.n0!, '198.18.2.50');
    delProxyNeighbour(t.nl, idx.n0!, '198.18.2.50');
    delProxyNeighbour(t.nl, idx.n0!, '2001:db8::50');
    assert.deepEqual(listProxyNeighbours(t.nl, idx.n0!), []);
    assert.deepEqual(ipT('neigh', 'show', 'proxy'), []);
  });

  const fdbOf = (dev: string) =>
    fdbJson()
      .filter((j) => j.ifname === dev && !j.mac.startsWith('33:33') && !j.mac.startsWith('01:00:5e'))
      .map((j) => ({
        mac: j.mac,
        dst: j.dst,
        port: j.port,
        vni: j.vni,
        self: j.flags.includes('self'),
        master: j.master,
        state: j.state,
      }))
      .sort((x, y) => `${x.mac}${x.dst}`.localeCompare(`${y.mac}${y.dst}`));
  const ourFdb = (ifindex: number) =>
    listFdb(t.nl, { ifindex })
      .filter((n) => !n.lladdr?.startsWith('33:33') && !n.lladdr?.startsWith('01:00:5e'))
      .map((n) => ({
        mac: n.lladdr!,
        dst: n.dst,
        port: n.port,
        vni: n.vni,
        self: (n.flags & NTF_SELF) !== 0,
        master: n.master === idx.br0 ? 'br0' : undefined,
        state: n.state & NUD_PERMANENT ? 'permanent' : n.state & 0x40 ? 'static' : '',
      }))
      .sort((x, y) => `${x.mac}${x.dst}`.localeCompare(`${y.mac}${y.dst}`));

  it('VXLAN FDB: remote per MAC with VNI/port, replace, flood list by append, delete one remote', () => {
    const vx = idx.vx0!;
    addFdb(t.nl, { ifindex: vx, mac: '02:00:00:00:03:01', dst: '198.18.3.1' });
    assert.throws(
      () => addFdb(t.nl, { ifindex: vx, mac: '02:00:00:00:03:01', dst: '198.18.3.9' }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    addFdb(t.nl, { ifindex: vx, mac: '02:00:00:00:03:02', dst: '198.18.3.2', vni: 100, port: 4790 });
    ensureFdb(t.nl, { ifindex: vx, mac: '02:00:00:00:03:01', dst: '198.18.3.11' });
    ensureFdb(t.nl, { ifindex: vx, mac: '02:00:00:00:03:01', dst: '198.18.3.11' });
    appendFdb(t.nl, { ifindex: vx, mac: '00:00:00:00:00:00', dst: '198.18.3.100' });
    appendFdb(t.nl, { ifindex: vx, mac: '00:00:00:00:00:00', dst: '198.18.3.101' });
    appendFdb(t.nl, { ifindex: vx, mac: '00:00:00:00:00:00', dst: '198.18.3.101' });

    const expected = [
      {
        mac: '00:00:00:00:00:00',
        dst: '198.18.3.100',
        port: undefined,
        vni: undefined,
        self: true,
        master: undefined,
        state: 'permanent',
      },
      {
        mac: '00:00:00:00:00:00',
        dst: '198.18.3.101',
        port: undefined,
        vni: undefined,
        self: true,
        master: undefined,
        state: 'permanent',
      },
      {
        mac: '02:00:00:00:03:01',
        dst: '198.18.3.11',
        port: undefined,
        vni: undefined,
        self: true,
        master: undefined,
        state: 'permanent',
      },
      {
        mac: '02:00:00:00:03:02',
        dst: '198.18.3.2',
        port: 4790,
        vni: 100,
        self: true,
        master: undefined,
        state: 'permanent',
      },
    ];
    assert.deepEqual(ourFdb(vx), expected);
    assert.deepEqual(fdbOf('vx0'), expected);

    delFdb(t.nl, { ifindex: vx, mac: '00:00:00:00:00:00', dst: '198.18.3.100' });
    delFdb(t.nl, { ifindex: vx, mac: '00:00:00:00:00:00', dst: '198.18.3.100' });
    assert.deepEqual(
      ourFdb(vx).map((e) => e.dst),
      ['198.18.3.101', '198.18.3.11', '198.18.3.2'],
    );
    for (const [mac, dst] of [
      ['00:00:00:00:00:00', '198.18.3.101'],
      ['02:00:00:00:03:01', undefined],
      ['02:00:00:00:03:02', undefined],
    ] as const) {
      delFdb(t.nl, { ifindex: vx, mac, ...(dst ? { dst } : {}) });
      delFdb(t.nl, { ifindex: vx, mac, ...(dst ? { dst } : {}) });
    }
    assert.deepEqual(ourFdb(vx), []);
    assert.deepEqual(fdbOf('vx0'), []);
  });

  it('bridge FDB: a static MAC on a port, seen under the bridge as bridge(8) shows it', () => {
    const p0 = idx.p0!;
    addFdb(t.nl, { ifindex: p0, mac: '02:00:00:00:04:01', target: 'master' });
    ensureFdb(t.nl, { ifindex: p0, mac: '02:00:00:00:04:01', target: 'master' });
    const mine = listFdb(t.nl, { master: idx.br0! }).find((n) => n.lladdr === '02:00:00:00:04:01');
    assert.ok(mine);
    assert.equal(mine.ifindex, p0);
    assert.equal(mine.master, idx.br0);
    assert.ok(mine.flags & NTF_MASTER || !(mine.flags & NTF_SELF));
    assert.deepEqual(
      ourFdb(p0).filter((e) => e.mac === '02:00:00:00:04:01'),
      fdbOf('p0').filter((e) => e.mac === '02:00:00:00:04:01'),
    );
    assert.equal(fdbOf('p0').find((e) => e.mac === '02:00:00:00:04:01')?.state, 'static');
    delFdb(t.nl, { ifindex: p0, mac: '02:00:00:00:04:01', target: 'master' });
    delFdb(t.nl, { ifindex: p0, mac: '02:00:00:00:04:01', target: 'master' });
    assert.ok(!fdbOf('p0').some((e) => e.mac === '02:00:00:00:04:01'));
  });
});
