/**
 * A process's etcd session: one lease, kept alive by the process. Keys attached to it (the host's
 * `alive` key, lock waiters) vanish when the process dies or is cut off for longer than the TTL — that is
 * how the cluster sees a dead host. When the lease is found expired (after a partition), the session
 * takes a new one and tells its listeners, who put their keys back.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { validateInt } from '../validate.js';
import type { EtcdClient } from './etcd-client.js';

/** Options of a session. */
export interface SessionOptions {
  /** Lease TTL in seconds (etcd raises very small values to its minimum). Default 10. */
  ttl?: number;
}

/** What a session knows about its lease. */
export type SessionState = 'alive' | 'unreachable' | 'expired' | 'closed';

/** A lease kept alive every TTL/3. */
export class EtcdSession {
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private lastOk = Date.now();
  private renewing: Promise<void> | undefined;
  private readonly listeners = new Set<(leaseId: string) => void | Promise<void>>();
  /** Times the lease was lost and replaced. */
  renewals = 0;
  /** The last keep-alive error, if the last attempt failed. */
  lastError: TapnetError | undefined;

  private constructor(
    readonly client: EtcdClient,
    private id: string,
    readonly ttl: number,
  ) {}

  /** Grant a lease and start keeping it alive. ERR_UNAVAILABLE when etcd cannot be reached. */
  static async open(client: EtcdClient, options: SessionOptions = {}): Promise<EtcdSession> {
    const ttl = validateInt(options.ttl ?? 10, 'session TTL', 1, 3600);
    const lease = await client.leaseGrant(ttl);
    const s = new EtcdSession(client, lease.id, Math.max(ttl, lease.ttl));
    s.schedule();
    return s;
  }

  /** The lease ID (decimal text). Changes when an expired lease was replaced. */
  get leaseId(): string {
    return this.id;
  }

  /** The lease ID in hex, as etcdctl prints it and as lock keys use it. */
  get leaseHex(): string {
    return BigInt(this.id).toString(16);
  }

  /** alive: renewed within the TTL; unreachable: not renewed for a TTL (it may have expired). */
  get state(): SessionState {
    if (this.closed) return 'closed';
    if (Date.now() - this.lastOk < this.ttl * 1000) return this.lastError ? 'unreachable' : 'alive';
    return 'expired';
  }

  /** Call `fn` with the new lease ID whenever the lease was replaced. Returns an unsubscribe function. */
  onRenew(fn: (leaseId: string) => void | Promise<void>): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private schedule(delayMs = (this.ttl * 1000) / 3): void {
    if (this.closed) return;
    this.timer = setTimeout(() => void this.keepAlive(), delayMs);
    this.timer.unref();
  }

  /** Renew now (also done every TTL/3 by itself). */
  async keepAlive(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    try {
      const ttl = await this.client.leaseKeepAlive(this.id);
      if (ttl > 0) {
        this.lastOk = Date.now();
        this.lastError = undefined;
      } else {
        await this.replace();
      }
      this.schedule();
    } catch (e) {
      this.lastError = isTapnetError(e) ? e : new TapnetError('ERR_UNAVAILABLE', String(e), { cause: e });
      this.schedule(Math.min(1000, (this.ttl * 1000) / 3));
    }
  }

  /** The lease is gone: take a new one and let the listeners put their keys back. */
  private replace(): Promise<void> {
    this.renewing ??= (async () => {
      const lease = await this.client.leaseGrant(this.ttl);
      this.id = lease.id;
      this.lastOk = Date.now();
      this.lastError = undefined;
      this.renewals++;
      for (const fn of this.listeners) {
        try {
          await fn(this.id);
        } catch (e) {
          this.lastError = isTapnetError(e) ? e : new TapnetError('ERR_STORE', String(e), { cause: e });
        }
      }
    })().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /**
   * Stop renewing; `revoke` (default true) also revokes the lease so its keys go at once (a clean leave).
   * Without revoke they go when the TTL runs out.
   */
  async close(options: { revoke?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (options.revoke ?? true) await this.client.leaseRevoke(this.id);
  }
}
