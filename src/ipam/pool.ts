/**
 * One address pool: allocation and release over a LeaseStore. The store is the arbiter (its claim()
 * decides who gets an address, across processes); this class keeps an in-memory index of taken
 * addresses, loaded once and kept current, so that choosing a candidate costs O(log n) at any fill
 * level. An index that is stale because another process allocated is corrected by a failed claim; one
 * that is stale because another process released is corrected by a reload before declaring exhaustion.
 *
 * Allocation is round-robin from the pool's cursor (the last address handed out, persisted in the store
 * like CNI host-local's last_reserved_ip), so a released address is not reused until the cursor wraps.
 */
import { TapnetError } from '../errors.js';
import { parseIp } from '../ip.js';
import type { LeaseStore, PoolRef } from '../store/types.js';
import { validateVmId } from '../validate.js';
import { fmt, type PoolLayout } from './layout.js';
import { AddressRuns } from './runs.js';

/** An address handed to a VM. */
export interface Lease {
  network: string;
  subnet: string;
  family: 4 | 6;
  /** The address, canonical text. */
  address: string;
  prefix: number;
  /** `address/prefix`, as `ip addr add` takes it. */
  cidr: string;
  gateway: string;
  owner: string;
}

/** Options of an allocation. */
export interface AllocateOptions {
  /** A static address: honoured, or refused with ERR_IPAM_CONFLICT (taken, reserved or outside the pool). */
  address?: string;
  /**
   * Re-read the pool's leases first, so that a lease another process claimed for this owner is found
   * (and returned) instead of a second one being made. For recovering an interrupted ensure, where the
   * VM's record has no address yet; costs one directory listing.
   */
  fresh?: boolean;
}

/** Options of a release. */
export interface ReleaseOptions {
  /** The address to release (from the VM's record). Default: what the index says the owner holds. */
  address?: string;
  /** Re-read the pool's leases first (one directory listing). */
  fresh?: boolean;
}

interface Index {
  /** Every address known taken: leases (any owner) and the gateway. */
  runs: AddressRuns;
  /** Leases: address → owner ('' when only known to be taken by someone else). */
  byAddr: Map<bigint, string>;
  byOwner: Map<string, bigint>;
}

/** Usage of a pool's dynamic range. */
export interface PoolStats {
  network: string;
  subnet: string;
  /** Addresses dynamic allocation can hand out. */
  size: bigint;
  /** Of those, how many are leased (as far as this process knows). */
  used: bigint;
  /** Leases in the whole subnet, statics outside the range included. */
  leases: number;
}

/** Allocation and release in one pool. Get one from Ipam.pool(). */
export class IpPool {
  private index: Index | undefined;
  private loading: Promise<Index> | undefined;
  private readonly inflight = new Map<string, Promise<{ lease: Lease; created: boolean }>>();

  constructor(
    private readonly store: LeaseStore,
    readonly layout: PoolLayout,
  ) {}

  get ref(): PoolRef {
    return this.layout.ref;
  }

  /** The lease of `owner` at `addr`, as returned to callers. */
  private lease(owner: string, addr: bigint): Lease {
    const l = this.layout;
    const address = fmt(l, addr);
    return {
      network: l.ref.network,
      subnet: l.ref.subnet,
      family: l.family,
      address,
      prefix: l.prefix,
      cidr: `${address}/${l.prefix}`,
      gateway: fmt(l, l.gateway),
      owner,
    };
  }

