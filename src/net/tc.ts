/**
 * Traffic control on a device, as typed operations over a NetlinkSocket: qdiscs, filters, and the three
 * things tapnet needs from tc — redirecting one device's ingress to another's egress (what the
 * tc-redirect-tap CNI plugin does, per direction), shaping towards a guest (tbf on the TAP's egress), and
 * policing what a guest sends (police on the TAP's ingress).
 *
 * Filters tapnet installs live at fixed priorities on the ingress hook (FILTER_PRIO): the police filter
 * runs first and lets conforming packets `continue` to the redirect filter. Both use a u32 `match u32 0 0`
 * classifier by default (in every kernel with CONFIG_NET_CLS_U32; matchall is optional).
 */
import { isAlreadyGone, isTapnetError, TapnetError } from '../errors.js';
import {
  ETH_P_ALL,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  RTM_DELQDISC,
  RTM_DELTFILTER,
  RTM_NEWQDISC,
  RTM_NEWTFILTER,
  TC_H_INGRESS,
  TC_H_ROOT,
} from '../netlink/constants.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import {
  decodeFilter,
  decodeQdisc,
  encodeFilterRequest,
  encodeGetFilters,
  encodeGetQdiscs,
  encodeQdiscRequest,
  type Filter,
  type FilterSpec,
  type Qdisc,
  type QdiscSpec,
  readTcmsg,
} from '../netlink/tc.js';
import type { PoliceAction, TcActionSpec } from '../netlink/tc-action.js';
import { TC_H_PARENT_INGRESS } from '../netlink/tc-constants.js';
import { xmitTicks } from '../netlink/tc-rate.js';
import { validateInt } from '../validate.js';

export type { Filter, FilterSpec, Qdisc, QdiscSpec };

/** Filter parent of the ingress hook (`ffff:fff2`), on an `ingress` or a `clsact` qdisc. */
export const INGRESS_PARENT = TC_H_PARENT_INGRESS;

/** The priorities of tapnet's own ingress filters: policing first, then the redirect. */
export const FILTER_PRIO = { police: 10, redirect: 20 } as const;

/** The smallest bucket we accept: one full Ethernet frame (a smaller one drops every full-size packet). */
export const MIN_BURST_BYTES = 1514;

// ---- qdiscs ----

function qdiscWhat(ifindex: number, kind: string): string {
  return `qdisc ${kind} on ifindex ${ifindex}`;
}

/** Add a qdisc; fails with ERR_CONFLICT if one is there. `tc qdisc add dev X {ingress|clsact|root tbf …}` */
export function addQdisc(
  nl: NetlinkSocket,
  ifindex: number,
  spec: QdiscSpec,
  at: { parent?: number; handle?: number } = {},
): void {
  nl.request(
    encodeQdiscRequest(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, { ifindex, ...at, spec }),
    qdiscWhat(ifindex, spec.kind),
  );
}

/**
 * Make sure a qdisc is in place with these parameters. `tc qdisc replace dev X root tbf …` for tbf (changed
 * in place when a tbf is there, otherwise it replaces the root qdisc); for ingress/clsact, an existing
 * ingress or clsact qdisc is kept as it is (both carry ingress filters; replacing would drop others' filters).
 */
export function ensureQdisc(
  nl: NetlinkSocket,
  ifindex: number,
  spec: QdiscSpec,
  at: { parent?: number; handle?: number } = {},
): void {
  if (spec.kind !== 'ingress' && spec.kind !== 'clsact') {
    nl.request(
      encodeQdiscRequest(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, { ifindex, ...at, spec }),
      qdiscWhat(ifindex, spec.kind),
    );
    return;
  }
  try {
    // Without NLM_F_EXCL the kernel treats an existing qdisc of the same kind as a no-op change.
    nl.request(
      encodeQdiscRequest(RTM_NEWQDISC, NLM_F_CREATE, { ifindex, ...at, spec }),
      qdiscWhat(ifindex, spec.kind),
    );
  } catch (e) {
    // A qdisc of the other kind (EINVAL "Invalid qdisc name") also gives us an ingress hook.
    if (isTapnetError(e) && e.errno === 'EINVAL' && ingressQdisc(nl, ifindex)) return;
    throw e;
  }
}

