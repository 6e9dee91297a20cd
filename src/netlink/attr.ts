/**
 * Netlink attributes (struct nlattr): a writer that builds messages in one growing buffer, and a
 * parser that reads attributes back with bounds checks. Pure: bytes in, values out.
 */
import { TapnetError } from '../errors.js';
import { bytesToIpString } from '../ip.js';
import { NLA_F_NESTED, NLA_HDRLEN, NLA_TYPE_MASK } from './constants.js';

/** Round up to the 4-byte netlink alignment. */
export const align4 = (n: number): number => (n + 3) & ~3;

/** A netlink message under construction. Host byte order (little-endian on every target we build for). */
export class NlWriter {
  private buf: Buffer;
  /** Bytes written so far. */
  length = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private reserve(n: number): number {
    const at = this.length;
    const need = at + n;
    if (need > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
      this.buf.copy(next, 0, 0, at);
      this.buf = next;
    }
    this.length = need;
    return at;
  }

  // Note: reserve() may replace this.buf, so it is always called before this.buf is read.
  u8(v: number): this {
    const at = this.reserve(1);
    this.buf.writeUInt8(v & 0xff, at);
    return this;
  }
  u16(v: number): this {
    const at = this.reserve(2);
    this.buf.writeUInt16LE(v & 0xffff, at);
    return this;
  }
  u16be(v: number): this {
    const at = this.reserve(2);
    this.buf.writeUInt16BE(v & 0xffff, at);
    return this;
  }
  u32(v: number): this {
    const at = this.reserve(4);
    this.buf.writeUInt32LE(v >>> 0, at);
    return this;
  }
  i32(v: number): this {
    const at = this.reserve(4);
    this.buf.writeInt32LE(v | 0, at);
    return this;
  }
  u64(v: bigint | number): this {
    const at = this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), at);
    return this;
  }
  bytes(b: Uint8Array): this {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
    return this;
  }
  zeros(n: number): this {
    const at = this.reserve(n);
    this.buf.fill(0, at, at + n);
    return this;
  }
  /** Pad with zeros to the 4-byte boundary. */
  pad(): this {
    const p = align4(this.length) - this.length;
    return p ? this.zeros(p) : this;
  }

  /** Patch a u32 at an earlier offset (lengths, counts). */
  patchU32(at: number, v: number): void {
    this.buf.writeUInt32LE(v >>> 0, at);
  }
  patchU16(at: number, v: number): void {
    this.buf.writeUInt16LE(v & 0xffff, at);
  }

  /** An attribute with raw payload. */
  attr(type: number, payload: Uint8Array): this {
    this.u16(NLA_HDRLEN + payload.length)
      .u16(type)
      .bytes(payload);
    return this.pad();
  }
  attrU8(type: number, v: number): this {
    return this.u16(NLA_HDRLEN + 1)
      .u16(type)
      .u8(v)
      .pad();
  }
  attrU16(type: number, v: number): this {
    return this.u16(NLA_HDRLEN + 2)
      .u16(type)
      .u16(v)
      .pad();
  }
  attrU16be(type: number, v: number): this {
    return this.u16(NLA_HDRLEN + 2)
      .u16(type)
      .u16be(v)
      .pad();
  }
  attrU32(type: number, v: number): this {
    return this.u16(NLA_HDRLEN + 4)
      .u16(type)
      .u32(v);
  }
  attrI32(type: number, v: number): this {
    return this.u16(NLA_HDRLEN + 4)
      .u16(type)
      .i32(v);
  }
  attrU64(type: number, v: bigint | number): this {
    return this.u16(NLA_HDRLEN + 8)
      .u16(type)
      .u64(v);
  }
  /** A NUL-terminated string attribute. */
  attrStr(type: number, s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.u16(NLA_HDRLEN + b.length + 1)
      .u16(type)
      .bytes(b)
      .u8(0);
    return this.pad();
  }
  /** A flag attribute (no payload). */
  attrFlag(type: number): this {
    return this.u16(NLA_HDRLEN).u16(type);
  }
  /** A nested attribute: `body` writes the children. */
  nest(type: number, body: (w: this) => void, flagNested = true): this {
    const at = this.length;
    this.u16(0).u16(flagNested ? type | NLA_F_NESTED : type);
    body(this);
    this.pad();
    this.patchU16(at, this.length - at);
    return this;
  }

  /** A copy of the bytes written. */
  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.length));
  }
  /** The bytes written, without copying (valid until the next write). */
  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/** Canonical text of a 4- or 16-byte address; ERR_NETLINK_DECODE for any other length. */
