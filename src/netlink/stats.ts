/**
 * Link statistics: struct rtnl_link_stats64 (IFLA_STATS64). Pure. Counters are numbers (exact up to
 * 2^53 bytes, i.e. 8 PiB: enough for any interface's lifetime).
 */
import { TapnetError } from '../errors.js';

/** Fields of struct rtnl_link_stats64, in kernel order. Newer kernels append fields; we read what is there. */
export const STATS64_FIELDS = [
  'rxPackets',
  'txPackets',
  'rxBytes',
  'txBytes',
  'rxErrors',
  'txErrors',
  'rxDropped',
  'txDropped',
  'multicast',
  'collisions',
  'rxLengthErrors',
  'rxOverErrors',
  'rxCrcErrors',
  'rxFrameErrors',
  'rxFifoErrors',
  'rxMissedErrors',
  'txAbortedErrors',
  'txCarrierErrors',
  'txFifoErrors',
  'txHeartbeatErrors',
  'txWindowErrors',
  'rxCompressed',
  'txCompressed',
  'rxNohandler',
  'rxOtherhostDropped',
] as const;

export type LinkStats = Record<(typeof STATS64_FIELDS)[number], number>;

/** Decode IFLA_STATS64. At least the first 23 fields (the oldest layout) must be present. */
export function decodeStats64(b: Buffer): LinkStats {
  if (b.length < 23 * 8) throw new TapnetError('ERR_NETLINK_DECODE', `IFLA_STATS64 of ${b.length} bytes`);
  const out = {} as LinkStats;
  STATS64_FIELDS.forEach((f, i) => {
    out[f] = (i + 1) * 8 <= b.length ? Number(b.readBigUInt64LE(i * 8)) : 0;
  });
  return out;
}

/** Encode stats (for tests and fixtures). */
export function encodeStats64(s: Partial<LinkStats>): Buffer {
  const b = Buffer.alloc(STATS64_FIELDS.length * 8);
  STATS64_FIELDS.forEach((f, i) => {
    b.writeBigUInt64LE(BigInt(s[f] ?? 0), i * 8);
  });
  return b;
}
