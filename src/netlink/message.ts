/**
 * Netlink messages (struct nlmsghdr), kernel ACKs and errors with extended ACK. Pure.
 */
import { TapnetError } from '../errors.js';
import { errnoName } from '../sys/errno.js';
import { AttrMap, align4, NlWriter } from './attr.js';
import {
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSGERR_ATTR_MSG,
  NLMSGERR_ATTR_OFFS,
  RTM_NAMES,
} from './constants.js';

/** A decoded netlink message: header fields and the payload after the header. */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Bytes after the 16-byte header, up to nlmsg_len. */
  payload: Buffer;
}

/**
 * Start a request: writes a header with a placeholder length. Call `finishMessage` when the body is written.
 */
export function beginMessage(w: NlWriter, type: number, flags: number, seq = 0, pid = 0): number {
  const at = w.length;
  w.u32(0).u16(type).u16(flags).u32(seq).u32(pid);
  return at;
}

/** Patch the header length of the message begun at `at`. */
export function finishMessage(w: NlWriter, at: number): void {
  w.pad();
  w.patchU32(at, w.length - at);
}

/** Patch the sequence number of a complete message at `at` (the socket assigns seq at send time). */
export function setSeq(buf: Buffer, seq: number, at = 0): void {
  buf.writeUInt32LE(seq >>> 0, at + 8);
}

function decodeError(message: string, details: Record<string, unknown> = {}): TapnetError {
  return new TapnetError('ERR_NETLINK_DECODE', message, { details });
}

/**
 * Split a datagram into messages. Throws ERR_NETLINK_DECODE for truncated or impossible lengths;
 * never loops forever.
 */
export function parseMessages(buf: Buffer, length = buf.length): NlMessage[] {
  const out: NlMessage[] = [];
  let off = 0;
  if (length > buf.length) throw decodeError('datagram length exceeds buffer');
  while (off < length) {
    if (off + NLMSG_HDRLEN > length) {
      throw decodeError(`truncated netlink header at offset ${off}`, { offset: off });
    }
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > length) {
      throw decodeError(`bad netlink message length ${len} at offset ${off}`, { offset: off, length: len });
    }
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Encode one message from parts (used by tests and by the socket for small requests). */
export function encodeMessage(
  type: number,
  flags: number,
  seq: number,
  pid: number,
  body: Uint8Array,
): Buffer {
  const w = new NlWriter(NLMSG_HDRLEN + body.length + 4);
  const at = beginMessage(w, type, flags, seq, pid);
  w.bytes(body);
  finishMessage(w, at);
  return w.toBuffer();
}

/** The content of an NLMSG_ERROR: errno 0 is an ACK. */
export interface NlErrorPayload {
  /** Positive errno, 0 for an ACK. */
  errno: number;
  /** The header of the request this answers. */
  requestType: number;
  requestSeq: number;
  /** The kernel's extended ACK message, if any. */
  extack?: string;
  /** Offset of the offending attribute in the request, if the kernel said. */
  extackOffset?: number;
}

/** Decode an NLMSG_ERROR payload, including extended ACK TLVs. */
export function parseErrorPayload(msg: NlMessage): NlErrorPayload {
  const p = msg.payload;
  if (p.length < 4 + NLMSG_HDRLEN) throw decodeError('truncated NLMSG_ERROR');
  const err = p.readInt32LE(0);
  const requestType = p.readUInt16LE(4 + 4);
  const requestSeq = p.readUInt32LE(4 + 8);
  const out: NlErrorPayload = { errno: -err, requestType, requestSeq };
  if (msg.flags & NLM_F_ACK_TLVS) {
    // With NLM_F_CAPPED only the request header was echoed; otherwise the whole request.
    const echoed = msg.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : p.readUInt32LE(4);
    const tlvStart = 4 + align4(echoed);
    if (tlvStart <= p.length) {
      const attrs = AttrMap.parse(p, tlvStart, p.length);
      const text = attrs.str(NLMSGERR_ATTR_MSG);
      if (text) out.extack = text;
      const offs = attrs.u32(NLMSGERR_ATTR_OFFS);
      if (offs !== undefined) out.extackOffset = offs;
    }
  }
  return out;
}

/** The name of an rtnetlink message type. */
export function typeName(type: number): string {
  if (type === NLMSG_ERROR) return 'NLMSG_ERROR';
  if (type === NLMSG_DONE) return 'NLMSG_DONE';
  return RTM_NAMES[type] ?? `type ${type}`;
}

/** A TapnetError for a kernel NACK. The code follows the errno; the message names the operation. */
export function netlinkError(e: NlErrorPayload, what?: string): TapnetError {
  const name = errnoName(e.errno);
  const op = typeName(e.requestType);
  const code =
    name === 'EPERM' || name === 'EACCES'
      ? 'ERR_PERMISSION_DENIED'
      : name === 'EEXIST'
        ? 'ERR_CONFLICT'
        : name === 'ENODEV'
          ? 'ERR_LINK_NOT_FOUND'
          : name === 'EXFULL'
            ? 'ERR_CAPACITY'
            : 'ERR_NETLINK';
  const subject = what ? ` ${what}` : '';
  const ext = e.extack ? `: ${e.extack}` : '';
  return new TapnetError(code, `${op}${subject} failed: ${name}${ext}`, {
    errno: name,
    syscall: op,
    ...(e.extack ? { extack: e.extack } : {}),
    details: e.extackOffset !== undefined ? { extackOffset: e.extackOffset } : {},
  });
}
