/**
 * Per-VM network policies in nftables: the engine behind Firewall.setPolicy/removePolicy/policyCounters
 * of the nftables driver. Layout and per-VM elements: policy-batches.ts.
 *
 * Why classes and member sets, not a chain per VM behind a verdict map keyed by the VM's interface
 * (measured on this kernel, 6.18, and libnftables 1.0.6; bench/policy.ts and docs/POLICY.md):
 * - libnftables lists every chain of the namespace before each command (its cache), about 1-2 µs per
 *   chain: with 10,000 per-VM chains every firewall operation — anti-spoofing's addVm included — costs
 *   8-18 ms instead of 0.1 ms;
 * - adding a jump/goto element to a verdict map makes the kernel re-validate every jump/goto element of
 *   the table at commit (about 65-140 ns each): 0.17 ms for the first VM, 2 ms for the 10,000th;
 * - concatenated interval sets (one big map of every rule) re-clone the whole set on each commit and
 *   their lookups grow with the element count.
 * So a compiled direction is a *class*: one chain shared by every VM whose compiled direction is the
 * same (content-addressed by hash), reached through one `<key> @members goto <class>` rule per class.
 * A VM joins by adding plain set elements: no chain, no rule, no verdict element, nothing the kernel
 * re-validates, so the cost stays flat. The price: dispatch tests classes one after another (a set
 * lookup each), so keep the number of distinct compiled policies small (templates, not one per VM).
 *
 * Across processes: what this engine knows of a VM (its classes) is checked by the kernel in the same
 * batch that changes it (see membershipCommands); on a mismatch it reads the pol_ref_* maps (O(VMs),
 * once) and retries. Unused classes stay until gc() removes them; a class still referenced cannot be
 * removed (its counter is in use: EBUSY).
 */
import { isTapnetError } from '../errors.js';
import { isOpen } from '../policy/compile.js';
import { classHash, directionRules } from '../policy/nft.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { NftDocument, NftJson } from '../sys/nftables.js';
import { TABLE } from './model.js';
import {
  classCommands,
  type Membership,
  membershipCommands,
  POLICY_BASE_CHAINS,
  type PolicyClass,
  policyBaseCommands,
  removeClassCommands,
} from './policy-batches.js';
import { type ClassDirection, classNames, POLICY, type PolicyPort, parseClassName } from './policy-model.js';
import { entryCommands } from './policy-support.js';
import type { FirewallCounter, PolicyApplied, PolicyCounters, PolicyEntry, PolicyGcReport } from './types.js';

export {
  type BridgeNetfilter,
  bridgeNetfilter,
  unknownPolicyNetwork,
  validatePolicyEntry,
} from './policy-support.js';
export type { PolicyApplied, PolicyCounters, PolicyEntry, PolicyGcReport };

type Exec = (doc: NftDocument, what: string) => NftDocument;

const ZERO: FirewallCounter = { packets: 0, bytes: 0 };
const isObj = (v: unknown): v is Record<string, NftJson> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The key strings the engine indexes VMs by. */
const egressIndexKey = (ifname: string, mac: string) => `e ${ifname} ${mac}`;

/** A map or set element's key and value, whichever of nft's JSON shapes it comes in. */
function elemParts(e: NftJson): { key: NftJson; value?: NftJson; counter?: FirewallCounter } {
  let item = e;
  let counter: FirewallCounter | undefined;
  if (isObj(item) && isObj(item.elem)) {
    const c = item.elem.counter;
    if (isObj(c)) counter = { packets: Number(c.packets) || 0, bytes: Number(c.bytes) || 0 };
    item = item.elem.val ?? null;
  }
  if (Array.isArray(item) && item.length === 2)
    return { key: item[0]!, value: item[1]!, ...(counter ? { counter } : {}) };
  return { key: item, ...(counter ? { counter } : {}) };
}

/** `{concat: [ifname, mac]}` → the two strings. */
function concatKey(k: NftJson): [string, string] | undefined {
  if (isObj(k) && Array.isArray(k.concat) && k.concat.length === 2) {
    const [a, b] = k.concat;
    if (typeof a === 'string' && typeof b === 'string') return [a, b];
  }
  return undefined;
}

