import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import {
  FileRecordStore,
  LAYOUT_FILE,
  openLocalStore,
  openStateDir,
  type RecordSchema,
  type StoredRecord,
} from '../../src/store/index.js';

const roots: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-store-'));
  roots.push(d);
  return d;
}
after(() => {
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});

interface VmRec extends StoredRecord {
  tap?: string;
  address?: string;
}

describe('FileRecordStore', () => {
  it('writes pretty JSON, one file per VM, bumping the generation on every write', async () => {
    const dir = tempDir();
    const store = await openLocalStore<VmRec>({ dir });
    const a = await store.records.put({ vmId: 'vm-1', state: 'creating', tap: 'tap0' });
    assert.equal(a.generation, 1);
    assert.equal(a.version, 1);
    assert.equal(a.state, 'creating');
    const b = await store.records.put({ ...a, state: 'ready', address: '198.18.0.2' });
    assert.equal(b.generation, 2);
    const text = fs.readFileSync(path.join(dir, 'vms', 'vm-1.json'), 'utf8');
    assert.ok(
      text.startsWith('{\n  "vmId": "vm-1",\n  "version": 1,\n  "generation": 2,\n  "state": "ready",'),
    );
    assert.ok(text.endsWith('}\n'));
    assert.deepEqual(await store.records.get('vm-1'), b);
    assert.equal(await store.records.get('vm-2'), undefined);
    // No temp file is left next to the record.
    assert.deepEqual(fs.readdirSync(path.join(dir, 'vms')), ['vm-1.json']);
    assert.equal(await store.records.delete('vm-1'), true);
    assert.equal(await store.records.delete('vm-1'), false);
    assert.equal(await store.records.get('vm-1'), undefined);
  });

  it('compare-and-swap on the generation: ERR_CONFLICT when it moved, 0 means must not exist', async () => {
    const store = await openLocalStore<VmRec>({ dir: tempDir() });
    const a = await store.records.put({ vmId: 'cas', state: 'creating' }, { expectedGeneration: 0 });
    await assert.rejects(
      store.records.put({ vmId: 'cas', state: 'creating' }, { expectedGeneration: 0 }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    const b = await store.records.put({ ...a, state: 'ready' }, { expectedGeneration: a.generation });
    await assert.rejects(
      store.records.put({ ...a, state: 'releasing' }, { expectedGeneration: a.generation }),
      (e) => {
        assert.ok(isTapnetError(e, 'ERR_CONFLICT'));
        assert.deepEqual(e.details, { vmId: 'cas', expected: 1, actual: 2 });
        return true;
      },
    );
    await assert.rejects(store.records.delete('cas', { expectedGeneration: 1 }), (e) =>
      isTapnetError(e, 'ERR_CONFLICT'),
    );
    assert.equal(await store.records.delete('cas', { expectedGeneration: b.generation }), true);
  });

  it('refuses path-traversal and malformed VM IDs everywhere, creating nothing outside the state dir', async () => {
    const parent = tempDir();
    const dir = path.join(parent, 'state');
    const store = await openLocalStore<VmRec>({ dir });
    const bad = [
      '../x',
      '../../etc/passwd',
      'a/b',
      '..',
      '.',
      '.hidden',
      '',
      'x'.repeat(129),
      'vm\0',
      'a..b',
      '/abs',
    ];
    for (const vmId of bad) {
      const isInvalid = (e: unknown): boolean => isTapnetError(e, 'ERR_INVALID_ARGUMENT');
      await assert.rejects(store.records.get(vmId), isInvalid, `get ${JSON.stringify(vmId)}`);
      await assert.rejects(
        store.records.put({ vmId, state: 'creating' }),
        isInvalid,
        `put ${JSON.stringify(vmId)}`,
      );
      await assert.rejects(store.records.delete(vmId), isInvalid);
      await assert.rejects(store.locks.acquire('vm', vmId), isInvalid);
      await assert.rejects(
        store.leases.claim({ network: 'n', subnet: '198.18.0.0/24' }, '198.18.0.9', vmId),
        isInvalid,
      );
    }
    await assert.rejects(
      store.leases.claim({ network: '../n', subnet: '198.18.0.0/24' }, '198.18.0.9', 'vm'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    await assert.rejects(
      store.leases.claim({ network: 'n', subnet: '198.18.0.0/24' }, '../../x', 'vm'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    await assert.rejects(
      store.leases.claim({ network: 'n', subnet: '198.18.0.0/24' }, '198.18.1.9', 'vm'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    // The last line of defence: the path builder itself.
    assert.throws(
      () => store.stateDir.path('vms', '../../x'),
      (e) => isTapnetError(e, 'ERR_INTERNAL'),
    );
    assert.throws(
      () => store.stateDir.path('..'),
      (e) => isTapnetError(e, 'ERR_INTERNAL'),
    );
    assert.deepEqual(fs.readdirSync(parent), ['state']);
  });

  it('quarantines truncated, garbage, empty and mislabelled records and reports ERR_STORE_CORRUPT', async () => {
    const dir = tempDir();
    const store = await openLocalStore<VmRec>({ dir });
    await store.records.put({ vmId: 'good', state: 'ready' });
    const bad: Record<string, string | Buffer> = {
      truncated: '{\n  "vmId": "truncated",\n  "version": 1,\n  "gener',
      garbage: Buffer.from([0xff, 0x00, 0x13, 0x37, 0x7b]),
      empty: '',
      array: '[1, 2]',
      mislabelled: JSON.stringify({ vmId: 'other', version: 1, generation: 1, state: 'ready' }),
      badstate: JSON.stringify({ vmId: 'badstate', version: 1, generation: 1, state: 'running' }),
    };
    for (const [vmId, content] of Object.entries(bad))
      fs.writeFileSync(path.join(dir, 'vms', `${vmId}.json`), content);

    await assert.rejects(store.records.get('truncated'), (e) => {
      assert.ok(isTapnetError(e, 'ERR_STORE_CORRUPT'));
      assert.equal(e.details.vmId, 'truncated');
      assert.match(String(e.details.reason), /not valid JSON/);
      const q = String(e.details.quarantinedTo);
      assert.ok(q.startsWith(path.join(dir, 'quarantine') + path.sep), q);
      assert.equal(fs.readFileSync(q, 'utf8'), bad.truncated);
      return true;
    });
    // Quarantined: the record is simply absent now, and writing it again works.
    assert.equal(await store.records.get('truncated'), undefined);
    assert.equal((await store.records.put({ vmId: 'truncated', state: 'creating' })).generation, 1);

    // list() never throws for one bad file: it returns the good records and reports the rest.
    fs.writeFileSync(path.join(dir, 'vms', 'stray.txt'), 'not mine');
    const { records, problems } = await store.records.list();
    assert.deepEqual(records.map((r) => r.vmId).sort(), ['good', 'truncated']);
    const reported = problems.map((p) => p.vmId).sort();
    assert.deepEqual(reported, ['array', 'badstate', 'empty', 'garbage', 'mislabelled', 'stray.txt']);
    for (const p of problems) assert.ok(isTapnetError(p.error, 'ERR_STORE_CORRUPT'));
    assert.deepEqual(fs.readdirSync(path.join(dir, 'vms')).sort(), [
      'good.json',
      'stray.txt',
      'truncated.json',
    ]);
    assert.equal(fs.readdirSync(path.join(dir, 'quarantine')).length, 6);
  });

  it('refuses a record from a newer schema without touching it, and migrates an older one', async () => {
    const dir = tempDir();
    const v1 = await openLocalStore<VmRec>({ dir });
    await v1.records.put({ vmId: 'old', state: 'ready', tap: 'tap7' });
    const newer = { vmId: 'future', version: 9, generation: 3, state: 'ready' };
    fs.writeFileSync(path.join(dir, 'vms', 'future.json'), JSON.stringify(newer));

    await assert.rejects(v1.records.get('future'), (e) => {
      assert.ok(isTapnetError(e, 'ERR_STORE'));
      assert.match(e.message, /newer than this tapnet understands/);
      assert.equal(e.details.version, 9);
      return true;
    });
    await assert.rejects(v1.records.put({ vmId: 'future', state: 'releasing' }), (e) =>
      isTapnetError(e, 'ERR_STORE'),
    );
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'vms', 'future.json'), 'utf8')), newer);
    const listed = await v1.records.list();
    assert.deepEqual(
      listed.problems.map((p) => [p.vmId, p.error.code]),
      [['future', 'ERR_STORE']],
    );

    interface V2 extends StoredRecord {
      tapName: string;
    }
    const schema: RecordSchema<V2> = {
      version: 2,
      migrate: (raw, from) => {
        assert.equal(from, 1);
        const { tap, ...rest } = raw;
        return { ...rest, tapName: tap };
      },
      validate: (raw) => {
        if (typeof raw.tapName !== 'string') throw new Error('tapName must be a string');
        return raw as unknown as V2;
      },
    };
    const v2 = new FileRecordStore<V2>(openStateDir(dir), schema);
    const migrated = await v2.get('old');
    assert.equal(migrated?.version, 2);
    assert.equal(migrated?.tapName, 'tap7');
    assert.equal(migrated?.generation, 1);
    assert.equal(
      JSON.parse(fs.readFileSync(path.join(dir, 'vms', 'old.json'), 'utf8')).version,
      1,
      'read does not write',
    );
    const rewritten = await v2.put(migrated!, { expectedGeneration: 1 });
    assert.equal(rewritten.version, 2);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'vms', 'old.json'), 'utf8')).tapName, 'tap7');
    // What the schema refuses is never written.
    await assert.rejects(v2.put({ vmId: 'x', state: 'ready' } as V2), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.equal(fs.existsSync(path.join(dir, 'vms', 'x.json')), false);
  });

  it('refuses a state directory written by a newer layout', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, LAYOUT_FILE), JSON.stringify({ layout: 99 }));
    await assert.rejects(
      openLocalStore({ dir }),
      (e) => isTapnetError(e, 'ERR_STORE') && /layout 99/.test(e.message),
    );
  });

  it('turns file-system failures into ERR_STORE with the errno', async () => {
    const dir = tempDir();
    const store = await openLocalStore<VmRec>({ dir });
    fs.writeFileSync(path.join(dir, 'vms'), 'a file where the directory should be');
    await assert.rejects(store.records.put({ vmId: 'vm', state: 'creating' }), (e) => {
      assert.ok(e instanceof TapnetError && e.code === 'ERR_STORE', String(e));
      assert.ok(e.errno === 'EEXIST' || e.errno === 'ENOTDIR', e.errno);
      assert.ok(typeof e.details.path === 'string');
      return true;
    });
    if (process.getuid?.() !== 0) {
      // Read-only directory (root would ignore the mode).
      const ro = tempDir();
      const s2 = await openLocalStore<VmRec>({ dir: ro });
      await s2.records.put({ vmId: 'seed', state: 'ready' });
      fs.chmodSync(path.join(ro, 'vms'), 0o555);
      try {
        await assert.rejects(s2.records.put({ vmId: 'vm', state: 'creating' }), (e) => {
          assert.ok(isTapnetError(e, 'ERR_STORE'));
          assert.equal(e.errno, 'EACCES');
          return true;
        });
      } finally {
        fs.chmodSync(path.join(ro, 'vms'), 0o755);
      }
    }
  });

  it('recreates directories removed behind its back', async () => {
    const dir = tempDir();
    const store = await openLocalStore<VmRec>({ dir });
    await store.records.put({ vmId: 'a', state: 'ready' });
    (await store.locks.acquire('vm', 'a')).release();
    await store.leases.claim({ network: 'n', subnet: '198.18.0.0/24' }, '198.18.0.2', 'a');
    for (const sub of ['vms', 'locks', 'ipam']) fs.rmSync(path.join(dir, sub), { recursive: true });
    assert.equal((await store.records.put({ vmId: 'b', state: 'ready' })).generation, 1);
    (await store.locks.acquire('vm', 'b', { timeoutMs: 100 })).release();
    assert.equal(
      await store.leases.claim({ network: 'n', subnet: '198.18.0.0/24' }, '198.18.0.3', 'b'),
      true,
    );
  });

  it('sync() flushes what was written; cleanTemp() removes only old crash leftovers', async () => {
    const dir = tempDir();
    const store = await openLocalStore<VmRec>({ dir });
    await store.records.put({ vmId: 'durable', state: 'ready' });
    await store.sync();
    await store.sync(); // nothing dirty: still fine
    const old = path.join(dir, 'vms', '.durable.json.1234.1.tmp');
    const fresh = path.join(dir, 'vms', '.durable.json.1234.2.tmp');
    fs.writeFileSync(old, '{"half');
    fs.writeFileSync(fresh, '{"half');
    const past = new Date(Date.now() - 3_600_000);
    fs.utimesSync(old, past, past);
    assert.deepEqual(
      (await store.records.list()).records.map((r) => r.vmId),
      ['durable'],
      'temp files are never records',
    );
    assert.equal(await store.cleanTemp(), 1);
    assert.equal(fs.existsSync(old), false);
    assert.equal(fs.existsSync(fresh), true);
  });
});
