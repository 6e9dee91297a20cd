/**
 * The nftables commands of per-VM policies, as data. Pure. Layout (all in `inet tapnet`):
 *
 *   chain pol_fwd    forward, prio 10   ND/MLD return; jump pol_eg; jump pol_in
 *   chain pol_input  input,   prio 10   ND/MLD return; jump pol_eg           (VM → host)
 *   chain pol_output output,  prio 10   ND/MLD return; jump pol_in           (host → VM)
 *   chain pol_eg     counter name iifname . ether saddr map @pol_ref_eg goto pol_eg_d
 *   chain pol_in     link-local to @pol_ll: ICMPv6 only; counter name ip daddr map @pol_ref_in4 goto pol_in4_d; (ip6)
 *   chain pol_eg_d   iifname . ether saddr @pme_<h> goto pe_<h>   (one per egress class) … goto pol_deny_eg
 *   chain pol_in4_d  ip daddr @pmi4_<h> goto pi_<h>               (one per ingress class) … goto pol_deny_in
 *   chain pe_<h> / pi_<h>   the class body (src/policy/nft.ts)
 *   chain pol_deny_* / pol_rej_*   count in @pol_drop_* for the VM, then drop / reject
 *
 * Per VM there are only elements: its key in its classes' member sets, in the `pol_ref_*` objref maps
 * (mapping it to its class's counter: the pre-filter, the class's packet counter, and a reference the
 * kernel counts, so a class in use cannot be deleted) and in the `pol_drop_*` counter sets. No VM adds
 * a chain, a rule, a set or a jump element, so installing the 10,000th VM's policy costs what the
 * first did (see docs/POLICY.md for the measurements behind this choice).
 */
import type { NftJson, NftObject } from '../sys/nftables.js';
import { TABLE } from './model.js';
import {
  addChain,
  addCounter,
  addRule,
  addSet,
  addTable,
  anonSet,
  type BaseChain,
  concat,
  deleteChain,
  deleteCounter,
  deleteSet,
  drop,
  type Expr,
  element,
  flushChain,
  gotoChain,
  jumpChain,
  match,
  meta,
  payload,
  prefix,
  ret,
  setRef,
} from './nft-json.js';
import {
  type ClassDirection,
  classNames,
  egressKey,
  POLICY,
  POLICY_PRIORITY,
  type PolicyPort,
} from './policy-model.js';

const F = 'inet' as const;
const where = { family: F, table: TABLE };

/** A counter no VM maps to: "add {key: pol_none}; delete {key}" asserts that a key is absent. */
export const NO_CLASS_COUNTER = 'pol_none';

/** ICMPv6 that IPv6 cannot work without: neighbour discovery and multicast listener messages. */
const ND_TYPES = [
  'nd-router-solicit',
  'nd-router-advert',
  'nd-neighbor-solicit',
  'nd-neighbor-advert',
  'mld-listener-query',
  'mld-listener-report',
  'mld-listener-done',
  'mld2-listener-report',
];

const egressKeyExpr = (): Expr => concat(meta('iifname'), payload('ether', 'saddr'));
const ndReturn = (): Expr[] => [
  match(meta('l4proto'), 'ipv6-icmp'),
  match(payload('icmpv6', 'type'), anonSet(ND_TYPES)),
  ret,
];

function chainWithRules(name: string, base: BaseChain | undefined, rules: Expr[][]): NftObject[] {
  return [addChain(F, name, base), flushChain(F, name), ...rules.map((r) => addRule(F, name, r))];
}

function objrefMap(name: string, type: string | string[]): NftObject {
  return { add: { map: { ...where, name, type, map: 'counter' } } };
}

function counterSet(name: string, type: string | string[]): NftObject {
  return { add: { set: { ...where, name, type, stmt: [{ counter: null }] } } };
}

/** `insert rule …` (at the head of the chain). */
function insertRule(chain: string, expr: Expr[]): NftObject {
  return { insert: { rule: { ...where, chain, expr } } };
}

/** `delete rule inet tapnet <chain> handle <h>` */
export function deleteRuleByHandle(chain: string, handle: number): NftObject {
  return { delete: { rule: { ...where, chain, handle } } };
}

/** Count the drop for the VM (a lookup in a counter set counts the element matched). */
function countEgress(): Expr[][] {
  return [[match(egressKeyExpr(), setRef(POLICY.dropEgress))]];
}
function countIngress(): Expr[][] {
  return [
    [match(payload('ip', 'daddr'), setRef(POLICY.dropIngress4))],
    [match(payload('ip6', 'daddr'), setRef(POLICY.dropIngress6))],
  ];
}
const rejectRules = (): Expr[][] => [
  [match(meta('l4proto'), 'tcp'), { reject: { type: 'tcp reset' } }],
  [{ reject: { type: 'icmpx', expr: 'admin-prohibited' } }],
];