/** The policy engine of one nftables context (see the file header). */
export class NftPolicyEngine {
  /** Chains of `inet tapnet` as last seen; undefined: not read yet (or invalidated). */
  private chains: Set<string> | undefined;
  /** Every VM key → class, read from the pol_ref_* maps; undefined: not read yet. */
  private refs: Map<string, string> | undefined;
  /** What this engine applied per TAP. */
  private readonly known = new Map<string, Membership>();

  constructor(private readonly exec: Exec) {}

  /** Forget everything cached (after ensureNetwork applied, destroy, or a flush seen). */
  invalidate(): void {
    this.chains = undefined;
    this.refs = undefined;
    this.known.clear();
  }

  private listChains(): Set<string> {
    if (this.chains) return this.chains;
    const doc = this.exec({ nftables: [{ list: { chains: { family: 'inet' } } }] }, 'list chains');
    const names = new Set<string>();
    for (const o of doc.nftables) {
      const c = o.chain;
      if (isObj(c) && c.table === TABLE && c.family === 'inet' && typeof c.name === 'string')
        names.add(c.name);
    }
    this.chains = names;
    return names;
  }

  /** `nft -j list set|map inet tapnet <name>` for each name: one run each (libnftables 1.0.6 narrows its cache to the first object listed). */
  private listEach(kind: 'set' | 'map', names: readonly string[]): NftDocument['nftables'] {
    return names.flatMap(
      (name) =>
        this.exec(
          { nftables: [{ list: { [kind]: { family: 'inet', table: TABLE, name } } }] },
          `list ${kind} ${name}`,
        ).nftables,
    );
  }

  /** Read the pol_ref_* maps (every VM key and its class). O(VMs); only on a mismatch or when cold. */
  private loadRefs(): Map<string, string> {
    const refs = new Map<string, string>();
    this.refs = refs;
    if (!this.listChains().has(POLICY.egress)) return refs;
    for (const o of this.listEach('map', [POLICY.refEgress, POLICY.refIngress4, POLICY.refIngress6])) {
      const m = o.map;
      if (!isObj(m) || m.table !== TABLE || !Array.isArray(m.elem)) continue;
      for (const e of m.elem) {
        const { key, value } = elemParts(e);
        const cls = typeof value === 'string' ? parseClassName(value) : undefined;
        if (!cls) continue;
        if (m.name === POLICY.refEgress) {
          const k = concatKey(key);
          if (k) refs.set(egressIndexKey(k[0], k[1]), cls.hash);
        } else if (typeof key === 'string') {
          refs.set(`${m.name === POLICY.refIngress4 ? 4 : 6} ${key}`, cls.hash);
        }
      }
    }
    return refs;
  }

  /** What the engine believes a port's classes are (from what it applied, or from the kernel). */
  private membership(p: PolicyPort): Membership {
    const known = this.known.get(p.tap);
    if (known) return known;
    if (!this.refs) return {};
    const out: Membership = {};
    const e = this.refs.get(egressIndexKey(p.ifname, p.mac));
    const i =
      (p.ipv4 && this.refs.get(`4 ${p.ipv4}`)) || (p.ipv6 && this.refs.get(`6 ${p.ipv6}`)) || undefined;
    if (e) out.egress = e;
    if (i) out.ingress = i;
    return out;
  }

  private remember(p: PolicyPort, m: Membership): void {
    if (m.egress === undefined && m.ingress === undefined) this.known.delete(p.tap);
    else this.known.set(p.tap, m);
    if (!this.refs) return;
    const set = (k: string, v: string | undefined) =>
      v === undefined ? this.refs!.delete(k) : this.refs!.set(k, v);
    set(egressIndexKey(p.ifname, p.mac), m.egress);
    if (p.ipv4) set(`4 ${p.ipv4}`, m.ingress);
    if (p.ipv6) set(`6 ${p.ipv6}`, m.ingress);
  }

