import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressRuns } from '../../src/ipam/runs.js';

/** A deterministic PRNG so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('AddressRuns', () => {
  it('coalesces neighbours and splits on delete', () => {
    const r = new AddressRuns();
    for (const x of [5n, 7n, 6n, 1n, 2n]) assert.equal(r.add(x), true);
    assert.equal(r.add(6n), false);
    assert.deepEqual(r.toArray(), [
      [1n, 2n],
      [5n, 7n],
    ]);
    assert.equal(r.delete(6n), true);
    assert.equal(r.delete(6n), false);
    assert.deepEqual(r.toArray(), [
      [1n, 2n],
      [5n, 5n],
      [7n, 7n],
    ]);
    assert.equal(r.size, 4n);
    assert.equal(r.nextFree(1n, 10n), 3n);
    assert.equal(r.nextFree(5n, 10n), 6n);
    assert.equal(r.nextFree(7n, 7n), undefined);
    assert.equal(r.countIn(2n, 7n), 3n);
  });

  it('agrees with a plain Set under 20,000 random operations', () => {
    const next = rng(42);
    const r = new AddressRuns();
    const model = new Set<bigint>();
    const N = 300;
    for (let i = 0; i < 20_000; i++) {
      const x = BigInt(Math.floor(next() * N));
      if (next() < 0.6) {
        const fresh = !model.has(x);
        model.add(x);
        assert.equal(r.add(x), fresh);
      } else {
        assert.equal(r.delete(x), model.delete(x));
      }
      if (i % 50 === 0) {
        const from = BigInt(Math.floor(next() * N));
        const to = from + BigInt(Math.floor(next() * 40));
        let expect: bigint | undefined;
        for (let y = from; y <= to; y++) {
          if (!model.has(y)) {
            expect = y;
            break;
          }
        }
        assert.equal(r.nextFree(from, to), expect, `nextFree(${from}, ${to})`);
        let count = 0n;
        for (let y = from; y <= to; y++) if (model.has(y)) count++;
        assert.equal(r.countIn(from, to), count);
        assert.equal(r.size, BigInt(model.size));
        // Runs stay sorted, disjoint and coalesced.
        const runs = r.toArray();
        for (let k = 1; k < runs.length; k++) assert.ok(runs[k]![0] > runs[k - 1]![1] + 1n);
      }
    }
  });

  it('handles 128-bit addresses without enumerating', () => {
    const base = 0xfd00_0000_0000_0000_0000_0000_0000_0000n;
    const r = AddressRuns.from([base + 1n, base + 2n, base + (1n << 63n)]);
    assert.equal(r.nextFree(base + 1n, base + (1n << 64n) - 1n), base + 3n);
    assert.equal(r.runCount, 2);
  });
});
