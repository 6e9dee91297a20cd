/**
 * An in-process async mutex per key: callers for the same key run one after another, in arrival order;
 * different keys never wait for each other. Waiting honours an AbortSignal and a timeout. Pure.
 */
import { TapnetError } from '../errors.js';

interface Waiter {
  grant: () => void;
}

interface Entry {
  waiters: Waiter[];
}

/** Options while waiting for a key. */
export interface WaitOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** For error messages: what is being waited for. */
  what?: string;
}

/** The error for an aborted wait (ERR_ABORTED, keeping the signal's reason as cause). */
export function abortedError(what: string, signal: AbortSignal): TapnetError {
  return new TapnetError('ERR_ABORTED', `aborted while waiting for ${what}`, {
    cause: signal.reason,
    details: { what },
  });
}

/** The error for a wait that ran out of time. */
export function timeoutError(what: string, timeoutMs: number): TapnetError {
  return new TapnetError('ERR_TIMEOUT', `gave up waiting for ${what} after ${timeoutMs} ms`, {
    details: { what, timeoutMs },
  });
}

/** Per-key FIFO mutex. acquire() resolves to a release function (idempotent). */
export class KeyedMutex {
  private readonly entries = new Map<string, Entry>();

  /** Number of keys currently held (for tests and diagnostics). */
  get size(): number {
    return this.entries.size;
  }

  /** True when `key` is held by someone in this process. */
  isHeld(key: string): boolean {
    return this.entries.has(key);
  }

  /** Wait for `key`; resolves to its release function. Rejects with ERR_ABORTED / ERR_TIMEOUT. */
  acquire(key: string, options: WaitOptions = {}): Promise<() => void> {
    const what = options.what ?? key;
    const { signal, timeoutMs } = options;
    if (signal?.aborted) return Promise.reject(abortedError(what, signal));
    const entry = this.entries.get(key);
    if (!entry) {
      this.entries.set(key, { waiters: [] });
      return Promise.resolve(this.releaser(key));
    }
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const leave = (err: TapnetError): void => {
        const i = entry.waiters.indexOf(waiter);
        if (i >= 0) entry.waiters.splice(i, 1);
        cleanup();
        reject(err);
      };
      const onAbort = (): void => leave(abortedError(what, signal!));
      const waiter: Waiter = {
        grant: () => {
          cleanup();
          resolve(this.releaser(key));
        },
      };
      entry.waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) timer = setTimeout(() => leave(timeoutError(what, timeoutMs)), timeoutMs);
    });
  }

  private releaser(key: string): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const entry = this.entries.get(key);
      if (!entry) return;
      const next = entry.waiters.shift();
      if (next) next.grant();
      else this.entries.delete(key);
    };
  }
}
