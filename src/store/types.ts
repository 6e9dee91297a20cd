/**
 * The store interfaces: what the IPAM and the NetworkManager need from durable state, written so that
 * the local-disk implementation (src/store/local.ts) and a later cluster backend (etcd, with
 * compare-and-swap transactions and leases) are interchangeable. Types only; no I/O here.
 */
import type { TapnetError } from '../errors.js';

/** Lifecycle of a VM record: intent ('creating') before kernel work, 'ready' after, 'releasing' on the way out. */
export type RecordState = 'creating' | 'ready' | 'releasing';

export const RECORD_STATES: readonly RecordState[] = ['creating', 'ready', 'releasing'];

/**
 * The fields the store itself relies on. A caller's record type extends this with its own
 * JSON-serialisable fields (the manager's VmRecord: interfaces, addresses, MAC, …).
 */
export interface StoredRecord {
  /** The VM ID (validateVmId); also the record's key. */
  vmId: string;
  /** Schema version of the record, set by the store from RecordSchema.version on every write. */
  version: number;
  /** 1 on the first write, +1 on every write: the compare-and-swap token. Set by the store. */
  generation: number;
  state: RecordState;
  /** ISO time of the last write. Set by the store; for humans. */
  updatedAt?: string;
}

/** What a caller hands to put(): its record without the store-managed fields. */
export type RecordInput<T extends StoredRecord> = Omit<T, 'version' | 'generation' | 'updatedAt'> & {
  version?: number;
  generation?: number;
  updatedAt?: string;
};

/**
 * How the caller's records are versioned and checked. Reading a record whose version is newer than
 * `version` is an ERR_STORE error (a newer tapnet wrote it: never touched, never quarantined); an older
 * one goes through `migrate` (in memory; it is written back in the new version on the next put).
 */
export interface RecordSchema<T extends StoredRecord> {
  /** The schema version this code writes. Integer ≥ 1. */
  version: number;
  /** Turn a record of version `from` (< version) into the current shape. Throw to refuse. */
  migrate?: (raw: Record<string, unknown>, from: number) => Record<string, unknown>;
  /**
   * Check a decoded (and migrated) record and return it typed; throw (any error) when it does not fit.
   * The envelope (vmId, version, generation, state) is already checked by the store.
   */
  validate?: (raw: Record<string, unknown>) => T;
}

/** Options for a conditional write or delete (compare-and-swap on `generation`). */
export interface CasOptions {
  /**
   * The generation the caller last read. The write fails with ERR_CONFLICT when the stored generation
   * differs; 0 means "must not exist yet". Omitted: unconditional.
   */
  expectedGeneration?: number;
}

/** A record that could not be read, as reported by list(). */
export interface RecordProblem {
  vmId: string;
  /** ERR_STORE_CORRUPT (quarantined) or ERR_STORE (e.g. a newer schema version). */
  error: TapnetError;
}

/**
 * Durable per-VM records.
 *
 * Contract (any backend):
 * - put() is atomic: a reader sees the old record or the new one, never a mix; it returns the record
 *   as stored, with `generation` incremented and `version` set.
 * - With `expectedGeneration`, put()/delete() are compare-and-swap: ERR_CONFLICT if the generation moved.
 *   Local backend: atomic against every writer that holds the VM's lock (see LockService), which all
 *   tapnet writers do; etcd backend: a `Txn(If(mod_revision == …)).Then(Put)`.
 * - get() of an unreadable record quarantines it (renamed aside, so the next get() sees no record) and
 *   throws ERR_STORE_CORRUPT with details { vmId, path, quarantinedTo, reason }.
 * - list() never throws for one bad record: it returns the good ones and reports the others, including
 *   records quarantined earlier for which no new record exists (their VM may still run: reconcile must
 *   not free its addresses until a human restores or deletes the quarantined file).
 */