export function ipText(b: Buffer, type?: number): string {
  if (b.length !== 4 && b.length !== 16) {
    throw decodeError(`address attribute${type === undefined ? '' : ` ${type}`} has ${b.length} bytes`, {
      type,
    });
  }
  return bytesToIpString(b);
}

/** One decoded attribute: its type (flags masked off), whether it was marked nested, and its payload. */
export interface NlAttr {
  type: number;
  nested: boolean;
  data: Buffer;
}

function decodeError(message: string, details: Record<string, unknown> = {}): TapnetError {
  return new TapnetError('ERR_NETLINK_DECODE', message, { details });
}

/**
 * Parse the attributes in `buf[start, end)`. Throws ERR_NETLINK_DECODE when a length is impossible;
 * never reads out of bounds and always terminates (every step advances by at least 4 bytes).
 */
export function parseAttrs(buf: Buffer, start = 0, end = buf.length): NlAttr[] {
  const out: NlAttr[] = [];
  if (start < 0 || end > buf.length || start > end) throw decodeError('attribute range out of bounds');
  let off = start;
  while (off + NLA_HDRLEN <= end) {
    const len = buf.readUInt16LE(off);
    const rawType = buf.readUInt16LE(off + 2);
    if (len < NLA_HDRLEN || off + len > end) {
      throw decodeError(`bad attribute length ${len} at offset ${off}`, { offset: off, length: len });
    }
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      data: buf.subarray(off + NLA_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attributes indexed by type (the last one wins, as in the kernel's nla_parse). */
export class AttrMap {
  private readonly map = new Map<number, Buffer>();

  constructor(attrs: NlAttr[]) {
    for (const a of attrs) this.map.set(a.type, a.data);
  }

  static parse(buf: Buffer, start = 0, end = buf.length): AttrMap {
    return new AttrMap(parseAttrs(buf, start, end));
  }

  has(type: number): boolean {
    return this.map.has(type);
  }
  raw(type: number): Buffer | undefined {
    return this.map.get(type);
  }
  types(): number[] {
    return [...this.map.keys()];
  }
  private sized(type: number, size: number): Buffer | undefined {
    const b = this.map.get(type);
    if (b === undefined) return undefined;
    if (b.length < size)
      throw decodeError(`attribute ${type} has ${b.length} bytes, needs ${size}`, { type });
    return b;
  }
  u8(type: number): number | undefined {
    return this.sized(type, 1)?.readUInt8(0);
  }
  u16(type: number): number | undefined {
    return this.sized(type, 2)?.readUInt16LE(0);
  }
  u16be(type: number): number | undefined {
    return this.sized(type, 2)?.readUInt16BE(0);
  }
  u32(type: number): number | undefined {
    return this.sized(type, 4)?.readUInt32LE(0);
  }
  i32(type: number): number | undefined {
    return this.sized(type, 4)?.readInt32LE(0);
  }
  u64(type: number): bigint | undefined {
    return this.sized(type, 8)?.readBigUInt64LE(0);
  }
  /** A string attribute, up to its first NUL. */
  str(type: number): string | undefined {
    const b = this.map.get(type);
    if (b === undefined) return undefined;
    const nul = b.indexOf(0);
    return b.toString('utf8', 0, nul < 0 ? b.length : nul);
  }
  /** An IPv4 or IPv6 address attribute (4 or 16 bytes, network order) as canonical text. */
  ip(type: number): string | undefined {
    const b = this.map.get(type);
    if (b === undefined) return undefined;
    return ipText(b, type);
  }
  /** A nested attribute's children. */
  nested(type: number): AttrMap | undefined {
    const b = this.map.get(type);
    return b === undefined ? undefined : AttrMap.parse(b);
  }
}
