import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  appendRecords,
  flatness,
  fmtMs,
  formatTable,
  makeRecord,
  median,
  percentile,
  ratio,
  summarize,
  time,
  timeSync,
} from '../../bench/lib/stats.js';
import { selectSuites } from '../../bench/lib/suite.js';
import { isTapnetError } from '../../src/errors.js';

describe('bench stats', () => {
  it('summarizes with nearest-rank percentiles and an even-length median', () => {
    const s = summarize([5, 1, 4, 2, 3, 6, 7, 8, 9, 10]);
    assert.deepEqual(s, { n: 10, median: 5.5, p95: 10, p99: 10, min: 1, max: 10, mean: 5.5 });
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.equal(
      percentile(
        [...hundred].sort((a, b) => a - b),
        95,
      ),
      95,
    );
    assert.equal(median([3, 1, 2]), 2);
    assert.ok(Number.isNaN(summarize([]).median));
  });

  it('divides safely', () => {
    assert.equal(ratio(6, 3), 2);
    assert.ok(Number.isNaN(ratio(1, 0)));
  });

  it('tells a flat series from a growing one', () => {
    const flat = Array.from({ length: 1000 }, (_, i) => 1 + (i % 3) * 0.01);
    const growing = Array.from({ length: 1000 }, (_, i) => 1 + i / 100);
    const f = flatness(flat);
    assert.equal(f.window, 100);
    assert.ok(f.flat);
    const g = flatness(growing, { window: 100 });
    assert.ok(!g.flat);
    assert.ok(g.growth > 6.9 && g.growth < 7.1, String(g.growth)); // 10.495 / 1.495
  });

  it('times sync and async functions', async () => {
    assert.ok(timeSync(() => {}) >= 0);
    const ms = await time(() => new Promise((r) => setTimeout(r, 20)));
    assert.ok(ms >= 15, String(ms));
  });

  it('prints aligned tables and readable milliseconds', () => {
    const t = formatTable(
      ['op', 'ms'],
      [
        ['a', '1.5'],
        ['long op', '12.0'],
      ],
    ).split('\n');
    assert.equal(t[0], 'op         ms');
    assert.equal(t[2], 'a         1.5');
    assert.equal(t[3], 'long op  12.0');
    assert.equal(fmtMs(0.12345), '0.123');
    assert.equal(fmtMs(123.4), '123');
  });

  it('appends JSON lines records to a file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tapnet-bench-test-'));
    try {
      const file = join(dir, 'out.jsonl');
      const rec = makeRecord('s', 'tapnet', 'tap setup', [1, 2, 3], { baseline: true });
      appendRecords([rec], file);
      appendRecords([rec], file);
      const lines = readFileSync(file, 'utf8').trim().split('\n');
      assert.equal(lines.length, 2);
      assert.deepEqual(JSON.parse(lines[0]!), {
        suite: 's',
        subject: 'tapnet',
        op: 'tap setup',
        n: 3,
        median_ms: 2,
        p95_ms: 3,
        p99_ms: 3,
        min_ms: 1,
        max_ms: 3,
        mean_ms: 2,
        baseline: true,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('selects suites by name and refuses unknown ones', () => {
    const mk = (name: string) => ({ name, description: name, run: async () => [] });
    const all = [mk('a'), mk('b')];
    assert.deepEqual(
      selectSuites(all, ['b']).map((s) => s.name),
      ['b'],
    );
    assert.equal(selectSuites(all, []).length, 2);
    assert.throws(
      () => selectSuites(all, ['c']),
      (e) => isTapnetError(e, 'ERR_CONFIG'),
    );
  });
});
