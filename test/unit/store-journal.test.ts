/**
 * The journal backend's own guarantees: the line format, torn and damaged lines, format versions,
 * compaction (also with another instance writing, and a compactor that died half-way), dead lock
 * holders, a journal removed behind its back, and the snapshot for humans. Several store instances on
 * one directory behave like several processes (each has its own file descriptions and locks).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  JOURNAL_FILE,
  type JournalStore,
  journalSnapshot,
  openJournalStore,
  type StoredRecord,
} from '../../src/store/index.js';
import { checksum, decodeLine, encodeEntry } from '../../src/store/journal-format.js';

interface Rec extends StoredRecord {
  note?: string;
  pad?: string;
}

const roots: string[] = [];
const stores: JournalStore<Rec>[] = [];
after(() => {
  for (const s of stores) s.close();
  for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tapnet-journal-'));
  roots.push(d);
  return d;
}
async function open(dir: string, options: { compactMinBytes?: number; compactRatio?: number } = {}) {
  const s = await openJournalStore<Rec>({ dir, ...options });
  stores.push(s);
  return s;
}
const lines = (dir: string): string[] =>
  fs
    .readFileSync(path.join(dir, JOURNAL_FILE), 'utf8')
    .split('\n')
    .filter((l) => l.length > 0);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const pool = { network: 'j', subnet: '198.18.50.0/24' };

describe('journal line format', () => {
  it('every line is JSON with a sequence number and the CRC-32 of the rest; the header comes first', async () => {
    const dir = tempDir();
    const s = await open(dir);
    await s.records.put({ vmId: 'vm-1', state: 'ready', note: 'multi\nline "quoted" é ✓' });
    await s.leases.claim(pool, '198.18.50.2', 'vm-1');
    (await s.locks.acquire('vm', 'vm-1')).release();
    await tick();
    const all = lines(dir);
    const parsed = all.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(parsed[0]!.op, 'header');
    assert.equal(parsed[0]!.format, 'tapnet-journal');
    assert.equal(parsed[0]!.version, 1);
    assert.deepEqual(
      parsed.map((p) => p.seq),
      parsed.map((_, i) => i),
    );
    assert.deepEqual(
      parsed.map((p) => p.op),
      ['header', 'put', 'claim', 'lock', 'unlock'],
    );
    for (const l of all) {
      const ck = /,"ck":"([0-9a-f]{8})"\}$/.exec(l)![1];
      assert.equal(checksum(`${l.slice(0, -17)}}`), ck);
      assert.equal(decodeLine(l).kind, 'entry');
    }
    assert.equal((await (await open(dir)).records.get('vm-1'))?.note, 'multi\nline "quoted" é ✓');
    // One changed byte: the line no longer checks out.
    assert.equal(decodeLine(all[2]!.replace('198.18.50.2', '198.18.50.3')).kind, 'corrupt');
    assert.equal(decodeLine(all[2]!.slice(0, 40)).kind, 'torn');
    const enc = encodeEntry({ op: 'del', seq: 7, vm: 'x' });
    assert.ok(enc.endsWith('\n') && enc.startsWith('{"seq":7,"op":"del"'));
  });

  it('reads lines longer than its read buffer', async () => {
    const dir = tempDir();
    const a = await open(dir);
    const b = await open(dir);
    const big = 'y'.repeat(300_000);
    await a.records.put({ vmId: 'big', state: 'ready', pad: big });
    await a.records.put({ vmId: 'after', state: 'ready' });
    assert.equal((await b.records.get('big'))?.pad, big);
    assert.equal((await b.records.get('after'))?.generation, 1);
  });

  it('refuses a journal of a newer format version, and a file that is not a journal', async () => {
    const newer = tempDir();
    const header = encodeEntry({
      op: 'header',
      seq: 0,
      format: 'tapnet-journal',
      version: 2,
      id: 'x',
      created: 'now',
      snapLines: 0,
      snapBytes: 0,
    });
    fs.writeFileSync(path.join(newer, JOURNAL_FILE), header);
    await assert.rejects(openJournalStore({ dir: newer }), (e) => {
      assert.ok(isTapnetError(e, 'ERR_STORE'));
      assert.match(e.message, /version 2/);
      return true;
    });
    const other = tempDir();
    fs.writeFileSync(path.join(other, JOURNAL_FILE), 'hello\nworld\n');
    await assert.rejects(openJournalStore({ dir: other }), (e) => isTapnetError(e, 'ERR_STORE_CORRUPT'));
    assert.equal(fs.readFileSync(path.join(other, JOURNAL_FILE), 'utf8'), 'hello\nworld\n', 'left untouched');
  });
});

describe('torn and damaged lines', () => {
  it('a torn last line is skipped, the next writer starts a fresh line, and nothing is reported', async () => {
    const dir = tempDir();
    const a = await open(dir);
    await a.records.put({ vmId: 'whole', state: 'ready' });
    const file = path.join(dir, JOURNAL_FILE);
    // What a kill -9 in the middle of a multi-page write (or ENOSPC) leaves: the start of the next line.
    fs.appendFileSync(file, '{"seq":2,"op":"put","vm":"torn","gen":1,"ver":1,"rec":{"vmId":"torn","vers');
    const b = await open(dir);
    assert.equal(await b.records.get('torn'), undefined);
    assert.equal((await b.records.get('whole'))?.generation, 1);
    assert.equal(
      await a.records.get('torn'),
      undefined,
      'a reader without the lock waits for the line to end',
    );
    await b.records.put({ vmId: 'next', state: 'ready' });
    const text = fs.readFileSync(file, 'utf8');
    assert.match(text, /"vers\n\{"seq":2,"op":"put","vm":"next"/);
    for (const s of [a, b, await open(dir)]) {
      assert.deepEqual((await s.records.list()).records.map((r) => r.vmId).sort(), ['next', 'whole']);
      assert.deepEqual(s.problems(), []);
    }
    assert.equal(journalSnapshot(dir).tornLines, 1);
  });

  it('a damaged line is skipped and reported, the VM it names is set aside, and nothing crashes', async () => {
    const dir = tempDir();
    const a = await open(dir);
    const first = await a.records.put({ vmId: 'hit', state: 'creating' });
    await a.records.put({ ...first, state: 'ready' });
    await a.records.put({ vmId: 'fine', state: 'ready' });
    await a.leases.claim(pool, '198.18.50.7', 'fine');
    a.close();
    const file = path.join(dir, JOURNAL_FILE);
    const all = lines(dir);
    assert.match(all[2]!, /"state":"ready"/);
    all[2] = all[2]!.replace('"state":"ready"', '"state":"reody"'); // bit rot in the second put of 'hit'
    all.splice(4, 0, '\u0000\u0000\u0000garbage'); // and garbage between two lines
    fs.writeFileSync(file, `${all.join('\n')}\n`);

    const b = await open(dir);
    const problems = b.problems();
    assert.equal(problems.length, 2);
    for (const p of problems) assert.ok(isTapnetError(p, 'ERR_STORE_CORRUPT'));
    assert.match(problems[0]!.message, /checksum mismatch/);
    assert.equal(problems[0]!.details.vmId, 'hit');
    assert.equal(typeof problems[0]!.details.offset, 'number');
    // Its latest state is unknown: set aside and reported, like a quarantined record file.
    assert.equal(await b.records.get('hit'), undefined);
    const listed = await b.records.list();
    assert.deepEqual(
      listed.records.map((r) => r.vmId),
      ['fine'],
    );
    assert.deepEqual(
      listed.problems.map((p) => p.vmId),
      ['hit'],
    );
    assert.equal(await b.leases.ownerOf(pool, '198.18.50.7'), 'fine');
    // A new record for it ends the problem; a compaction keeps the damaged lines for a human.
    await b.records.put({ vmId: 'hit', state: 'creating' });
    assert.deepEqual((await b.records.list()).problems, []);
    b.compact();
    const kept = fs.readdirSync(path.join(dir, 'quarantine'));
    assert.equal(kept.length, 1);
    assert.match(fs.readFileSync(path.join(dir, 'quarantine', kept[0]!), 'utf8'), /reody/);
    const c = await open(dir);
    assert.deepEqual(c.problems(), [], 'the compacted journal is clean');
    assert.deepEqual((await c.records.list()).records.map((r) => r.vmId).sort(), ['fine', 'hit']);
  });
  it('a VM set aside for a damaged line keeps its own entry through compactions', async () => {
    const dir = tempDir();
    const loose = await open(dir);
    await loose.records.put({ vmId: 'x', state: 'ready' });
    await loose.records.put({ vmId: 'y', state: 'creating' });
    const strict = await openJournalStore<Rec>({
      dir,
      schema: {
        version: 1,
        validate: (raw) => {
          if (raw.vmId === 'x') throw new Error('x is refused');
          return raw as unknown as Rec;
        },
      },
    });
    stores.push(strict);
    await assert.rejects(strict.records.get('x'), (e) => isTapnetError(e, 'ERR_STORE_CORRUPT')); // a quarantine line
    await loose.records.put({ vmId: 'y', state: 'ready', note: 'latest' }); // the line right after it…
    loose.close();
    strict.close();
    const all = lines(dir);
    all[all.length - 1] = all.at(-1)!.replace('latest', 'lotest'); // …is damaged
    fs.writeFileSync(path.join(dir, JOURNAL_FILE), `${all.join('\n')}\n`);
    const a = await open(dir);
    const before = a.records.quarantined().map((q) => [q.vmId, q.reason.slice(0, 20)]);
    assert.deepEqual(before, [
      ['x', 'does not match the r'],
      ['y', 'a journal line about'],
    ]);
    a.compact();
    a.compact();
    const b = await open(dir);
    assert.deepEqual(
      b.records
        .quarantined()
        .map((q) => [q.vmId, q.reason.slice(0, 20)])
        .sort(),
      before,
    );
    assert.deepEqual((await b.records.list()).problems.map((p) => p.vmId).sort(), ['x', 'y']);
    assert.deepEqual(b.problems(), []);
  });
});

describe('compaction', () => {
  it('shrinks the journal, keeps records, leases, cursors and held locks; others follow without a replay', async () => {
    const dir = tempDir();
    const a = await open(dir, { compactMinBytes: 1 << 30 });
    const b = await open(dir);
    for (let round = 0; round < 30; round++) {
      for (let i = 0; i < 10; i++) {
        const vmId = `vm-${i}`;
        const cur = await a.records.get(vmId);
        await a.records.put(
          { vmId, state: 'ready', note: `round ${round}` },
          { expectedGeneration: cur?.generation ?? 0 },
        );
      }
    }
    await a.leases.claim(pool, '198.18.50.3', 'vm-3');
    await a.leases.setCursor(pool, '198.18.50.3');
    const held = await a.locks.acquire('vm', 'vm-3');
    (await a.locks.acquire('vm', 'vm-4')).release();
    await tick(); // the lazy unlock of vm-4 goes out
    await b.records.get('vm-0'); // b is current with the old file
    const before = journalSnapshot(dir);
    const size = fs.statSync(path.join(dir, JOURNAL_FILE)).size;
    const replays = b.journal.stats.replays;
    const lastPut = lines(dir).findLast((l) => l.includes('"op":"put","vm":"vm-9"'))!;
    a.compact();
    assert.ok(fs.statSync(path.join(dir, JOURNAL_FILE)).size < size / 5);
    const compacted = lines(dir);
    assert.ok(compacted.includes(lastPut), 'live lines are copied verbatim: same seq, same checksum');
    const seqs = compacted.slice(1).map((l) => JSON.parse(l).seq as number);
    assert.deepEqual(
      seqs,
      [...seqs].sort((x, y) => x - y),
      'in seq order',
    );
    assert.ok(
      seqs.every((q) => q < JSON.parse(compacted[0]!).seq),
      'all before the header’s seq',
    );
    const afterSnap = journalSnapshot(dir);
    const comparable = (x: typeof before) => ({
      ...x,
      seq: 0,
      bytes: 0,
      locks: x.locks.map((l) => ({ ...l, seq: 0 })),
    });
    assert.deepEqual(comparable(afterSnap), comparable(before));
    assert.deepEqual(
      before.locks.map((l) => l.name),
      ['vm-3'],
    );
    assert.equal((await b.records.get('vm-9'))?.generation, 30);
    assert.equal(b.journal.stats.replays, replays, 'b skipped the snapshot: it already had that state');
    assert.equal(await b.leases.getCursor(pool), '198.18.50.3');
    await assert.rejects(b.locks.acquire('vm', 'vm-3', { timeoutMs: 30 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    held.release();
    (await b.locks.acquire('vm', 'vm-3', { timeoutMs: 500 })).release();
    // No temp file is left behind.
    assert.deepEqual(
      fs.readdirSync(dir).filter((n) => n.endsWith('.tmp')),
      [],
    );
  });

  it('runs by itself as the journal grows, interleaved with writes of another instance: nothing lost', async () => {
    const dir = tempDir();
    const a = await open(dir, { compactMinBytes: 8 * 1024, compactRatio: 1.5 });
    const b = await open(dir, { compactMinBytes: 8 * 1024, compactRatio: 1.5 });
    const gens = new Map<string, number>();
    for (let i = 0; i < 600; i++) {
      const s = i % 3 === 0 ? b : a;
      const vmId = `vm-${i % 25}`;
      const cur = await s.records.get(vmId);
      assert.equal(cur?.generation ?? 0, gens.get(vmId) ?? 0, `${vmId} at step ${i}`);
      const r = await s.records.put(
        { vmId, state: 'ready', note: `step ${i}` },
        { expectedGeneration: cur?.generation ?? 0 },
      );
      gens.set(vmId, r.generation);
      if (i % 50 === 0) b.compact();
    }
    assert.ok(a.journal.stats.compactions + b.journal.stats.compactions > 5);
    const fresh = await open(dir);
    const { records, problems } = await fresh.records.list();
    assert.deepEqual(problems, []);
    assert.equal(records.length, 25);
    for (const r of records) assert.equal(r.generation, gens.get(r.vmId));
  });

  it('a compactor that died between its seal and its rename leaves a working journal (the seal is void)', async () => {
    const dir = tempDir();
    const a = await open(dir);
    await a.records.put({ vmId: 'x', state: 'ready' });
    const seq = JSON.parse(lines(dir).at(-1)!).seq as number;
    fs.appendFileSync(path.join(dir, JOURNAL_FILE), encodeEntry({ op: 'seal', seq: seq + 1 }));
    const stale = path.join(dir, `.${JOURNAL_FILE}.4242.deadbeef.tmp`);
    fs.writeFileSync(stale, 'half a snapshot');
    const old = new Date(Date.now() - 3_600_000);
    fs.utimesSync(stale, old, old);
    const b = await open(dir); // opening removes the stale temp file
    assert.equal(fs.existsSync(stale), false);
    assert.equal((await b.records.get('x'))?.generation, 1);
    await b.records.put({ vmId: 'y', state: 'ready' });
    assert.equal((await a.records.get('y'))?.generation, 1, 'a follows past the void seal');
    await a.records.put({ vmId: 'z', state: 'ready' });
    const c = await open(dir);
    assert.deepEqual((await c.records.list()).records.map((r) => r.vmId).sort(), ['x', 'y', 'z']);
    assert.deepEqual(c.problems(), []);
  });
});

describe('journal locks and files', () => {
  it('a lock whose holder is gone (its seat is free or taken by another process) does not block', async () => {
    const dir = tempDir();
    const a = await open(dir);
    await a.records.put({ vmId: 'seed', state: 'ready' });
    let seq = JSON.parse(lines(dir).at(-1)!).seq as number;
    const file = path.join(dir, JOURNAL_FILE);
    const lock = (name: string, seat: number, nonce: string): string =>
      encodeEntry({ op: 'lock', seq: ++seq, scope: 'vm', name, seat, nonce, n: 1, pid: 1 });
    fs.appendFileSync(file, lock('ghost-1', 77, '0123456789abcdef') + lock('ghost-2', 0, 'fedcba9876543210'));
    const b = await open(dir);
    const snap = journalSnapshot(dir);
    assert.deepEqual(
      snap.locks.map((l) => [l.name, l.alive]),
      [
        ['ghost-1', false],
        ['ghost-2', false],
      ],
    );
    (await b.locks.acquire('vm', 'ghost-1', { timeoutMs: 100 })).release();
    (await b.locks.acquire('vm', 'ghost-2', { timeoutMs: 100 })).release();
    const live = await a.locks.acquire('vm', 'live');
    await tick(); // b's unlock lines are written lazily
    assert.deepEqual(
      journalSnapshot(dir).locks.map((l) => [l.name, l.alive, l.pid]),
      [['live', true, process.pid]],
    );
    await assert.rejects(b.locks.acquire('vm', 'live', { timeoutMs: 30 }), (e) =>
      isTapnetError(e, 'ERR_TIMEOUT'),
    );
    assert.ok(live);
    a.close(); // closing releases the locks it still holds
    (await b.locks.acquire('vm', 'live', { timeoutMs: 100 })).release();
  });

  it('close() writes what is pending (cursor, unlock); a removed journal is started afresh by the next writer', async () => {
    const dir = tempDir();
    const a = await open(dir);
    await a.leases.setCursor(pool, '198.18.50.9');
    a.close();
    const b = await open(dir);
    assert.equal(await b.leases.getCursor(pool), '198.18.50.9');
    await b.records.put({ vmId: 'old', state: 'ready' });
    fs.rmSync(path.join(dir, JOURNAL_FILE));
    await sleep(60);
    await b.records.put({ vmId: 'new', state: 'ready' });
    const c = await open(dir);
    assert.deepEqual(
      (await c.records.list()).records.map((r) => r.vmId),
      ['new'],
      'what is on disk is the truth, as with the files backend',
    );
  });

  it('journalSnapshot() describes the live state as plain data, and opens nothing for writing', async () => {
    const dir = tempDir();
    assert.deepEqual(journalSnapshot(path.join(dir, 'absent')).records, {});
    assert.equal(fs.existsSync(path.join(dir, 'absent')), false);
    const a = await open(dir);
    await a.records.put({ vmId: 'vm-1', state: 'ready', note: 'n' });
    await a.leases.claim(pool, '198.18.50.2', 'vm-1');
    await a.leases.setCursor(pool, '198.18.50.2');
    const lock = await a.locks.acquire('network', 'j');
    await tick();
    const snap = journalSnapshot(dir);
    assert.equal(snap.path, path.join(dir, JOURNAL_FILE));
    assert.equal((snap.records['vm-1'] as Rec).note, 'n');
    assert.deepEqual(snap.pools, [
      { network: 'j', subnet: '198.18.50.0/24', cursor: '198.18.50.2', leases: { '198.18.50.2': 'vm-1' } },
    ]);
    assert.deepEqual(
      snap.locks.map((l) => [l.scope, l.name, l.alive]),
      [['network', 'j', true]],
    );
    assert.deepEqual(snap.problems, []);
    assert.deepEqual(snap.quarantined, []);
    lock.release();
  });
});
