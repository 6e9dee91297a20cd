/**
 * The usage ledger without a kernel: the fold of counter readings into totals that never go back (resets
 * by epoch and by counters going down, checked against a model with random sequences), the durable files
 * (a new ledger — a restarted daemon — continues where the last one stopped), released VMs and their
 * collection, corrupt files, two ledgers sampling at once, and --since.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import type { NetworkManager } from '../../src/manager/manager.js';
import type { VmRecord } from '../../src/manager/types.js';
import type { LinkStats } from '../../src/netlink/stats.js';
import { STATS64_FIELDS } from '../../src/netlink/stats.js';
import {
  advanceUsage,
  parseSince,
  parseUsageRecord,
  type RawUsage,
  releaseUsage,
  UsageLedger,
  type UsageRecord,
  usageEntry,
  usageSince,
} from '../../src/observe/usage.js';
import type { TapReading } from '../../src/observe/vmstats.js';

const T0 = '2026-01-01T00:00:00.000Z';
const T1 = '2026-01-01T00:01:00.000Z';
const raw = (rxBytes: number, rxPackets: number, txBytes = 0, txPackets = 0): RawUsage => ({
  rxBytes,
  rxPackets,
  txBytes,
  txPackets,
});
const obs = (r: RawUsage, epoch = 'e1') => ({
  vmId: 'vm1',
  network: 'vms',
  mode: 'direct' as const,
  raw: r,
  epoch,
});

describe('advanceUsage: folding readings into totals', () => {
  it('first reading, growth, no change, a re-created TAP (new epoch) and counters going down', () => {
    const a = advanceUsage(undefined, obs(raw(100, 2, 50, 1)), T0)!;
    assert.deepEqual(usageEntry(a).guestRx, { bytes: 100, packets: 2 });
    assert.equal(a.resets, 0);
    assert.equal(
      advanceUsage(a, obs(raw(100, 2, 50, 1)), T1),
      undefined,
      'nothing changed: nothing to write',
    );
    const b = advanceUsage(a, obs(raw(300, 5, 50, 1)), T1)!;
    assert.deepEqual(usageEntry(b).guestRx, { bytes: 300, packets: 5 });
    assert.equal(b.lastChangeAt, T1);
    // The TAP was re-created: its counters start again (here already past the old ones).
    const c = advanceUsage(b, obs(raw(400, 6, 10, 1), 'e2'), T1)!;
    assert.deepEqual(usageEntry(c).guestRx, { bytes: 700, packets: 11 }, 'new epoch: all of it is new');
    assert.deepEqual(usageEntry(c).guestTx, { bytes: 60, packets: 2 });
    assert.equal(c.resets, 1);
    // Same epoch but a counter went down (the kernel reset it): also a reset.
    const d = advanceUsage(c, obs(raw(0, 0, 0, 0), 'e2'), T1)!;
    assert.deepEqual(usageEntry(d).guestRx, { bytes: 700, packets: 11 });
    assert.equal(d.resets, 2);
    assert.equal(d.lastChangeAt, c.lastChangeAt, 'a reset to zero is no growth');
  });

  it('totals never go back, and equal the sum of every epoch’s counters when resets come with a new epoch', () => {
    const step = fc.record({
      newEpoch: fc.boolean(),
      kernelReset: fc.boolean(),
      grow: fc.array(fc.nat(10_000), { minLength: 4, maxLength: 4 }),
    });
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), (steps) => {
        let rec: UsageRecord | undefined;
        let epoch = 0;
        let cur = [0, 0, 0, 0];
        let ended = [0, 0, 0, 0];
        let exact = true;
        let lastTotal = -1;
        for (const s of steps) {
          if (s.newEpoch || s.kernelReset) {
            ended = ended.map((v, i) => v + cur[i]!);
            const before = cur;
            cur = s.grow;
            if (s.newEpoch) epoch++;
            // A reset in the same epoch is only seen when some counter ends below its last value.
            else if (cur.every((v, i) => v >= before[i]!)) exact = false;
          } else cur = cur.map((v, i) => v + s.grow[i]!);
          const [a, b, c, d] = cur as [number, number, number, number];
          rec = advanceUsage(rec, obs(raw(a, b, c, d), `e${epoch}`), T0) ?? rec;
          const t = usageEntry(rec!);
          const total = t.guestRx.bytes + t.guestRx.packets + t.guestTx.bytes + t.guestTx.packets;
          assert.ok(total >= lastTotal, 'never goes back');
          lastTotal = total;
        }
        const t = usageEntry(rec!);
        const sum = ended.map((v, i) => v + cur[i]!);
        const got = [t.guestRx.bytes, t.guestRx.packets, t.guestTx.bytes, t.guestTx.packets];
        if (exact) assert.deepEqual(got, sum);
        else for (const [i, v] of got.entries()) assert.ok(v >= cur[i]! && v <= sum[i]!);
      }),
      { numRuns: 500 },
    );
  });

  it('release keeps the final totals; a new reading brings the VM back', () => {
    const a = advanceUsage(undefined, obs(raw(10, 1)), T0)!;
    const r = releaseUsage(a, T1)!;
    assert.equal(r.state, 'released');
    assert.equal(r.releasedAt, T1);
    assert.equal(releaseUsage(r, T1), undefined);
    const back = advanceUsage(r, obs(raw(5, 1), 'e2'), T1)!;
    assert.equal(back.state, 'active');
    assert.equal(back.releasedAt, undefined);
    assert.deepEqual(usageEntry(back).guestRx, { bytes: 15, packets: 2 });
  });

  it('parseUsageRecord refuses anything but a well-formed record of that VM', () => {
    const a = advanceUsage(undefined, obs(raw(10, 1)), T0)!;
    assert.deepEqual(parseUsageRecord(JSON.stringify(a), 'vm1'), a);
    assert.equal(parseUsageRecord(JSON.stringify(a), 'vm2'), undefined);
    for (const bad of ['', '{', 'null', '[]', JSON.stringify({ ...a, base: { ...a.base, rxBytes: -1 } })]) {
      assert.equal(parseUsageRecord(bad, 'vm1'), undefined, bad);
    }
    assert.equal(
      parseUsageRecord(JSON.stringify({ ...a, last: { ...a.last, txBytes: 1.5 } }), 'vm1'),
      undefined,
    );
    assert.equal(parseUsageRecord(JSON.stringify({ ...a, version: 2 }), 'vm1'), undefined);
  });

  it('--since: ISO times and durations; anything else is ERR_INVALID_ARGUMENT', () => {
    const now = Date.parse('2026-01-02T00:00:00Z');
    assert.equal(parseSince('2h', now).toISOString(), '2026-01-01T22:00:00.000Z');
    assert.equal(parseSince('7d', now).toISOString(), '2025-12-26T00:00:00.000Z');
    assert.equal(parseSince('90s', now).toISOString(), '2026-01-01T23:58:30.000Z');
    assert.equal(parseSince('2026-01-01T12:00:00Z', now).toISOString(), '2026-01-01T12:00:00.000Z');
    assert.equal(parseSince('2026-01-01', now).toISOString(), '2026-01-01T00:00:00.000Z');
    for (const bad of ['', 'yesterday', '2h; rm -rf /', '-1h', '2026-13-45', '1e3s', ' 2h', 42, null]) {
      assert.throws(
        () => parseSince(bad, now),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
        String(bad),
      );
    }
    const e = usageEntry(advanceUsage(undefined, obs(raw(1, 1)), T0)!);
    assert.equal(usageSince([e], new Date(T1)).length, 0);
    assert.equal(usageSince([{ ...e, releasedAt: T1 }], new Date(T1)).length, 1);
    assert.equal(usageSince([e], new Date(T0)).length, 1);
  });
});

/** A manager that has records and nothing else, and a "kernel" of TAP counters the test sets. */
function fakeWorld() {
  const records = new Map<string, VmRecord>();
  const kernel = new Map<string, { ifindex: number; rx: number; tx: number }>();
  const m = {
    store: {
      records: {
        get: async (id: string) => records.get(id),
        list: async () => ({ records: [...records.values()], problems: [] }),
      },
    },
  } as unknown as NetworkManager;
  const stats = (rx: number, tx: number): LinkStats => {
    const s = Object.fromEntries(STATS64_FIELDS.map((f) => [f, 0])) as LinkStats;
    // The TAP transmits what the guest receives.
    return { ...s, txBytes: rx, txPackets: Math.ceil(rx / 100), rxBytes: tx, rxPackets: Math.ceil(tx / 100) };
  };
  const read = (_m: NetworkManager, rs: readonly VmRecord[]) => {
    const out = new Map<string, TapReading | TapnetError>();
    for (const r of rs) {
      const k = kernel.get(r.vmId);
      out.set(
        r.vmId,
        k
          ? { ifindex: k.ifindex, operstate: 'up', stats: stats(k.rx, k.tx), epoch: `boot/1/${k.ifindex}` }
          : new TapnetError('ERR_LINK_NOT_FOUND', `TAP of ${r.vmId} is gone`),
      );
    }
    return out;
  };
  const addVm = (vmId: string) => {
    records.set(vmId, {
      vmId,
      version: 1,
      generation: 1,
      state: 'ready',
      network: 'vms',
      topology: 'bridge',
      tap: `tn${vmId}`,
      mac: '02:00:00:00:00:01',
      tapMode: 'persistent',
      queues: 1,
      vnetHdr: true,
      createdAt: T0,
    });
    kernel.set(vmId, { ifindex: 10 + records.size, rx: 0, tx: 0 });
  };
  return { m, records, kernel, read, addVm };
}

