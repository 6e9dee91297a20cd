/**
 * A set of addresses kept as sorted, disjoint, coalesced runs [start, end]. "The first free address at
 * or after x" is a binary search, so allocation costs O(log runs) however full the pool is, and an IPv6
 * /64 is never enumerated. Pure.
 */

/** Sorted disjoint runs of taken addresses (bigint, so IPv4 and IPv6 share the code). */
export class AddressRuns {
  private readonly starts: bigint[] = [];
  private readonly ends: bigint[] = [];
  private count = 0n;

  /** Build from addresses in any order (duplicates ignored). */
  static from(addrs: Iterable<bigint>): AddressRuns {
    const r = new AddressRuns();
    const sorted = [...addrs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const a of sorted) r.add(a);
    return r;
  }

  /** How many addresses are in the set. */
  get size(): bigint {
    return this.count;
  }

  /** How many runs (for tests and diagnostics). */
  get runCount(): number {
    return this.starts.length;
  }

  /** Index of the last run whose start ≤ x, or -1. */
  private find(x: bigint): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! <= x) {
        ans = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return ans;
  }

  /** True when `x` is in the set. */
  has(x: bigint): boolean {
    const i = this.find(x);
    return i >= 0 && this.ends[i]! >= x;
  }

  /** The smallest address ≥ `from` and ≤ `to` that is not in the set, or undefined. */
  nextFree(from: bigint, to: bigint): bigint | undefined {
    if (from > to) return undefined;
    const i = this.find(from);
    // Runs are coalesced, so the address right after the run holding `from` is free.
    const x = i >= 0 && this.ends[i]! >= from ? this.ends[i]! + 1n : from;
    return x <= to ? x : undefined;
  }

  /** Number of set members in [from, to]. */
  countIn(from: bigint, to: bigint): bigint {
    let n = 0n;
    let i = Math.max(0, this.find(from));
    for (; i < this.starts.length && this.starts[i]! <= to; i++) {
      const s = this.starts[i]! > from ? this.starts[i]! : from;
      const e = this.ends[i]! < to ? this.ends[i]! : to;
      if (e >= s) n += e - s + 1n;
    }
    return n;
  }

  /** Add `x`; false when it was already there. */
  add(x: bigint): boolean {
    const i = this.find(x);
    if (i >= 0 && this.ends[i]! >= x) return false;
    const joinLeft = i >= 0 && this.ends[i]! === x - 1n;
    const joinRight = i + 1 < this.starts.length && this.starts[i + 1]! === x + 1n;
    if (joinLeft && joinRight) {
      this.ends[i] = this.ends[i + 1]!;
      this.starts.splice(i + 1, 1);
      this.ends.splice(i + 1, 1);
    } else if (joinLeft) {
      this.ends[i] = x;
    } else if (joinRight) {
      this.starts[i + 1] = x;
    } else {
      this.starts.splice(i + 1, 0, x);
      this.ends.splice(i + 1, 0, x);
    }
    this.count++;
    return true;
  }

  /** Remove `x`; false when it was not there. */
  delete(x: bigint): boolean {
    const i = this.find(x);
    if (i < 0 || this.ends[i]! < x) return false;
    const s = this.starts[i]!;
    const e = this.ends[i]!;
    if (s === e) {
      this.starts.splice(i, 1);
      this.ends.splice(i, 1);
    } else if (x === s) {
      this.starts[i] = x + 1n;
    } else if (x === e) {
      this.ends[i] = x - 1n;
    } else {
      this.ends[i] = x - 1n;
      this.starts.splice(i + 1, 0, x + 1n);
      this.ends.splice(i + 1, 0, e);
    }
    this.count--;
    return true;
  }

  /** The runs as [start, end] pairs (a copy). */
  toArray(): Array<[bigint, bigint]> {
    return this.starts.map((s, i) => [s, this.ends[i]!]);
  }
}
