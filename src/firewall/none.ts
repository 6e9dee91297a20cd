/**
 * The "none" firewall: no NAT, no isolation, no anti-spoofing. For hosts where something else owns the
 * firewall. It still validates its input, so a configuration that works here works with nftables too.
 */
import { TapnetError } from '../errors.js';
import { isOpen, validateCompiledPolicy } from '../policy/compile.js';
import type { CompiledPolicy } from '../policy/types.js';
import { type NetworkSpec, normalizeNetwork, normalizeVm, normalizeVmForRemoval } from './model.js';
import { validatePolicyEntry } from './policy.js';
import type {
  Firewall,
  FirewallNetwork,
  FirewallPort,
  FirewallStatus,
  FirewallVm,
  PolicyApplied,
  PolicyCounters,
  PolicyEntry,
  PolicyGcReport,
} from './types.js';

/** A driver that installs nothing; see Firewall for the contract. */
export class NoFirewall implements Firewall {
  readonly kind = 'none' as const;
  private readonly networks = new Map<string, NetworkSpec>();

  ensureNetwork(net: FirewallNetwork): void {
    const spec = normalizeNetwork(net);
    this.networks.set(spec.name, spec);
  }

  removeNetwork(name: string): void {
    this.networks.delete(name);
  }

  addVm(vm: FirewallVm): void {
    this.addVms([vm]);
  }

  addVms(vms: readonly FirewallVm[]): void {
    for (const vm of vms) {
      const net = this.networks.get(vm?.network);
      if (!net)
        throw new TapnetError(
          'ERR_NOT_FOUND',
          `network ${String(vm?.network)} was not ensured by this firewall`,
        );
      normalizeVm(vm, net);
    }
  }

  removeVm(vm: FirewallVm): void {
    this.removeVms([vm]);
  }

  removeVms(vms: readonly FirewallVm[]): void {
    for (const vm of vms) normalizeVmForRemoval(vm);
  }

  removePorts(_ports: readonly FirewallPort[]): void {}

  listVms(): FirewallPort[] {
    return [];
  }

  status(): FirewallStatus {
    return {
      kind: 'none',
      ok: true,
      tables: { inet: false, bridge: false },
      unregisteredDrops: { packets: 0, bytes: 0 },
      networks: [],
      problems: [],
    };
  }

  destroy(): void {
    this.networks.clear();
  }

  /** Nothing can be enforced here: a policy that would deny anything is refused (ERR_CONFIG). */
  setPolicy(vm: FirewallVm, policy: CompiledPolicy): PolicyApplied {
    const compiled = validateCompiledPolicy(policy);
    this.addVms([vm]);
    if (!isOpen(compiled.egress) || !isOpen(compiled.ingress)) {
      throw new TapnetError(
        'ERR_CONFIG',
        `the "none" firewall cannot enforce network policies (VM port ${String(vm?.ifname)}); use firewall "nftables"`,
      );
    }
    return { unresolved: [...compiled.unresolved] };
  }

  removePolicy(vm: FirewallVm): void {
    normalizeVmForRemoval(vm);
  }

  policyCounters(vm: FirewallVm): PolicyCounters {
    normalizeVmForRemoval(vm);
    return { egress: { packets: 0, bytes: 0 }, ingress: { packets: 0, bytes: 0 } };
  }

  policyCountersAll(vms: readonly FirewallVm[]): Map<string, PolicyCounters> {
    return new Map(vms.map((vm) => [normalizeVmForRemoval(vm).ifname, this.policyCounters(vm)]));
  }

  listPolicies(): PolicyEntry[] {
    return [];
  }

  removePolicies(entries: readonly PolicyEntry[]): void {
    for (const e of entries) validatePolicyEntry(e);
  }

  gcPolicies(): PolicyGcReport {
    return { removed: [], inUse: 0 };
  }

  close(): void {}
}