describe('UsageLedger: files under the state directory', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tapnet-usage-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('samples, survives a new ledger (daemon restart) and a re-created TAP, marks releases, collects', async () => {
    const w = fakeWorld();
    const state = join(dir, 'a');
    let ledger = new UsageLedger(state, w.read);
    w.addVm('vm1');
    w.addVm('vm2');
    w.kernel.get('vm1')!.rx = 1000;
    w.kernel.get('vm1')!.tx = 200;
    let r = await ledger.sample(w.m);
    assert.deepEqual(
      r.vms.map((v) => [v.vmId, v.guestRx.bytes, v.guestTx.bytes, v.state]),
      [
        ['vm1', 1000, 200, 'active'],
        ['vm2', 0, 0, 'active'],
      ],
    );
    assert.deepEqual(readdirSync(join(state, 'usage')).sort(), ['.lock', 'vm1.json', 'vm2.json']);
    // A restart: a new ledger over the same files.
    ledger = new UsageLedger(state, w.read);
    w.kernel.get('vm1')!.rx = 1500;
    r = await ledger.sample(w.m, { vmIds: ['vm1'] });
    assert.deepEqual(
      r.vms.map((v) => v.guestRx.bytes),
      [1500],
    );
    // The TAP vanishes (no reading: totals stay) and comes back with fresh counters and a new ifindex.
    w.kernel.delete('vm1');
    r = await ledger.sample(w.m);
    assert.equal(r.vms.find((v) => v.vmId === 'vm1')!.guestRx.bytes, 1500);
    assert.deepEqual(r.problems, [], 'a missing TAP is not a problem: reconcile re-creates it');
    w.kernel.set('vm1', { ifindex: 99, rx: 300, tx: 0 });
    r = await ledger.sample(w.m);
    const vm1 = r.vms.find((v) => v.vmId === 'vm1')!;
    assert.equal(vm1.guestRx.bytes, 1800);
    assert.equal(vm1.resets, 1);
    // Released (no record): final totals, state released; its TAP's counters are not read again.
    w.records.delete('vm1');
    r = await ledger.sample(w.m);
    const gone = r.vms.find((v) => v.vmId === 'vm1')!;
    assert.equal(gone.state, 'released');
    assert.equal(gone.guestRx.bytes, 1800);
    assert.ok(gone.releasedAt);
    // Collect: active VMs refuse, unknown ones are not found, released ones are handed over once.
    await assert.rejects(ledger.collect(w.m, 'vm2'), (e) => isTapnetError(e, 'ERR_CONFLICT'));
    await assert.rejects(ledger.collect(w.m, 'ghost'), (e) => isTapnetError(e, 'ERR_NOT_FOUND'));
    await assert.rejects(ledger.collect(w.m, '../etc'), (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'));
    const final = await ledger.collect(w.m, 'vm1');
    assert.equal(final.guestRx.bytes, 1800);
    assert.equal(final.state, 'released');
    await assert.rejects(ledger.collect(w.m, 'vm1'), (e) => isTapnetError(e, 'ERR_NOT_FOUND'));
    assert.ok(!existsSync(join(state, 'usage', 'vm1.json')));
  });

  it('a VM released without a sample since is collected with its last totals', async () => {
    const w = fakeWorld();
    const ledger = new UsageLedger(join(dir, 'b'), w.read);
    w.addVm('vm1');
    w.kernel.get('vm1')!.rx = 42;
    await ledger.sample(w.m);
    w.records.delete('vm1');
    const final = await ledger.collect(w.m, 'vm1');
    assert.equal(final.state, 'released');
    assert.equal(final.guestRx.bytes, 42);
  });

  it('a corrupt file is quarantined and reported, never silently zeroed in place', async () => {
    const w = fakeWorld();
    const state = join(dir, 'c');
    const ledger = new UsageLedger(state, w.read);
    w.addVm('vm1');
    await ledger.sample(w.m);
    writeFileSync(join(state, 'usage', 'vm1.json'), '{"format":"tapnet-usage"');
    const r = await ledger.sample(w.m);
    assert.equal(r.problems[0]?.code, 'ERR_STORE_CORRUPT');
    assert.ok(readdirSync(join(state, 'quarantine')).some((f) => f.startsWith('usage_vm1.json')));
  });

  it('two ledgers (two processes) sampling at once count every byte once', async () => {
    const w = fakeWorld();
    const state = join(dir, 'd');
    const a = new UsageLedger(state, w.read);
    const b = new UsageLedger(state, w.read);
    w.addVm('vm1');
    let expected = 0;
    for (let i = 0; i < 20; i++) {
      const k = w.kernel.get('vm1')!;
      if (i % 5 === 4) {
        expected += k.rx;
        w.kernel.set('vm1', { ifindex: k.ifindex + 1, rx: 0, tx: 0 }); // re-created
      }
      w.kernel.get('vm1')!.rx += 10;
      await Promise.all([a.sample(w.m), b.sample(w.m), a.sample(w.m, { vmIds: ['vm1'] })]);
    }
    expected += w.kernel.get('vm1')!.rx;
    const r = await a.sample(w.m);
    assert.equal(r.vms[0]!.guestRx.bytes, expected);
  });

  it("a release's final sample marks the entry released at once; a release that failed turns it active again", async () => {
    const w = fakeWorld();
    const ledger = new UsageLedger(join(dir, 'f'), w.read);
    w.addVm('vm1');
    w.kernel.get('vm1')!.rx = 700;
    let r = await ledger.sample(w.m, { vmIds: ['vm1'], final: true });
    assert.deepEqual(
      r.vms.map((v) => [v.state, v.guestRx.bytes, typeof v.releasedAt]),
      [['released', 700, 'string']],
    );
    // The release failed: the VM still has its network, and its counters keep growing.
    w.kernel.get('vm1')!.rx = 900;
    await ledger.refresh(w.m);
    r = await ledger.sample(w.m);
    assert.deepEqual(
      r.vms.map((v) => [v.state, v.guestRx.bytes]),
      [['active', 900]],
    );
    // Released for real: the refresh leaves the final entry as it is.
    await ledger.sample(w.m, { vmIds: ['vm1'], final: true });
    w.records.delete('vm1');
    await ledger.refresh(w.m);
    r = await ledger.sample(w.m);
    assert.deepEqual(
      r.vms.map((v) => [v.state, v.guestRx.bytes]),
      [['released', 900]],
    );
  });

  it('the periodic pass forgets final totals nobody collected within the retention', async () => {
    const w = fakeWorld();
    const state = join(dir, 'g');
    const ledger = new UsageLedger(state, w.read);
    for (const id of ['old', 'young', 'live']) w.addVm(id);
    await ledger.sample(w.m, { vmIds: ['old'], final: true });
    w.records.delete('old');
    await new Promise((r) => setTimeout(r, 30));
    await ledger.sample(w.m, { vmIds: ['young'], final: true });
    w.records.delete('young');
    await ledger.refresh(w.m, { retentionMs: 20 });
    assert.equal(ledger.expired, 1);
    assert.deepEqual(
      readdirSync(join(state, 'usage'))
        .filter((f) => f.endsWith('.json'))
        .sort(),
      ['live.json', 'young.json'],
    );
    // A new process (restart) finds the files, and expires them the same way.
    await new Promise((r) => setTimeout(r, 30));
    const again = new UsageLedger(state, w.read);
    await again.refresh(w.m, { retentionMs: 20 });
    assert.equal(again.expired, 1);
    assert.deepEqual(
      (await again.sample(w.m)).vms.map((v) => v.vmId),
      ['live'],
    );
    await again.refresh(w.m, {}); // no retention: nothing forgotten
    assert.deepEqual(
      (await again.sample(w.m)).vms.map((v) => v.vmId),
      ['live'],
    );
  });

  it('concurrent samples of single VMs (releases) share passes; each answer holds its own VM', async () => {
    const w = fakeWorld();
    let passes = 0;
    const ledger = new UsageLedger(join(dir, 'e'), (m, rs) => {
      passes++;
      return w.read(m, rs);
    });
    const ids = Array.from({ length: 12 }, (_, i) => `vm${i}`);
    for (const [i, id] of ids.entries()) {
      w.addVm(id);
      w.kernel.get(id)!.rx = 100 + i;
    }
    const answers = await Promise.all(ids.map((id) => ledger.sample(w.m, { vmIds: [id] })));
    assert.ok(passes <= 2, `${passes} passes for 12 concurrent samples`);
    answers.forEach((a, i) => {
      assert.deepEqual(
        a.vms.map((v) => [v.vmId, v.guestRx.bytes]),
        [[ids[i], 100 + i]],
      );
    });
    // What they wrote is what a full pass reads back.
    const all = await new UsageLedger(join(dir, 'e'), w.read).sample(w.m);
    assert.equal(all.vms.length, 12);
    assert.equal(
      all.vms.reduce((t, v) => t + v.guestRx.bytes, 0),
      ids.reduce((t, _, i) => t + 100 + i, 0),
    );
  });
});