  /** Render a compiled policy's directions into classes (undefined for a direction that lets all through). */
  static classes(policy: CompiledPolicy): { egress?: PolicyClass; ingress?: PolicyClass } {
    const out: { egress?: PolicyClass; ingress?: PolicyClass } = {};
    for (const d of ['egress', 'ingress'] as const) {
      if (isOpen(policy[d])) continue;
      const targets =
        d === 'egress'
          ? { deny: POLICY.denyEgress, reject: POLICY.rejectEgress }
          : { deny: POLICY.denyIngress, reject: POLICY.rejectIngress };
      const rules = directionRules(policy[d], d, targets);
      out[d] = { direction: d, hash: classHash(d, rules), rules };
    }
    return out;
  }

  /** Put `p` in the classes of `policy` (creating them if needed), atomically. */
  set(p: PolicyPort, policy: CompiledPolicy): PolicyApplied {
    const classes = NftPolicyEngine.classes(policy);
    const to: Membership = {};
    if (classes.egress) to.egress = classes.egress.hash;
    if (classes.ingress) to.ingress = classes.ingress.hash;
    this.apply(
      p,
      to,
      [classes.egress, classes.ingress].filter((c): c is PolicyClass => !!c),
    );
    return { ...to, unresolved: [...policy.unresolved] };
  }

  /** Take `p` out of its classes (its drop counters go too). No policy is success. */
  remove(p: PolicyPort): void {
    if (!this.listChains().has(POLICY.egress)) {
      this.known.delete(p.tap);
      return;
    }
    this.apply(p, {}, []);
  }

  private batch(p: PolicyPort, to: Membership, classes: PolicyClass[]) {
    const chains = this.listChains();
    const cmds = [];
    const baseMissing = POLICY_BASE_CHAINS.some((c) => !chains.has(c));
    if (baseMissing) cmds.push(...policyBaseCommands(chains));
    const created: string[] = [];
    for (const c of classes) {
      const chain = classNames(c.direction, c.hash).chain;
      if (!chains.has(chain)) {
        cmds.push(...classCommands(c));
        created.push(chain);
      }
    }
    cmds.push(...membershipCommands(p, this.membership(p), to));
    return { doc: { nftables: cmds }, created: baseMissing ? [...POLICY_BASE_CHAINS, ...created] : created };
  }

  private apply(p: PolicyPort, to: Membership, classes: PolicyClass[]): void {
    const what = `${to.egress || to.ingress ? 'set' : 'remove'} policy of ${p.tap}`;
    let attempt = this.batch(p, to, classes);
    try {
      this.exec(attempt.doc, what);
    } catch (e) {
      if (!isTapnetError(e, 'ERR_FIREWALL') || (e.errno !== 'ENOENT' && e.errno !== 'EEXIST')) throw e;
      // Something differs from what we believed (another process, a flush): read the kernel, retry once.
      this.chains = undefined;
      this.known.delete(p.tap);
      this.loadRefs();
      if (to.egress === undefined && to.ingress === undefined && !this.listChains().has(POLICY.egress))
        return;
      attempt = this.batch(p, to, classes);
      this.exec(attempt.doc, what);
    }
    for (const c of attempt.created) this.chains?.add(c);
    this.remember(p, to);
  }

  /** Drop/reject counters of these ports (one listing of the counter sets, O(VMs)). Keyed by TAP. */
  counters(ports: readonly PolicyPort[]): Map<string, PolicyCounters> {
    const out = new Map<string, PolicyCounters>();
    for (const p of ports) out.set(p.tap, { egress: { ...ZERO }, ingress: { ...ZERO } });
    if (ports.length === 0 || !this.listChains().has(POLICY.egress)) return out;
    const byKey = new Map<string, FirewallCounter>();
    for (const o of this.listEach('set', [POLICY.dropEgress, POLICY.dropIngress4, POLICY.dropIngress6])) {
      const s = o.set;
      if (!isObj(s) || s.table !== TABLE || !Array.isArray(s.elem)) continue;
      for (const e of s.elem) {
        const { key, counter } = elemParts(e);
        if (!counter) continue;
        const k = concatKey(key);
        if (s.name === POLICY.dropEgress && k) byKey.set(egressIndexKey(k[0], k[1]), counter);
        else if (typeof key === 'string')
          byKey.set(`${s.name === POLICY.dropIngress4 ? 4 : 6} ${key}`, counter);
      }
    }
    const add = (a: FirewallCounter, b: FirewallCounter | undefined) => {
      if (!b) return;
      a.packets += b.packets;
      a.bytes += b.bytes;
    };
    for (const p of ports) {
      const c = out.get(p.tap)!;
      add(c.egress, byKey.get(egressIndexKey(p.ifname, p.mac)));
      if (p.ipv4) add(c.ingress, byKey.get(`4 ${p.ipv4}`));
      if (p.ipv6) add(c.ingress, byKey.get(`6 ${p.ipv6}`));
    }
    return out;
  }

