/**
 * The journal's line format: one JSON object per line, each carrying a sequence number and, as its last
 * field, a CRC-32 of the rest of the line, so a line cut short by a crash (kill -9 during a multi-page
 * write, ENOSPC, power loss) is recognised and skipped, and a damaged one is reported. Pure: text in,
 * entries out. Every line is valid JSON on its own, so `jq` reads the journal as it is.
 *
 *   {"seq":0,"op":"header","format":"tapnet-journal","version":1,"id":"…","created":"…",…,"ck":"…"}
 *   {"seq":7,"op":"claim","net":"n","sub":"198.18.0.0/22","addr":"198.18.0.5","owner":"vm-1","ck":"…"}
 *   {"seq":8,"op":"put","vm":"vm-1","gen":1,"ver":1,"rec":{"vmId":"vm-1",…},"ck":"…"}
 */
import zlib from 'node:zlib';

/** The `format` field of the header line. */
export const JOURNAL_FORMAT = 'tapnet-journal';

/** Version of the line format this code writes and reads. A newer one is refused. */
export const JOURNAL_VERSION = 1;

/** What a lock line names: one VM or one network (LockScope). */
export type LockKeyScope = 'vm' | 'network';

/** The first line of every journal file. */
export interface HeaderEntry {
  op: 'header';
  seq: number;
  format: string;
  version: number;
  /** Random identity of this file; a compaction writes a new file with `prev` set to the old id. */
  id: string;
  prev?: string;
  created: string;
  /** The lines right after the header that are a snapshot of the state as of `seq` (after compaction). */
  snapLines: number;
  /** Their length in bytes, so a process that already has that state can skip them. */
  snapBytes: number;
}

/** A whole VM record (its JSON text, kept verbatim). `gen`/`ver` repeat its generation and version. */
export interface PutEntry {
  op: 'put';
  seq: number;
  vm: string;
  gen: number;
  ver: number;
  recText: string;
}
export interface DelEntry {
  op: 'del';
  seq: number;
  vm: string;
}
/** A record that could not be read is set aside (kept for a human) until a new put or a resolve. */
export interface QuarantineEntry {
  op: 'quarantine';
  seq: number;
  vm: string;
  reason: string;
  text: string;
}
export interface ResolveEntry {
  op: 'resolve';
  seq: number;
  vm: string;
}
export interface ClaimEntry {
  op: 'claim';
  seq: number;
  net: string;
  sub: string;
  addr: string;
  owner: string;
}
export interface ReleaseEntry {
  op: 'release';
  seq: number;
  net: string;
  sub: string;
  addr: string;
  owner: string;
}
export interface CursorEntry {
  op: 'cursor';
  seq: number;
  net: string;
  sub: string;
  addr: string;
}
/** A VM or network lock taken by the process sitting in `seat` (see journal-seats.ts), acquisition `n`. */
export interface LockEntry {
  op: 'lock';
  seq: number;
  scope: LockKeyScope;
  name: string;
  seat: number;
  nonce: string;
  n: number;
  /** For humans only: liveness is decided by the seat, never by the pid. */
  pid: number;
}
export interface UnlockEntry {
  op: 'unlock';
  seq: number;
  scope: LockKeyScope;
  name: string;
  nonce: string;
  n: number;
}
/** Last line of a journal that is being replaced by a compacted one: readers re-open the path. */
export interface SealEntry {
  op: 'seal';
  seq: number;
}

export type JournalEntry =
  | HeaderEntry
  | PutEntry
  | DelEntry
  | QuarantineEntry
  | ResolveEntry
  | ClaimEntry
  | ReleaseEntry
  | CursorEntry
  | LockEntry
  | UnlockEntry
  | SealEntry;

/** An entry before the journal numbers it. */
export type NewEntry = DistributiveOmitSeq<JournalEntry>;
type DistributiveOmitSeq<T> = T extends unknown ? Omit<T, 'seq'> : never;

