/** Durable state: the store interfaces and the local-disk implementation. */

export {
  type JournalSnapshot,
  JournalStore,
  type JournalStoreOptions,
  journalSnapshot,
  type OpenStoreOptions,
  openJournalStore,
  openStore,
  STORE_BACKENDS,
  type StoreBackend,
  type StoreBackendKind,
} from './journal.js';
export { JOURNAL_FORMAT, JOURNAL_VERSION } from './journal-format.js';
export { JournalLeaseStore } from './journal-leases.js';
export { JournalLockService } from './journal-locks.js';
export { JOURNAL_FILE, Journal, type JournalOptions } from './journal-log.js';
export { JournalRecordStore } from './journal-records.js';
export { SEATS_DIR } from './journal-seats.js';
export { FileLeaseStore } from './leases.js';
export { LocalStore, type LocalStoreOptions, openLocalStore } from './local.js';
export { LocalLockService, withLock } from './locks.js';
export { KeyedMutex } from './mutex.js';
export { BASIC_SCHEMA, FileRecordStore } from './records.js';
export { DEFAULT_STATE_DIR, LAYOUT_FILE, openStateDir, STORE_LAYOUT, StateDir } from './statedir.js';
export * from './types.js';
