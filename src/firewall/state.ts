/**
 * What tapnet's tables hold, read back from `nft -j list table` output: chains, sets and their elements,
 * counters, rules. Pure parsing, so reconcile and doctor logic is testable without a kernel.
 */
import type { NftDocument, NftJson } from '../sys/nftables.js';
import { parseObjectName, TABLE, VM_COUNTER_MAP, VM_IP4_SET, VM_IP6_SET, VM_MAC_SET } from './model.js';
import type { Family } from './nft-json.js';
import type { FirewallCounter, FirewallPort, Topology } from './types.js';

export interface ChainInfo {
  type?: string;
  hook?: string;
  prio?: number;
}

export interface FamilySnapshot {
  present: boolean;
  chains: Map<string, ChainInfo>;
  /** Sets and maps by name: their elements as listed. */
  sets: Map<string, NftJson[]>;
  counters: Map<string, FirewallCounter>;
  /** Rules by chain: each rule's expression list. */
  rules: Map<string, NftJson[][]>;
}

export interface Snapshot {
  inet: FamilySnapshot;
  bridge: FamilySnapshot;
}

export const FAMILIES: readonly Family[] = ['inet', 'bridge'];

/** A family with nothing in it (`present`: whether its table exists). */
export function emptyFamily(present = false): FamilySnapshot {
  return { present, chains: new Map(), sets: new Map(), counters: new Map(), rules: new Map() };
}

/** Neither table exists. */
export function emptySnapshot(): Snapshot {
  return { inet: emptyFamily(), bridge: emptyFamily() };
}

type Obj = Record<string, NftJson>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Which tapnet tables appear in list output (`list tables`, or any object of ours, e.g. `list chains`). */
export function tablesPresent(doc: NftDocument): Record<Family, boolean> {
  const out: Record<Family, boolean> = { inet: false, bridge: false };
  for (const o of doc.nftables) {
    const [kind, body] = Object.entries(o)[0] ?? [];
    if (!isObj(body) || (body.family !== 'inet' && body.family !== 'bridge')) continue;
    if ((kind === 'table' ? body.name : body.table) === TABLE) out[body.family] = true;
  }
  return out;
}

/** Fold `list table` output (any number of tables) into a snapshot of tapnet's tables. */
export function parseSnapshot(doc: NftDocument, present: Record<Family, boolean>): Snapshot {
  const snap: Snapshot = { inet: emptyFamily(present.inet), bridge: emptyFamily(present.bridge) };
  for (const o of doc.nftables) {
    const [kind, body] = Object.entries(o)[0] ?? [];
    if (!kind || !isObj(body) || body.table !== TABLE) continue;
    if (body.family !== 'inet' && body.family !== 'bridge') continue;
    const fam = snap[body.family];
    const name = typeof body.name === 'string' ? body.name : '';
    switch (kind) {
      case 'chain':
        fam.chains.set(name, {
          ...(typeof body.type === 'string' ? { type: body.type } : {}),
          ...(typeof body.hook === 'string' ? { hook: body.hook } : {}),
          ...(typeof body.prio === 'number' ? { prio: body.prio } : {}),
        });
        break;
      case 'set':
      case 'map':
        fam.sets.set(name, Array.isArray(body.elem) ? body.elem : []);
        break;
      case 'counter':
        fam.counters.set(name, {
          packets: typeof body.packets === 'number' ? body.packets : 0,
          bytes: typeof body.bytes === 'number' ? body.bytes : 0,
        });
        break;
      case 'rule': {
        const chain = typeof body.chain === 'string' ? body.chain : '';
        const list = fam.rules.get(chain) ?? [];
        list.push(Array.isArray(body.expr) ? body.expr : []);
        fam.rules.set(chain, list);
        break;
      }
    }
  }
  return snap;
}

/** An element's value without per-element extras (`{"elem": {"val": …, "counter": …}}`). */
function elemValue(e: NftJson): NftJson {
  if (isObj(e) && isObj(e.elem) && 'val' in e.elem) return e.elem.val ?? null;
  return e;
}

/** `ifname . value` pairs of a concatenated set. */
export function concatPairs(elems: NftJson[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const raw of elems) {
    const e = elemValue(raw);
    if (!isObj(e) || !Array.isArray(e.concat) || e.concat.length !== 2) continue;
    const [a, b] = e.concat;
    if (typeof a === 'string' && typeof b === 'string') out.push([a, b]);
  }
  return out;
}

/** `key → value` string entries of a map (e.g. `vm_counter`: TAP → counter name). */
export function mapEntries(elems: NftJson[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const e of elems) {
    if (!Array.isArray(e) || e.length !== 2) continue;
    const [key, value] = e;
    if (typeof key === 'string' && typeof value === 'string') out.push([key, value]);
  }
  return out;
}

/** Prefix elements of an interval set as `addr/len` (single addresses as /32 or /128). */
export function prefixElems(elems: NftJson[]): string[] {
  const out: string[] = [];
  for (const raw of elems) {
    const e = elemValue(raw);
    if (
      isObj(e) &&
      isObj(e.prefix) &&
      typeof e.prefix.addr === 'string' &&
      typeof e.prefix.len === 'number'
    ) {
      out.push(`${e.prefix.addr}/${e.prefix.len}`);
    } else if (typeof e === 'string') {
      out.push(e.includes(':') ? `${e}/128` : `${e}/32`);
    }
  }
  return out;
}

/** The TAP → network entries of a family's `vm_counter` map. */
export function portNetworks(fam: FamilySnapshot): Map<string, string> {
  const out = new Map<string, string>();
  for (const [ifname, counter] of mapEntries(fam.sets.get(VM_COUNTER_MAP) ?? [])) {
    const o = parseObjectName(counter);
    if (o?.kind === 'spoof') out.set(ifname, o.network);
  }
  return out;
}

/** Every registered port and address in a snapshot (listVms). */
export function portsOf(snap: Snapshot): FirewallPort[] {
  const out: FirewallPort[] = [];
  for (const family of FAMILIES) {
    const fam = snap[family];
    const topology: Topology = family === 'bridge' ? 'bridge' : 'routed';
    const networks = portNetworks(fam);
    const ports = new Map<string, FirewallPort>();
    const get = (ifname: string): FirewallPort => {
      let p = ports.get(ifname);
      if (!p) {
        p = { network: networks.get(ifname), ifname, topology, macs: [], ipv4: [], ipv6: [] };
        ports.set(ifname, p);
      }
      return p;
    };
    for (const ifname of networks.keys()) get(ifname);
    for (const [set, field] of [
      [VM_MAC_SET, 'macs'],
      [VM_IP4_SET, 'ipv4'],
      [VM_IP6_SET, 'ipv6'],
    ] as const) {
      for (const [ifname, value] of concatPairs(fam.sets.get(set) ?? [])) get(ifname)[field].push(value);
    }
    out.push(...ports.values());
  }
  return out.sort((a, b) => a.ifname.localeCompare(b.ifname) || a.topology.localeCompare(b.topology));
}

/** Networks present in a snapshot: those with a `spoof_<net>` or `isolate_<net>` counter. */
export function networksOf(snap: Snapshot): Set<string> {
  const out = new Set<string>();
  for (const family of FAMILIES) {
    for (const name of snap[family].counters.keys()) {
      const o = parseObjectName(name);
      if (o?.kind === 'spoof' || o?.kind === 'isolate') out.add(o.network);
    }
  }
  return out;
}
