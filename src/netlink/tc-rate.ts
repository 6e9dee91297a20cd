/**
 * Shared pieces of the tc codec: rates (struct tc_ratespec, rate tables, the kernel's 64 ns scheduler
 * ticks) and statistics (TCA_STATS2 / TCA_ACT_STATS). Pure.
 *
 * Time is measured in psched ticks of 64 ns (PSCHED_SHIFT = 6; /proc/net/psched reads `000003e8 00000040
 * 000f4240 …` on every kernel since 2.6.32), i.e. 15.625 ticks per microsecond. The conversions below
 * reproduce iproute2's tc_calc_xmittime/tc_calc_xmitsize exactly (including their truncation to whole
 * microseconds), so values we send and decode are the ones `tc` sends and prints.
 */
import { TapnetError } from '../errors.js';
import { AttrMap } from './attr.js';
import {
  TC_LINKLAYER_ETHERNET,
  TC_RTAB_SIZE,
  TCA_STATS_BASIC,
  TCA_STATS_PKT64,
  TCA_STATS_QUEUE,
  TCA_STATS_RATE_EST,
  TCA_STATS_RATE_EST64,
} from './tc-constants.js';

/** Scheduler ticks per microsecond (1000 ns / 64 ns). */
export const TICKS_PER_USEC = 15.625;
const USEC_PER_SEC = 1_000_000;
const U32_MAX = 0xffffffff;

/** Ticks needed to send `sizeBytes` at `rateBps` bytes/s (iproute2's tc_calc_xmittime). */
export function xmitTicks(rateBps: number, sizeBytes: number): number {
  if (rateBps <= 0) return 0;
  const usec = Math.min(Math.trunc(USEC_PER_SEC * (sizeBytes / rateBps)), U32_MAX);
  return Math.min(Math.trunc(usec * TICKS_PER_USEC), U32_MAX);
}

/** Bytes sent at `rateBps` during `ticks` (iproute2's tc_calc_xmitsize): how tc prints a burst. */
export function xmitSize(rateBps: number, ticks: number): number {
  const usec = Math.trunc(ticks / TICKS_PER_USEC);
  return Math.min(Math.trunc((rateBps * usec) / USEC_PER_SEC), U32_MAX);
}

/** struct tc_ratespec. `rate` is u32 bytes/s; larger rates travel in a separate *_RATE64 attribute. */
export interface RateSpec {
  cellLog: number;
  linklayer: number;
  overhead: number;
  cellAlign: number;
  mpu: number;
  rate: number;
}

/** sizeof(struct tc_ratespec). */
export const RATESPEC_LEN = 12;

/** The u32 `rate` field for a 64-bit rate: saturated at 2^32-1 (the kernel then reads *_RATE64). */
export const rate32 = (rateBps: number): number => (rateBps >= 2 ** 32 ? U32_MAX : rateBps);

/** Write a struct tc_ratespec into `b` at `off`. */
export function writeRateSpec(b: Buffer, off: number, r: RateSpec): void {
  b.writeUInt8(r.cellLog, off);
  b.writeUInt8(r.linklayer, off + 1);
  b.writeUInt16LE(r.overhead, off + 2);
  b.writeInt16LE(r.cellAlign, off + 4);
  b.writeUInt16LE(r.mpu, off + 6);
  b.writeUInt32LE(r.rate >>> 0, off + 8);
}

/** Read a struct tc_ratespec (the caller checked the length). */
export function readRateSpec(b: Buffer, off: number): RateSpec {
  return {
    cellLog: b.readUInt8(off),
    linklayer: b.readUInt8(off + 1),
    overhead: b.readUInt16LE(off + 2),
    cellAlign: b.readInt16LE(off + 4),
    mpu: b.readUInt16LE(off + 6),
    rate: b.readUInt32LE(off + 8),
  };
}

/**
 * A rate table as iproute2's tc_calc_rtable_64 builds it for Ethernet with the default MTU (2047, so
 * cell_log 3): the transmit time of (i+1) << cell_log bytes. The kernel only checks it (act_police needs
 * one); it is not used for timing since the kernel computes rates itself. Returns the table and the
 * ratespec fields tc sets alongside (cell_log, cell_align -1, linklayer Ethernet).
 */
export function rateTable(rateBps: number, mpu = 0): { table: Buffer; spec: RateSpec } {
  const cellLog = 3;
  const table = Buffer.alloc(TC_RTAB_SIZE);
  for (let i = 0; i < 256; i++) {
    const size = Math.max((i + 1) << cellLog, mpu);
    table.writeUInt32LE(xmitTicks(rateBps, size), i * 4);
  }
  return {
    table,
    spec: {
      cellLog,
      linklayer: TC_LINKLAYER_ETHERNET,
      overhead: 0,
      cellAlign: -1,
      mpu,
      rate: rate32(rateBps),
    },
  };
}

/** Counters of a qdisc or an action (gnet_stats_basic + gnet_stats_queue + rate estimator). */
export interface TcStats {
  bytes: number;
  packets: number;
  drops: number;
  overlimits: number;
  requeues: number;
  backlog: number;
  qlen: number;
  /** Rate estimate, when an estimator runs. */
  bps?: number;
  pps?: number;
}

function decodeError(message: string): TapnetError {
  return new TapnetError('ERR_NETLINK_DECODE', message);
}

/** Decode a TCA_STATS2 / TCA_ACT_STATS nest. */
export function decodeTcStats(b: Buffer): TcStats {
  const a = AttrMap.parse(b);
  const out: TcStats = { bytes: 0, packets: 0, drops: 0, overlimits: 0, requeues: 0, backlog: 0, qlen: 0 };
  const basic = a.raw(TCA_STATS_BASIC);
  if (basic) {
    // struct gnet_stats_basic { u64 bytes; u32 packets; } (12 bytes, 16 with padding on 64-bit)
    if (basic.length < 12) throw decodeError(`TCA_STATS_BASIC of ${basic.length} bytes`);
    out.bytes = Number(basic.readBigUInt64LE(0));
    out.packets = basic.readUInt32LE(8);
  }
  const pkt64 = a.u64(TCA_STATS_PKT64);
  if (pkt64 !== undefined) out.packets = Number(pkt64);
  const queue = a.raw(TCA_STATS_QUEUE);
  if (queue) {
    // struct gnet_stats_queue { u32 qlen, backlog, drops, requeues, overlimits; }
    if (queue.length < 20) throw decodeError(`TCA_STATS_QUEUE of ${queue.length} bytes`);
    out.qlen = queue.readUInt32LE(0);
    out.backlog = queue.readUInt32LE(4);
    out.drops = queue.readUInt32LE(8);
    out.requeues = queue.readUInt32LE(12);
    out.overlimits = queue.readUInt32LE(16);
  }
  const est64 = a.raw(TCA_STATS_RATE_EST64);
  const est = a.raw(TCA_STATS_RATE_EST);
  if (est64 && est64.length >= 16) {
    out.bps = Number(est64.readBigUInt64LE(0));
    out.pps = Number(est64.readBigUInt64LE(8));
  } else if (est && est.length >= 8) {
    out.bps = est.readUInt32LE(0);
    out.pps = est.readUInt32LE(4);
  }
  return out;
}
