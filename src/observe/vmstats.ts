/**
 * Traffic counters of VMs: each TAP's IFLA_STATS64 (`ip -s link show TAP`), presented from the guest's
 * side — what the host's TAP transmits, the guest receives — plus the firewall's drop counters
 * (drops.ts). Direct mode reads the TAP in the manager's namespace; CNI mode opens a netlink socket in
 * the VM's own namespace (`ip -n <vm-netns> -s link show TAP`).
 */
import { fstatSync, readFileSync, statSync } from 'node:fs';
import { TapnetError, toTapnetError } from '../errors.js';
import type { NetworkManager } from '../manager/manager.js';
import type { VmRecord } from '../manager/types.js';
import { findLink, type Link, listLinks } from '../net/link.js';
import { openNetns } from '../net/netns.js';
import { NetlinkSocket } from '../netlink/socket.js';
import type { LinkStats } from '../netlink/stats.js';
import { validateVmId } from '../validate.js';
import {
  type DropCounter,
  type FirewallDrops,
  type NetworkDrops,
  type PolicyDrops,
  readFirewallDrops,
} from './drops.js';

export type { DropCounter, NetworkDrops, PolicyDrops };

export interface TrafficCounters {
  bytes: number;
  packets: number;
  errors: number;
  dropped: number;
}

export interface VmStats {
  vmId: string;
  network: string;
  /** direct: tapnet's own TAP; cni: the TAP in the VM's namespace (absent from older daemons: direct). */
  mode?: 'direct' | 'cni';
  tap: string;
  /** CNI mode: the namespace the TAP lives in. */
  netns?: string;
  /** Operational state of the TAP (`up` once a VMM holds it and the link is up; `down` otherwise). */
  operstate: string;
  /** Received by the guest (transmitted by the TAP). */
  guestRx: TrafficCounters;
  /** Sent by the guest (received by the TAP). */
  guestTx: TrafficCounters;
  /**
   * Packets and bytes this VM's network policy dropped or rejected, per direction (nftables counters).
   * null when there are none to read: CNI mode, the "none" firewall, or the network's firewall is not in
   * place (see the report's problems).
   */
  policyDrops?: PolicyDrops | null;
  /**
   * Anti-spoofing and isolation drops of the VM's whole network: the firewall counts them per network
   * (one counter shared by every port), not per VM. null in CNI mode and with the "none" firewall.
   */
  networkDrops?: NetworkDrops | null;
  collectedAt: string;
}

/** One network's drop counters, as in StatsReport. */
export interface NetworkStats {
  network: string;
  mode: 'direct' | 'cni';
  /** VMs of this network in the report. */
  vms: number;
  /** null: no tapnet firewall counters for it (CNI mode, "none" firewall, or its counters are missing). */
  drops: NetworkDrops | null;
}

/** Something a report could not read (the rest of it is still good). */
export interface StatsProblem {
  vmId?: string;
  network?: string;
  code: string;
  message: string;
}

export interface StatsReport {
  collectedAt: string;
  /** Sorted by vmId. VMs whose TAP could not be read are in `problems` instead. */
  vms: VmStats[];
  networks: NetworkStats[];
  /** Frames from TAPs with a tapnet prefix that belong to no VM, dropped (host-wide); null without nftables. */
  unregisteredDrops: DropCounter | null;
  problems: StatsProblem[];
}

/** One TAP as read from the kernel. */
export interface TapReading {
  ifindex: number;
  operstate: string;
  stats: LinkStats;
  /**
   * Identity of these counters: boot, namespace and ifindex. A re-created TAP (reconcile, a reboot, a
   * re-created CNI namespace) has another epoch, and its counters start again from zero.
   */
  epoch: string;
}

let bootId: string | undefined;

/** /proc/sys/kernel/random/boot_id: changes at every boot. */
function currentBootId(): string {
  if (bootId === undefined) {
    try {
      bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootId = 'unknown-boot';
    }
  }
  return bootId;
}

function reading(link: Link, nsIno: number): TapReading | TapnetError {
  if (!link.stats) {
    return new TapnetError('ERR_NETLINK_DECODE', `link ${link.name} came without IFLA_STATS64`, {
      details: { tap: link.name },
    });
  }
  return {
    ifindex: link.index,
    operstate: (link.operstate ?? (link.up ? 'up' : 'down')).toLowerCase(),
    stats: link.stats,
    epoch: `${currentBootId()}/${nsIno}/${link.index}`,
  };
}