/**
 * Everything shared, idempotently. `present`: the chains that exist (`list chains`); dispatch chains
 * that exist are left alone (they hold the classes' rules), the others are (re)written.
 */
export function policyBaseCommands(present: ReadonlySet<string>): NftObject[] {
  const out: NftObject[] = [
    addTable(F),
    addCounter(F, NO_CLASS_COUNTER),
    objrefMap(POLICY.refEgress, ['ifname', 'ether_addr']),
    objrefMap(POLICY.refIngress4, 'ipv4_addr'),
    objrefMap(POLICY.refIngress6, 'ipv6_addr'),
    counterSet(POLICY.dropEgress, ['ifname', 'ether_addr']),
    counterSet(POLICY.dropIngress4, 'ipv4_addr'),
    counterSet(POLICY.dropIngress6, 'ipv6_addr'),
    addSet(F, POLICY.linkLocal, ['ifname', 'ether_addr']),
    ...chainWithRules(POLICY.denyEgress, undefined, [...countEgress(), [drop]]),
    ...chainWithRules(POLICY.denyIngress, undefined, [...countIngress(), [drop]]),
    ...chainWithRules(POLICY.rejectEgress, undefined, [...countEgress(), ...rejectRules()]),
    ...chainWithRules(POLICY.rejectIngress, undefined, [...countIngress(), ...rejectRules()]),
  ];
  for (const [chain, deny] of [
    [POLICY.egressDispatch, POLICY.denyEgress],
    [POLICY.ingress4Dispatch, POLICY.denyIngress],
    [POLICY.ingress6Dispatch, POLICY.denyIngress],
  ] as const) {
    // A key in a pol_ref_* map but in no class (cannot happen: both change in one batch) fails closed.
    if (!present.has(chain)) out.push(addChain(F, chain), addRule(F, chain, [gotoChain(deny)]));
  }
  const refCounter = (key: Expr, map: string): Expr => ({ counter: { map: { key, data: setRef(map) } } });
  out.push(
    ...chainWithRules(POLICY.egress, undefined, [
      [refCounter(egressKeyExpr(), POLICY.refEgress), gotoChain(POLICY.egressDispatch)],
    ]),
    ...chainWithRules(POLICY.ingress, undefined, [
      [
        match(payload('ip6', 'daddr'), prefix('fe80::/10')),
        match(meta('l4proto'), 'ipv6-icmp', '!='),
        match(concat(meta('oifname'), payload('ether', 'daddr')), setRef(POLICY.linkLocal)),
        gotoChain(POLICY.denyIngress),
      ],
      [refCounter(payload('ip', 'daddr'), POLICY.refIngress4), gotoChain(POLICY.ingress4Dispatch)],
      [refCounter(payload('ip6', 'daddr'), POLICY.refIngress6), gotoChain(POLICY.ingress6Dispatch)],
    ]),
  );
  const filter = (hook: BaseChain['hook']): BaseChain => ({ type: 'filter', hook, prio: POLICY_PRIORITY });
  out.push(
    ...chainWithRules(POLICY.forward, filter('forward'), [
      ndReturn(),
      [jumpChain(POLICY.egress)],
      [jumpChain(POLICY.ingress)],
    ]),
    ...chainWithRules(POLICY.input, filter('input'), [ndReturn(), [jumpChain(POLICY.egress)]]),
    // BaseChain has no output hook: `add chain inet tapnet pol_output { type filter hook output … }`.
    {
      add: {
        chain: {
          ...where,
          name: POLICY.output,
          type: 'filter',
          hook: 'output',
          prio: POLICY_PRIORITY,
          policy: 'accept',
        },
      },
    },
    flushChain(F, POLICY.output),
    addRule(F, POLICY.output, ndReturn()),
    addRule(F, POLICY.output, [jumpChain(POLICY.ingress)]),
  );
  return out;
}

/** Every shared policy chain (to tell whether the base is in place). */
export const POLICY_BASE_CHAINS: readonly string[] = [
  POLICY.forward,
  POLICY.input,
  POLICY.output,
  POLICY.egress,
  POLICY.ingress,
  POLICY.egressDispatch,
  POLICY.ingress4Dispatch,
  POLICY.ingress6Dispatch,
  POLICY.denyEgress,
  POLICY.denyIngress,
  POLICY.rejectEgress,
  POLICY.rejectIngress,
];

/** A class to install: a direction's rendered body and its hash. */
export interface PolicyClass {
  direction: ClassDirection;
  hash: string;
  rules: Expr[][];
}

