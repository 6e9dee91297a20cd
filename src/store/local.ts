/**
 * The local-disk state store: records, leases and locks over one state directory (default
 * /var/lib/tapnet). Layout:
 *
 *   tapnet-store.json                         layout version
 *   vms/<vmId>.json                           one record per VM (pretty JSON)
 *   ipam/<network>/<addr>_<prefix>/leases/*   one symlink per leased address → owner
 *   ipam/<network>/<addr>_<prefix>/cursor     last address handed out (a hint, rewritten in place)
 *   locks/{vm,network}/<name>.lock            flock(2) targets, removed by release({ forget: true })
 *   quarantine/                               unreadable files, moved aside for a human
 */
import { FileLeaseStore } from './leases.js';
import { LocalLockService } from './locks.js';
import { FileRecordStore } from './records.js';
import { DEFAULT_STATE_DIR, openStateDir, type StateDir } from './statedir.js';
import type { RecordSchema, StoredRecord } from './types.js';

export interface LocalStoreOptions<T extends StoredRecord> {
  /** The state directory. Default /var/lib/tapnet. */
  dir?: string;
  /** The caller's record schema (version, migrations, validation). Default: version 1, envelope only. */
  schema?: RecordSchema<T>;
}

/** Records, leases and locks over one local state directory. */
export class LocalStore<T extends StoredRecord = StoredRecord> {
  readonly records: FileRecordStore<T>;
  readonly leases: FileLeaseStore;
  readonly locks: LocalLockService;

  constructor(
    readonly stateDir: StateDir,
    schema?: RecordSchema<T>,
  ) {
    this.records = new FileRecordStore<T>(stateDir, schema);
    this.leases = new FileLeaseStore(stateDir);
    this.locks = new LocalLockService(stateDir);
  }

  /** Absolute path of the state directory. */
  get dir(): string {
    return this.stateDir.root;
  }

  /**
   * Make every write made through this store so far durable (fsync of the files and directories). The
   * hot path never does this; call it when a caller needs the state to survive a power loss.
   */
  sync(): Promise<void> {
    return this.stateDir.sync();
  }

  /** Close the files the store keeps open (the IPAM cursors). Using the store again reopens them. */
  close(): void {
    this.leases.close();
  }

  /** Remove temp files (older than a minute) that a crashed writer left behind. Returns how many. */
  async cleanTemp(maxAgeMs?: number): Promise<number> {
    let n = this.stateDir.cleanTemp(this.records.directory, maxAgeMs);
    for (const pool of await this.leases.pools())
      n += this.stateDir.cleanTemp(this.leases.poolDir(pool), maxAgeMs);
    return n;
  }
}

/**
 * Open (creating if needed) the local store in `options.dir` (default /var/lib/tapnet): checks the
 * layout version and removes crash leftovers. Cheap; one per process is enough.
 */
export async function openLocalStore<T extends StoredRecord = StoredRecord>(
  options: LocalStoreOptions<T> = {},
): Promise<LocalStore<T>> {
  const store = new LocalStore<T>(openStateDir(options.dir ?? DEFAULT_STATE_DIR), options.schema);
  await store.cleanTemp();
  return store;
}