/** The device's ingress or clsact qdisc, if it has one. */
export function ingressQdisc(nl: NetlinkSocket, ifindex: number): Qdisc | undefined {
  return listQdiscs(nl, ifindex).find(
    (q) => q.parent === TC_H_INGRESS && (q.kind === 'ingress' || q.kind === 'clsact'),
  );
}

/**
 * Delete a qdisc; absent (or of another kind than `kind`) is success. `tc qdisc del dev X ingress` /
 * `tc qdisc del dev X root`.
 */
export function delQdisc(
  nl: NetlinkSocket,
  ifindex: number,
  q: { kind: string; parent?: number; handle?: number },
): void {
  const spec = { kind: q.kind };
  const req = {
    ifindex,
    spec,
    ...(q.parent !== undefined ? { parent: q.parent } : {}),
    ...(q.handle !== undefined ? { handle: q.handle } : {}),
  };
  try {
    nl.request(encodeQdiscRequest(RTM_DELQDISC, 0, req), qdiscWhat(ifindex, q.kind));
  } catch (e) {
    if (isAlreadyGone(e)) return;
    // EINVAL: the slot holds nothing (noop) or a qdisc of another kind. Either way ours is gone.
    if (isTapnetError(e) && e.errno === 'EINVAL') {
      const parent = q.parent ?? (q.kind === 'ingress' || q.kind === 'clsact' ? TC_H_INGRESS : TC_H_ROOT);
      if (!listQdiscs(nl, ifindex).some((x) => x.parent === parent && x.kind === q.kind)) return;
    }
    throw e;
  }
}

/** Qdiscs with their parameters and counters, of one device or all. `tc -s qdisc show [dev X]` */
export function listQdiscs(nl: NetlinkSocket, ifindex?: number): Qdisc[] {
  const out: Qdisc[] = [];
  // The kernel dumps every device's qdiscs; decode only the ones asked for.
  for (const m of nl.dump(encodeGetQdiscs(), 'qdisc dump')) {
    if (m.type !== RTM_NEWQDISC) continue;
    if (ifindex === undefined || readTcmsg(m.payload).ifindex === ifindex) out.push(decodeQdisc(m));
  }
  return out;
}

// ---- filters ----

export interface FilterPlace {
  /** Default INGRESS_PARENT. */
  parent?: number;
  /** 1–65535. */
  prio: number;
  /** ETH_P_* (host order). Default ETH_P_ALL. */
  protocol?: number;
  /** A filter's own handle, to address one node (e.g. u32 `800::800`). */
  handle?: number;
}

function filterWhat(ifindex: number, prio: number): string {
  return `filter prio ${prio} on ifindex ${ifindex}`;
}

/**
 * Add a filter with its actions; ERR_CONFLICT if that handle exists.
 * `tc filter add dev X parent ffff:fff2 prio P protocol all u32 match u32 0 0 action …`
 */
export function addFilter(nl: NetlinkSocket, ifindex: number, spec: FilterSpec, place: FilterPlace): void {
  validateInt(place.prio, 'filter prio', 1, 0xffff);
  nl.request(
    encodeFilterRequest(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, {
      ifindex,
      parent: place.parent ?? INGRESS_PARENT,
      prio: place.prio,
      protocol: place.protocol ?? ETH_P_ALL,
      ...(place.handle !== undefined ? { handle: place.handle } : {}),
      spec,
    }),
    filterWhat(ifindex, place.prio),
  );
}

/** Delete the filters at a priority (or one handle); absent is success. `tc filter del dev X parent P prio N` */
export function delFilter(nl: NetlinkSocket, ifindex: number, place: FilterPlace): void {
  const parent = place.parent ?? INGRESS_PARENT;
  validateInt(place.prio, 'filter prio', 1, 0xffff);
  try {
    nl.request(
      encodeFilterRequest(RTM_DELTFILTER, 0, {
        ifindex,
        parent,
        prio: place.prio,
        protocol: place.protocol ?? 0,
        ...(place.handle !== undefined ? { handle: place.handle } : {}),
      }),
      filterWhat(ifindex, place.prio),
    );
  } catch (e) {
    if (isAlreadyGone(e)) return;
    // EINVAL "Parent Qdisc doesn't exists": no qdisc, hence no filter.
    if (
      isTapnetError(e) &&
      e.errno === 'EINVAL' &&
      !listFilters(nl, ifindex, parent).some((f) => f.prio === place.prio)
    )
      return;
    throw e;
  }
}

