/**
 * A progress bar for batch operations, on stderr, only when stderr is a terminal (and more than one item):
 * piped or redirected output stays quiet.
 */

export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): boolean;
}

export class Progress {
  private done = 0;
  private failed = 0;
  private last = 0;
  readonly enabled: boolean;

  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly stream: ProgressStream = process.stderr,
  ) {
    this.enabled = stream.isTTY === true && total > 1;
  }

  /** One item finished (ok or not). Redraws at most every 50 ms, and at the end. */
  tick(item: string, ok = true): void {
    this.done++;
    if (!ok) this.failed++;
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 50 && this.done < this.total) return;
    this.last = now;
    const width = 30;
    const filled = Math.round((this.done / this.total) * width);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
    const fail = this.failed ? ` ${this.failed} failed` : '';
    const line = `${this.label} [${bar}] ${this.done}/${this.total}${fail} ${item}`;
    const cols = this.stream.columns && this.stream.columns > 20 ? this.stream.columns : 100;
    this.stream.write(`\r\x1b[K${line.slice(0, cols - 1)}`);
  }

  /** Clear the bar. */
  finish(): void {
    if (this.enabled) this.stream.write('\r\x1b[K');
  }
}
