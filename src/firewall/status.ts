/**
 * Doctor's view of the firewall: from a snapshot of tapnet's tables (and optionally the networks that
 * should exist), what is present, what is missing, and how much was dropped. Pure.
 */
import type { NftJson } from '../sys/nftables.js';
import {
  ANTISPOOF_CHAIN,
  guardChainName,
  type NetworkSpec,
  objectName,
  SPOOFED_CHAIN,
  UNREGISTERED_COUNTER,
  VM_COUNTER_MAP,
  VM_IP4_SET,
  VM_IP6_SET,
  VM_MAC_SET,
} from './model.js';
import { antispoofRules, spoofedRules } from './rules.js';
import { FAMILIES, networksOf, portNetworks, type Snapshot } from './state.js';
import type { FirewallCounter, FirewallNetworkStatus, FirewallStatus } from './types.js';

const ZERO: FirewallCounter = { packets: 0, bytes: 0 };
const sum = (cs: FirewallCounter[]): FirewallCounter =>
  cs.reduce((a, b) => ({ packets: a.packets + b.packets, bytes: a.bytes + b.bytes }), ZERO);

function hasExpr(rules: NftJson[][] | undefined, key: string): boolean {
  return (rules ?? []).some((r) =>
    r.some((e) => typeof e === 'object' && e !== null && !Array.isArray(e) && key in e),
  );
}

/** Status of tapnet's tables; `expected` networks are checked against their definitions. */
export function firewallStatus(snap: Snapshot, expected: readonly NetworkSpec[]): FirewallStatus {
  const problems: string[] = [];
  for (const family of FAMILIES) {
    const fam = snap[family];
    if (!fam.present) {
      problems.push(`table ${family} tapnet is missing`);
      continue;
    }
    const expectedRules: Array<[string, number]> = [
      [ANTISPOOF_CHAIN, antispoofRules(family).length],
      [SPOOFED_CHAIN, spoofedRules().length],
    ];
    for (const [chain, count] of expectedRules) {
      if (!fam.chains.has(chain)) problems.push(`chain ${family} tapnet ${chain} is missing`);
      else if ((fam.rules.get(chain) ?? []).length !== count) {
        problems.push(
          `chain ${family} tapnet ${chain} holds ${(fam.rules.get(chain) ?? []).length} rules, not ${count}`,
        );
      }
    }
    for (const set of [VM_MAC_SET, VM_IP4_SET, VM_IP6_SET, VM_COUNTER_MAP]) {
      if (!fam.sets.has(set)) problems.push(`set ${family} tapnet ${set} is missing`);
    }
  }

  const found = networksOf(snap);
  const names = [...new Set([...expected.map((s) => s.name), ...found])].sort();
  const networks = names.map((name): FirewallNetworkStatus => {
    const spec = expected.find((s) => s.name === name);
    const ports = FAMILIES.map((f) => [...portNetworks(snap[f]).values()].filter((n) => n === name).length);
    const [inetPorts = 0, bridgePorts = 0] = ports;
    const topology = spec?.topology ?? (bridgePorts ? 'bridge' : inetPorts ? 'routed' : undefined);
    const issues: string[] = [];
    for (const family of FAMILIES) {
      if (!snap[family].present) continue;
      if (!snap[family].counters.has(objectName('spoof', name)))
        issues.push(`counter ${family} ${objectName('spoof', name)} is missing`);
      if (spec && !snap[family].chains.has(guardChainName(spec.tapPrefix))) {
        issues.push(`chain ${family} tapnet ${guardChainName(spec.tapPrefix)} is missing`);
      }
    }
    if (spec) {
      const wrong = spec.topology === 'bridge' ? inetPorts : bridgePorts;
      if (wrong) issues.push(`${wrong} port(s) registered for the other topology`);
    }
    const nat = hasExpr(snap.inet.rules.get(objectName('post', name)), 'masquerade');
    const isolated = (snap.inet.rules.get(objectName('fwd', name)) ?? []).length > 0;
    if (spec?.nat && !nat) issues.push('NAT (masquerade) rule is missing');
    if (spec && !spec.nat && nat) issues.push('NAT is on but not configured');
    if (spec?.isolate && !isolated) issues.push('isolation rules are missing');
    if (spec && !spec.isolate && isolated) issues.push('isolation is on but not configured');
    return {
      name,
      topology,
      ok: issues.length === 0,
      nat,
      isolated,
      ports: inetPorts + bridgePorts,
      drops: {
        spoof: sum(FAMILIES.map((f) => snap[f].counters.get(objectName('spoof', name)) ?? ZERO)),
        isolate: snap.inet.counters.get(objectName('isolate', name)) ?? ZERO,
      },
      problems: issues,
    };
  });

  const unregistered = sum(FAMILIES.map((f) => snap[f].counters.get(UNREGISTERED_COUNTER) ?? ZERO));
  return {
    kind: 'nftables',
    ok: problems.length === 0 && networks.every((n) => n.ok),
    tables: { inet: snap.inet.present, bridge: snap.bridge.present },
    unregisteredDrops: unregistered,
    networks,
    problems,
  };
}
