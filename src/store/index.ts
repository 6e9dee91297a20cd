/** Durable state: the store interfaces and the local-disk implementation. */
export { FileLeaseStore } from './leases.js';
export { LocalStore, type LocalStoreOptions, openLocalStore } from './local.js';
export { LocalLockService, withLock } from './locks.js';
export { KeyedMutex } from './mutex.js';
export { BASIC_SCHEMA, FileRecordStore } from './records.js';
export { DEFAULT_STATE_DIR, LAYOUT_FILE, openStateDir, STORE_LAYOUT, StateDir } from './statedir.js';
export * from './types.js';
