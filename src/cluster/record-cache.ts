/**
 * What this process knows for certain about the records whose VM lock it holds. Every writer of a record
 * holds its VM's lock, so while we hold it the record changes only through us: the lock's acquisition
 * transaction reads the record in the same revision (a free prefetch), our own writes keep the copy
 * current, and the copy is dropped when the lock is released. Saves the record read of every ensure and
 * release (one etcd round trip each).
 */
import type { KeyValue } from './etcd-client.js';

/** Record copies by VM ID, valid only while this process holds the VM's lock. */
export class RecordCache {
  private readonly map = new Map<string, KeyValue | null>();

  /** The copy (null: known absent), or undefined when we know nothing. */
  get(vmId: string): KeyValue | null | undefined {
    return this.map.get(vmId);
  }

  /** Remember what the lock's transaction read (null: no record). */
  set(vmId: string, kv: KeyValue | null): void {
    this.map.set(vmId, kv);
  }

  /** After our own write: keep the copy current, if we keep one. */
  update(vmId: string, kv: KeyValue | null): void {
    if (this.map.has(vmId)) this.map.set(vmId, kv);
  }

  /** Forget (the lock is released, or a write's outcome is unknown). */
  drop(vmId: string): void {
    this.map.delete(vmId);
  }

  get size(): number {
    return this.map.size;
  }
}
