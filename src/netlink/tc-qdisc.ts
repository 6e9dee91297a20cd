/**
 * tc qdiscs (RTM_NEWQDISC/DELQDISC/GETQDISC): `ingress`, `clsact` and `tbf` (token bucket shaping, in the
 * table-less form the kernel accepts since 3.13: linklayer Ethernet + TCA_TBF_BURST, TCA_TBF_RATE64 above
 * 2^32-1 bytes/s). Pure.
 */
import { TapnetError } from '../errors.js';
import { validateInt } from '../validate.js';
import { AttrMap, NlWriter } from './attr.js';
import {
  AF_UNSPEC,
  RTM_GETQDISC,
  TC_H_CLSACT,
  TC_H_INGRESS,
  TC_H_ROOT,
  TCA_KIND,
  TCA_OPTIONS,
  TCA_STATS2,
} from './constants.js';
import { beginMessage, finishMessage, type NlMessage } from './message.js';
import {
  TC_H_INGRESS_HANDLE,
  TC_LINKLAYER_ETHERNET,
  TCA_TBF_BURST,
  TCA_TBF_PARMS,
  TCA_TBF_PRATE64,
  TCA_TBF_RATE64,
  TCMSG_LEN,
} from './tc-constants.js';
import { checkIfindex, checkU32, decodeError, readTcmsg, writeTcmsg } from './tc-msg.js';
import {
  decodeTcStats,
  RATESPEC_LEN,
  rate32,
  readRateSpec,
  type TcStats,
  writeRateSpec,
  xmitSize,
  xmitTicks,
} from './tc-rate.js';

/** Token bucket shaping (`tc qdisc … tbf rate R burst B limit L`). Rates in bytes per second. */
export interface TbfSpec {
  kind: 'tbf';
  /** Bytes per second (tc's `rate 8mbit` is 1_000_000); above 2^32-1 it travels in TCA_TBF_RATE64. */
  rateBps: number;
  /** Bucket size in bytes: the largest burst sent at line rate. Keep it ≥ one full frame. */
  burstBytes: number;
  /** Bytes that may queue waiting for tokens. Default: 25 ms at `rateBps` plus the burst (as CNI's bandwidth plugin). */
  limitBytes?: number;
}

export type QdiscSpec = { kind: 'ingress' } | { kind: 'clsact' } | TbfSpec;

export interface QdiscRequest {
  ifindex: number;
  /** TC_H_ROOT, TC_H_INGRESS (ingress/clsact), or a class. Default: TC_H_INGRESS for ingress/clsact, else root. */
  parent?: number;
  /** Default: `ffff:` for ingress/clsact, 0 (the kernel picks) otherwise. */
  handle?: number;
  /** The qdisc; for RTM_DELQDISC only `kind` matters (the kernel checks it matches), and it may be omitted. */
  spec?: QdiscSpec | { kind: string };
}

/** The default TBF limit: 25 ms worth of bytes at the rate, plus the burst. */
export function defaultTbfLimit(rateBps: number, burstBytes: number): number {
  return Math.min(Math.trunc(rateBps * 0.025) + burstBytes, 0xffffffff);
}

function writeTbf(w: NlWriter, t: TbfSpec): void {
  validateInt(t.rateBps, 'tbf rate (bytes/s)', 1, Number.MAX_SAFE_INTEGER);
  validateInt(t.burstBytes, 'tbf burst (bytes)', 1, 0xffffffff);
  const limit = validateInt(
    t.limitBytes ?? defaultTbfLimit(t.rateBps, t.burstBytes),
    'tbf limit (bytes)',
    1,
    0xffffffff,
  );
  // struct tc_tbf_qopt { tc_ratespec rate, peakrate; u32 limit, buffer, mtu; }. Linklayer Ethernet tells the
  // kernel no rate table follows; TCA_TBF_BURST gives the bucket in bytes, so `buffer` is informative.
  const q = Buffer.alloc(3 * RATESPEC_LEN);
  writeRateSpec(q, 0, {
    cellLog: 0,
    linklayer: TC_LINKLAYER_ETHERNET,
    overhead: 0,
    cellAlign: 0,
    mpu: 0,
    rate: rate32(t.rateBps),
  });
  q.writeUInt32LE(limit, 24);
  q.writeUInt32LE(xmitTicks(t.rateBps, t.burstBytes), 28);
  w.nest(
    TCA_OPTIONS,
    () => {
      w.attr(TCA_TBF_PARMS, q);
      w.attrU32(TCA_TBF_BURST, t.burstBytes);
      if (t.rateBps >= 2 ** 32) w.attrU64(TCA_TBF_RATE64, t.rateBps);
    },
    false,
  );
}

