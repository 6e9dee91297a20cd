/**
 * The body of a compacted journal: the lines of the live entries, in seq order, copied byte for byte
 * from the current file (they keep their seq and checksum, so nothing is re-encoded and every process
 * that already has that state agrees with it). A line is copied only when it is whole, its checksum is
 * right and it is the entry's own line (same seq and op); anything else is written afresh. Pure.
 */
import { lineIsSound } from './journal-format.js';
import type { LiveEntry } from './journal-state.js';

const SEQ_PREFIX = Buffer.from('{"seq":');
const OP_TAGS = new Map<string, Buffer>();

/** `,"op":"<op>"` as bytes. */
function opTag(op: string): Buffer {
  let b = OP_TAGS.get(op);
  if (!b) {
    b = Buffer.from(`,"op":"${op}"`);
    OP_TAGS.set(op, b);
  }
  return b;
}

/** Where each line starts in `file`, by seq; -1 for a seq found on more than one line. */
function indexLines(file: Buffer): Map<number, number> {
  const at = new Map<number, number>();
  for (let start = 0; start < file.length; ) {
    const nl = file.indexOf(10, start);
    if (nl < 0) break;
    if (file.compare(SEQ_PREFIX, 0, SEQ_PREFIX.length, start, start + SEQ_PREFIX.length) === 0) {
      let seq = 0;
      let i = start + SEQ_PREFIX.length;
      for (; i < nl && i < start + 23; i++) {
        const c = file[i]!;
        if (c < 0x30 || c > 0x39) break;
        seq = seq * 10 + (c - 0x30);
      }
      if (file[i] === 0x2c) at.set(seq, at.has(seq) ? -1 : start);
    }
    start = nl + 1;
  }
  return at;
}

/** The lines (newline included) of `entries`, sorted by seq, copied from `file` where possible. */
export function compactedLines(file: Buffer, entries: LiveEntry[]): { lines: Buffer[]; copied: number } {
  const index = indexLines(file);
  entries.sort((a, b) => a.seq - b.seq);
  const lines: Buffer[] = [];
  let copied = 0;
  for (const e of entries) {
    const start = e.seq > 0 ? (index.get(e.seq) ?? -1) : -1; // seq 0: an entry without a line of its own
    if (start >= 0) {
      const end = file.indexOf(10, start);
      const op = opTag(e.op);
      const opAt = start + SEQ_PREFIX.length + String(e.seq).length;
      if (file.compare(op, 0, op.length, opAt, opAt + op.length) === 0 && lineIsSound(file, start, end)) {
        lines.push(file.subarray(start, end + 1));
        copied++;
        continue;
      }
    }
    lines.push(Buffer.from(e.encode(), 'utf8'));
  }
  return { lines, copied };
}
