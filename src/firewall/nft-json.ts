/**
 * Constructors for libnftables JSON (libnftables-json(5), schema 1 as nftables 1.0.6 reads it). Rules are
 * data: these return plain objects that NftContext.run() serialises with JSON.stringify. Pure.
 */
import { parseCidr } from '../ip.js';
import type { NftJson, NftObject } from '../sys/nftables.js';
import { TABLE } from './model.js';

export type Family = 'inet' | 'bridge';
export type Expr = NftJson;

// ---- expressions ----

/** `meta <key>` (iifname, oifname, iifkind, nfproto, …). */
export const meta = (key: string): Expr => ({ meta: { key } });
/** `<protocol> <field>`, e.g. `ip saddr`, `arp saddr ether`. */
export const payload = (protocol: string, field: string): Expr => ({ payload: { protocol, field } });
/** `a . b . c` */
export const concat = (...items: Expr[]): Expr => ({ concat: items });
/** `left <op> right` */
export const match = (left: Expr, right: Expr, op: '==' | '!=' = '=='): Expr => ({
  match: { op, left, right },
});
/** An anonymous set `{ a, b }`. */
export const anonSet = (items: Expr[]): Expr => ({ set: items });
/** A reference to a named set or map of the same table: `@name`. Names come from model.ts only. */
export const setRef = (name: string): Expr => `@${name}`;
/** `198.18.0.0/24` as a prefix expression. */
export function prefix(cidr: string): Expr {
  const c = parseCidr(cidr);
  const [addr] = cidr.split('/');
  return { prefix: { addr: addr!, len: c.prefix } };
}
/** `counter name "<name>"` (a named counter object, so counts survive rule rebuilds). */
export const counterRef = (name: string): Expr => ({ counter: name });
export const drop: Expr = { drop: null };
export const ret: Expr = { return: null };
export const masquerade: Expr = { masquerade: null };
/** `goto <chain>` (the chain's end ends the calling base chain too). */
export const gotoChain = (target: string): Expr => ({ goto: { target } });
/** `jump <chain>` (the chain's end returns here). */
export const jumpChain = (target: string): Expr => ({ jump: { target } });

// ---- commands ----

type Verb = 'add' | 'delete' | 'flush';

function cmd(verb: Verb, kind: string, body: Record<string, NftJson>): NftObject {
  return { [verb]: { [kind]: body } };
}

const where = (family: Family) => ({ family, table: TABLE });

/** `add table <family> tapnet` */
export const addTable = (family: Family): NftObject => cmd('add', 'table', { family, name: TABLE });
/** `delete table <family> tapnet` */
export const deleteTable = (family: Family): NftObject => cmd('delete', 'table', { family, name: TABLE });

export interface BaseChain {
  type: 'filter' | 'nat';
  hook: 'prerouting' | 'input' | 'forward' | 'postrouting';
  prio: number;
}

/** `add chain …` (regular, or base with policy accept). Adding an existing chain is a no-op. */
export function addChain(family: Family, name: string, base?: BaseChain): NftObject {
  return cmd('add', 'chain', { ...where(family), name, ...(base ? { ...base, policy: 'accept' } : {}) });
}
/** `flush chain …` */
export const flushChain = (family: Family, name: string): NftObject =>
  cmd('flush', 'chain', { ...where(family), name });
/** `delete chain …` (must be empty and unreferenced) */
export const deleteChain = (family: Family, name: string): NftObject =>
  cmd('delete', 'chain', { ...where(family), name });
/** `add rule <family> tapnet <chain> <expr…>` */
export const addRule = (family: Family, chain: string, expr: Expr[]): NftObject =>
  cmd('add', 'rule', { ...where(family), chain, expr });

/** `add set …` with a (possibly concatenated) key type. */
export function addSet(family: Family, name: string, type: string | string[], flags?: string[]): NftObject {
  return cmd('add', 'set', { ...where(family), name, type, ...(flags ? { flags } : {}) });
}
/** `add map … { type <key> : <value>; }` */
export const addMap = (family: Family, name: string, type: string, map: string): NftObject =>
  cmd('add', 'map', { ...where(family), name, type, map });
/** `delete set …` */
export const deleteSet = (family: Family, name: string): NftObject =>
  cmd('delete', 'set', { ...where(family), name });
/** `add counter …` (an existing counter keeps its value) */
export const addCounter = (family: Family, name: string): NftObject =>
  cmd('add', 'counter', { ...where(family), name });
/** `delete counter …` */
export const deleteCounter = (family: Family, name: string): NftObject =>
  cmd('delete', 'counter', { ...where(family), name });

/** `add element <family> tapnet <set> { … }` / `delete element …` */
export function element(verb: 'add' | 'delete', family: Family, set: string, elem: Expr[]): NftObject {
  return cmd(verb, 'element', { ...where(family), name: set, elem });
}
