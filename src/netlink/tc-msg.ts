/**
 * struct tcmsg (the fixed header of every tc message) and tc handles. Pure.
 */
import { TapnetError } from '../errors.js';
import { validateInt } from '../validate.js';
import type { NlWriter } from './attr.js';
import { TC_H_ROOT } from './constants.js';
import { TC_H_MAJ_MASK, TC_H_MIN_MASK, TCMSG_LEN } from './tc-constants.js';

/** The fixed header of every tc message. */
export interface TcMsg {
  family: number;
  ifindex: number;
  handle: number;
  parent: number;
  /** Filters: (prio << 16) | htons(protocol). Qdisc dumps: the reference count. */
  info: number;
}

/** An ERR_NETLINK_DECODE error for a malformed tc message. */
export function decodeError(message: string, details: Record<string, unknown> = {}): TapnetError {
  return new TapnetError('ERR_NETLINK_DECODE', message, { details });
}

/** Write a struct tcmsg (20 bytes). */
export function writeTcmsg(w: NlWriter, h: TcMsg): void {
  w.u8(h.family).u8(0).u16(0).i32(h.ifindex).u32(h.handle).u32(h.parent).u32(h.info);
}

/** Read the tcmsg at the start of a payload. */
export function readTcmsg(p: Buffer): TcMsg {
  if (p.length < TCMSG_LEN) throw decodeError(`truncated tcmsg (${p.length} bytes)`);
  return {
    family: p.readUInt8(0),
    ifindex: p.readInt32LE(4),
    handle: p.readUInt32LE(8),
    parent: p.readUInt32LE(12),
    info: p.readUInt32LE(16),
  };
}

/** TC_H_MAKE(major << 16, minor): `tcHandle(0xffff, 0xfff2)` is `ffff:fff2`. */
export function tcHandle(major: number, minor: number): number {
  return (((major & 0xffff) << 16) | (minor & 0xffff)) >>> 0;
}

/** A handle as tc prints it: `root`, `8001:`, `ffff:fff1`, `:5` (u32's `800::800` notation is not produced). */
export function formatHandle(h: number): string {
  if (h === TC_H_ROOT) return 'root';
  const maj = (h & TC_H_MAJ_MASK) >>> 16;
  const min = h & TC_H_MIN_MASK;
  if (maj === 0) return `:${min.toString(16)}`;
  if (min === 0) return `${maj.toString(16)}:`;
  return `${maj.toString(16)}:${min.toString(16)}`;
}

/** Swap the bytes of a u16 (htons/ntohs on little-endian hosts). */
export const swap16 = (v: number): number => ((v & 0xff) << 8) | ((v >>> 8) & 0xff);
/** An ifindex as the kernel accepts it. */
export const checkIfindex = (i: number): number => validateInt(i, 'ifindex', 1, 0x7fffffff);
/** A u32 field. */
export const checkU32 = (v: number, what: string): number => validateInt(v, what, 0, 0xffffffff);
