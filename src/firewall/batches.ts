/**
 * The batches the nftables driver runs, built from a definition and (when removing things) a snapshot of
 * what exists. Pure: each returns one libnftables JSON document, applied as one transaction.
 */
import type { NftDocument, NftJson, NftObject } from '../sys/nftables.js';
import {
  ANTISPOOF_CHAIN,
  guardChainName,
  type NetworkSpec,
  objectName,
  pairSubnet,
  SPOOFED_CHAIN,
  SUBNETS4_SET,
  SUBNETS6_SET,
  subnetPair,
  topologyFamily,
  UNREGISTERED_COUNTER,
  VM_COUNTER_MAP,
  VM_IP4_SET,
  VM_IP6_SET,
  VM_MAC_SET,
  type VmSpec,
} from './model.js';
import {
  addChain,
  addCounter,
  addMap,
  addRule,
  addSet,
  addTable,
  type BaseChain,
  deleteChain,
  deleteCounter,
  deleteSet,
  deleteTable,
  element,
  type Family,
  flushChain,
  prefix,
} from './nft-json.js';
import { antispoofRules, guardRules, isolationRules, natRules, PRIO, spoofedRules } from './rules.js';
import {
  concatPairs,
  FAMILIES,
  type FamilySnapshot,
  portNetworks,
  prefixElems,
  type Snapshot,
} from './state.js';

/** Create-or-replace a chain's rules atomically: add (no-op if present), flush, add each rule. */
function chainWithRules(
  family: Family,
  name: string,
  base: BaseChain | undefined,
  rules: NftJson[][],
): NftObject[] {
  return [
    addChain(family, name, base),
    flushChain(family, name),
    ...rules.map((r) => addRule(family, name, r)),
  ];
}

/** Tables, per-VM sets, anti-spoofing chains and the guard for `tapPrefix`, in both families. */
function sharedObjects(tapPrefix: string): NftObject[] {
  const out: NftObject[] = [];
  for (const family of FAMILIES) {
    const prio = family === 'bridge' ? PRIO.bridgePrerouting : PRIO.inetPrerouting;
    out.push(
      addTable(family),
      addSet(family, VM_MAC_SET, ['ifname', 'ether_addr']),
      addSet(family, VM_IP4_SET, ['ifname', 'ipv4_addr']),
      addSet(family, VM_IP6_SET, ['ifname', 'ipv6_addr']),
      addMap(family, VM_COUNTER_MAP, 'ifname', 'counter'),
      addCounter(family, UNREGISTERED_COUNTER),
      ...chainWithRules(family, SPOOFED_CHAIN, undefined, spoofedRules()),
      ...chainWithRules(family, ANTISPOOF_CHAIN, undefined, antispoofRules(family)),
      ...chainWithRules(
        family,
        guardChainName(tapPrefix),
        { type: 'filter', hook: 'prerouting', prio },
        guardRules(tapPrefix),
      ),
    );
  }
  out.push(
    addSet('inet', SUBNETS4_SET, 'ipv4_addr', ['interval']),
    addSet('inet', SUBNETS6_SET, 'ipv6_addr', ['interval']),
  );
  return out;
}

/** One port's elements in one family. `network` set: include its `vm_counter` entry. */
export interface PortElements {
  family: Family;
  ifname: string;
  network: string | undefined;
  macs: string[];
  ipv4: string[];
  ipv6: string[];
}

/** A VM as the elements it owns. */
export function vmElements(vm: VmSpec, topology: NetworkSpec['topology']): PortElements {
  return {
    family: topologyFamily(topology),
    ifname: vm.ifname,
    network: vm.network,
    macs: [vm.mac],
    ipv4: vm.ipv4 ? [vm.ipv4] : [],
    ipv6: vm.ipv6 ? [vm.ipv6] : [],
  };
}

