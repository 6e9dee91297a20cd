/**
 * The etcd store against a real etcd-server (one member on the sandbox's loopback, data on tmpfs): lease
 * arbitration across hosts, 3 hosts × 300 concurrent allocations from one pool, record CAS and
 * quarantine, locks across sessions, watches across an etcd restart, and ERR_UNAVAILABLE while etcd is
 * gone. etcdctl is the oracle.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EtcdClient } from '../../src/cluster/etcd-client.js';
import { EtcdStore } from '../../src/cluster/etcd-store.js';
import type { WatchEvent } from '../../src/cluster/etcd-watch.js';
import { ClusterMember, clusterStatus, reclaimHost } from '../../src/cluster/membership.js';
import { vmOverlayPublisher } from '../../src/cluster/overlay.js';
import { EtcdSession } from '../../src/cluster/session.js';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import { Ipam } from '../../src/ipam/ipam.js';
import type { PoolRef, StoredRecord } from '../../src/store/types.js';
import { etcdSkipReason, startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { privSkipReason } from '../helpers/priv.js';

const skip = privSkipReason() ?? etcdSkipReason();
const POOL: PoolRef = { network: 'c1', subnet: '198.18.64.0/20' };

interface Rec extends StoredRecord {
  network: string;
  mac: string;
  ipv4?: string;
}

describe('cluster store on etcd', { skip, timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  const clients: EtcdClient[] = [];
  const sessions: EtcdSession[] = [];
  let prefixN = 0;

  const client = (o: Partial<ConstructorParameters<typeof EtcdClient>[0]> = {}): EtcdClient => {
    const c = new EtcdClient({ endpoints: etcd.endpoints, ...o });
    clients.push(c);
    return c;
  };
  const store = async (host: string, prefix: string, c = client()): Promise<EtcdStore<Rec>> => {
    const session = await EtcdSession.open(c, { ttl: 5 });
    sessions.push(session);
    return new EtcdStore<Rec>({ client: c, session, host, prefix });
  };
  const freshPrefix = (): string => `/t${process.pid}x${prefixN++}`;

  before(async () => {
    etcd = await startEtcd([{ name: 'e0', ip: '127.0.0.1', clientPort: 23790, peerPort: 23800 }]);
  });
  after(async () => {
    for (const s of sessions) await s.close({ revoke: false }).catch(() => undefined);
    for (const c of clients) c.close();
    await etcd?.stop();
  });

  it('claims: exactly one host wins each address; idempotent; other hosts see owner@host', async () => {
    const prefix = freshPrefix();
    const [a, b] = [await store('host-a', prefix), await store('host-b', prefix)];
    const addrs = Array.from({ length: 50 }, (_, i) => `198.18.64.${i + 10}`);
    const results = await Promise.all(
      addrs.flatMap((addr) => [
        a.leases.claim(POOL, addr, 'vm1').then((w) => ({ addr, host: 'a', w })),
        b.leases.claim(POOL, addr, 'vm1').then((w) => ({ addr, host: 'b', w })),
      ]),
    );
    for (const addr of addrs)
      assert.equal(results.filter((r) => r.addr === addr && r.w).length, 1, `one winner for ${addr}`);
    const wonByA = results.filter((r) => r.host === 'a' && r.w).map((r) => r.addr);
    assert.ok(wonByA.length > 0);
    const addr = wonByA[0]!;
    assert.equal(await a.leases.claim(POOL, addr, 'vm1'), true, 'idempotent for the holder');
    assert.equal(
      await b.leases.claim(POOL, addr, 'vm1'),
      false,
      'same VM ID on another host is another owner',
    );
    assert.equal(await a.leases.ownerOf(POOL, addr), 'vm1');
    assert.equal(await b.leases.ownerOf(POOL, addr), 'vm1@host-a');
    assert.equal(await b.leases.release(POOL, addr, 'vm1@host-a'), false, 'another host cannot release it');
    assert.equal(await b.leases.release(POOL, addr, 'vm1'), false);
    // etcdctl sees the lease as {owner, host}.
    assert.deepEqual(
      JSON.parse(etcd.ctl('get', '--print-value-only', `${prefix}/ipam/c1/198.18.64.0_20/leases/${addr}`)),
      { owner: 'vm1', host: 'host-a' },
    );
    assert.equal(await a.leases.release(POOL, addr, 'vm1'), true);
    assert.equal(await a.leases.ownerOf(POOL, addr), undefined);
    assert.deepEqual(await a.leases.pools(), [POOL]);
  });

  it('3 hosts × 300 concurrent allocations from one pool give 900 distinct addresses', async () => {
    const prefix = freshPrefix();
    const hosts = await Promise.all(['h1', 'h2', 'h3'].map((h) => store(h, prefix)));
    const spec = { network: 'c1', subnet: '198.18.64.0/20' };
    const t0 = performance.now();
    const leases = await Promise.all(
      hosts.flatMap((s, h) => {
        const ipam = new Ipam(s.leases);
        return Array.from({ length: 300 }, (_, i) =>
          ipam
            .pool(spec)
            .allocate(`vm-${h}-${i}`)
            .then((l) => ({ host: s.host, ...l })),
        );
      }),
    );
    const ms = performance.now() - t0;
    const addrs = new Set(leases.map((l) => l.address));
    assert.equal(addrs.size, 900, 'no address handed out twice');
    // The store agrees: 900 keys, each owned by the VM that got it.
    const all = await hosts[0]!.leases.leasesWithHosts(POOL);
    assert.equal(all.length, 900);
    const byAddr = new Map(all.map((l) => [l.address, l]));
    for (const l of leases)
      assert.deepEqual([byAddr.get(l.address)?.owner, byAddr.get(l.address)?.host], [l.owner, l.host]);
    const keys = etcd
      .ctl('get', '--prefix', '--keys-only', `${prefix}/ipam/c1/198.18.64.0_20/leases/`)
      .split('\n')
      .filter(Boolean);
    assert.equal(keys.length, 900, 'etcdctl counts 900 lease keys');
    process.stderr.write(`# 900 concurrent allocations on 3 hosts: ${ms.toFixed(0)} ms\n`);
  });

  it('records: generation is the etcd version, CAS on put and delete, corrupt records quarantined', async () => {
    const s = await store('host-r', freshPrefix());
    const r1 = await s.records.put(
      { vmId: 'vm1', state: 'creating', network: 'c1', mac: '02:00:00:00:00:01' },
      { expectedGeneration: 0 },
    );
    assert.equal(r1.generation, 1);
    await assert.rejects(s.records.put({ ...r1, state: 'ready' }, { expectedGeneration: 0 }), (e) =>
      isTapnetError(e, 'ERR_CONFLICT'),
    );
    const r2 = await s.records.put({ ...r1, state: 'ready' }, { expectedGeneration: 1 });
    assert.equal(r2.generation, 2);
    assert.equal((await s.records.get('vm1'))?.generation, 2);
    assert.equal((await s.records.get('vm1'))?.state, 'ready');
    const r3 = await s.records.put({ ...r2, ipv4: '198.18.64.9' });
    assert.equal(r3.generation, 3, 'an unconditional put increments too');
    await assert.rejects(s.records.delete('vm1', { expectedGeneration: 2 }), (e) =>
      isTapnetError(e, 'ERR_CONFLICT'),
    );
    assert.equal(await s.records.delete('vm1', { expectedGeneration: 3 }), true);
    assert.equal(await s.records.delete('vm1'), false);
    assert.equal(await s.records.get('vm1'), undefined);
    // A record damaged behind tapnet's back is moved aside and reported, then stays a problem.
    await s.records.put({ vmId: 'vm2', state: 'ready', network: 'c1', mac: '02:00:00:00:00:02' });
    etcd.ctl('put', `${s.keys.record('host-r', 'bad')}`, '{not json');
    const { records, problems } = await s.records.list();
    assert.deepEqual(
      records.map((r) => r.vmId),
      ['vm2'],
    );
    assert.deepEqual(
      problems.map((p) => [p.vmId, p.error.code]),
      [['bad', 'ERR_STORE_CORRUPT']],
    );
    assert.equal(etcd.ctl('get', '--print-value-only', s.keys.record('host-r', 'bad')), '');
    assert.match(etcd.ctl('get', '--print-value-only', s.keys.quarantine('host-r', 'bad')), /not json/);
    assert.deepEqual(
      (await s.records.list()).problems.map((p) => p.vmId),
      ['bad'],
    );
    // A newer schema is refused, not quarantined.
    etcd.ctl(
      'put',
      s.keys.record('host-r', 'new'),
      JSON.stringify({ vmId: 'new', version: 9, generation: 1, state: 'ready' }),
    );
    await assert.rejects(
      s.records.get('new'),
      (e) => isTapnetError(e, 'ERR_STORE') && e.details.version === 9,
    );
    assert.notEqual(etcd.ctl('get', '--print-value-only', s.keys.record('host-r', 'new')), '');
  });

  it('locks: one holder at a time across sessions; waiters get it in order; timeout and abort', async () => {
    const prefix = freshPrefix();
    const [s1, s2] = [await store('host-l', prefix), await store('host-l', prefix)];
    const l1 = await s1.locks.acquire('vm', 'vm1');
    const order: string[] = [];
    const p2 = s2.locks.acquire('vm', 'vm1').then((l) => {
      order.push('s2');
      return l;
    });
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(order, [], 'the second session waits');
    await assert.rejects(s2.locks.acquire('vm', 'vm1', { timeoutMs: 100 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    const ac = new AbortController();
    const aborted = s1.locks.acquire('vm', 'vm1', { signal: ac.signal });
    ac.abort();
    await assert.rejects(aborted, (e) => isTapnetError(e, 'ERR_ABORTED'));
    const other = await s2.locks.acquire('vm', 'vm2'); // other keys never wait
    other.release();
    l1.release();
    const l2 = await p2;
    assert.deepEqual(order, ['s2']);
    l2.release();
    // A process that dies loses its locks with its session lease.
    const s3 = await store('host-l', prefix);
    await s3.locks.acquire('network', 'c1');
    await s3.session.close({ revoke: true });
    const l4 = await s1.locks.acquire('network', 'c1', { timeoutMs: 2_000 });
    l4.release();
  });

  it('a watch resumes after an etcd restart without losing or repeating events', async () => {
    const c = client({ retryBudgetMs: 500 });
    const prefix = freshPrefix();
    const seen: WatchEvent[] = [];
    const w = c.watch(`${prefix}/w/`, { prefix: true, onEvents: (ev) => void seen.push(...ev) });
    await w.ready;
    for (let i = 0; i < 5; i++) await c.put(`${prefix}/w/k${i}`, `v${i}`);
    await etcd.kill('SIGKILL');
    await assert.rejects(c.put(`${prefix}/w/x`, 'x'), (e) => isTapnetError(e, 'ERR_UNAVAILABLE'));
    await etcd.start();
    const c2 = client();
    for (let i = 5; i < 10; i++) await c2.put(`${prefix}/w/k${i}`, `v${i}`);
    await c2.delete(`${prefix}/w/k0`);
    const until = Date.now() + 5_000;
    while (seen.length < 11 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    w.close();
    assert.deepEqual(
      seen.map((e) => `${e.type} ${e.kv.key.slice(prefix.length)}`),
      [...Array.from({ length: 10 }, (_, i) => `put /w/k${i}`), 'delete /w/k0'],
    );
    assert.ok(w.reconnects >= 1);
  });

  it('membership: status shows alive then expired; reclaim only an expired host, only with force', async () => {
    const prefix = freshPrefix();
    const pub = vmOverlayPublisher<Rec>(['c1'], '198.18.100.9');
    const c = client();
    const session = await EtcdSession.open(c, { ttl: 1 });
    const s = new EtcdStore<Rec>({ client: c, session, host: 'host-x', prefix, publish: pub });
    await ClusterMember.join({ client: c, session, host: 'host-x', vtep: '198.18.100.9', prefix });
    const other = await store('host-y', prefix);
    await other.leases.claim(POOL, '198.18.64.200', 'vm-y');
    const ipam = new Ipam(s.leases);
    const lease = await ipam.pool({ network: 'c1', subnet: '198.18.64.0/20' }).allocate('vm-x');
    await s.records.put(
      { vmId: 'vm-x', state: 'ready', network: 'c1', mac: '02:00:00:00:00:09', ipv4: lease.address },
      { expectedGeneration: 0 },
    );
    assert.match(
      etcd.ctl('get', '--print-value-only', s.keys.overlayEntry('c1', 'host-x', 'vm-x')),
      /198\.18\.100\.9/,
    );
    const st = await clusterStatus(c, { prefix });
    assert.deepEqual(
      st.hosts.map((h) => [h.name, h.state, h.vms, h.vtep]),
      [['host-x', 'alive', 1, '198.18.100.9']],
    );
    await assert.rejects(
      reclaimHost(c, 'host-x', { prefix, force: true }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
      'never while alive',
    );
    await session.close({ revoke: false }); // the agent dies: its lease runs out
    let state = 'alive';
    for (
      const until = Date.now() + 5_000;
      state !== 'expired' && Date.now() < until;
      await new Promise((r) => setTimeout(r, 100))
    ) {
      state = (await clusterStatus(c, { prefix })).hosts[0]!.state;
    }
    assert.equal(state, 'expired');
    assert.equal((await clusterStatus(c, { prefix })).hosts[0]!.vms, 1, 'its VM is still counted');
    await assert.rejects(
      reclaimHost(c, 'host-x', { prefix }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
      'not without force',
    );
    const r = await reclaimHost(c, 'host-x', { prefix, force: true });
    assert.deepEqual(r.records, ['vm-x']);
    assert.deepEqual(
      r.leases.map((l) => [l.address, l.owner]),
      [[lease.address, 'vm-x']],
    );
    assert.equal(r.overlayEntries, 1, 'its overlay entry, found through its record’s network');
    assert.equal(etcd.ctl('get', '--print-value-only', s.keys.overlayEntry('c1', 'host-x', 'vm-x')), '');
    assert.equal(await other.leases.ownerOf(POOL, lease.address), undefined);
    assert.equal(await other.leases.ownerOf(POOL, '198.18.64.200'), 'vm-y', 'other hosts keep theirs');
    assert.deepEqual((await clusterStatus(c, { prefix })).hosts, []);
  });

  it('fails with ERR_UNAVAILABLE while etcd cannot be reached, and works again after', async () => {
    const s = await store('host-u', freshPrefix(), client({ retryBudgetMs: 300, requestTimeoutMs: 200 }));
    const ipam = new Ipam(s.leases);
    const spec = { network: 'c1', subnet: '198.18.64.0/20' };
    await ipam.pool(spec).allocate('vm0');
    await etcd.kill('SIGKILL');
    const t0 = Date.now();
    const err = await ipam
      .pool(spec)
      .allocate('vm1')
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.ok(err instanceof TapnetError && err.code === 'ERR_UNAVAILABLE', `got ${String(err)}`);
    assert.ok(Date.now() - t0 < 2_000, 'fails fast, within the retry budget');
    await assert.rejects(s.locks.acquire('vm', 'vm1'), (e) => isTapnetError(e, 'ERR_UNAVAILABLE'));
    await assert.rejects(s.records.get('vm0'), (e) => isTapnetError(e, 'ERR_UNAVAILABLE'));
    await etcd.start();
    const l = await ipam.pool(spec).allocate('vm1');
    assert.equal(await s.leases.ownerOf(POOL, l.address), 'vm1');
  });
});

describe('cluster store on a three-member etcd', { skip, timeout: 60_000 }, () => {
  let etcd: TestEtcd;
  before(async () => {
    etcd = await startEtcd([
      { name: 'm0', ip: '127.0.0.1', clientPort: 23810, peerPort: 23820 },
      { name: 'm1', ip: '127.0.0.1', clientPort: 23811, peerPort: 23821 },
      { name: 'm2', ip: '127.0.0.1', clientPort: 23812, peerPort: 23822 },
    ]);
  });
  after(async () => {
    await etcd?.stop();
  });

  it('losing one member is invisible; losing the quorum is ERR_UNAVAILABLE, never a double allocation', async () => {
    const c = new EtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 500, retryBudgetMs: 1_500 });
    const session = await EtcdSession.open(c, { ttl: 5 });
    const s = new EtcdStore<Rec>({ client: c, session, host: 'host-q', prefix: '/q' });
    const ipam = new Ipam(s.leases);
    const spec = { network: 'c1', subnet: '198.18.64.0/20' };
    try {
      await ipam.pool(spec).allocate('vm0');
      const used = etcd.endpoints.indexOf(c.endpoint.href.replace(/\/$/, ''));
      await etcd.kill('SIGKILL', used); // the member this client talks to
      const l1 = await ipam.pool(spec).allocate('vm1');
      assert.notEqual(
        c.endpoint.href.replace(/\/$/, ''),
        etcd.endpoints[used],
        'the client moved to another member',
      );
      await etcd.kill('SIGKILL', (used + 1) % 3); // now only one of three is left: no quorum
      await assert.rejects(ipam.pool(spec).allocate('vm2'), (e) => isTapnetError(e, 'ERR_UNAVAILABLE'));
      await etcd.start(used);
      await etcd.start((used + 1) % 3);
      let l2: Awaited<ReturnType<ReturnType<Ipam['pool']>['allocate']>> | undefined;
      for (const until = Date.now() + 10_000; !l2 && Date.now() < until; ) {
        l2 = await ipam
          .pool(spec)
          .allocate('vm2')
          .catch(() => undefined);
      }
      assert.ok(l2, 'allocations work again once the quorum is back');
      const leases = await s.leases.leasesWithHosts(POOL);
      assert.equal(new Set(leases.map((l) => l.address)).size, leases.length);
      assert.deepEqual(leases.map((l) => l.owner).sort(), ['vm0', 'vm1', 'vm2']);
      assert.notEqual(l1.address, l2.address);
    } finally {
      await session.close({ revoke: false }).catch(() => undefined);
      c.close();
    }
  });
});