/**
 * The filters under `parent` of one device, as the kernel dumps them (u32 gives a head entry and its hash
 * table before the nodes that hold actions). `tc -s filter show dev X ingress`
 */
export function listFilters(nl: NetlinkSocket, ifindex: number, parent: number = INGRESS_PARENT): Filter[] {
  return nl
    .dump(encodeGetFilters(ifindex, parent), `filter dump of ifindex ${ifindex}`)
    .filter((m) => m.type === RTM_NEWTFILTER)
    .map(decodeFilter);
}

/**
 * Make the filter at `prio` exactly `spec`: nothing to do when it already is; a u32 node is replaced in place
 * (no moment without a filter); anything else is deleted and added again.
 */
function ensureFilter(
  nl: NetlinkSocket,
  ifindex: number,
  spec: FilterSpec,
  prio: number,
  same: (f: Filter) => boolean,
): void {
  const atPrio = listFilters(nl, ifindex).filter((f) => f.prio === prio);
  const nodes = atPrio.filter((f) => f.actions.length > 0);
  const sameKindAndProto = atPrio.every((f) => f.kind === spec.kind && f.protocol === ETH_P_ALL);
  if (nodes.length === 1 && sameKindAndProto && same(nodes[0]!)) return;
  if (spec.kind === 'u32' && nodes.length === 1 && sameKindAndProto) {
    nl.request(
      encodeFilterRequest(RTM_NEWTFILTER, NLM_F_CREATE, {
        ifindex,
        parent: INGRESS_PARENT,
        prio,
        protocol: ETH_P_ALL,
        handle: nodes[0]!.handle,
        spec,
      }),
      filterWhat(ifindex, prio),
    );
    return;
  }
  if (atPrio.length > 0) delFilter(nl, ifindex, { prio });
  addFilter(nl, ifindex, spec, { prio });
}

/** Delete one of tapnet's ingress filters, and the ingress qdisc when no filter is left on it. */
function removeIngressFilter(nl: NetlinkSocket, ifindex: number, prio: number): void {
  delFilter(nl, ifindex, { prio });
  if (listFilters(nl, ifindex).length === 0) delQdisc(nl, ifindex, { kind: 'ingress' });
}

// ---- redirect (tc-redirect-tap) ----

export interface RedirectOptions {
  /** Default FILTER_PRIO.redirect. */
  prio?: number;
  /** Default 'u32' (`match u32 0 0`), as tc-redirect-tap. */
  classifier?: 'u32' | 'matchall';
}

/**
 * Send everything arriving on `fromIfindex` out of `toIfindex`, idempotently:
 * `tc qdisc add dev FROM ingress; tc filter add dev FROM parent ffff: protocol all u32 match u32 0 0
 * action mirred egress redirect dev TO` (one direction of tc-redirect-tap).
 */
export function redirectIngress(
  nl: NetlinkSocket,
  fromIfindex: number,
  toIfindex: number,
  o: RedirectOptions = {},
): void {
  validateInt(fromIfindex, 'redirect source ifindex', 1, 0x7fffffff);
  validateInt(toIfindex, 'redirect target ifindex', 1, 0x7fffffff);
  if (fromIfindex === toIfindex)
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'cannot redirect a device to itself');
  const action: TcActionSpec = { kind: 'mirred', mode: 'redirect', direction: 'egress', ifindex: toIfindex };
  ensureQdisc(nl, fromIfindex, { kind: 'ingress' });
  ensureFilter(
    nl,
    fromIfindex,
    { kind: o.classifier ?? 'u32', actions: [action] },
    o.prio ?? FILTER_PRIO.redirect,
    (f) => {
      const a = f.actions[0];
      return (
        f.actions.length === 1 &&
        a?.kind === 'mirred' &&
        'ifindex' in a &&
        a.ifindex === toIfindex &&
        a.mode === 'redirect' &&
        a.direction === 'egress'
      );
    },
  );
}