/** `add element` (or `delete element`) commands, one per (family, set), covering every port. */
function elementCommands(verb: 'add' | 'delete', ports: readonly PortElements[]): NftObject[] {
  const groups = new Map<string, { family: Family; set: string; elems: NftJson[]; seen: Set<string> }>();
  const push = (family: Family, set: string, e: NftJson) => {
    const key = `${family} ${set}`;
    let g = groups.get(key);
    if (!g) {
      g = { family, set, elems: [], seen: new Set() };
      groups.set(key, g);
    }
    const id = JSON.stringify(e);
    if (g.seen.has(id)) return;
    g.seen.add(id);
    g.elems.push(e);
  };
  for (const p of ports) {
    for (const [set, values] of [
      [VM_MAC_SET, p.macs],
      [VM_IP4_SET, p.ipv4],
      [VM_IP6_SET, p.ipv6],
    ] as const) {
      for (const v of values) push(p.family, set, { concat: [p.ifname, v] });
    }
    if (p.network !== undefined) {
      // A map element is deleted by its key alone.
      push(p.family, VM_COUNTER_MAP, verb === 'add' ? [p.ifname, objectName('spoof', p.network)] : p.ifname);
    }
  }
  return [...groups.values()].map((g) => element(verb, g.family, g.set, g.elems));
}

/** Register ports: one batch of `add element`s. Adding an element that exists is a no-op. */
export function buildAddPorts(ports: readonly PortElements[]): NftDocument {
  return { nftables: elementCommands('add', ports) };
}

/**
 * Unregister ports in one batch that succeeds whether or not the elements exist: each element is added
 * (a no-op when present) and then deleted. A `vm_counter` entry that names another network's counter makes
 * the add fail (EEXIST): that port is registered elsewhere and is not ours to remove.
 */
export function buildRemovePorts(ports: readonly PortElements[]): NftDocument {
  return { nftables: [...elementCommands('add', ports), ...elementCommands('delete', ports)] };
}

/** The exact elements of a network's ports as listed (for removal; no add-then-delete needed). */
function listedPortsOf(family: Family, fam: FamilySnapshot, network: string): PortElements[] {
  const ifnames = new Set([...portNetworks(fam)].filter(([, n]) => n === network).map(([i]) => i));
  const ports = new Map<string, PortElements>();
  for (const ifname of ifnames) ports.set(ifname, { family, ifname, network, macs: [], ipv4: [], ipv6: [] });
  for (const [set, field] of [
    [VM_MAC_SET, 'macs'],
    [VM_IP4_SET, 'ipv4'],
    [VM_IP6_SET, 'ipv6'],
  ] as const) {
    for (const [ifname, value] of concatPairs(fam.sets.get(set) ?? []))
      ports.get(ifname)?.[field].push(value);
  }
  return [...ports.values()];
}

/** Delete a network's ports (as listed) and its spoof counter from one family. */
function removeSpoofObjects(family: Family, fam: FamilySnapshot, network: string): NftObject[] {
  const counter = objectName('spoof', network);
  if (!fam.counters.has(counter)) return [];
  return [...elementCommands('delete', listedPortsOf(family, fam, network)), deleteCounter(family, counter)];
}

/** Flush and delete a chain if it exists. */
function removeChainIfPresent(fam: FamilySnapshot, family: Family, name: string): NftObject[] {
  return fam.chains.has(name) ? [flushChain(family, name), deleteChain(family, name)] : [];
}

/**
 * Remove a network's recorded subnets (its `net4_/net6_<net>` set) from the shared subnet set, except
 * `keep`; delete the record set too when `dropSet`.
 */
function removeSubnets(
  inet: FamilySnapshot,
  network: string,
  v: 4 | 6,
  keep: string | undefined,
  dropSet: boolean,
): NftObject[] {
  const own = objectName(v === 4 ? 'net4' : 'net6', network);
  const all = v === 4 ? SUBNETS4_SET : SUBNETS6_SET;
  if (!inet.sets.has(own)) return [];
  const out: NftObject[] = [];
  const inAll = new Set(prefixElems(inet.sets.get(all) ?? []));
  const stale = concatPairs(inet.sets.get(own) ?? []).filter(([a, m]) => pairSubnet(a, m) !== keep);
  if (stale.length) {
    out.push(
      element(
        'delete',
        'inet',
        own,
        stale.map(([a, m]) => ({ concat: [a, m] })),
      ),
    );
    const fromAll = stale.map(([a, m]) => pairSubnet(a, m)).filter((p): p is string => !!p && inAll.has(p));
    if (fromAll.length) out.push(element('delete', 'inet', all, fromAll.map(prefix)));
  }
  if (dropSet) out.push(deleteSet('inet', own));
  return out;
}