function tapGone(r: VmRecord): TapnetError {
  return new TapnetError(
    'ERR_LINK_NOT_FOUND',
    `TAP ${r.tap} of VM ${r.vmId} does not exist (run tapnet gc to re-create it)`,
    { details: { vmId: r.vmId, tap: r.tap } },
  );
}

/** CNI mode: `ip -n <netns> -s link show <tap>` through a socket opened in the VM's namespace. */
function readCniTap(r: VmRecord): TapReading | TapnetError {
  if (!r.netns) return new TapnetError('ERR_NETNS_NOT_FOUND', `VM ${r.vmId} has no namespace on record`);
  try {
    const ns = openNetns(r.netns);
    try {
      const ino = fstatSync(ns.fd).ino;
      const nl = NetlinkSocket.open({ nsFd: ns.fd });
      try {
        const link = findLink(nl, r.tap);
        return link ? reading(link, ino) : tapGone(r);
      } finally {
        nl.close();
      }
    } finally {
      ns.close();
    }
  } catch (e) {
    return toTapnetError(e);
  }
}

/**
 * Read the TAPs of these records (synchronous: no await between reading and using the counters).
 * Direct-mode TAPs come from one link dump when there are many (`ip -s link show`), else one request
 * each. Keyed by vmId; a TapnetError for a TAP that could not be read (ERR_LINK_NOT_FOUND when gone).
 */
export function readTaps(
  m: NetworkManager,
  records: readonly VmRecord[],
): Map<string, TapReading | TapnetError> {
  const out = new Map<string, TapReading | TapnetError>();
  const direct = records.filter((r) => r.mode !== 'cni');
  if (direct.length) {
    const ino = m.ns ? fstatSync(m.ns.fd).ino : statSync('/proc/self/ns/net').ino;
    try {
      if (direct.length > 8) {
        const links = new Map(listLinks(m.nl, { withStats: true }).map((l) => [l.name, l]));
        for (const r of direct) {
          const l = links.get(r.tap);
          out.set(r.vmId, l ? reading(l, ino) : tapGone(r));
        }
      } else {
        for (const r of direct) {
          const l = findLink(m.nl, r.tap);
          out.set(r.vmId, l ? reading(l, ino) : tapGone(r));
        }
      }
    } catch (e) {
      for (const r of direct) if (!out.has(r.vmId)) out.set(r.vmId, toTapnetError(e));
    }
  }
  for (const r of records) if (r.mode === 'cni') out.set(r.vmId, readCniTap(r));
  return out;
}

/** A TAP reading as VmStats (guest's side), with the firewall's figures when given. */
export function toVmStats(r: VmRecord, t: TapReading, drops: FirewallDrops | undefined, at: string): VmStats {
  const s = t.stats;
  const cni = r.mode === 'cni';
  return {
    vmId: r.vmId,
    network: r.network,
    mode: cni ? 'cni' : 'direct',
    tap: r.tap,
    ...(cni && r.netns ? { netns: r.netns } : {}),
    operstate: t.operstate,
    guestRx: { bytes: s.txBytes, packets: s.txPackets, errors: s.txErrors, dropped: s.txDropped },
    guestTx: { bytes: s.rxBytes, packets: s.rxPackets, errors: s.rxErrors, dropped: s.rxDropped },
    policyDrops: cni ? null : (drops?.policy.get(r.vmId) ?? null),
    networkDrops: cni ? null : (drops?.networks.get(r.network) ?? null),
    collectedAt: at,
  };
}

/** The ready records of `vmIds` (all ready VMs when undefined) and a problem for each unknown id. */
export async function statsRecords(
  m: NetworkManager,
  vmIds?: readonly string[],
): Promise<{ records: VmRecord[]; problems: StatsProblem[] }> {
  const problems: StatsProblem[] = [];
  if (vmIds === undefined) {
    const { records } = await m.store.records.list();
    return {
      records: records
        .filter((r) => r.state === 'ready' && m.config.networks.has(r.network))
        .sort((a, b) => a.vmId.localeCompare(b.vmId)),
      problems,
    };
  }
  const records: VmRecord[] = [];
  for (const id of new Set(vmIds.map((v) => validateVmId(v)))) {
    const r = await m.store.records.get(id);
    if (r && r.state === 'ready' && m.config.networks.has(r.network)) records.push(r);
    else problems.push({ vmId: id, code: 'ERR_NOT_FOUND', message: `VM ${id} has no network` });
  }
  return { records: records.sort((a, b) => a.vmId.localeCompare(b.vmId)), problems };
}

