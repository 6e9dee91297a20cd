/**
 * verify: a read-only comparison of the state store with the kernel and the firewall — what `tapnet gc`
 * would repair, and what it cannot — without changing anything. Suspected leftovers are re-checked under
 * their owner's VM lock, so a VM being created at this moment is not reported.
 */
import { toTapnetError } from '../errors.js';
import type { FirewallPort } from '../firewall/types.js';
import { listAllLeases } from '../ipam/reconcile.js';
import type { NetworkManager } from '../manager/manager.js';
import { isTapnetTapName } from '../manager/names.js';
import type { VmRecord } from '../manager/types.js';
import { listAddresses } from '../net/addr.js';
import { findLink, type Link, listLinks } from '../net/link.js';

export type ProblemKind =
  | 'network'
  | 'firewall'
  | 'incomplete-record'
  | 'corrupt-record'
  | 'unknown-network'
  | 'missing-tap'
  | 'tap-state'
  | 'missing-firewall-element'
  | 'missing-lease'
  | 'orphan-tap'
  | 'orphan-firewall-element'
  | 'orphan-lease';

export interface VerifyProblem {
  kind: ProblemKind;
  /** The VM concerned, when there is one. */
  vmId?: string;
  /** The object: a network, TAP, address or record. */
  object: string;
  message: string;
  /** What to do about it. */
  fix: string;
}

export interface VerifyReport {
  ok: boolean;
  /** VMs with a ready record. */
  vms: number;
  networks: number;
  problems: VerifyProblem[];
}

const GC = 'run `tapnet gc`';
const LEFTOVERS: readonly ProblemKind[] = [
  'orphan-tap',
  'orphan-firewall-element',
  'orphan-lease',
  'incomplete-record',
];

/** The problems that are leftovers of a crash (doctor reports these as one check). */
export function isLeftover(p: VerifyProblem): boolean {
  return LEFTOVERS.includes(p.kind);
}

/** Networks tapnet builds itself (CNI-mode networks are the conflist's business). */
export function directNetworks<N extends { mode?: string }>(nets: Iterable<N>): N[] {
  return [...nets].filter((n) => (n.mode ?? 'direct') === 'direct');
}

function checkNetworks(m: NetworkManager, problems: VerifyProblem[]): void {
  for (const net of directNetworks(m.config.networks.values())) {
    const br = findLink(m.nl, net.bridge);
    const bad = (message: string) => problems.push({ kind: 'network', object: net.name, message, fix: GC });
    if (!br) {
      bad(`bridge ${net.bridge} of network ${net.name} does not exist`);
      continue;
    }
    if (!br.up) bad(`bridge ${net.bridge} is down`);
    const addrs = new Set(listAddresses(m.nl, { index: br.index }).map((a) => a.address));
    for (const gw of [net.gateway4, net.gateway6])
      if (gw && !addrs.has(gw)) bad(`bridge ${net.bridge} lacks the gateway address ${gw}`);
  }
  try {
    const st = m.firewall.status(directNetworks(m.config.networks.values()).map((n) => m.firewallNetwork(n)));
    for (const p of st.problems)
      problems.push({ kind: 'firewall', object: m.firewall.kind, message: p, fix: GC });
    for (const n of st.networks) {
      if (!m.config.networks.has(n.name)) continue;
      for (const p of n.problems)
        problems.push({ kind: 'firewall', object: n.name, message: `network ${n.name}: ${p}`, fix: GC });
    }
  } catch (e) {
    problems.push({
      kind: 'firewall',
      object: m.firewall.kind,
      message: toTapnetError(e).message,
      fix: 'see `tapnet doctor`',
    });
  }
}

function checkVm(
  m: NetworkManager,
  r: VmRecord,
  link: Link | undefined,
  port: FirewallPort | undefined,
  problems: VerifyProblem[],
): void {
  const net = m.config.networks.get(r.network)!;
  const p = (kind: ProblemKind, object: string, message: string, fix = GC) =>
    problems.push({ kind, vmId: r.vmId, object, message, fix });
  if (!link) {
    if (r.tapMode === 'persistent')
      p('missing-tap', r.tap, `TAP ${r.tap} of VM ${r.vmId} does not exist`, `${GC} (re-creates it)`);
    else
      p(
        'missing-tap',
        r.tap,
        `fd TAP ${r.tap} of VM ${r.vmId} is gone (its VMM exited)`,
        `${GC} (releases the VM)`,
      );
    return;
  }
  if (!link.up) p('tap-state', r.tap, `TAP ${r.tap} of VM ${r.vmId} is administratively down`);
  if (net.topology === 'bridge') {
    const br = findLink(m.nl, net.bridge);
    if (br && link.master !== br.index)
      p('tap-state', r.tap, `TAP ${r.tap} of VM ${r.vmId} is not a port of ${net.bridge}`);
  }
  if (link.mtu !== undefined && link.mtu !== net.mtu)
    p('tap-state', r.tap, `TAP ${r.tap} has MTU ${link.mtu}, not ${net.mtu}`);
  if (m.firewall.kind !== 'none') {
    const want = [r.ipv4, r.ipv6].filter((a): a is string => a !== undefined);
    const has = new Set([...(port?.ipv4 ?? []), ...(port?.ipv6 ?? [])]);
    if (!port?.macs.includes(r.mac) || want.some((a) => !has.has(a))) {
      p(
        'missing-firewall-element',
        r.tap,
        `anti-spoofing elements of VM ${r.vmId} (${r.tap}) are missing or incomplete`,
      );
    }
  }
}

