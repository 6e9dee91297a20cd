/**
 * `tapnet stats --watch` without a kernel: one JSON line per sample when piped (rates from the second
 * sample on, a counter reset counted from zero), the table redrawn in place on a terminal, --count and
 * an abort stop it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { statsTable, type WatchSample, watchStats, withRates } from '../../src/cli/commands-stats.js';
import type { StatsReport, VmStats } from '../../src/observe/vmstats.js';

const vm = (rxBytes: number, txBytes: number, tap = 'tn-a'): VmStats => ({
  vmId: 'a',
  network: 'vms',
  mode: 'direct',
  tap,
  operstate: 'up',
  guestRx: { bytes: rxBytes, packets: rxBytes / 100, errors: 0, dropped: 0 },
  guestTx: { bytes: txBytes, packets: txBytes / 100, errors: 0, dropped: 0 },
  policyDrops: { egress: { packets: 2, bytes: 120 }, ingress: { packets: 1, bytes: 60 } },
  networkDrops: { spoof: { packets: 9, bytes: 540 }, isolate: { packets: 0, bytes: 0 } },
  collectedAt: '',
});

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
const report = (s: number, v: VmStats): StatsReport => ({
  collectedAt: at(s),
  vms: [{ ...v, collectedAt: at(s) }],
  networks: [{ network: 'vms', mode: 'direct', vms: 1, drops: v.networkDrops! }],
  unregisteredDrops: null,
  problems: [],
});

function sink(isTTY: boolean) {
  const chunks: string[] = [];
  const write = (s: string): boolean => {
    chunks.push(s);
    return true;
  };
  return { isTTY, chunks, write };
}

describe('stats --watch', () => {
  it('rates between samples; a reset counts from zero; a new TAP has none', () => {
    const a = report(0, vm(1000, 500));
    const b = report(2, vm(5000, 700));
    const s = withRates(a, b);
    assert.deepEqual(s.vms[0]!.rates, {
      guestRxBytesPerSecond: 2000,
      guestTxBytesPerSecond: 100,
      guestRxPacketsPerSecond: 20,
      guestTxPacketsPerSecond: 1,
    });
    assert.equal(withRates(undefined, a).vms[0]!.rates, null);
    const reset = withRates(b, report(4, vm(400, 0)));
    assert.equal(reset.vms[0]!.rates!.guestRxBytesPerSecond, 200, 'counter went down: from zero');
    assert.equal(withRates(b, report(4, vm(400, 0, 'tn-other'))).vms[0]!.rates, null);
  });

  it('piped: one JSON line per sample, then stops after --count', async () => {
    let i = 0;
    const samples = [vm(0, 0), vm(3000, 1000), vm(9000, 1000)];
    const out = sink(false);
    const n = await watchStats(async () => report(i * 2, samples[i++]!), {
      intervalSeconds: 0.01,
      count: 3,
      out,
    });
    assert.equal(n, 3);
    const lines = out.chunks.join('').split('\n').filter(Boolean);
    assert.equal(lines.length, 3);
    const parsed = lines.map((l) => JSON.parse(l) as WatchSample);
    assert.equal(parsed[0]!.vms[0]!.rates, null);
    assert.equal(parsed[1]!.vms[0]!.rates!.guestRxBytesPerSecond, 1500);
    assert.equal(parsed[2]!.vms[0]!.rates!.guestRxBytesPerSecond, 3000);
    assert.equal(parsed[2]!.vms[0]!.guestRx.bytes, 9000);
    assert.deepEqual(parsed[2]!.networks[0]!.drops!.spoof, { packets: 9, bytes: 540 });
    assert.ok(!out.chunks.join('').includes('\x1b'), 'no terminal control codes in a pipe');
  });

  it('on a terminal: the table redrawn in place with rates; --json keeps JSON lines; abort stops it', async () => {
    let i = 0;
    const out = sink(true);
    await watchStats(async () => report(i * 2, vm(1000 * ++i, 0)), { intervalSeconds: 0.01, count: 2, out });
    const text = out.chunks.join('');
    assert.equal(text.split('\x1b[H\x1b[2J').length - 1, 2, 'cleared and redrawn twice');
    assert.match(text, /VM\s+NETWORK\s+STATE\s+RX\/S\s+TX\/S/);
    assert.match(text, /a\s+vms\s+up\s+500 B\/s\s+0 B\/s\s+5\s+0\s+2\.0 kB/);
    assert.match(text, /network vms: anti-spoofing dropped 9 packet\(s\)/);
    const json = sink(true);
    await watchStats(async () => report(0, vm(1, 1)), {
      intervalSeconds: 0.01,
      count: 1,
      json: true,
      out: json,
    });
    assert.doesNotThrow(() => JSON.parse(json.chunks.join('')));
    const ac = new AbortController();
    const forever = sink(false);
    const run = watchStats(async () => report(0, vm(1, 1)), {
      intervalSeconds: 60,
      out: forever,
      signal: ac.signal,
    });
    setTimeout(() => ac.abort(), 50);
    assert.equal(await run, 0, 'stopped while waiting for the next sample');
    assert.equal(forever.chunks.length, 1);
  });

  it('the one-shot table keeps its columns and adds the policy drops', () => {
    const t = statsTable([vm(1500, 3000)]);
    assert.match(
      t,
      /^VM\s+TAP\s+STATE\s+GUEST RX\s+RX PKTS\s+GUEST TX\s+TX PKTS\s+ERRORS\s+DROPPED\s+POLICY DROPS$/m,
    );
    assert.match(t, /^a\s+tn-a\s+up\s+1\.5 kB\s+15\s+3\.0 kB\s+30\s+0\s+0\s+3$/m);
  });
});