/**
 * Everything one network needs, idempotently, in one batch: shared objects, its counters, its subnets in
 * the shared sets, isolation and NAT chains as configured. What exists but is no longer wanted (ports and
 * counter of the other topology, NAT or isolation turned off, an old subnet) is removed in the same batch;
 * `snap` (the current state) says what exists.
 */
export function buildEnsureNetwork(net: NetworkSpec, snap: Snapshot): NftDocument {
  const n = net.name;
  const cmds: NftObject[] = sharedObjects(net.tapPrefix);

  // Removals first: an old subnet must leave the interval set before a new, overlapping one goes in.
  // (Ports registered under another topology stay until removed: listVms() reports them.)
  if (!net.isolate) {
    cmds.push(...removeChainIfPresent(snap.inet, 'inet', objectName('fwd', n)));
    cmds.push(...removeChainIfPresent(snap.inet, 'inet', objectName('in', n)));
  }
  if (!net.nat) cmds.push(...removeChainIfPresent(snap.inet, 'inet', objectName('post', n)));
  cmds.push(...removeSubnets(snap.inet, n, 4, net.subnet4, !net.subnet4));
  cmds.push(...removeSubnets(snap.inet, n, 6, net.subnet6, !net.subnet6));

  // The spoof counter exists in both families, so ports of either topology can be counted and removed.
  for (const family of FAMILIES) cmds.push(addCounter(family, objectName('spoof', n)));
  cmds.push(addCounter('inet', objectName('isolate', n)));
  for (const [v, subnet] of [
    [4, net.subnet4],
    [6, net.subnet6],
  ] as const) {
    if (!subnet) continue;
    const own = objectName(v === 4 ? 'net4' : 'net6', n);
    const ipType = v === 4 ? 'ipv4_addr' : 'ipv6_addr';
    cmds.push(
      addSet('inet', own, [ipType, ipType]),
      element('add', 'inet', own, [{ concat: subnetPair(subnet) }]),
      element('add', 'inet', v === 4 ? SUBNETS4_SET : SUBNETS6_SET, [prefix(subnet)]),
    );
  }
  if (net.isolate) {
    const filter = (hook: 'forward' | 'input'): BaseChain => ({ type: 'filter', hook, prio: PRIO.filter });
    cmds.push(
      ...chainWithRules('inet', objectName('fwd', n), filter('forward'), isolationRules(net, 'forward')),
    );
    cmds.push(...chainWithRules('inet', objectName('in', n), filter('input'), isolationRules(net, 'input')));
  }
  if (net.nat) {
    const nat: BaseChain = { type: 'nat', hook: 'postrouting', prio: PRIO.srcnat };
    cmds.push(...chainWithRules('inet', objectName('post', n), nat, natRules(net)));
  }
  return { nftables: cmds };
}

/** Everything of one network that exists, its ports included, removed in one batch. */
export function buildRemoveNetwork(network: string, snap: Snapshot): NftDocument {
  const cmds: NftObject[] = [];
  for (const family of FAMILIES) cmds.push(...removeSpoofObjects(family, snap[family], network));
  for (const kind of ['fwd', 'in', 'post'] as const) {
    cmds.push(...removeChainIfPresent(snap.inet, 'inet', objectName(kind, network)));
  }
  cmds.push(...removeSubnets(snap.inet, network, 4, undefined, true));
  cmds.push(...removeSubnets(snap.inet, network, 6, undefined, true));
  const isolate = objectName('isolate', network);
  if (snap.inet.counters.has(isolate)) cmds.push(deleteCounter('inet', isolate));
  return { nftables: cmds };
}

/** Delete tapnet's tables, whether or not they exist: `add table` (a no-op if present), `delete table`. */
export function buildDestroy(): NftDocument {
  return { nftables: FAMILIES.flatMap((f) => [addTable(f), deleteTable(f)]) };
}
