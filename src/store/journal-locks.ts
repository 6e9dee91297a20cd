/**
 * Per-key locks over the journal: an in-process FIFO queue per key (KeyedMutex), then a `lock` line
 * appended under the journal lock when the key is free, and an `unlock` line on release. A key is free
 * when no lock line holds it or its holder is dead: the holder's process seat (journal-seats.ts) is no
 * longer flocked with its nonce, which the kernel guarantees as soon as the process dies (even SIGKILL).
 * Waiters poll with back-off, honouring an AbortSignal and a timeout. No file is created per key.
 */
import { TapnetError } from '../errors.js';
import { validateName, validateVmId } from '../validate.js';
import type { Journal } from './journal-log.js';
import { leaveSeat, type Seat, SeatProbe, takeSeat } from './journal-seats.js';
import { type LockHolder, lockKeyOf } from './journal-state.js';
import { abortedError, KeyedMutex, timeoutError } from './mutex.js';
import type { HeldLock, LockOptions, LockScope, LockService } from './types.js';

const sleep = (ms: number, signal: AbortSignal | undefined): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

/** LockService over a journal. */
export class JournalLockService implements LockService {
  private readonly mutex = new KeyedMutex();
  private readonly probe: SeatProbe;
  private seat: Seat | undefined;
  private counter = 0;
  /** Locks this process holds: key → acquisition number, and the handles (for close()). */
  private readonly mine = new Map<string, number>();
  private readonly handles = new Set<HeldLock>();

  constructor(private readonly journal: Journal) {
    this.probe = new SeatProbe(journal.dir);
    journal.lockAlive = (h) => this.alive(h);
  }

  /**
   * Wait for the lock of one VM (scope 'vm', a VM ID) or one network (scope 'network', a network name).
   * Not re-entrant. Rejects with ERR_ABORTED / ERR_TIMEOUT, and releases nothing it did not take.
   */
  async acquire(scope: LockScope, name: string, options: LockOptions = {}): Promise<HeldLock> {
    if (scope === 'vm') validateVmId(name);
    else if (scope === 'network') validateName(name, 'network name');
    else throw new TapnetError('ERR_INVALID_ARGUMENT', `unknown lock scope ${JSON.stringify(scope)}`);
    const key = lockKeyOf(scope, name);
    const what = `the ${scope} lock of ${name}`;
    const releaseLocal = await this.mutex.acquire(key, { ...options, what });
    let n: number;
    try {
      n = await this.take(scope, name, key, options, what);
    } catch (e) {
      releaseLocal();
      throw e;
    }
    this.mine.set(key, n);
    let held = true;
    const lock: HeldLock = {
      scope,
      name,
      release: () => {
        if (!held) return;
        held = false;
        this.handles.delete(lock);
        this.mine.delete(key);
        this.untake(scope, name, n);
        releaseLocal();
      },
    };
    this.handles.add(lock);
    return lock;
  }

  /** Is the holder of a lock line alive? Ours: while we hold that acquisition. Others: by their seat. */
  alive(h: LockHolder): boolean {
    if (this.seat && h.seat === this.seat.index && h.nonce === this.seat.nonce) {
      return this.mine.get(lockKeyOf(h.scope, h.name)) === h.n;
    }
    return this.probe.isAlive(h.seat, h.nonce, this.seat);
  }

  /** Append our lock line once the key is free; returns the acquisition number. */
  private async take(
    scope: LockScope,
    name: string,
    key: string,
    options: LockOptions,
    what: string,
  ): Promise<number> {
    this.seat ??= takeSeat(this.journal.dir);
    const seat = this.seat;
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    let delay = 1;
    for (let first = true; ; first = false) {
      if (options.signal?.aborted) throw abortedError(what, options.signal);
      let looksFree = first;
      if (!first) {
        this.journal.refresh(); // poll without the journal lock while the holder lives
        const h = this.journal.state.locks.get(key);
        looksFree = !h || !this.alive(h);
      }
      if (looksFree) {
        const n = ++this.counter;
        const got = this.journal.write((state) => {
          const h = state.locks.get(key);
          if (h && this.alive(h)) return { result: false };
          return {
            entries: [{ op: 'lock', scope, name, seat: seat.index, nonce: seat.nonce, n, pid: process.pid }],
            result: true,
          };
        });
        if (got) return n;
      }
      if (deadline !== undefined && Date.now() >= deadline) throw timeoutError(what, options.timeoutMs!);
      let wait = delay + Math.random() * delay;
      if (deadline !== undefined) wait = Math.max(0, Math.min(wait, deadline - Date.now()));
      await sleep(wait, options.signal);
      delay = Math.min(delay * 2, 25);
    }
  }

  /**
   * The unlock line goes out with this process's next write, or on the next turn of the event loop: a
   * waiter in this process is let in at once (the KeyedMutex), one in another process a moment later.
   */
  private untake(scope: LockScope, name: string, n: number): void {
    const seat = this.seat!;
    this.journal.lazy({ op: 'unlock', scope, name, nonce: seat.nonce, n });
  }

  /** Release every lock still held, and leave the seat. */
  close(): void {
    for (const h of [...this.handles]) h.release();
    if (this.seat) leaveSeat(this.seat);
    this.seat = undefined;
    this.probe.close();
  }
}