export interface VmRecordStore<T extends StoredRecord> {
  /** The record of `vmId`, or undefined when there is none. */
  get(vmId: string): Promise<T | undefined>;
  /** Write `record` atomically; returns it as stored (new generation). */
  put(record: RecordInput<T>, options?: CasOptions): Promise<T>;
  /** Remove the record; false when there was none. */
  delete(vmId: string, options?: CasOptions): Promise<boolean>;
  /** Every readable record, and what could not be read. */
  list(): Promise<{ records: T[]; problems: RecordProblem[] }>;
}

/** An address pool: the network's name and the pool's canonical CIDR (`198.18.0.0/22`, `fd00::/64`). */
export interface PoolRef {
  network: string;
  subnet: string;
}

/**
 * Address leases, the IPAM's only dependency. Addresses are canonical text (formatIp); owners are VM IDs.
 *
 * Contract (any backend):
 * - claim() is the arbiter: of several concurrent claims of one address (any process, any host sharing
 *   the backend) exactly one returns true. Claiming an address the owner already holds returns true
 *   (idempotent). Local: a symlink created with symlink(2), which fails with EEXIST; etcd:
 *   `Txn(If(create_revision(key) == 0)).Then(Put(key, owner))`.
 * - release() removes the lease only if `owner` holds it; returns whether it did. Callers release a VM's
 *   leases while holding that VM's lock, so the owner check cannot race with a re-claim.
 * - leases() reads the backend afresh (it is for loading an index and for reconcile, not the hot path).
 * - The cursor is the last address handed out in the pool (CNI host-local's last_reserved_ip): a hint
 *   for round-robin, last writer wins; it never decides who owns an address.
 */
export interface LeaseStore {
  /** Claim `addr` in `pool` for `owner`; true when `owner` now holds it, false when someone else does. */
  claim(pool: PoolRef, addr: string, owner: string): Promise<boolean>;
  /** Release `addr` if `owner` holds it; true when a lease was removed. */
  release(pool: PoolRef, addr: string, owner: string): Promise<boolean>;
  /** The owner of `addr`, or undefined when it is free. */
  ownerOf(pool: PoolRef, addr: string): Promise<string | undefined>;
  /** Every lease of the pool: address → owner. */
  leases(pool: PoolRef): Promise<Map<string, string>>;
  /** Every pool that has state in the backend (for reconcile after a network was removed). */
  pools(): Promise<PoolRef[]>;
  /** The last address handed out in `pool`, or undefined. */
  getCursor(pool: PoolRef): Promise<string | undefined>;
  /** Record `addr` as the last address handed out in `pool`. */
  setCursor(pool: PoolRef, addr: string): Promise<void>;
}

/** Options while waiting for a lock. */
export interface LockOptions {
  /** Abort the wait: rejects with ERR_ABORTED. */
  signal?: AbortSignal;
  /** Give up after this many milliseconds: rejects with ERR_TIMEOUT. */
  timeoutMs?: number;
}

/** What a lock protects: one VM, or one network (e.g. while its bridge is created). */
export type LockScope = 'vm' | 'network';

/** A held lock. release() is idempotent. */
export interface HeldLock {
  readonly scope: LockScope;
  readonly name: string;
  /**
   * Let the next waiter in. `forget`: the key will not be used again soon (its VM was deleted), so the
   * backend may drop what it keeps per key (the local backend removes the lock file).
   */
  release(options?: { forget?: boolean }): void;
}

/**
 * Per-key mutual exclusion across every process using the same store. Keys are independent: there is
 * no global lock, so work on one VM never waits for another. Not re-entrant: a holder must not acquire
 * the same key again. A process that dies (even SIGKILL) releases its locks.
 * Local: an in-process queue per key plus flock(2) on a per-key file; etcd: the concurrency/lock recipe
 * on a session lease.
 */
export interface LockService {
  acquire(scope: LockScope, name: string, options?: LockOptions): Promise<HeldLock>;
}
