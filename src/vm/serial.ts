/**
 * The guest's serial console as the launcher sees it: lines from QEMU's stdout, waits for a line that
 * matches, and a small command protocol with the fixture's /init (scripts/guest/init.sh): the launcher
 * writes `<id> <command>`, the guest answers with the command's output and `@@TAPNET-DONE <id> <status>`.
 */
import type { Readable, Writable } from 'node:stream';
import { invalidArgument, TapnetError } from '../errors.js';

/** What a command run in the guest returned. */
export interface GuestExecResult {
  /** The shell's exit status. */
  status: number;
  /** stdout and stderr, as printed on the console. */
  output: string;
}

interface Waiter {
  re: RegExp;
  resolve: (line: string) => void;
}

const DONE_RE = /^@@TAPNET-DONE (\d+) (\d+)\s*$/;
/** Keep at most this much console text (the tail), for error messages and debugging. */
const LOG_LIMIT = 256 * 1024;

export class SerialConsole {
  private partial = '';
  private text = '';
  private lines: string[] = [];
  private waiters: Waiter[] = [];
  private readonly taps = new Set<(line: string) => void>();
  private seq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closedReason: TapnetError | undefined;
  private closeListeners: ((e: TapnetError) => void)[] = [];

  constructor(
    input: Readable,
    private readonly output: Writable,
    private readonly onLine?: (line: string) => void,
  ) {
    input.setEncoding('utf8');
    input.on('data', (chunk: string) => this.feed(chunk));
  }

  private feed(chunk: string): void {
    this.text += chunk;
    if (this.text.length > LOG_LIMIT) this.text = this.text.slice(-LOG_LIMIT);
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const raw of parts) {
      const line = raw.replace(/\r$/, '');
      this.lines.push(line);
      if (this.lines.length > 2000) this.lines.splice(0, 1000);
      this.onLine?.(line);
      for (const t of this.taps) t(line);
      this.waiters = this.waiters.filter((w) => {
        if (!w.re.test(line)) return true;
        w.resolve(line);
        return false;
      });
    }
  }

  /** The console text so far (its last 256 KiB). */
  log(): string {
    return this.text;
  }

  /** Fail every waiter and every later call: QEMU is gone. */
  close(reason: TapnetError): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    for (const l of this.closeListeners) l(reason);
    this.closeListeners = [];
  }

  /**
   * The first line from now on that matches `re` (or, with `includePast`, one already seen). Rejects with
   * ERR_TIMEOUT after `timeoutMs`, or with the close reason when QEMU exits first.
   */
  waitForLine(re: RegExp, timeoutMs: number, includePast = false): Promise<string> {
    if (includePast) {
      const seen = this.lines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
    }
    if (this.closedReason) return Promise.reject(this.closedReason);
    return new Promise((resolve, reject) => {
      const onClose = (e: TapnetError) => {
        clearTimeout(timer);
        reject(e);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        this.closeListeners = this.closeListeners.filter((l) => l !== onClose);
        reject(
          new TapnetError('ERR_TIMEOUT', `no console line matching ${re} within ${timeoutMs} ms`, {
            details: { consoleTail: this.text.slice(-2000) },
          }),
        );
      }, timeoutMs);
      const waiter: Waiter = {
        re,
        resolve: (line) => {
          clearTimeout(timer);
          this.closeListeners = this.closeListeners.filter((l) => l !== onClose);
          resolve(line);
        },
      };
      this.waiters.push(waiter);
      this.closeListeners.push(onClose);
    });
  }

  /**
   * Run one shell command line in the guest and collect its output (commands run one at a time, in call
   * order). The command must be a single line. ERR_TIMEOUT when no answer comes within `timeoutMs`.
   */
  exec(command: string, timeoutMs = 10_000): Promise<GuestExecResult> {
    if (typeof command !== 'string' || command.trim() === '' || /[\r\n\0]/.test(command)) {
      throw invalidArgument('a guest command must be one non-empty line', { value: command });
    }
    const run = async (): Promise<GuestExecResult> => {
      const id = ++this.seq;
      const collected: string[] = [];
      const collect = (l: string): void => {
        if (!DONE_RE.test(l)) collected.push(l);
      };
      const doneRe = new RegExp(`^@@TAPNET-DONE ${id} \\d+\\s*$`);
      this.taps.add(collect);
      try {
        const done = this.waitForLine(doneRe, timeoutMs);
        this.output.write(`${id} ${command}\n`);
        const line = await done;
        const status = Number(DONE_RE.exec(line)![2]);
        // The guest prints a newline before the marker (output may not end with one): drop it.
        if (collected.at(-1) === '') collected.pop();
        return { status, output: collected.join('\n') };
      } finally {
        this.taps.delete(collect);
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }
}