  /** Load the index from the store (once; concurrent callers share the load). */
  private async ensureIndex(): Promise<Index> {
    if (this.index) return this.index;
    this.loading ??= this.load().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async load(): Promise<Index> {
    const leases = await this.store.leases(this.layout.ref);
    const byAddr = new Map<bigint, string>();
    const byOwner = new Map<string, bigint>();
    for (const [text, owner] of leases) {
      const v = this.parseOwn(text);
      if (v === undefined) continue;
      byAddr.set(v, owner);
      byOwner.set(owner, v);
    }
    const runs = AddressRuns.from([...byAddr.keys(), this.layout.gateway]);
    this.index = { runs, byAddr, byOwner };
    return this.index;
  }

  /** Re-read every lease from the store (e.g. after other processes released addresses). */
  async reload(): Promise<void> {
    this.index = undefined;
    await this.ensureIndex();
  }

  /** Forget the index; the next call reloads it. */
  invalidate(): void {
    this.index = undefined;
  }

  /** An address of this pool's family and subnet as a bigint, or undefined. */
  private parseOwn(text: string): bigint | undefined {
    try {
      const ip = parseIp(text);
      if (ip.family !== this.layout.family) return undefined;
      if (ip.value < this.layout.cidr.network || ip.value > this.layout.lastAddress) return undefined;
      return ip.value;
    } catch {
      return undefined;
    }
  }

  /**
   * Give `owner` (a VM ID) an address: the static one asked for, or the next free one after the cursor.
   * Idempotent: an owner that already holds an address in this pool gets it back. Throws
   * ERR_IPAM_EXHAUSTED (nothing claimed, cursor unchanged) or ERR_IPAM_CONFLICT.
   */
  async allocate(owner: string, options: AllocateOptions = {}): Promise<Lease> {
    return (await this.allocateDetailed(owner, options)).lease;
  }

  /** allocate(), also saying whether the lease is new (false: the owner already held it). */
  allocateDetailed(
    owner: string,
    options: AllocateOptions = {},
  ): Promise<{ lease: Lease; created: boolean }> {
    validateVmId(owner);
    const running = this.inflight.get(owner);
    if (running) return running.then((r) => ({ ...r, created: false }));
    const p = this.allocateNow(owner, options).finally(() => this.inflight.delete(owner));
    this.inflight.set(owner, p);
    return p;
  }

  private async allocateNow(
    owner: string,
    options: AllocateOptions,
  ): Promise<{ lease: Lease; created: boolean }> {
    const wanted = options.address === undefined ? undefined : this.checkStatic(options.address);
    if (options.fresh) await this.reload();
    let idx = await this.ensureIndex();
    const held = await this.heldBy(idx, owner);
    if (held !== undefined) {
      if (wanted !== undefined && wanted !== held) {
        throw this.conflict(`${owner} already holds ${fmt(this.layout, held)} in ${this.layout.ref.subnet}`, {
          address: options.address,
          held: fmt(this.layout, held),
        });
      }
      return { lease: this.lease(owner, held), created: false };
    }
    if (wanted !== undefined) return { lease: await this.claimStatic(owner, wanted), created: true };

    const { rangeStart: lo, rangeEnd: hi } = this.layout;
    for (let reloaded = false; ; reloaded = true) {
      const cursor = this.parseOwn((await this.store.getCursor(this.layout.ref)) ?? '');
      let from = cursor === undefined || cursor < lo || cursor >= hi ? lo : cursor + 1n;
      for (;;) {
        idx = this.index ?? (await this.ensureIndex());
        const cand =
          idx.runs.nextFree(from, hi) ?? (from > lo ? idx.runs.nextFree(lo, from - 1n) : undefined);
        if (cand === undefined) break;
        idx.runs.add(cand); // provisional: concurrent calls in this process skip it
        const text = fmt(this.layout, cand);
        const provisional = idx;
        let won: boolean;
        try {
          won = await this.store.claim(this.layout.ref, text, owner);
        } catch (e) {
          if (this.index === provisional) provisional.runs.delete(cand); // not if reloaded meanwhile
          throw e;
        }
        idx = this.index ?? (await this.ensureIndex());
        if (!won) {
          // Another process took it since we loaded the index: note it and move on.
          idx.runs.add(cand);
          if (!idx.byAddr.has(cand)) idx.byAddr.set(cand, '');
          from = cand >= hi ? lo : cand + 1n;
          continue;
        }
        this.noteClaimed(idx, owner, cand);
        try {
          await this.store.setCursor(this.layout.ref, text);
        } catch (e) {
          await this.undoClaim(owner, cand);
          throw e;
        }
        return { lease: this.lease(owner, cand), created: true };
      }
      if (reloaded) break;
      await this.reload(); // maybe other processes released addresses we still think taken
    }
    throw new TapnetError(
      'ERR_IPAM_EXHAUSTED',
      `no free address in ${this.layout.ref.subnet} (network ${this.layout.ref.network}, ${this.layout.dynamicSize} addresses)`,
      {
        details: {
          network: this.layout.ref.network,
          subnet: this.layout.ref.subnet,
          size: String(this.layout.dynamicSize),
        },
      },
    );
  }

  /** The address `owner` holds according to the index, confirmed by the store; undefined if none. */
  private async heldBy(idx: Index, owner: string): Promise<bigint | undefined> {
    const v = idx.byOwner.get(owner);
    if (v === undefined) return undefined;
    if ((await this.store.ownerOf(this.layout.ref, fmt(this.layout, v))) === owner) return v;
    this.noteFreed(idx, owner, v); // released by another process meanwhile
    return undefined;
  }

  private conflict(message: string, details: Record<string, unknown>): TapnetError {
    return new TapnetError('ERR_IPAM_CONFLICT', message, {
      details: { network: this.layout.ref.network, subnet: this.layout.ref.subnet, ...details },
    });
  }

  /** Parse a static request and check it may be leased at all. */
  private checkStatic(address: string): bigint {
    const ip = parseIp(address, 'static address');
    const l = this.layout;
    const where = `${l.ref.subnet} (network ${l.ref.network})`;
    if (ip.family !== l.family)
      throw this.conflict(`${address} is not an IPv${l.family} address of ${where}`, { address });
    if (ip.value < l.cidr.network || ip.value > l.lastAddress) {
      throw this.conflict(`${address} is outside ${where}`, { address });
    }
    if (ip.value === l.gateway) throw this.conflict(`${address} is the gateway of ${where}`, { address });
    if (ip.value < l.firstHost || ip.value > l.lastHost) {
      throw this.conflict(`${address} is a reserved address of ${where} (network, broadcast or anycast)`, {
        address,
      });
    }
    return ip.value;
  }

  private async claimStatic(owner: string, v: bigint): Promise<Lease> {
    const text = fmt(this.layout, v);
    let idx = await this.ensureIndex();
    const wasTaken = idx.runs.has(v);
    idx.runs.add(v);
    const provisional = idx;
    let won: boolean;
    try {
      won = await this.store.claim(this.layout.ref, text, owner);
    } catch (e) {
      if (!wasTaken && this.index === provisional) provisional.runs.delete(v);
      throw e;
    }
    idx = this.index ?? (await this.ensureIndex());
    if (!won) {
      const holder = (await this.store.ownerOf(this.layout.ref, text)) ?? '';
      idx.runs.add(v);
      idx.byAddr.set(v, holder);
      throw this.conflict(`${text} is already leased${holder ? ` to ${holder}` : ''}`, {
        address: text,
        owner: holder,
      });
    }
    this.noteClaimed(idx, owner, v);
    return this.lease(owner, v);
  }

  private noteClaimed(idx: Index, owner: string, v: bigint): void {
    idx.runs.add(v);
    idx.byAddr.set(v, owner);
    idx.byOwner.set(owner, v);
  }

  private noteFreed(idx: Index, owner: string, v: bigint): void {
    if (idx.byOwner.get(owner) === v) idx.byOwner.delete(owner);
    idx.byAddr.delete(v);
    if (v !== this.layout.gateway) idx.runs.delete(v);
  }

  private async undoClaim(owner: string, v: bigint): Promise<void> {
    try {
      await this.store.release(this.layout.ref, fmt(this.layout, v), owner);
    } finally {
      if (this.index) this.noteFreed(this.index, owner, v);
    }
  }

  /**
   * Release `owner`'s lease: the one at `address` (as the VM's record says), else the one this process's
   * index knows of; `fresh` re-reads the store first, to find a lease another process made. Returns
   * true when a lease was removed, false when there was none (teardown can retry freely). Call while
   * holding the owner's VM lock.
   */
  async release(owner: string, options: ReleaseOptions = {}): Promise<boolean> {
    validateVmId(owner);
    const { address } = options;
    if (options.fresh) await this.reload();
    let idx = await this.ensureIndex();
    let v: bigint | undefined;
    if (address !== undefined) {
      const ip = parseIp(address, 'address');
      if (
        ip.family !== this.layout.family ||
        ip.value < this.layout.cidr.network ||
        ip.value > this.layout.lastAddress
      ) {
        return false; // not of this pool: it cannot hold a lease here
      }
      v = ip.value;
    } else {
      v = idx.byOwner.get(owner);
      if (v === undefined) return false;
    }
    const text = fmt(this.layout, v);
    const released = await this.store.release(this.layout.ref, text, owner);
    idx = this.index ?? (await this.ensureIndex());
    const holder = released ? undefined : await this.store.ownerOf(this.layout.ref, text);
    if (holder === undefined) this.noteFreed(idx, owner, v);
    else {
      if (idx.byOwner.get(owner) === v) idx.byOwner.delete(owner);
      idx.byAddr.set(v, holder);
      idx.runs.add(v);
    }
    return released;
  }

  /** The lease `owner` holds in this pool, or undefined (`fresh`: re-read the store first). */
  async leaseOf(owner: string, options: { fresh?: boolean } = {}): Promise<Lease | undefined> {
    validateVmId(owner);
    if (options.fresh) await this.reload();
    const v = await this.heldBy(await this.ensureIndex(), owner);
    return v === undefined ? undefined : this.lease(owner, v);
  }

  /** Usage of the pool, from the index (no store round trip after the first load). */
  async stats(): Promise<PoolStats> {
    const idx = await this.ensureIndex();
    const { rangeStart, rangeEnd, gateway } = this.layout;
    const gwInRange = gateway >= rangeStart && gateway <= rangeEnd ? 1n : 0n;
    return {
      network: this.layout.ref.network,
      subnet: this.layout.ref.subnet,
      size: this.layout.dynamicSize,
      used: idx.runs.countIn(rangeStart, rangeEnd) - gwInRange,
      leases: idx.byAddr.size,
    };
  }
}
