/**
 * tc filters (RTM_NEWTFILTER/DELTFILTER/GETTFILTER): `u32` (with the match-all selector `match u32 0 0`) and
 * `matchall`, each carrying an action list (tc-action.ts). Pure.
 */
import { TapnetError } from '../errors.js';
import { validateInt } from '../validate.js';
import { AttrMap, NlWriter } from './attr.js';
import { AF_UNSPEC, RTM_GETTFILTER, TCA_CHAIN, TCA_KIND, TCA_OPTIONS } from './constants.js';
import { beginMessage, finishMessage, type NlMessage } from './message.js';
import { decodeActions, type TcAction, type TcActionSpec, writeActions } from './tc-action.js';
import {
  TC_U32_KEY_LEN,
  TC_U32_SEL_LEN,
  TC_U32_TERMINAL,
  TCA_MATCHALL_ACT,
  TCA_MATCHALL_CLASSID,
  TCA_MATCHALL_FLAGS,
  TCA_U32_ACT,
  TCA_U32_CLASSID,
  TCA_U32_DIVISOR,
  TCA_U32_FLAGS,
  TCA_U32_HASH,
  TCA_U32_LINK,
  TCA_U32_SEL,
  TCMSG_LEN,
} from './tc-constants.js';
import { checkIfindex, checkU32, decodeError, readTcmsg, swap16, writeTcmsg } from './tc-msg.js';

/** One u32 match: (packet word at `off` & mask) == value. Mask and value are host numbers (sent big-endian). */
export interface U32Key {
  mask: number;
  value: number;
  off: number;
  offmask: number;
}

/** `match u32 0 0`: every packet. */
export const U32_MATCH_ALL: readonly U32Key[] = [{ mask: 0, value: 0, off: 0, offmask: 0 }];

export interface FilterSpec {
  kind: 'u32' | 'matchall';
  /** u32 only; default U32_MATCH_ALL. */
  keys?: readonly U32Key[];
  /** `classid`/`flowid`, when the filter selects a class. */
  classid?: number;
  /** TCA_CLS_FLAGS_* (skip_hw, skip_sw). */
  flags?: number;
  actions: TcActionSpec[];
}

export interface FilterRequest {
  ifindex: number;
  /** TC_H_PARENT_INGRESS, TC_H_PARENT_EGRESS, or a qdisc/class handle. */
  parent: number;
  /** 1–65535; 0 lets the kernel choose (only when creating). */
  prio: number;
  /** ETH_P_* in host order (ETH_P_ALL = 3). */
  protocol: number;
  /** The filter's own handle (u32: `800::800` is 0x80000800); 0 for all at this prio. */
  handle?: number;
  chain?: number;
  /** Required for RTM_NEWTFILTER; for RTM_DELTFILTER only `kind` is sent (if given). */
  spec?: FilterSpec | { kind: string };
}

function writeU32Sel(w: NlWriter, keys: readonly U32Key[]): void {
  if (keys.length === 0 || keys.length > 128)
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'u32 needs 1 to 128 keys');
  const b = Buffer.alloc(TC_U32_SEL_LEN + keys.length * TC_U32_KEY_LEN);
  b.writeUInt8(TC_U32_TERMINAL, 0);
  b.writeUInt8(keys.length, 2);
  keys.forEach((k, i) => {
    const o = TC_U32_SEL_LEN + i * TC_U32_KEY_LEN;
    b.writeUInt32BE(checkU32(k.mask, 'u32 mask'), o);
    b.writeUInt32BE(checkU32(k.value, 'u32 value'), o + 4);
    b.writeInt32LE(validateInt(k.off, 'u32 offset', -0x80000000, 0x7fffffff), o + 8);
    b.writeInt32LE(validateInt(k.offmask, 'u32 offmask', -0x80000000, 0x7fffffff), o + 12);
  });
  w.attr(TCA_U32_SEL, b);
}

/** Encode RTM_NEWTFILTER / RTM_DELTFILTER (`tc filter add|replace|del …`). */
export function encodeFilterRequest(type: number, nlFlags: number, r: FilterRequest): Buffer {
  const prio = validateInt(r.prio, 'filter prio', 0, 0xffff);
  const protocol = validateInt(r.protocol, 'filter protocol', 0, 0xffff);
  const w = new NlWriter(160);
  const at = beginMessage(w, type, nlFlags);
  writeTcmsg(w, {
    family: AF_UNSPEC,
    ifindex: checkIfindex(r.ifindex),
    handle: checkU32(r.handle ?? 0, 'filter handle'),
    parent: checkU32(r.parent, 'filter parent'),
    info: ((prio << 16) | swap16(protocol)) >>> 0,
  });
  const spec = r.spec;
  if (spec) {
    if (spec.kind !== 'u32' && spec.kind !== 'matchall') {
      throw new TapnetError('ERR_INVALID_ARGUMENT', `unsupported filter kind ${JSON.stringify(spec.kind)}`);
    }
    w.attrStr(TCA_KIND, spec.kind);
  }
  if (r.chain !== undefined) w.attrU32(TCA_CHAIN, checkU32(r.chain, 'filter chain'));
  if (spec && 'actions' in spec) {
    const s = spec as FilterSpec;
    w.nest(
      TCA_OPTIONS,
      () => {
        if (s.kind === 'u32') {
          if (s.classid !== undefined) w.attrU32(TCA_U32_CLASSID, checkU32(s.classid, 'classid'));
          writeActions(w, TCA_U32_ACT, s.actions);
          writeU32Sel(w, s.keys ?? U32_MATCH_ALL);
          if (s.flags) w.attrU32(TCA_U32_FLAGS, checkU32(s.flags, 'filter flags'));
        } else {
          if (s.classid !== undefined) w.attrU32(TCA_MATCHALL_CLASSID, checkU32(s.classid, 'classid'));
          writeActions(w, TCA_MATCHALL_ACT, s.actions);
          if (s.flags) w.attrU32(TCA_MATCHALL_FLAGS, checkU32(s.flags, 'filter flags'));
        }
      },
      false,
    );
  }
  finishMessage(w, at);
  return w.toBuffer();
}

