import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { Ipam, MemoryLeaseStore, type PoolSpec, resolvePool } from '../../src/ipam/index.js';
import { type LeaseStore, openLocalStore } from '../../src/store/index.js';

const roots: string[] = [];
after(() => {
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

async function fileStore(): Promise<LeaseStore> {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-ipam-'));
  roots.push(d);
  return (await openLocalStore({ dir: d })).leases;
}

const backends: Array<[string, () => Promise<LeaseStore>]> = [
  ['memory', async () => new MemoryLeaseStore()],
  ['local files', fileStore],
];

const code =
  (c: string) =>
  (e: unknown): boolean =>
    isTapnetError(e) && e.code === c;

async function allocateUntilExhausted(ipam: Ipam, spec: PoolSpec, tag: string): Promise<string[]> {
  const pool = ipam.pool(spec);
  const got: string[] = [];
  for (let i = 0; ; i++) {
    try {
      got.push((await pool.allocate(`${tag}-${i}`)).address);
    } catch (e) {
      assert.ok(isTapnetError(e, 'ERR_IPAM_EXHAUSTED'), String(e));
      return got;
    }
  }
}

for (const [name, makeStore] of backends) {
  describe(`IPAM over the ${name} lease store`, () => {
    it('exhausts a /30 after exactly 1 address and a /29 after exactly 5, leaving nothing behind', async () => {
      const store = await makeStore();
      const ipam = new Ipam(store);
      const p30: PoolSpec = { network: 'n30', subnet: '198.18.0.0/30' };
      const p29: PoolSpec = { network: 'n29', subnet: '198.18.1.0/29' };
      assert.deepEqual(await allocateUntilExhausted(ipam, p30, 'a'), ['198.18.0.2']);
      assert.deepEqual(await allocateUntilExhausted(ipam, p29, 'b'), [
        '198.18.1.2',
        '198.18.1.3',
        '198.18.1.4',
        '198.18.1.5',
        '198.18.1.6',
      ]);
      const ref = ipam.pool(p29).ref;
      await assert.rejects(ipam.pool(p29).allocate('late'), (e) => {
        assert.ok(isTapnetError(e, 'ERR_IPAM_EXHAUSTED'));
        assert.equal(e.details.subnet, '198.18.1.0/29');
        return true;
      });
      assert.equal((await store.leases(ref)).size, 5);
      assert.equal(await store.getCursor(ref), '198.18.1.6', 'a failed allocation does not move the cursor');
      assert.equal((await store.leases(ipam.pool(p30).ref)).size, 1);
      assert.deepEqual(await ipam.pool(p29).stats(), {
        network: 'n29',
        subnet: '198.18.1.0/29',
        size: 5n,
        used: 5n,
        leases: 5,
      });
    });

    it('never hands out the network, gateway or broadcast address, with a gateway in the middle', async () => {
      const ipam = new Ipam(await makeStore());
      const got = await allocateUntilExhausted(
        ipam,
        { network: 'g', subnet: '198.18.2.0/29', gateway: '198.18.2.4' },
        'g',
      );
      assert.deepEqual(got, ['198.18.2.1', '198.18.2.2', '198.18.2.3', '198.18.2.5', '198.18.2.6']);
    });

    it('honours static requests and refuses taken, reserved and foreign ones with ERR_IPAM_CONFLICT', async () => {
      const store = await makeStore();
      const pool = new Ipam(store).pool({ network: 'st', subnet: '198.18.4.0/24' });
      const s = await pool.allocate('vm-static', { address: '198.18.4.100' });
      assert.equal(s.cidr, '198.18.4.100/24');
      assert.equal(s.gateway, '198.18.4.1');
      assert.equal(
        (await pool.allocate('vm-static', { address: '198.18.4.100' })).address,
        '198.18.4.100',
        'idempotent',
      );
      await assert.rejects(pool.allocate('vm-other', { address: '198.18.4.100' }), (e) => {
        assert.ok(isTapnetError(e, 'ERR_IPAM_CONFLICT'));
        assert.equal(e.details.owner, 'vm-static');
        return true;
      });
      for (const address of [
        '198.18.4.0',
        '198.18.4.1',
        '198.18.4.255',
        '198.18.5.7',
        '10.0.0.1',
        'fd00::5',
      ]) {
        await assert.rejects(pool.allocate('vm-x', { address }), code('ERR_IPAM_CONFLICT'), address);
      }
      await assert.rejects(
        pool.allocate('vm-static', { address: '198.18.4.101' }),
        code('ERR_IPAM_CONFLICT'),
      );
      await assert.rejects(pool.allocate('vm-x', { address: '198.18.4.1000' }), code('ERR_INVALID_ARGUMENT'));
      // Refusals leave nothing behind; dynamic allocation steps over the static lease.
      assert.deepEqual([...(await store.leases(pool.ref))], [['198.18.4.100', 'vm-static']]);
      assert.equal((await pool.allocate('vm-dyn')).address, '198.18.4.2');
    });

    it('round-robin: a released address is not reused until the cursor wraps, even after a restart', async () => {
      const store = await makeStore();
      const spec: PoolSpec = { network: 'rr', subnet: '198.18.6.0/28' }; // .2 – .14: 13 addresses
      let pool = new Ipam(store).pool(spec);
      const first = [];
      for (let i = 0; i < 3; i++) first.push((await pool.allocate(`vm-${i}`)).address);
      assert.deepEqual(first, ['198.18.6.2', '198.18.6.3', '198.18.6.4']);
      assert.equal(await pool.release('vm-1'), true);
      assert.equal(await pool.release('vm-1'), false);
      pool = new Ipam(store).pool(spec); // a new process: index and cursor come from the store
      const next = [];
      for (let i = 3; i < 14; i++) next.push((await pool.allocate(`vm-${i}`)).address);
      assert.ok(!next.slice(0, -1).includes('198.18.6.3'), 'released address reused before the wrap');
      assert.equal(next.at(-1), '198.18.6.3', 'the wrap reaches it');
      await assert.rejects(pool.allocate('vm-14'), code('ERR_IPAM_EXHAUSTED'));
    });

    it('allocation is idempotent per owner, also for concurrent calls', async () => {
      const pool = new Ipam(await makeStore()).pool({ network: 'id', subnet: '198.18.8.0/24' });
      const [a, b] = await Promise.all([pool.allocate('vm-a'), pool.allocate('vm-a')]);
      assert.equal(a.address, b.address);
      assert.equal((await pool.allocate('vm-a')).address, a.address);
      assert.equal((await pool.leaseOf('vm-a'))?.address, a.address);
      const many = await Promise.all(Array.from({ length: 50 }, (_, i) => pool.allocate(`vm-${i}`)));
      assert.equal(new Set(many.map((l) => l.address)).size, 50, 'concurrent owners get distinct addresses');
    });

    it('IPv6 /64: allocates without enumerating, honours statics far away, reserves the anycast tail', async () => {
      const store = await makeStore();
      const pool = new Ipam(store).pool({ network: 'v6', subnet: 'fd00:18::/64' });
      const t0 = process.hrtime.bigint();
      const got = [];
      for (let i = 0; i < 200; i++) got.push((await pool.allocate(`vm-${i}`)).address);
      assert.ok(Number(process.hrtime.bigint() - t0) / 1e6 < 2000);
      assert.equal(got[0], 'fd00:18::2');
      assert.equal(got[199], 'fd00:18::c9');
      const l = await pool.allocate('vm-far', { address: 'fd00:18::abcd:1234:5678:9abc' });
      assert.equal(l.cidr, 'fd00:18::abcd:1234:5678:9abc/64');
      assert.equal(l.gateway, 'fd00:18::1');
      assert.equal(l.family, 6);
      await assert.rejects(
        pool.allocate('vm-any', { address: 'fd00:18::ffff:ffff:ffff:ff80' }),
        code('ERR_IPAM_CONFLICT'),
      );
      await assert.rejects(pool.allocate('vm-net', { address: 'fd00:18::' }), code('ERR_IPAM_CONFLICT'));
      const st = await pool.stats();
      assert.equal(st.size, (1n << 64n) - 130n);
      assert.equal(st.used, 201n);
    });

    it('dual stack is all or nothing: a failing pool rolls back the leases this call created', async () => {
      const store = await makeStore();
      const ipam = new Ipam(store);
      const v4: PoolSpec = { network: 'ds', subnet: '198.18.10.0/30' };
      const v6: PoolSpec = { network: 'ds', subnet: 'fd00:10::/64' };
      const both = await ipam.allocateAll('vm-1', [{ pool: v6 }, { pool: v4 }]);
      assert.deepEqual(
        both.map((l) => l.cidr),
        ['fd00:10::2/64', '198.18.10.2/30'],
      );
      await assert.rejects(
        ipam.allocateAll('vm-2', [{ pool: v6 }, { pool: v4 }]),
        code('ERR_IPAM_EXHAUSTED'),
      );
      assert.deepEqual(
        [...(await store.leases(ipam.pool(v6).ref)).values()],
        ['vm-1'],
        'vm-2 left nothing behind',
      );
      // A lease the owner already held is not rolled back by its failed retry.
      await assert.rejects(ipam.allocateAll('vm-1', [{ pool: v6 }, { pool: v4, address: '198.18.10.1' }]));
      assert.equal((await ipam.pool(v6).leaseOf('vm-1'))?.address, 'fd00:10::2');
      assert.equal(await ipam.releaseAll('vm-1', [v4, v6]), 2);
      assert.equal((await store.leases(ipam.pool(v4).ref)).size, 0);
    });

    it('validates pool specifications', () => {
      const bad: PoolSpec[] = [
        { network: 'x', subnet: '198.18.0.0/31' },
        { network: 'x', subnet: '198.18.0.0/32' },
        { network: 'x', subnet: '198.18.0.1/24' },
        { network: 'x', subnet: 'fd00::/127' },
        { network: 'x', subnet: '198.18.0.0/24', gateway: '198.18.1.1' },
        { network: 'x', subnet: '198.18.0.0/24', gateway: '198.18.0.255' },
        { network: 'x', subnet: '198.18.0.0/24', rangeStart: '198.18.0.9', rangeEnd: '198.18.0.8' },
        { network: 'x', subnet: '198.18.0.0/30', rangeStart: '198.18.0.1', rangeEnd: '198.18.0.1' },
        { network: '../x', subnet: '198.18.0.0/24' },
        { network: 'x', subnet: 'nonsense' },
      ];
      for (const spec of bad)
        assert.throws(() => resolvePool(spec), code('ERR_INVALID_ARGUMENT'), JSON.stringify(spec));
      const ok = resolvePool({
        network: 'x',
        subnet: '198.18.0.0/24',
        rangeStart: '198.18.0.100',
        rangeEnd: '198.18.0.109',
      });
      assert.equal(ok.dynamicSize, 10n);
    });
  });
}

describe('IPAM across two in-memory indexes over the same files (two processes)', () => {
  it('a stale index loses the race gracefully and finds addresses another process released', async () => {
    const store = await fileStore();
    const spec: PoolSpec = { network: 'two', subnet: '198.18.12.0/29' };
    const a = new Ipam(store).pool(spec);
    const b = new Ipam(store).pool(spec);
    await b.stats(); // b loads its index while the pool is empty
    const mine = await allocateUntilExhausted(new Ipam(store), spec, 'a');
    assert.equal(mine.length, 5);
    await assert.rejects(b.allocate('b-0'), code('ERR_IPAM_EXHAUSTED'));
    assert.equal(await a.release('a-2'), true);
    assert.equal((await b.allocate('b-0')).address, '198.18.12.4');
    assert.equal(
      await b.release('b-0', { address: '198.18.12.5' }),
      false,
      'someone else’s lease is not released',
    );
    assert.equal((await store.leases(b.ref)).get('198.18.12.5'), 'a-3');
  });

  it('fresh: finds the lease another process already claimed for this owner', async () => {
    const store = await fileStore();
    const spec: PoolSpec = { network: 'fresh', subnet: '198.18.14.0/24' };
    const b = new Ipam(store).pool(spec);
    await b.stats(); // b's index predates a's allocation
    const first = await new Ipam(store).pool(spec).allocate('vm-x');
    assert.equal((await b.allocate('vm-x', { fresh: true })).address, first.address);
    assert.equal((await b.leaseOf('vm-x'))?.address, first.address);
    assert.equal((await store.leases(b.ref)).size, 1, 'no second lease');
    const c = new Ipam(store).pool(spec);
    await c.stats();
    await new Ipam(store).pool(spec).allocate('vm-y');
    assert.equal(await c.release('vm-y'), false, 'c’s index predates vm-y’s lease');
    assert.equal(await c.release('vm-y', { fresh: true }), true);
    assert.equal((await store.leases(b.ref)).size, 1);
  });
});
