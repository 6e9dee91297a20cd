/**
 * An in-memory LeaseStore: the reference implementation of the interface's contract, for tests,
 * benchmarks and single-process embedders that need no durability. Not shared between processes.
 */
import type { LeaseStore, PoolRef } from '../store/types.js';

interface PoolState {
  ref: PoolRef;
  leases: Map<string, string>;
  cursor: string | undefined;
}

/** LeaseStore kept in a Map. */
export class MemoryLeaseStore implements LeaseStore {
  private readonly state = new Map<string, PoolState>();

  private pool(ref: PoolRef): PoolState {
    const key = `${ref.network}|${ref.subnet}`;
    let p = this.state.get(key);
    if (!p) {
      p = { ref: { network: ref.network, subnet: ref.subnet }, leases: new Map(), cursor: undefined };
      this.state.set(key, p);
    }
    return p;
  }

  async claim(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    const leases = this.pool(pool).leases;
    const current = leases.get(addr);
    if (current !== undefined) return current === owner;
    leases.set(addr, owner);
    return true;
  }

  async release(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    const leases = this.pool(pool).leases;
    if (leases.get(addr) !== owner) return false;
    return leases.delete(addr);
  }

  async ownerOf(pool: PoolRef, addr: string): Promise<string | undefined> {
    return this.pool(pool).leases.get(addr);
  }

  async leases(pool: PoolRef): Promise<Map<string, string>> {
    return new Map(this.pool(pool).leases);
  }

  async pools(): Promise<PoolRef[]> {
    return [...this.state.values()]
      .filter((p) => p.leases.size > 0 || p.cursor !== undefined)
      .map((p) => p.ref);
  }

  async getCursor(pool: PoolRef): Promise<string | undefined> {
    return this.pool(pool).cursor;
  }

  async setCursor(pool: PoolRef, addr: string): Promise<void> {
    this.pool(pool).cursor = addr;
  }
}