/** What one line decodes to. */
export type DecodedLine =
  | { kind: 'entry'; entry: JournalEntry }
  /** Not a whole line: a write that was cut short. Skipped silently (counted). */
  | { kind: 'torn' }
  /** A whole line whose checksum or content is wrong. `vm`: the VM it seems to be about, if readable. */
  | { kind: 'corrupt'; reason: string; vm?: string };

// ---- CRC-32 (zlib.crc32 where Node has it, ≥ 20.15; the same polynomial in JS otherwise) ----

type Crc = (data: string | Uint8Array, value?: number) => number;

let table: Int32Array | undefined;

function crc32js(data: string | Uint8Array, value = 0): number {
  if (!table) {
    table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
  }
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let crc = ~value;
  for (let i = 0; i < bytes.length; i++) crc = table[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

const crc32: Crc = (zlib as unknown as { crc32?: Crc }).crc32 ?? crc32js;
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

/** CRC-32 (IEEE) of the UTF-8 bytes of `s`, as 8 lowercase hex digits. */
export function checksum(s: string): string {
  return hex8(crc32(s));
}

/** Length of `,"ck":"xxxxxxxx"}`, the tail every line ends with. */
const CK_TAIL = 17;
const CK_OPEN = Buffer.from(',"ck":"');
const CLOSE = Buffer.from('}');

/** Turn a JSON object text (`{…}`) into a journal line with its checksum (and the newline). */
function seal(body: string): string {
  return `${body.slice(0, -1)},"ck":"${checksum(body)}"}\n`;
}

/**
 * Where the checksummed part of the line in `buf[start, end)` ends (the `,"ck":` tail starts), or -1
 * when the line does not end like a whole line.
 */
function tailAt(buf: Buffer, start: number, end: number): number {
  const at = end - CK_TAIL;
  if (at <= start || buf[start] !== 0x7b || buf[end - 1] !== 0x7d || buf[end - 2] !== 0x22) return -1;
  return buf.compare(CK_OPEN, 0, CK_OPEN.length, at, at + CK_OPEN.length) === 0 ? at : -1;
}

/** The 8 lowercase hex digits at `buf[at]` as a number, or -1. */
function hexAt(buf: Buffer, at: number): number {
  let v = 0;
  for (let i = at; i < at + 8; i++) {
    const c = buf[i]!;
    const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/** True when the line in `buf[start, end)` (no newline) is whole and its checksum is right. */
export function lineIsSound(buf: Buffer, start: number, end: number): boolean {
  const at = tailAt(buf, start, end);
  return at >= 0 && crc32(CLOSE, crc32(buf.subarray(start, at))) === hexAt(buf, at + 7);
}

const PUT_OP = Buffer.from(',"op":"put"');

/** True when the line at `start` is a put line (`{"seq":<digits>,"op":"put"`), judged on the bytes. */
function isPutAt(buf: Buffer, start: number, end: number): boolean {
  let i = start + 7;
  while (i < end && buf[i]! >= 0x30 && buf[i]! <= 0x39) i++;
  return buf.compare(PUT_OP, 0, PUT_OP.length, i, i + PUT_OP.length) === 0;
}

/** Encode one entry as a line, newline included. */
export function encodeEntry(e: JournalEntry): string {
  if (e.op === 'put') {
    return seal(
      `{"seq":${e.seq},"op":"put","vm":${JSON.stringify(e.vm)},"gen":${e.gen},"ver":${e.ver},"rec":${e.recText}}`,
    );
  }
  const { seq, ...rest } = e; // seq first, whatever order the entry was built in
  return seal(JSON.stringify({ seq, ...rest }));
}

/** The head of a put line, matched without parsing the record (replay reads records lazily). */
const PUT_RE =
  /^\{"seq":(\d{1,15}),"op":"put","vm":"([A-Za-z0-9][A-Za-z0-9_.-]{0,127})","gen":(\d{1,15}),"ver":(\d{1,9}),"rec":\{/;

const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 4096;
const isNat = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Check the fields of a parsed line; the reason it is not an entry, or undefined when it is one. */
function checkFields(o: Record<string, unknown>): string | undefined {
  if (!isNat(o.seq)) return 'seq is not a non-negative integer';
  switch (o.op) {
    case 'header':
      return isStr(o.format) && isNat(o.version) && isStr(o.id) && isNat(o.snapLines) && isNat(o.snapBytes)
        ? undefined
        : 'bad header fields';
    case 'del':
    case 'resolve':
      return isStr(o.vm) ? undefined : `bad ${o.op} fields`;
    case 'quarantine':
      return isStr(o.vm) && typeof o.reason === 'string' && typeof o.text === 'string'
        ? undefined
        : 'bad quarantine fields';
    case 'claim':
    case 'release':
      return isStr(o.net) && isStr(o.sub) && isStr(o.addr) && isStr(o.owner)
        ? undefined
        : `bad ${o.op} fields`;
    case 'cursor':
      return isStr(o.net) && isStr(o.sub) && isStr(o.addr) ? undefined : 'bad cursor fields';
    case 'lock':
      return (o.scope === 'vm' || o.scope === 'network') &&
        isStr(o.name) &&
        isNat(o.seat) &&
        isStr(o.nonce) &&
        isNat(o.n) &&
        isNat(o.pid)
        ? undefined
        : 'bad lock fields';
    case 'unlock':
      return (o.scope === 'vm' || o.scope === 'network') && isStr(o.name) && isStr(o.nonce) && isNat(o.n)
        ? undefined
        : 'bad unlock fields';
    case 'seal':
      return undefined;
    case 'put':
      return isStr(o.vm) && isNat(o.gen) && isNat(o.ver) && typeof o.rec === 'object' && o.rec !== null
        ? undefined
        : 'bad put fields';
    default:
      return `unknown op ${JSON.stringify(o.op)}`;
  }
}

/** Best effort: the VM a damaged line seems to be about (so that record can be set aside). */
export function decodeVm(text: string): string | undefined {
  const m = /"(?:vm|vmId)":"([A-Za-z0-9][A-Za-z0-9_.-]{0,127})"/.exec(text);
  return m?.[1];
}

/** Decode one line (without its newline). Never throws. */
export function decodeLine(text: string): DecodedLine {
  const buf = Buffer.from(text, 'utf8');
  return decodeLineAt(buf, 0, buf.length);
}

/** Decode the line in `buf[start, end)` (without its newline), checking its CRC on the bytes. Never throws. */
export function decodeLineAt(buf: Buffer, start: number, end: number): DecodedLine {
  const at = tailAt(buf, start, end);
  if (at < 0 || hexAt(buf, at + 7) < 0) return { kind: 'torn' };
  if (!lineIsSound(buf, start, end)) {
    return { kind: 'corrupt', reason: 'checksum mismatch', vm: decodeVm(buf.toString('utf8', start, end)) };
  }
  const put = isPutAt(buf, start, at)
    ? PUT_RE.exec(buf.toString('latin1', start, Math.min(at, start + 240)))
    : null;
  if (put) {
    return {
      kind: 'entry',
      entry: {
        op: 'put',
        seq: Number(put[1]),
        vm: put[2]!,
        gen: Number(put[3]),
        ver: Number(put[4]),
        recText: buf.toString('utf8', start + put[0].length - 1, at),
      },
    };
  }
  const body = `${buf.toString('utf8', start, at)}}`;
  let o: unknown;
  try {
    o = JSON.parse(body);
  } catch (e) {
    return { kind: 'corrupt', reason: `not valid JSON: ${(e as Error).message}`, vm: decodeVm(body) };
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    return { kind: 'corrupt', reason: 'not an object' };
  const why = checkFields(o as Record<string, unknown>);
  if (why) return { kind: 'corrupt', reason: why, vm: decodeVm(body) };
  const r = o as Record<string, unknown>;
  if (r.op === 'put') {
    // A put line not in the canonical shape (e.g. edited by hand): re-serialise its record.
    const { rec, ...rest } = r;
    return { kind: 'entry', entry: { ...(rest as Omit<PutEntry, 'recText'>), recText: JSON.stringify(rec) } };
  }
  return { kind: 'entry', entry: o as JournalEntry };
}