/** Undo redirectIngress (absent is success). `tc filter del dev FROM parent ffff: prio P` (+ `tc qdisc del dev FROM ingress` when empty) */
export function removeRedirectIngress(
  nl: NetlinkSocket,
  fromIfindex: number,
  o: { prio?: number } = {},
): void {
  removeIngressFilter(nl, fromIfindex, o.prio ?? FILTER_PRIO.redirect);
}

// ---- shaping and policing ----

export interface RateLimit {
  /** Bytes per second (`rate 100mbit` is 12_500_000). */
  rateBps: number;
  /** Bucket in bytes, at least MIN_BURST_BYTES. */
  burstBytes: number;
}

function checkRate(r: RateLimit, what: string): void {
  validateInt(r.rateBps, `${what} rate (bytes/s)`, 1, Number.MAX_SAFE_INTEGER);
  validateInt(r.burstBytes, `${what} burst (bytes)`, MIN_BURST_BYTES, 0xffffffff);
}

/**
 * Shape what leaves `ifindex` (for a TAP: what the guest receives) with a root tbf, replacing the root qdisc.
 * `tc qdisc replace dev X root tbf rate R burst B limit L` (limit default: 25 ms at R, plus B).
 */
export function setEgressRate(
  nl: NetlinkSocket,
  ifindex: number,
  r: RateLimit & { limitBytes?: number },
): void {
  checkRate(r, 'egress');
  const spec: QdiscSpec = { kind: 'tbf', rateBps: r.rateBps, burstBytes: r.burstBytes };
  if (r.limitBytes !== undefined) spec.limitBytes = r.limitBytes;
  ensureQdisc(nl, ifindex, spec);
}

/**
 * Remove the root tbf set by setEgressRate; absent is success, and any other root qdisc is left alone (the
 * kernel checks the kind). `tc qdisc del dev X root tbf`
 */
export function removeEgressRate(nl: NetlinkSocket, ifindex: number): void {
  delQdisc(nl, ifindex, { kind: 'tbf', parent: TC_H_ROOT });
}

export interface PoliceOptions {
  /** Default 'u32'. */
  classifier?: 'u32' | 'matchall';
  /** Largest packet that can conform; default 0 (the kernel's 2040 bytes; GSO packets are checked per segment). */
  mtu?: number;
}

/**
 * Police what arrives on `ifindex` (for a TAP: what the guest sends): packets over the rate are dropped,
 * the rest continue to later filters (e.g. the redirect). `tc qdisc add dev X ingress; tc filter replace dev
 * X parent ffff: prio 10 protocol all u32 match u32 0 0 action police rate R burst B conform-exceed drop/continue`
 */
export function setIngressPolice(
  nl: NetlinkSocket,
  ifindex: number,
  r: RateLimit,
  o: PoliceOptions = {},
): void {
  checkRate(r, 'ingress police');
  const mtu = validateInt(o.mtu ?? 0, 'police mtu', 0, 0xffffffff);
  const action: TcActionSpec = {
    kind: 'police',
    rateBps: r.rateBps,
    burstBytes: r.burstBytes,
    mtu,
    exceed: 'drop',
    conform: 'continue',
  };
  const ticks = xmitTicks(r.rateBps, r.burstBytes);
  ensureQdisc(nl, ifindex, { kind: 'ingress' });
  ensureFilter(nl, ifindex, { kind: o.classifier ?? 'u32', actions: [action] }, FILTER_PRIO.police, (f) => {
    const a = f.actions[0] as PoliceAction | undefined;
    return (
      f.actions.length === 1 &&
      a?.kind === 'police' &&
      a.rateBps === r.rateBps &&
      a.burstTicks === ticks &&
      (mtu === 0 || a.mtu === mtu) &&
      a.exceed === 'drop' &&
      a.conform === 'continue'
    );
  });
}

/** Undo setIngressPolice (absent is success). `tc filter del dev X parent ffff: prio 10` */
export function removeIngressPolice(nl: NetlinkSocket, ifindex: number): void {
  removeIngressFilter(nl, ifindex, FILTER_PRIO.police);
}
