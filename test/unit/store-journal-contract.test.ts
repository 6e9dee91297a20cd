/**
 * The store contract (src/store/types.ts), run against both local backends through openStore(): what
 * the IPAM and the NetworkManager rely on must hold whichever backend they are given.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { Ipam, listAllLeases, orphanLeases, type PoolSpec, releaseOrphans } from '../../src/ipam/index.js';
import {
  openStore,
  type RecordSchema,
  STORE_BACKENDS,
  type StoreBackend,
  type StoreBackendKind,
  type StoredRecord,
  withLock,
} from '../../src/store/index.js';

const roots: string[] = [];
const opened: StoreBackend<StoredRecord>[] = [];
after(() => {
  for (const s of opened) s.close();
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-contract-'));
  roots.push(d);
  return d;
}

interface VmRec extends StoredRecord {
  tap?: string;
  address?: string;
}

async function open<T extends StoredRecord = VmRec>(
  backend: StoreBackendKind,
  dir: string,
  schema?: RecordSchema<T>,
): Promise<StoreBackend<T>> {
  const s = await openStore<T>({ backend, dir, ...(schema ? { schema } : {}) });
  opened.push(s as unknown as StoreBackend<StoredRecord>);
  return s;
}

const code =
  (...codes: string[]) =>
  (e: unknown): boolean =>
    isTapnetError(e) && codes.includes(e.code);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

for (const backend of STORE_BACKENDS) {
  describe(`store contract over the ${backend} backend`, () => {
    it('put/get/delete: generations count writes, the result is what get returns', async () => {
      const store = await open(backend, tempDir());
      const a = await store.records.put({ vmId: 'vm-1', state: 'creating', tap: 'tap0' });
      assert.equal(a.generation, 1);
      assert.equal(a.version, 1);
      assert.equal(typeof a.updatedAt, 'string');
      const b = await store.records.put({ ...a, state: 'ready', address: '198.18.0.2' });
      assert.equal(b.generation, 2);
      assert.deepEqual(await store.records.get('vm-1'), b);
      assert.equal(await store.records.get('vm-2'), undefined);
      const got = await store.records.get('vm-1');
      got!.tap = 'changed';
      assert.equal((await store.records.get('vm-1'))?.tap, 'tap0', 'get returns a fresh object');
      assert.deepEqual((await store.records.list()).records, [b]);
      assert.equal(await store.records.delete('vm-1'), true);
      assert.equal(await store.records.delete('vm-1'), false);
      assert.equal(await store.records.get('vm-1'), undefined);
      assert.equal((await store.records.put({ vmId: 'vm-1', state: 'creating' })).generation, 1);
    });

    it('compare-and-swap on the generation: ERR_CONFLICT when it moved, 0 means must not exist', async () => {
      const store = await open(backend, tempDir());
      const a = await store.records.put({ vmId: 'cas', state: 'creating' }, { expectedGeneration: 0 });
      await assert.rejects(
        store.records.put({ vmId: 'cas', state: 'creating' }, { expectedGeneration: 0 }),
        code('ERR_CONFLICT'),
      );
      const b = await store.records.put({ ...a, state: 'ready' }, { expectedGeneration: a.generation });
      await assert.rejects(
        store.records.put({ ...a, state: 'releasing' }, { expectedGeneration: 1 }),
        (e) => {
          assert.ok(isTapnetError(e, 'ERR_CONFLICT'));
          assert.deepEqual(e.details, { vmId: 'cas', expected: 1, actual: 2 });
          return true;
        },
      );
      await assert.rejects(store.records.delete('cas', { expectedGeneration: 1 }), code('ERR_CONFLICT'));
      await assert.rejects(store.records.delete('absent', { expectedGeneration: 3 }), code('ERR_CONFLICT'));
      assert.equal(await store.records.delete('absent', { expectedGeneration: 0 }), false);
      assert.equal(await store.records.delete('cas', { expectedGeneration: b.generation }), true);
    });

    it('refuses malformed and path-traversal IDs, names and addresses everywhere', async () => {
      const parent = tempDir();
      const store = await open(backend, path.join(parent, 'state'));
      const invalid = code('ERR_INVALID_ARGUMENT');
      for (const vmId of [
        '../x',
        'a/b',
        '..',
        '.hidden',
        '',
        'x'.repeat(129),
        'vm\0',
        'a..b',
        '/abs',
        'a"b',
      ]) {
        await assert.rejects(store.records.get(vmId), invalid, `get ${JSON.stringify(vmId)}`);
        await assert.rejects(store.records.put({ vmId, state: 'creating' }), invalid);
        await assert.rejects(store.records.delete(vmId), invalid);
        await assert.rejects(store.locks.acquire('vm', vmId), invalid);
        await assert.rejects(
          store.leases.claim({ network: 'n', subnet: '198.18.0.0/24' }, '198.18.0.9', vmId),
          invalid,
        );
      }
      const pool = { network: 'n', subnet: '198.18.0.0/24' };
      await assert.rejects(store.leases.claim({ ...pool, network: '../n' }, '198.18.0.9', 'vm'), invalid);
      await assert.rejects(
        store.leases.claim({ ...pool, subnet: '198.18.0.1/24' }, '198.18.0.9', 'vm'),
        invalid,
      );
      await assert.rejects(store.leases.claim(pool, '../../x', 'vm'), invalid);
      await assert.rejects(store.leases.claim(pool, '198.18.1.9', 'vm'), invalid);
      await assert.rejects(
        store.leases.claim({ network: 'n', subnet: 'fd00::/64' }, 'fd00:0::9', 'vm'),
        invalid,
      );
      await assert.rejects(store.leases.setCursor(pool, '198.18.1.9'), invalid);
      await assert.rejects(store.records.put({ vmId: 'ok', state: 'running' as 'ready' }), invalid);
      await assert.rejects(store.locks.acquire('network', '../x'), invalid);
      await assert.rejects(store.locks.acquire('disk' as 'vm', 'x'), invalid);
      assert.deepEqual(fs.readdirSync(parent), ['state']);
    });

    it('refuses a record from a newer schema without touching it, and migrates an older one', async () => {
      const dir = tempDir();
      const v9 = await open(backend, dir, { version: 9 });
      const future = await v9.records.put({ vmId: 'future', state: 'ready' });
      const v1 = await open(backend, dir);
      await v1.records.put({ vmId: 'old', state: 'ready', tap: 'tap7' });
      await assert.rejects(v1.records.get('future'), (e) => {
        assert.ok(isTapnetError(e, 'ERR_STORE'));
        assert.match(e.message, /newer than this tapnet understands/);
        assert.equal(e.details.version, 9);
        return true;
      });
      await assert.rejects(v1.records.put({ vmId: 'future', state: 'releasing' }), code('ERR_STORE'));
      await assert.rejects(v1.records.delete('future', { expectedGeneration: 1 }), code('ERR_STORE'));
      assert.deepEqual(await v9.records.get('future'), future, 'untouched');
      const listed = await v1.records.list();
      assert.deepEqual(
        listed.problems.map((p) => [p.vmId, p.error.code]),
        [['future', 'ERR_STORE']],
      );
      assert.deepEqual(
        listed.records.map((r) => r.vmId),
        ['old'],
      );

      interface V2 extends StoredRecord {
        tapName: string;
      }
      const v2 = await open<V2>(backend, dir, {
        version: 2,
        migrate: (raw, from) => {
          assert.equal(from, 1);
          const { tap, ...others } = raw;
          return { ...others, tapName: tap };
        },
        validate: (raw) => {
          if (typeof raw.tapName !== 'string') throw new Error('tapName must be a string');
          return raw as unknown as V2;
        },
      });
      const migrated = await v2.records.get('old');
      assert.equal(migrated?.version, 2);
      assert.equal(migrated?.tapName, 'tap7');
      assert.equal(migrated?.generation, 1);
      assert.equal((await v1.records.get('old'))?.version, 1, 'a read does not write');
      const rewritten = await v2.records.put(migrated!, { expectedGeneration: 1 });
      assert.equal(rewritten.version, 2);
      await assert.rejects(v2.records.put({ vmId: 'x', state: 'ready' } as V2), code('ERR_INVALID_ARGUMENT'));
      assert.equal(await v2.records.get('x'), undefined, 'what the schema refuses is never written');
    });

    it('a record the schema refuses is set aside once, reported by list(), and replaced by a new put', async () => {
      const dir = tempDir();
      const loose = await open(backend, dir);
      await loose.records.put({ vmId: 'bad', state: 'ready' });
      await loose.records.put({ vmId: 'good', state: 'ready', tap: 't' });
      const strict = await open<VmRec>(backend, dir, {
        version: 1,
        validate: (raw) => {
          if (typeof raw.tap !== 'string') throw new Error('tap is missing');
          return raw as unknown as VmRec;
        },
      });
      await assert.rejects(strict.records.get('bad'), (e) => {
        assert.ok(isTapnetError(e, 'ERR_STORE_CORRUPT'));
        assert.equal(e.details.vmId, 'bad');
        assert.match(String(e.details.reason), /tap is missing/);
        assert.ok(typeof e.details.quarantinedTo === 'string');
        return true;
      });
      assert.equal(await strict.records.get('bad'), undefined, 'set aside: absent now');
      const { records, problems } = await strict.records.list();
      assert.deepEqual(
        records.map((r) => r.vmId),
        ['good'],
      );
      assert.deepEqual(
        problems.map((p) => [p.vmId, p.error.code]),
        [['bad', 'ERR_STORE_CORRUPT']],
        'a set-aside record stays a problem: its VM may still run',
      );
      assert.equal((await strict.records.put({ vmId: 'bad', state: 'creating', tap: 'x' })).generation, 1);
      assert.deepEqual((await strict.records.list()).problems, []);
    });

    it('leases: one owner per address, idempotent claims, release only by the owner, cursor per pool', async () => {
      const dir = tempDir();
      const store = await open(backend, dir);
      const other = await open(backend, dir); // another process's view of the same directory
      const p4 = { network: 'n', subnet: '198.18.0.0/24' };
      const p6 = { network: 'n', subnet: 'fd00:1::/64' };
      assert.equal(await store.leases.claim(p4, '198.18.0.5', 'vm-a'), true);
      assert.equal(await store.leases.claim(p4, '198.18.0.5', 'vm-a'), true, 'idempotent');
      assert.equal(await other.leases.claim(p4, '198.18.0.5', 'vm-b'), false);
      assert.equal(await other.leases.ownerOf(p4, '198.18.0.5'), 'vm-a');
      assert.equal(await store.leases.claim(p6, 'fd00:1::5', 'vm-a'), true);
      assert.equal(await other.leases.release(p4, '198.18.0.5', 'vm-b'), false, 'not the owner');
      assert.equal(await store.leases.ownerOf(p4, '198.18.0.5'), 'vm-a');
      assert.deepEqual(await other.leases.leases(p4), new Map([['198.18.0.5', 'vm-a']]));
      assert.deepEqual((await other.leases.pools()).map((p) => p.subnet).sort(), [
        '198.18.0.0/24',
        'fd00:1::/64',
      ]);
      assert.equal(await store.leases.release(p4, '198.18.0.5', 'vm-a'), true);
      assert.equal(await store.leases.release(p4, '198.18.0.5', 'vm-a'), false);
      assert.equal(await other.leases.ownerOf(p4, '198.18.0.5'), undefined);
      assert.equal(await other.leases.claim(p4, '198.18.0.5', 'vm-b'), true);
      assert.equal(await store.leases.getCursor(p4), undefined);
      await store.leases.setCursor(p4, '198.18.0.9');
      assert.equal(await store.leases.getCursor(p4), '198.18.0.9', 'seen at once by its writer');
      await sleep(5);
      assert.equal(await other.leases.getCursor(p4), '198.18.0.9', 'and by others soon after');
      await other.leases.setCursor(p4, '198.18.0.10');
      await sleep(5);
      assert.equal(await store.leases.getCursor(p4), '198.18.0.10', 'last writer wins');
      assert.equal(await store.leases.getCursor(p6), undefined);
      await store.sync();
    });

    it('concurrent claims of one address from two store instances: exactly one wins', async () => {
      const dir = tempDir();
      const a = await open(backend, dir);
      const b = await open(backend, dir);
      const pool = { network: 'race', subnet: '198.18.2.0/24' };
      for (let i = 2; i < 60; i++) {
        const addr = `198.18.2.${i}`;
        const [x, y] = await Promise.all([
          a.leases.claim(pool, addr, 'vm-a'),
          b.leases.claim(pool, addr, 'vm-b'),
        ]);
        assert.equal(Number(x) + Number(y), 1, addr);
        assert.equal(await a.leases.ownerOf(pool, addr), x ? 'vm-a' : 'vm-b');
      }
    });

    it('locks: one holder per key (across store instances), keys independent, abort and timeout', async () => {
      const dir = tempDir();
      const store = await open(backend, dir);
      const other = await open(backend, dir);
      let inside = 0;
      let maxInside = 0;
      const work = (s: StoreBackend<VmRec>, vmId: string): Promise<void> =>
        withLock(s.locks, 'vm', vmId, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await sleep(2);
          inside--;
        });
      await Promise.all(Array.from({ length: 10 }, (_, i) => work(i % 2 ? store : other, 'same')));
      assert.equal(maxInside, 1);
      maxInside = 0;
      await Promise.all(Array.from({ length: 10 }, (_, i) => work(store, `vm-${i}`)));
      assert.ok(maxInside > 1, 'different VMs ran concurrently');

      const held = await store.locks.acquire('vm', 'busy');
      await assert.rejects(other.locks.acquire('vm', 'busy', { timeoutMs: 30 }), code('ERR_TIMEOUT'));
      await assert.rejects(store.locks.acquire('vm', 'busy', { timeoutMs: 10 }), code('ERR_TIMEOUT'));
      const ac = new AbortController();
      const pending = other.locks.acquire('vm', 'busy', { signal: ac.signal });
      setTimeout(() => ac.abort(new Error('caller gave up')), 20);
      await assert.rejects(pending, code('ERR_ABORTED'));
      await assert.rejects(
        other.locks.acquire('vm', 'busy', { signal: AbortSignal.abort() }),
        code('ERR_ABORTED'),
      );
      (await other.locks.acquire('network', 'busy', { timeoutMs: 50 })).release(); // another scope
      const waiting = other.locks.acquire('vm', 'busy', { timeoutMs: 2000 });
      await sleep(10);
      held.release({ forget: true });
      held.release(); // idempotent
      const next = await waiting;
      next.release();
      (await store.locks.acquire('vm', 'busy', { timeoutMs: 200 })).release();
    });

    it('the IPAM over it: exhausts a /29 after 5, all-or-nothing dual stack, statics honoured', async () => {
      const store = await open(backend, tempDir());
      const ipam = new Ipam(store.leases);
      const p29: PoolSpec = { network: 'n29', subnet: '198.18.1.0/29' };
      const p6: PoolSpec = { network: 'n29', subnet: 'fd00:29::/64' };
      const got: string[] = [];
      for (let i = 0; i < 5; i++) got.push((await ipam.pool(p29).allocate(`a-${i}`)).address);
      assert.deepEqual(got, ['198.18.1.2', '198.18.1.3', '198.18.1.4', '198.18.1.5', '198.18.1.6']);
      await assert.rejects(
        ipam.allocateAll('late', [{ pool: p6 }, { pool: p29 }]),
        code('ERR_IPAM_EXHAUSTED'),
      );
      assert.equal((await store.leases.leases(ipam.pool(p6).ref)).size, 0, 'the v6 lease was rolled back');
      assert.equal(await store.leases.getCursor(ipam.pool(p29).ref), '198.18.1.6');
      assert.equal((await ipam.pool(p29).release('a-2')) && true, true);
      const s = await ipam.pool(p29).allocate('static', { address: '198.18.1.4' });
      assert.equal(s.address, '198.18.1.4');
      await assert.rejects(
        ipam.pool(p29).allocate('clash', { address: '198.18.1.5' }),
        code('ERR_IPAM_CONFLICT'),
      );
      // A fresh process (new store, new IPAM) sees the same leases.
      const again = new Ipam((await open(backend, store.dir)).leases);
      assert.equal((await again.pool(p29).leaseOf('a-4'))?.address, '198.18.1.6');
      await assert.rejects(again.pool(p29).allocate('more'), code('ERR_IPAM_EXHAUSTED'));
    });

    it('orphan leases (no record) are found and released under their VM lock; owners with a record kept', async () => {
      const store = await open(backend, tempDir());
      const ipam = new Ipam(store.leases);
      const v4 = ipam.pool({ network: 'r', subnet: '198.18.30.0/24' });
      for (const vmId of ['has-record', 'no-record']) await ipam.allocateAll(vmId, [{ pool: v4.layout.ref }]);
      await store.records.put({ vmId: 'has-record', state: 'ready' });
      const orphans = await orphanLeases(store.leases, store.records);
      assert.deepEqual(
        orphans.map((o) => o.owner),
        ['no-record'],
      );
      const report = await releaseOrphans({
        leases: store.leases,
        records: store.records,
        locks: store.locks,
        ipam,
      });
      assert.equal(report.released.length, 1);
      assert.deepEqual(await orphanLeases(store.leases, store.records), []);
      const all = await listAllLeases(store.leases);
      assert.deepEqual(
        all.map((p) => [...p.leases.values()]),
        [['has-record']],
      );
    });

    it('close() then use again works; sync() is fine with nothing to flush', async () => {
      const dir = tempDir();
      const store = await open(backend, dir);
      await store.records.put({ vmId: 'a', state: 'ready' });
      await store.sync();
      store.close();
      assert.equal((await store.records.get('a'))?.generation, 1);
      await store.records.put({ vmId: 'b', state: 'ready' });
      (await store.locks.acquire('vm', 'b')).release();
      await store.sync();
      await store.sync();
    });
  });
}

describe('openStore()', () => {
  it('refuses a directory that holds VMs of the other backend, and an unknown backend', async () => {
    const files = tempDir();
    await (await open('files', files)).records.put({ vmId: 'f', state: 'ready' });
    await assert.rejects(openStore({ backend: 'journal', dir: files }), (e) => {
      assert.ok(isTapnetError(e, 'ERR_STORE'));
      assert.equal(e.details.found, 'files');
      return true;
    });
    const journal = tempDir();
    const j = await open('journal', journal);
    await j.records.put({ vmId: 'j', state: 'ready' });
    j.close();
    await assert.rejects(openStore({ backend: 'files', dir: journal }), code('ERR_STORE'));
    await assert.rejects(
      openStore({ backend: 'etcd' as 'files', dir: tempDir() }),
      code('ERR_INVALID_ARGUMENT'),
    );
    // An emptied journal is no obstacle.
    const j2 = await open('journal', journal);
    await j2.records.delete('j');
    j2.close();
    (await open('files', journal)).close();
  });
});
