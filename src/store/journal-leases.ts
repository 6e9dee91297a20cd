/**
 * Address leases over the journal: a `claim` line gives an address to an owner, a `release` line takes it
 * back, a `cursor` line records the last address handed out. The journal lock makes check-and-append
 * atomic across processes, so of several concurrent claims of one address exactly one wins. Reads are of
 * the in-memory state after reading the journal's tail: no lock, no directory listing.
 */
import { TapnetError } from '../errors.js';
import { cidrContains, formatCidr, formatIp, parseCidr, parseIp } from '../ip.js';
import { validateName, validateVmId } from '../validate.js';
import type { Journal } from './journal-log.js';
import type { LeaseStore, PoolRef } from './types.js';

interface CheckedPool {
  network: string;
  subnet: string;
  cidr: ReturnType<typeof parseCidr>;
}

/** LeaseStore over a journal. */
export class JournalLeaseStore implements LeaseStore {
  private readonly checked = new Map<string, CheckedPool>();

  constructor(private readonly journal: Journal) {}

  /** Validate a pool reference (once per pool). */
  private pool(ref: PoolRef): CheckedPool {
    const key = `${ref?.network}|${ref?.subnet}`;
    const hit = this.checked.get(key);
    if (hit) return hit;
    validateName(ref.network, 'network name');
    const cidr = parseCidr(ref.subnet, 'subnet');
    if (cidr.addr !== cidr.network || formatCidr(cidr) !== ref.subnet) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `subnet ${JSON.stringify(ref.subnet)} is not in canonical network form`,
        {
          details: { value: ref.subnet },
        },
      );
    }
    const p = { network: ref.network, subnet: ref.subnet, cidr };
    this.checked.set(key, p);
    return p;
  }

  /** Check `addr` is a canonical address inside the pool. */
  private address(p: CheckedPool, addr: string): string {
    const ip = parseIp(addr, 'address');
    if (formatIp(ip.family, ip.value) !== addr) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `address ${JSON.stringify(addr)} is not in canonical form`,
        {
          details: { value: addr },
        },
      );
    }
    if (!cidrContains(p.cidr, ip)) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', `address ${addr} is not in ${p.subnet}`, {
        details: { value: addr, subnet: p.subnet },
      });
    }
    return addr;
  }

  /** Give `addr` to `owner` unless someone else holds it; true when `owner` holds it afterwards. */
  async claim(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    const p = this.pool(pool);
    this.address(p, addr);
    validateVmId(owner);
    return this.journal.write((s) => {
      const cur = s.pool(p.network, p.subnet)?.leases.get(addr);
      if (cur !== undefined) return { result: cur === owner };
      return { entries: [{ op: 'claim', net: p.network, sub: p.subnet, addr, owner }], result: true };
    });
  }

  /** Take `addr` back if `owner` holds it. Callers hold the owner's VM lock (see LeaseStore). */
  async release(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    const p = this.pool(pool);
    this.address(p, addr);
    return this.journal.write((s) => {
      if (s.pool(p.network, p.subnet)?.leases.get(addr) !== owner) return { result: false };
      return { entries: [{ op: 'release', net: p.network, sub: p.subnet, addr, owner }], result: true };
    });
  }

  async ownerOf(pool: PoolRef, addr: string): Promise<string | undefined> {
    const p = this.pool(pool);
    this.address(p, addr);
    this.journal.refresh();
    return this.journal.state.pool(p.network, p.subnet)?.leases.get(addr);
  }

  /** Every lease of the pool, as of now (a copy). */
  async leases(pool: PoolRef): Promise<Map<string, string>> {
    const p = this.pool(pool);
    this.journal.refresh();
    return new Map(this.journal.state.pool(p.network, p.subnet)?.leases);
  }

  /** Every pool with a lease or a cursor. */
  async pools(): Promise<PoolRef[]> {
    this.journal.refresh();
    return [...this.journal.state.pools.values()]
      .filter((p) => p.leases.size > 0 || p.cursor !== undefined)
      .map((p) => ({ network: p.network, subnet: p.subnet }));
  }

  async getCursor(pool: PoolRef): Promise<string | undefined> {
    const p = this.pool(pool);
    this.journal.refresh();
    return this.journal.state.pool(p.network, p.subnet)?.cursor;
  }

  /**
   * Record the last address handed out. A hint (last writer wins), so it is written lazily: with this
   * process's next write, or on the next turn of the event loop; this process sees it at once.
   */
  async setCursor(pool: PoolRef, addr: string): Promise<void> {
    const p = this.pool(pool);
    this.address(p, addr);
    this.journal.refresh();
    if (this.journal.state.pool(p.network, p.subnet)?.cursor === addr) return;
    this.journal.lazy({ op: 'cursor', net: p.network, sub: p.subnet, addr });
  }
}