/** Compare store, kernel and firewall; change nothing. */
export async function verify(m: NetworkManager): Promise<VerifyReport> {
  // TAPs of VMs released a moment ago are still being deleted in the background: not orphans.
  await m.settled();
  const problems: VerifyProblem[] = [];
  checkNetworks(m, problems);
  const { records, problems: corrupt } = await m.store.records.list();
  for (const c of corrupt) {
    problems.push({
      kind: 'corrupt-record',
      vmId: c.vmId,
      object: c.vmId,
      message: `record of ${c.vmId} is unreadable`,
      fix: `${GC} (quarantines it)`,
    });
  }
  const links = listLinks(m.nl, { kind: 'tun' });
  const linkByName = new Map(links.map((l) => [l.name, l]));
  let ports: FirewallPort[] = [];
  try {
    ports = m.firewall.listVms();
  } catch (e) {
    problems.push({
      kind: 'firewall',
      object: m.firewall.kind,
      message: toTapnetError(e).message,
      fix: 'see `tapnet doctor`',
    });
  }
  const portByTap = new Map(ports.map((p) => [p.ifname, p]));
  const leases = await listAllLeases(m.store.leases);
  const leaseOwner = new Map<string, string>();
  for (const { pool, leases: map } of leases)
    for (const [addr, owner] of map) leaseOwner.set(`${pool.network}|${addr}`, owner);
  let ready = 0;
  for (const r of records) {
    if (r.state !== 'ready') {
      problems.push({
        kind: 'incomplete-record',
        vmId: r.vmId,
        object: r.vmId,
        message: `VM ${r.vmId} was left '${r.state}' by a crash`,
        fix: GC,
      });
      continue;
    }
    if (!m.config.networks.has(r.network)) {
      problems.push({
        kind: 'unknown-network',
        vmId: r.vmId,
        object: r.network,
        message: `VM ${r.vmId} is on network ${r.network}, which is not configured any more`,
        fix: `${GC} (releases it)`,
      });
      continue;
    }
    ready++;
    // CNI-mode VMs live in their own namespaces, set up by their conflist: reconcile checks them with CHECK.
    if (((r as { mode?: string }).mode ?? 'direct') !== 'direct') continue;
    checkVm(m, r, linkByName.get(r.tap), portByTap.get(r.tap), problems);
    for (const a of [r.ipv4, r.ipv6]) {
      if (a && leaseOwner.get(`${r.network}|${a}`) !== r.vmId) {
        problems.push({
          kind: 'missing-lease',
          vmId: r.vmId,
          object: a,
          message: `VM ${r.vmId} uses ${a} but holds no lease for it`,
          fix: `release and ensure the VM again`,
        });
      }
    }
  }
  // Leftovers, re-checked under the owner's lock.
  const known = new Set([...records.map((r) => r.vmId), ...corrupt.map((c) => c.vmId)]);
  const tapOwners = new Set(records.map((r) => r.tap));
  const prefixes = new Set([...m.config.networks.values()].map((n) => n.tapPrefix));
  const suspects: VerifyProblem[] = [];
  for (const l of links) {
    if (tapOwners.has(l.name) || ![...prefixes].some((p) => isTapnetTapName(p, l.name))) continue;
    const owner = l.alias?.startsWith('tapnet:') ? l.alias.slice(7) : undefined;
    suspects.push({
      kind: 'orphan-tap',
      ...(owner ? { vmId: owner } : {}),
      object: l.name,
      message: `TAP ${l.name} belongs to no VM${owner ? ` (was ${owner})` : ''}`,
      fix: GC,
    });
  }
  for (const p of ports) {
    if (tapOwners.has(p.ifname)) continue;
    suspects.push({
      kind: 'orphan-firewall-element',
      object: p.ifname,
      message: `firewall elements for ${p.ifname}, which belongs to no VM`,
      fix: GC,
    });
  }
  for (const { pool, leases: map } of leases) {
    for (const [addr, owner] of map) {
      if (known.has(owner)) continue;
      suspects.push({
        kind: 'orphan-lease',
        vmId: owner,
        object: `${pool.network}:${addr}`,
        message: `address ${addr} of ${pool.network} is leased to ${owner}, which has no record`,
        fix: GC,
      });
    }
  }
  for (const s of suspects) {
    if (s.vmId) {
      const lock = await m.lockVm(s.vmId);
      try {
        if (await m.store.records.get(s.vmId)) continue;
      } finally {
        lock.release();
      }
    }
    problems.push(s);
  }
  return { ok: problems.length === 0, vms: ready, networks: m.config.networks.size, problems };
}