/** Encode a RTM_GETTFILTER dump of one device's filters under `parent` (`tc filter show dev X ingress`). */
export function encodeGetFilters(ifindex: number, parent: number): Buffer {
  const w = new NlWriter(40);
  const at = beginMessage(w, RTM_GETTFILTER, 0);
  writeTcmsg(w, {
    family: AF_UNSPEC,
    ifindex: checkIfindex(ifindex),
    handle: 0,
    parent: checkU32(parent, 'parent'),
    info: 0,
  });
  finishMessage(w, at);
  return w.toBuffer();
}

/** What a u32 dump entry holds: a hash table (`divisor`) or a key node (`keys`, actions). */
export interface U32Info {
  /** Hash tables (handle `800:`): the number of buckets. */
  divisor?: number;
  /** Key nodes: the selector. */
  keys?: U32Key[];
  selFlags?: number;
  /** The hash table this node is in. */
  hash?: number;
  classid?: number;
  link?: number;
  flags?: number;
}

/** A filter from a dump. u32 dumps a head entry (handle 0), its hash table and then each key node. */
export interface Filter {
  ifindex: number;
  parent: number;
  handle: number;
  prio: number;
  protocol: number;
  kind: string;
  chain?: number;
  u32?: U32Info;
  matchall?: { classid?: number; flags?: number };
  actions: TcAction[];
}

function decodeU32Sel(b: Buffer): { selFlags: number; keys: U32Key[] } {
  if (b.length < TC_U32_SEL_LEN) throw decodeError(`TCA_U32_SEL of ${b.length} bytes`);
  const n = b.readUInt8(2);
  if (b.length < TC_U32_SEL_LEN + n * TC_U32_KEY_LEN)
    throw decodeError(`TCA_U32_SEL too short for ${n} keys`);
  const keys: U32Key[] = [];
  for (let i = 0; i < n; i++) {
    const o = TC_U32_SEL_LEN + i * TC_U32_KEY_LEN;
    keys.push({
      mask: b.readUInt32BE(o),
      value: b.readUInt32BE(o + 4),
      off: b.readInt32LE(o + 8),
      offmask: b.readInt32LE(o + 12),
    });
  }
  return { selFlags: b.readUInt8(0), keys };
}

/** Decode a RTM_NEWTFILTER message (an element of a filter dump). */
export function decodeFilter(m: NlMessage): Filter {
  const h = readTcmsg(m.payload);
  const a = AttrMap.parse(m.payload, TCMSG_LEN);
  const kind = a.str(TCA_KIND);
  if (kind === undefined) throw decodeError('filter message without TCA_KIND');
  const out: Filter = {
    ifindex: h.ifindex,
    parent: h.parent,
    handle: h.handle,
    prio: h.info >>> 16,
    protocol: swap16(h.info & 0xffff),
    kind,
    actions: [],
  };
  const chain = a.u32(TCA_CHAIN);
  if (chain !== undefined) out.chain = chain;
  const opts = a.nested(TCA_OPTIONS);
  if (!opts) return out;
  if (kind === 'u32') {
    const u: U32Info = {};
    const sel = opts.raw(TCA_U32_SEL);
    if (sel) Object.assign(u, decodeU32Sel(sel));
    const fields = [
      ['divisor', TCA_U32_DIVISOR],
      ['hash', TCA_U32_HASH],
      ['classid', TCA_U32_CLASSID],
      ['link', TCA_U32_LINK],
      ['flags', TCA_U32_FLAGS],
    ] as const;
    for (const [name, t] of fields) {
      const v = opts.u32(t);
      if (v !== undefined) u[name] = v;
    }
    out.u32 = u;
    const acts = opts.raw(TCA_U32_ACT);
    if (acts) out.actions = decodeActions(acts);
  } else if (kind === 'matchall') {
    const mall: { classid?: number; flags?: number } = {};
    const classid = opts.u32(TCA_MATCHALL_CLASSID);
    if (classid !== undefined) mall.classid = classid;
    const flags = opts.u32(TCA_MATCHALL_FLAGS);
    if (flags !== undefined) mall.flags = flags;
    out.matchall = mall;
    const acts = opts.raw(TCA_MATCHALL_ACT);
    if (acts) out.actions = decodeActions(acts);
  }
  return out;
}
