/**
 * A VM's firewall policy and bandwidth limits, on top of its network: validated before anything is
 * touched, compiled with its network's default policy (peers `vm:<id>` / `network:<name>` resolved from
 * the records and the configuration), installed after the VM's firewall elements, and removed with it.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { findLink } from '../net/link.js';
import { compilePolicy, policyReferences } from '../policy/compile.js';
import { formatPolicy, parsePolicy } from '../policy/parse.js';
import type { ParsedPolicy, PeerResolver, PolicyDocument, ResolvedVm } from '../policy/types.js';
import type { ResolvedNetwork } from './config.js';
import {
  type AppliedBandwidth,
  applyBandwidth,
  type BandwidthLimits,
  removeBandwidth,
  type Vmm,
  validateBandwidth,
} from './limits.js';
import type { NetworkManager } from './manager.js';
import type { VmRecord } from './types.js';

export type { BandwidthLimits, Vmm };

/** The policy and limits asked for at ensure, validated. */
export interface VmLimits {
  policy?: ParsedPolicy;
  bandwidth?: BandwidthLimits;
  vmm: Vmm;
}

/** Validate `policy`, `bandwidth` and `vmm` options; ERR_INVALID_ARGUMENT names the field. */
export function checkVmLimits(o: { policy?: unknown; bandwidth?: unknown; vmm?: unknown }): VmLimits {
  const vmm = (o.vmm ?? 'qemu') as Vmm;
  if (!['qemu', 'firecracker', 'cloud-hypervisor'].includes(vmm)) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `vmm must be qemu, firecracker or cloud-hypervisor, not ${JSON.stringify(o.vmm)}`,
    );
  }
  return {
    vmm,
    ...(o.policy !== undefined && o.policy !== null ? { policy: parsePolicy(o.policy) } : {}),
    ...(o.bandwidth !== undefined && o.bandwidth !== null
      ? { bandwidth: validateBandwidth(o.bandwidth as BandwidthLimits) as BandwidthLimits }
      : {}),
  };
}

/** A resolver for the peers a policy names: VMs from the records, networks from the configuration. */
async function resolverFor(m: NetworkManager, policies: (ParsedPolicy | undefined)[]): Promise<PeerResolver> {
  const vms = new Map<string, ResolvedVm>();
  for (const p of policies) {
    if (!p) continue;
    for (const id of policyReferences(p).vms) {
      if (vms.has(id)) continue;
      const r = await m.store.records.get(id).catch(() => undefined);
      if (r && r.state === 'ready')
        vms.set(id, { ...(r.ipv4 ? { ipv4: r.ipv4 } : {}), ...(r.ipv6 ? { ipv6: r.ipv6 } : {}) });
    }
  }
  return {
    vm: (id) => vms.get(id),
    network: (name) => {
      const n = m.config.networks.get(name);
      return n
        ? { ...(n.subnet4 ? { subnet4: n.subnet4 } : {}), ...(n.subnet6 ? { subnet6: n.subnet6 } : {}) }
        : undefined;
    },
  };
}

/**
 * Install the VM's effective policy (its own + its network's), or remove it when it has neither.
 * Idempotent; a live update keeps allowed established flows.
 */
export async function installPolicy(m: NetworkManager, r: VmRecord, net: ResolvedNetwork): Promise<void> {
  const own = r.policy ? parsePolicy(r.policy) : undefined;
  if (!own && !net.policy) {
    if (r.policy !== undefined) m.firewall.removePolicy(m.firewallVm(r));
    return;
  }
  const compiled = compilePolicy({
    ...(own ? { vm: own } : {}),
    ...(net.policy ? { network: net.policy } : {}),
    resolver: await resolverFor(m, [own, net.policy]),
  });
  m.firewall.setPolicy(m.firewallVm(r), compiled);
}

/** Remove a VM's policy (gone already is success). */
export function uninstallPolicy(m: NetworkManager, r: VmRecord): void {
  try {
    m.firewall.removePolicy(m.firewallVm(r));
  } catch (e) {
    if (!isTapnetError(e, 'ERR_NOT_FOUND')) throw e;
  }
}

/** Apply a VM's bandwidth limits on its TAP (or render them for Firecracker). */
export function installBandwidth(m: NetworkManager, r: VmRecord): AppliedBandwidth | undefined {
  if (!r.bandwidth) return undefined;
  const index = findLink(m.nl, r.tap)?.index;
  if (!index) throw new TapnetError('ERR_LINK_NOT_FOUND', `TAP ${r.tap} of VM ${r.vmId} does not exist`);
  return applyBandwidth(m.nl, index, r.bandwidth, r.vmm ?? 'qemu');
}

/** Remove a VM's bandwidth limits (its IFB outlives the TAP). */
export function uninstallBandwidth(m: NetworkManager, r: VmRecord): void {
  if (r.bandwidth) removeBandwidth(m.nl, r.tap);
}

/** The policy document as stored in a record. */
export function storedPolicy(p: ParsedPolicy | undefined): PolicyDocument | undefined {
  return p ? formatPolicy(p) : undefined;
}
