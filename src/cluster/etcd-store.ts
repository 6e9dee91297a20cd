/**
 * The etcd state store: records, leases and locks of one host in a shared etcd, with the same shape as
 * the local stores (`{records, leases, locks, sync, close}`), so a NetworkManager takes it through
 * `ManagerOptions.store`. See keys.ts for the layout, etcd-leases.ts / etcd-records.ts / etcd-locks.ts
 * for how each interface's contract is kept with etcd transactions.
 */
import type { LockService, RecordSchema, StoredRecord } from '../store/types.js';
import { EtcdClient, type EtcdClientOptions } from './etcd-client.js';
import { EtcdLeaseStore } from './etcd-leases.js';
import { EtcdLockService } from './etcd-locks.js';
import { EtcdRecordStore, type OverlayPublisher } from './etcd-records.js';
import { ClusterKeys, validateHostName } from './keys.js';
import { RecordCache } from './record-cache.js';
import { EtcdSession } from './session.js';

export { EtcdLeaseStore } from './etcd-leases.js';
export { EtcdLockService } from './etcd-locks.js';
export { EtcdRecordStore, type OverlayPublication, type OverlayPublisher } from './etcd-records.js';

/** Options of an EtcdStore over a client and session the caller owns. */
export interface EtcdStoreOptions<T extends StoredRecord> {
  client: EtcdClient;
  /** This process's session (its lease carries the lock waiters). */
  session: EtcdSession;
  /** This host's name in the cluster (records and leases are written for it). */
  host: string;
  /** Key prefix. Default /tapnet. */
  prefix?: string;
  /** The caller's record schema (the manager's VM_RECORD_SCHEMA). */
  schema?: RecordSchema<T>;
  /** What each record publishes to the overlay (see overlay.ts: vmOverlayPublisher). */
  publish?: OverlayPublisher<T>;
  /** Use this lock service instead of etcd locks (e.g. the local flock one: locks are per host anyway). */
  locks?: LockService;
}

/** Records, leases and locks of one host in etcd. */
export class EtcdStore<T extends StoredRecord = StoredRecord> {
  readonly keys: ClusterKeys;
  readonly host: string;
  readonly records: EtcdRecordStore<T>;
  readonly leases: EtcdLeaseStore;
  readonly locks: LockService;
  readonly client: EtcdClient;
  readonly session: EtcdSession;
  private closed = false;

  constructor(
    options: EtcdStoreOptions<T>,
    private readonly owned: boolean = false,
  ) {
    this.host = validateHostName(options.host);
    this.keys = new ClusterKeys(options.prefix);
    this.client = options.client;
    this.session = options.session;
    // With etcd locks, a VM lock's acquisition also reads the VM's record (see record-cache.ts).
    const cache = options.locks ? undefined : new RecordCache();
    this.records = new EtcdRecordStore<T>(
      this.client,
      this.keys,
      this.host,
      options.schema,
      options.publish,
      cache,
    );
    this.leases = new EtcdLeaseStore(this.client, this.keys, this.host);
    this.locks = options.locks ?? new EtcdLockService(this.client, this.keys, this.host, this.session, cache);
  }

  /** Where the state lives, for humans: `etcd+http://host:port/tapnet (host NAME)`. */
  get dir(): string {
    return `etcd+${this.client.endpoint.origin}${this.keys.prefix} (host ${this.host})`;
  }

  /**
   * Every acknowledged etcd write is already durable (committed by a quorum, in its WAL); this only
   * waits for the round-robin cursors written behind allocations.
   */
  sync(): Promise<void> {
    return this.leases.flush();
  }

  /**
   * Close. A store opened by openEtcdStore() also ends its session (without revoking the lease: the
   * host's keys stay until the TTL runs out, as for a crash; use membership leave() for a clean exit)
   * and its client.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.owned) return;
    const client = this.client;
    void this.leases
      .flush()
      .then(() => this.session.close({ revoke: false }))
      .finally(() => client.close());
  }
}

/** Options of openEtcdStore(). */
export interface OpenEtcdStoreOptions<T extends StoredRecord> extends EtcdClientOptions {
  host: string;
  prefix?: string;
  /** Session lease TTL in seconds. Default 10. */
  ttl?: number;
  schema?: RecordSchema<T>;
  publish?: OverlayPublisher<T>;
  locks?: LockService;
}

/**
 * Connect to etcd, open a session for this process and return the store (which owns both). Fails with
 * ERR_UNAVAILABLE when etcd cannot be reached within the retry budget.
 */
export async function openEtcdStore<T extends StoredRecord = StoredRecord>(
  options: OpenEtcdStoreOptions<T>,
): Promise<EtcdStore<T>> {
  validateHostName(options.host);
  new ClusterKeys(options.prefix);
  const client = new EtcdClient(options);
  try {
    const session = await EtcdSession.open(client, options.ttl !== undefined ? { ttl: options.ttl } : {});
    return new EtcdStore<T>(
      {
        client,
        session,
        host: options.host,
        ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
        ...(options.schema ? { schema: options.schema } : {}),
        ...(options.publish ? { publish: options.publish } : {}),
        ...(options.locks ? { locks: options.locks } : {}),
      },
      true,
    );
  } catch (e) {
    client.close();
    throw e;
  }
}