/**
 * How collectStats gets the firewall's figures for `records` (a StatsReader shares one reading of every
 * VM's between calls; by default they are read for `records` alone).
 */
export type DropsSource = (m: NetworkManager, records: readonly VmRecord[]) => Promise<FirewallDrops>;

const readDrops: DropsSource = async (m, records) => readFirewallDrops(m, records);

/**
 * Counters of `vmIds` (every VM when undefined; `[]`: only the networks' figures) and of their
 * networks. Never throws for one VM: what could not be read is in `problems`.
 */
export async function collectStats(
  m: NetworkManager,
  opts: { vmIds?: readonly string[]; drops?: DropsSource } = {},
): Promise<StatsReport> {
  const { records, problems } = await statsRecords(m, opts.vmIds);
  const drops = await (opts.drops ?? readDrops)(m, records);
  const at = new Date().toISOString();
  const taps = readTaps(m, records);
  const vms: VmStats[] = [];
  for (const r of records) {
    const t = taps.get(r.vmId)!;
    if (t instanceof TapnetError) problems.push({ vmId: r.vmId, code: t.code, message: t.message });
    else vms.push(toVmStats(r, t, drops, at));
  }
  const counts = new Map<string, number>();
  for (const v of vms) counts.set(v.network, (counts.get(v.network) ?? 0) + 1);
  const networks: NetworkStats[] = [...m.config.networks.values()]
    .map((n) => ({
      network: n.name,
      mode: n.mode,
      vms: counts.get(n.name) ?? 0,
      drops: n.mode === 'cni' ? null : (drops.networks.get(n.name) ?? null),
    }))
    .sort((a, b) => a.network.localeCompare(b.network));
  problems.push(...drops.problems);
  return { collectedAt: at, vms, networks, unregisteredDrops: drops.unregistered, problems };
}

/**
 * Counters of one VM. ERR_NOT_FOUND when it has no network; ERR_LINK_NOT_FOUND when its TAP is gone;
 * ERR_NETNS_NOT_FOUND when its CNI namespace is gone.
 */
export async function vmStats(m: NetworkManager, vmId: string, drops?: DropsSource): Promise<VmStats> {
  validateVmId(vmId);
  const r = await m.store.records.get(vmId);
  if (r?.state !== 'ready' || !m.config.networks.has(r.network)) {
    throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`, { details: { vmId } });
  }
  const t = readTaps(m, [r]).get(vmId)!;
  if (t instanceof TapnetError) throw t;
  const fw = await (drops ?? readDrops)(m, [r]);
  return toVmStats(r, t, fw, new Date().toISOString());
}

/**
 * Shares the firewall's figures between calls for `ttlMs` (default 1 s): a loop of per-VM calls
 * (`tapnet stats` through the daemon) costs one nftables listing per second instead of one per VM.
 */
export class StatsReader {
  private cached: { at: number; drops: Promise<FirewallDrops> } | undefined;

  constructor(
    readonly manager: NetworkManager,
    private readonly ttlMs = 1000,
  ) {}

  /** Every ready VM's figures, read at most once per ttlMs — again at once for a VM the last read missed. */
  private drops: DropsSource = async (m, records) => {
    const now = performance.now();
    if (this.cached && now - this.cached.at <= this.ttlMs) {
      const drops = await this.cached.drops.catch(() => undefined);
      const direct = records.filter((r) => r.mode !== 'cni');
      if (drops && direct.every((r) => drops.vms.has(r.vmId))) return drops;
    }
    const drops = statsRecords(m).then(({ records: all }) => readFirewallDrops(m, all));
    this.cached = { at: now, drops };
    drops.catch(() => {
      if (this.cached?.drops === drops) this.cached = undefined;
    });
    return drops;
  };

  /** See vmStats(). */
  vm(vmId: string): Promise<VmStats> {
    return vmStats(this.manager, vmId, this.drops);
  }

  /** See collectStats(). `[]` (the networks' figures only) skips the per-VM policy counters. */
  all(vmIds?: readonly string[]): Promise<StatsReport> {
    if (vmIds?.length === 0) return collectStats(this.manager, { vmIds });
    return collectStats(this.manager, { ...(vmIds ? { vmIds } : {}), drops: this.drops });
  }
}
