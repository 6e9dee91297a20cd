/**
 * Per-key locks in etcd: the recipe of etcd's concurrency.Mutex on the process's session lease. Each
 * waiter puts `locks/<host>/<scope>/<name>/<leaseHex>` on its lease; the waiter whose key has the lowest
 * create revision holds the lock; the others watch the key just before theirs until it is deleted. A
 * process that dies loses its keys when its lease expires (after the session TTL).
 *
 * In front of etcd sits an in-process queue per key, so a process has at most one waiter per key in
 * etcd and its own callers never race each other through the network. Locks are per host: what they
 * protect (a VM's record and leases, a network's bridge) belongs to one host; cross-host arbitration
 * is done by the transactions themselves.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { abortedError, KeyedMutex, timeoutError } from '../store/mutex.js';
import type { HeldLock, LockOptions, LockScope, LockService } from '../store/types.js';
import { validateName, validateVmId } from '../validate.js';
import type { EtcdClient, KeyValue } from './etcd-client.js';
import type { ClusterKeys } from './keys.js';
import type { RecordCache } from './record-cache.js';
import type { EtcdSession } from './session.js';

/** LockService over etcd for one host's processes. */
export class EtcdLockService implements LockService {
  private readonly local = new KeyedMutex();
  /** Locks held now by this process (for status and tests). */
  held = 0;

  constructor(
    private readonly client: EtcdClient,
    private readonly keys: ClusterKeys,
    readonly host: string,
    private readonly session: EtcdSession,
    /** Where to leave the record read with a VM lock (shared with EtcdRecordStore). */
    private readonly cache?: RecordCache,
  ) {
    keys.locksDir(host);
  }

  async acquire(scope: LockScope, name: string, options: LockOptions = {}): Promise<HeldLock> {
    if (scope === 'vm') validateVmId(name);
    else if (scope === 'network') validateName(name, 'network name');
    else
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `lock scope must be vm or network, not ${JSON.stringify(scope)}`,
      );
    const what = `${scope} lock ${name}`;
    const started = Date.now();
    const releaseLocal = await this.local.acquire(`${scope}/${name}`, { ...options, what });
    const dir = this.keys.lockDir(this.host, scope, name);
    const myKey = `${dir}${this.session.leaseHex}`;
    let key = myKey;
    const prefetch = scope === 'vm' && this.cache ? this.keys.record(this.host, name) : undefined;
    try {
      let got: { immediate: boolean; record?: KeyValue | null };
      try {
        got = await this.lockInEtcd(dir, myKey, what, started, options, prefetch);
      } catch (e) {
        // Our session lease expired (a long stall or partition): take a new one and try once more.
        if (!isTapnetError(e, 'ERR_STORE') || e.details.grpcCode !== 5) throw e;
        await this.session.keepAlive();
        key = `${dir}${this.session.leaseHex}`;
        got = await this.lockInEtcd(dir, key, what, started, options, prefetch);
      }
      if (prefetch && got.immediate && got.record !== undefined) this.cache!.set(name, got.record);
    } catch (e) {
      // Leave no waiter behind (best effort: it also goes with the session lease).
      this.client.delete(key).then(releaseLocal, releaseLocal);
      throw e;
    }
    this.held++;
    let released = false;
    return {
      scope,
      name,
      release: () => {
        if (released) return;
        released = true;
        this.held--;
        if (scope === 'vm') this.cache?.drop(name);
        // The next local waiter may run only once our key is gone, or it would see our key as its own.
        this.client.delete(key).then(releaseLocal, releaseLocal);
      },
    };
  }

  private async lockInEtcd(
    dir: string,
    myKey: string,
    what: string,
    started: number,
    options: LockOptions,
    prefetch?: string,
  ): Promise<{ immediate: boolean; record?: KeyValue | null }> {
    const owner = {
      range: {
        key: dir,
        prefix: true,
        limit: 1,
        sort: { target: 'CREATE' as const, order: 'ASCEND' as const },
      },
    };
    const r = await this.client.txn(
      {
        compare: [{ key: myKey, target: 'CREATE', number: 0 }],
        success: [
          {
            put: {
              key: myKey,
              value: JSON.stringify({ pid: process.pid, host: this.host }),
              lease: this.session.leaseId,
            },
          },
          owner,
          ...(prefetch ? [{ range: { key: prefetch } }] : []),
        ],
        failure: [{ range: { key: myKey } }, owner, ...(prefetch ? [{ range: { key: prefetch } }] : [])],
      },
      { idempotent: true },
    );
    const myRev = r.succeeded ? r.revision : (r.responses[0]?.range?.kvs[0]?.createRevision ?? 0);
    if (myRev === 0)
      throw new TapnetError('ERR_STORE', `${what}: the waiter key vanished (session lease lost?)`);
    if (r.responses[1]?.range?.kvs[0]?.createRevision === myRev) {
      // Held at this revision: the record read in the same transaction is current.
      return prefetch
        ? { immediate: true, record: r.responses[2]?.range?.kvs[0] ?? null }
        : { immediate: true };
    }
    // Wait for every earlier waiter, one at a time (each watch sees the deletion of the key before ours).
    for (;;) {
      if (options.signal?.aborted) throw abortedError(what, options.signal);
      const left = options.timeoutMs === undefined ? undefined : options.timeoutMs - (Date.now() - started);
      if (left !== undefined && left <= 0) throw timeoutError(what, options.timeoutMs!);
      const before = await this.client.range(dir, {
        prefix: true,
        limit: 1,
        maxCreateRevision: myRev - 1,
        sort: { target: 'CREATE', order: 'DESCEND' },
      });
      const prev = before.kvs[0];
      if (!prev) return { immediate: false };
      await this.waitDeleted(prev.key, before.revision + 1, what, left, options.signal);
    }
  }

  /** Resolve when `key` is deleted (seen from `fromRevision`); honours the timeout and the signal. */
  private waitDeleted(
    key: string,
    fromRevision: number,
    what: string,
    timeoutMs: number | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      // Waiting on an etcd that is gone: give up after the client's retry budget, as every call does.
      let gone: NodeJS.Timeout | undefined;
      let settled = false;
      const done = (err?: TapnetError): void => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        if (gone) clearTimeout(gone);
        signal?.removeEventListener('abort', onAbort);
        w.close();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = (): void => done(abortedError(what, signal!));
      const w = this.client.watch(key, {
        startRevision: fromRevision,
        onEvents: (events) => {
          if (events.some((e) => e.type === 'delete')) done();
        },
        onState: (state, error) => {
          if (state === 'connected') {
            if (gone) clearTimeout(gone);
            gone = undefined;
            return;
          }
          gone ??= setTimeout(
            () =>
              done(
                new TapnetError('ERR_UNAVAILABLE', `${what}: etcd cannot be reached; retry later`, {
                  cause: error,
                }),
              ),
            this.client.retryBudgetMs,
          );
        },
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) timer = setTimeout(() => done(timeoutError(what, timeoutMs)), timeoutMs);
    });
  }
}