/** Create (or rewrite, atomically) a class: its counter, member sets, chain and dispatch rules. */
export function classCommands(c: PolicyClass): NftObject[] {
  const n = classNames(c.direction, c.hash);
  const out: NftObject[] = [addCounter(F, n.counter)];
  if (c.direction === 'egress') {
    out.push(addSet(F, n.sets[0]!, ['ifname', 'ether_addr']));
  } else {
    out.push(addSet(F, n.sets[0]!, 'ipv4_addr'), addSet(F, n.sets[1]!, 'ipv6_addr'));
  }
  out.push(...chainWithRules(n.chain, undefined, c.rules));
  if (c.direction === 'egress') {
    out.push(
      insertRule(POLICY.egressDispatch, [match(egressKeyExpr(), setRef(n.sets[0]!)), gotoChain(n.chain)]),
    );
  } else {
    out.push(
      insertRule(POLICY.ingress4Dispatch, [
        match(payload('ip', 'daddr'), setRef(n.sets[0]!)),
        gotoChain(n.chain),
      ]),
      insertRule(POLICY.ingress6Dispatch, [
        match(payload('ip6', 'daddr'), setRef(n.sets[1]!)),
        gotoChain(n.chain),
      ]),
    );
  }
  return out;
}

/** Delete a class (GC): its dispatch rules (by handle), chain, sets and counter. EBUSY if still used. */
export function removeClassCommands(
  direction: ClassDirection,
  hash: string,
  dispatchRules: ReadonlyArray<{ chain: string; handle: number }>,
): NftObject[] {
  const n = classNames(direction, hash);
  return [
    ...dispatchRules.map((r) => deleteRuleByHandle(r.chain, r.handle)),
    flushChain(F, n.chain),
    deleteChain(F, n.chain),
    ...n.sets.map((s) => deleteSet(F, s)),
    deleteCounter(F, n.counter),
  ];
}

/** Which class (hash) each direction of a VM is in; undefined: no policy in that direction. */
export interface Membership {
  egress?: string;
  ingress?: string;
}

interface KeyedSets {
  key: NftJson;
  ref: string;
  drop: string;
  member: (hash: string) => string;
}

function portKeys(p: PolicyPort, d: ClassDirection): KeyedSets[] {
  if (d === 'egress') {
    return [
      {
        key: egressKey(p),
        ref: POLICY.refEgress,
        drop: POLICY.dropEgress,
        member: (h) => classNames('egress', h).sets[0]!,
      },
    ];
  }
  const out: KeyedSets[] = [];
  if (p.ipv4) {
    out.push({
      key: p.ipv4,
      ref: POLICY.refIngress4,
      drop: POLICY.dropIngress4,
      member: (h) => classNames('ingress', h).sets[0]!,
    });
  }
  if (p.ipv6) {
    out.push({
      key: p.ipv6,
      ref: POLICY.refIngress6,
      drop: POLICY.dropIngress6,
      member: (h) => classNames('ingress', h).sets[1]!,
    });
  }
  return out;
}

/**
 * Move a port from `from` to `to`, in one batch. Deleting what `from` says exists fails (ENOENT) when
 * it does not, adding a reference fails (EEXIST) when the key maps to another class, and a direction
 * believed to have no policy is asserted to have none, so a wrong `from` (another process changed the
 * VM) makes the batch fail instead of leaving a stale membership. Drop counters survive a move between
 * classes; they go when the direction's policy goes.
 */
export function membershipCommands(p: PolicyPort, from: Membership, to: Membership): NftObject[] {
  const dels: NftObject[] = [];
  const adds: NftObject[] = [];
  for (const d of ['egress', 'ingress'] as const) {
    const old = from[d];
    const next = to[d];
    for (const k of portKeys(p, d)) {
      if (old !== undefined && old !== next) {
        dels.push(element('delete', F, k.member(old), [k.key]), element('delete', F, k.ref, [k.key]));
        if (next === undefined) dels.push(element('delete', F, k.drop, [k.key]));
      }
      if (old === undefined && next === undefined) {
        // Assert absence: the add fails with EEXIST if the key maps to any class.
        adds.push(
          element('add', F, k.ref, [[k.key, NO_CLASS_COUNTER]]),
          element('delete', F, k.ref, [k.key]),
        );
      }
      if (next !== undefined) {
        adds.push(
          element('add', F, k.member(next), [k.key]),
          element('add', F, k.ref, [[k.key, classNames(d, next).counter]]),
          element('add', F, k.drop, [k.key]),
        );
      }
    }
    if (d === 'ingress' && p.bridged) {
      if (next !== undefined) adds.push(element('add', F, POLICY.linkLocal, [egressKey(p)]));
      else if (old !== undefined) dels.push(element('delete', F, POLICY.linkLocal, [egressKey(p)]));
    }
  }
  return [...dels, ...adds];
}
