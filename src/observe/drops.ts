/**
 * What the firewall dropped, for stats and metrics: each network's anti-spoofing and isolation counters
 * (`nft list counter inet tapnet spoof_<network>`; the firewall keeps one per network, shared by every
 * VM port, not one per VM) and each VM's policy drops (`nft list set inet tapnet pol_drop_…`, per VM).
 * Reads only — except in one case, see policyFor().
 */
import { isTapnetError, toTapnetError } from '../errors.js';
import type { FirewallCounter, FirewallStatus, PolicyCounters } from '../firewall/types.js';
import type { NetworkManager } from '../manager/manager.js';
import type { VmRecord } from '../manager/types.js';

export type DropCounter = FirewallCounter;

/** Packets of one VM dropped or rejected by its network policy, per direction. */
export type PolicyDrops = PolicyCounters;

/** Drops of one whole network. */
export interface NetworkDrops {
  /** Anti-spoofing: wrong source MAC/IP, rogue RA/DHCP servers, other ethertypes. */
  spoof: DropCounter;
  /** Isolation: traffic between this network and other tapnet networks. */
  isolate: DropCounter;
}

export interface FirewallDrops {
  /** By network name (direct-mode networks the firewall knows). */
  networks: Map<string, NetworkDrops>;
  /** Frames from TAPs with a tapnet prefix that belong to no VM; null without nftables. */
  unregistered: DropCounter | null;
  /** By vmId: the VM's policy drops (absent: could not be read, see problems). */
  policy: Map<string, PolicyDrops>;
  /** The direct-mode VMs these figures were read for. */
  vms: Set<string>;
  problems: { vmId?: string; network?: string; code: string; message: string }[];
}

/**
 * Policy counters of one network's VMs. The nftables driver answers only for networks it set up itself
 * (in this process): a CLI running without the daemon has not. Then, and only when the firewall status
 * shows the network's rules exactly as configured, the network's definition is applied once more —
 * which changes nothing in the kernel — so the driver knows its layout; otherwise the counters are
 * reported unavailable rather than repairing anything from a read command.
 */
function policyFor(
  m: NetworkManager,
  name: string,
  records: VmRecord[],
  status: FirewallStatus | undefined,
): Map<string, PolicyCounters> {
  const vms = records.map((r) => m.firewallVm(r));
  try {
    return m.firewall.policyCountersAll(vms);
  } catch (e) {
    if (!isTapnetError(e, 'ERR_NOT_FOUND')) throw e;
    if (!status?.networks.find((n) => n.name === name)?.ok) throw e;
    m.firewall.ensureNetwork(m.firewallNetwork(m.network(name)));
    return m.firewall.policyCountersAll(vms);
  }
}

/** The firewall's drop counters for these records' networks and VMs (direct mode only). */
export function readFirewallDrops(m: NetworkManager, records: readonly VmRecord[]): FirewallDrops {
  const out: FirewallDrops = {
    networks: new Map(),
    unregistered: null,
    policy: new Map(),
    vms: new Set(records.filter((r) => r.mode !== 'cni').map((r) => r.vmId)),
    problems: [],
  };
  if (m.firewall.kind === 'none') return out;
  const direct = [...m.config.networks.values()].filter((n) => n.mode !== 'cni');
  let status: FirewallStatus | undefined;
  try {
    status = m.firewall.status(direct.map((n) => m.firewallNetwork(n)));
    out.unregistered = status.unregisteredDrops;
    for (const n of status.networks)
      out.networks.set(n.name, { spoof: n.drops.spoof, isolate: n.drops.isolate });
  } catch (e) {
    const t = toTapnetError(e);
    out.problems.push({ code: t.code, message: `firewall counters: ${t.message}` });
  }
  const byNetwork = new Map<string, VmRecord[]>();
  for (const r of records) {
    if (r.mode === 'cni' || !m.config.networks.has(r.network)) continue;
    byNetwork.set(r.network, [...(byNetwork.get(r.network) ?? []), r]);
  }
  for (const [name, rs] of byNetwork) {
    try {
      const counters = policyFor(m, name, rs, status);
      for (const r of rs) {
        const c = counters.get(r.tap);
        if (c) out.policy.set(r.vmId, c);
      }
    } catch (e) {
      const t = toTapnetError(e);
      out.problems.push({
        network: name,
        code: t.code,
        message: `policy counters of network ${name}: ${t.message}${t.code === 'ERR_NOT_FOUND' ? ' (its firewall is incomplete: run tapnet gc)' : ''}`,
      });
    }
  }
  return out;
}