  /** Every VM key with a policy (reads the kernel). */
  list(): PolicyEntry[] {
    this.chains = undefined;
    const out: PolicyEntry[] = [];
    for (const [k, cls] of this.loadRefs()) {
      const [kind, a, b] = k.split(' ');
      if (kind === 'e') out.push({ direction: 'egress', ifname: a!, mac: b!, class: cls });
      else out.push({ direction: 'ingress', address: a!, class: cls });
    }
    return out;
  }

  /** Remove exactly these keys (as listed), in one batch; keys gone meanwhile are skipped. */
  removeEntries(entries: readonly PolicyEntry[]): void {
    if (entries.length === 0) return;
    const one = (e: PolicyEntry) => entryCommands(e);
    try {
      this.exec({ nftables: entries.flatMap(one) }, `remove ${entries.length} policy entries`);
    } catch (e) {
      if (!isTapnetError(e, 'ERR_FIREWALL') || e.errno !== 'ENOENT') throw e;
      for (const entry of entries) {
        try {
          this.exec({ nftables: one(entry) }, 'remove policy entry');
        } catch (e2) {
          if (!isTapnetError(e2, 'ERR_FIREWALL') || e2.errno !== 'ENOENT') throw e2;
        }
      }
    }
    this.invalidate();
  }

  /** Remove classes no VM uses (each in its own batch; one that is in use again is left: EBUSY). */
  gc(): PolicyGcReport {
    this.chains = undefined;
    const used = new Set(
      [...this.loadRefs()].map(([k, h]) => `${k.startsWith('e ') ? 'egress' : 'ingress'} ${h}`),
    );
    const doc = this.exec({ nftables: [{ list: { table: { family: 'inet', name: TABLE } } }] }, 'list table');
    const classes: Array<{ direction: ClassDirection; hash: string }> = [];
    const dispatch = new Map<string, Array<{ chain: string; handle: number }>>();
    for (const o of doc.nftables) {
      if (isObj(o.chain) && o.chain.table === TABLE && typeof o.chain.name === 'string') {
        const c = parseClassName(o.chain.name);
        if (c) classes.push(c);
      }
      const r = o.rule;
      if (!isObj(r) || r.table !== TABLE || typeof r.chain !== 'string' || typeof r.handle !== 'number')
        continue;
      if (
        ![POLICY.egressDispatch, POLICY.ingress4Dispatch, POLICY.ingress6Dispatch].includes(r.chain as never)
      )
        continue;
      for (const x of Array.isArray(r.expr) ? r.expr : []) {
        const target = isObj(x) && isObj(x.goto) ? x.goto.target : undefined;
        if (typeof target !== 'string') continue;
        const list = dispatch.get(target) ?? [];
        list.push({ chain: r.chain, handle: r.handle });
        dispatch.set(target, list);
      }
    }
    const removed: string[] = [];
    let inUse = 0;
    for (const c of classes) {
      if (used.has(`${c.direction} ${c.hash}`)) {
        inUse++;
        continue;
      }
      const chain = classNames(c.direction, c.hash).chain;
      try {
        this.exec(
          { nftables: removeClassCommands(c.direction, c.hash, dispatch.get(chain) ?? []) },
          `remove ${chain}`,
        );
        removed.push(chain);
      } catch (e) {
        if (!isTapnetError(e, 'ERR_FIREWALL') || e.errno !== 'EBUSY') throw e;
        inUse++;
      }
    }
    this.chains = undefined;
    return { removed: removed.sort(), inUse };
  }
}