/** Encode RTM_NEWQDISC / RTM_DELQDISC / RTM_GETQDISC (one qdisc). */
export function encodeQdiscRequest(type: number, nlFlags: number, r: QdiscRequest): Buffer {
  const kind = r.spec?.kind;
  const isIngress = kind === 'ingress' || kind === 'clsact';
  const w = new NlWriter(96);
  const at = beginMessage(w, type, nlFlags);
  writeTcmsg(w, {
    family: AF_UNSPEC,
    ifindex: checkIfindex(r.ifindex),
    handle: checkU32(r.handle ?? (isIngress ? TC_H_INGRESS_HANDLE : 0), 'qdisc handle'),
    parent: checkU32(
      r.parent ?? (isIngress ? (kind === 'clsact' ? TC_H_CLSACT : TC_H_INGRESS) : TC_H_ROOT),
      'qdisc parent',
    ),
    info: 0,
  });
  if (kind !== undefined) {
    if (!/^[a-z_0-9]{1,15}$/.test(kind))
      throw new TapnetError('ERR_INVALID_ARGUMENT', `bad qdisc kind ${JSON.stringify(kind)}`);
    w.attrStr(TCA_KIND, kind);
    if (kind === 'tbf' && 'rateBps' in (r.spec as TbfSpec)) writeTbf(w, r.spec as TbfSpec);
  }
  finishMessage(w, at);
  return w.toBuffer();
}

/** Encode a RTM_GETQDISC dump (`tc qdisc show`). The kernel dumps every device; filter by ifindex after. */
export function encodeGetQdiscs(): Buffer {
  const w = new NlWriter(40);
  const at = beginMessage(w, RTM_GETQDISC, 0);
  writeTcmsg(w, { family: AF_UNSPEC, ifindex: 0, handle: 0, parent: 0, info: 0 });
  finishMessage(w, at);
  return w.toBuffer();
}

/** A TBF qdisc's parameters as the kernel reports them. */
export interface TbfParams {
  rateBps: number;
  /** Bucket in bytes, computed from the kernel's tick value exactly as `tc` prints it. */
  burstBytes: number;
  /** The bucket as the kernel holds it, in 64 ns ticks. */
  bufferTicks: number;
  limitBytes: number;
  /** Peak rate (bytes/s), 0 when none. */
  peakRateBps: number;
}

/** A qdisc from a dump. */
export interface Qdisc {
  ifindex: number;
  handle: number;
  parent: number;
  kind: string;
  tbf?: TbfParams;
  stats?: TcStats;
}

function decodeTbf(opts: AttrMap): TbfParams {
  const q = opts.raw(TCA_TBF_PARMS);
  if (!q || q.length < 3 * RATESPEC_LEN) throw decodeError('tbf qdisc without a complete TCA_TBF_PARMS');
  const rate = readRateSpec(q, 0);
  const peak = readRateSpec(q, RATESPEC_LEN);
  const rateBps = Number(opts.u64(TCA_TBF_RATE64) ?? BigInt(rate.rate));
  const bufferTicks = q.readUInt32LE(28);
  return {
    rateBps,
    burstBytes: xmitSize(rateBps, bufferTicks),
    bufferTicks,
    limitBytes: q.readUInt32LE(24),
    peakRateBps: Number(opts.u64(TCA_TBF_PRATE64) ?? BigInt(peak.rate)),
  };
}

/** Decode a RTM_NEWQDISC message (an element of a qdisc dump). */
export function decodeQdisc(m: NlMessage): Qdisc {
  const h = readTcmsg(m.payload);
  const a = AttrMap.parse(m.payload, TCMSG_LEN);
  const kind = a.str(TCA_KIND);
  if (kind === undefined) throw decodeError('qdisc message without TCA_KIND');
  const out: Qdisc = { ifindex: h.ifindex, handle: h.handle, parent: h.parent, kind };
  // Only tbf's options are nested attributes; others (pfifo_fast: a priomap struct) are raw bytes.
  const opts = kind === 'tbf' ? a.nested(TCA_OPTIONS) : undefined;
  if (opts) out.tbf = decodeTbf(opts);
  const stats = a.raw(TCA_STATS2);
  if (stats) out.stats = decodeTcStats(stats);
  return out;
}
