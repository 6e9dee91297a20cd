/**
 * Reconcile (at startup, and `tapnet gc`): compare the store with the kernel and the firewall, repair.
 *
 * - Every configured network's bridge, addresses, sysctls and firewall base are re-applied (repairs a
 *   deleted bridge or an `nft flush ruleset`).
 * - Records left 'releasing' (or 'creating') by a crash: the release is finished.
 * - Ready records whose TAP vanished: a persistent TAP is re-created with the same name, MAC and
 *   addresses (e.g. after a reboot; the VM manager restarts its VMs on the same network); an fd TAP is
 *   released, since the VMM that held it is gone.
 * - TAPs with tapnet's naming that no record owns: deleted. Leases whose owner has no record: freed.
 *   Firewall ports without a VM: removed; missing elements of live VMs: re-added.
 * Every removal of something "orphaned" is re-checked under the owner's VM lock, so an ensure running in
 * another process at the same moment keeps what it is building.
 */

import { existsSync } from 'node:fs';
import { TapnetError, toTapnetError } from '../errors.js';
import type { FirewallPort } from '../firewall/types.js';
import type { PoolRequest } from '../ipam/ipam.js';
import { poolKey } from '../ipam/layout.js';
import { listAllLeases, orphansAmong, type PoolLeases, releaseOrphans } from '../ipam/reconcile.js';
import { findLink, listLinks, setLink } from '../net/link.js';
import { cniDel, vmNetnsIds, vmNetnsName } from './cni-mode.js';
import { faultPoint } from './faults.js';
import type { NetworkManager } from './manager.js';
import { isTapnetTapName } from './names.js';
import { emptyReport } from './report.js';
import type { ReconcileReport, VmRecord } from './types.js';
import { installPolicy } from './vm-policy.js';

const ALIAS_PREFIX = 'tapnet:';

export async function reconcile(
  m: NetworkManager,
  opts: { signal?: AbortSignal } = {},
): Promise<ReconcileReport> {
  const report = emptyReport();
  // TAPs this process is deleting in the background (released VMs) are not orphans: let them go first.
  await m.settled();
  const fail = (what: string, e: unknown): void => {
    const t = toTapnetError(e, 'ERR_INTERNAL', what);
    report.errors.push({ code: t.code, message: t.message });
  };

  // 1. Networks.
  for (const net of m.config.networks.values()) {
    try {
      m.ensureNetwork(net, true);
    } catch (e) {
      fail(`network ${net.name}`, e);
    }
  }

  faultPoint('reconcile:after-networks'); // test builds only: TAPNET_FAULTS (faults.ts)

  // 2. Records.
  const { records, problems } = await m.store.records.list();
  report.corruptRecords = problems.map((p) => p.vmId);
  const links = listLinks(m.nl, { kind: 'tun' });
  const linkByName = new Map(links.map((l) => [l.name, l]));
  for (const r0 of records) {
    const lock = await m.lockVm(r0.vmId, opts.signal);
    try {
      faultPoint('reconcile:record'); // test builds only: TAPNET_FAULTS (faults.ts)
      const r = await m.store.records.get(r0.vmId);
      if (!r) continue;
      if (r.state !== 'ready' || !m.config.networks.has(r.network)) {
        await m.finishRelease(r);
        report.incompleteRecords.push(r.vmId);
        continue;
      }
      if (r.mode === 'cni') {
        if (!r.netns || !existsSync(r.netns)) {
          // The VM's namespace vanished: DEL still cleans the plugins' host side (leases, bridge ports).
          await m.finishRelease(r);
          report.incompleteRecords.push(r.vmId);
        }
        continue;
      }
      const net = m.network(r.network);
      const link = linkByName.get(r.tap);
      if (link && net.topology === 'bridge') {
        // The bridge was deleted (and re-created in step 1), or someone detached or downed the TAP.
        const bridgeIndex = m.ensureNetwork(net);
        if (link.master !== bridgeIndex || !link.up) {
          setLink(m.nl, r.tap, { master: bridgeIndex, up: true });
          report.reattachedTaps.push(r.tap);
        }
        continue;
      }
      if (!link && !listLinks(m.nl, { kind: 'tun' }).some((l) => l.name === r.tap)) {
        if (r.tapMode === 'persistent') {
          await m.repairTap(r);
          report.recreatedTaps.push(r.tap);
        } else {
          await m.finishRelease(r);
          report.incompleteRecords.push(r.vmId);
        }
      }
    } catch (e) {
      fail(`record ${r0.vmId}`, e);
    } finally {
      lock.release();
    }
  }

  // 3. Orphan TAPs and firewall ports: collect by owner, then re-check each owner under its lock.
  const prefixes = new Set([...m.config.networks.values()].map((n) => n.tapPrefix));
  const isOurs = (name: string): boolean => [...prefixes].some((p) => isTapnetTapName(p, name));
  let ports: FirewallPort[] = [];
  try {
    ports = m.firewall.listVms();
  } catch (e) {
    fail('firewall list', e);
  }
  const { records: live } = await m.store.records.list();
  const liveTaps = new Map<string, VmRecord>(live.map((r) => [r.tap, r]));
  const current = listLinks(m.nl, { kind: 'tun' });
  const ownerOf = (tap: string): string | undefined => {
    const alias = current.find((l) => l.name === tap)?.alias;
    return alias?.startsWith(ALIAS_PREFIX) ? alias.slice(ALIAS_PREFIX.length) : undefined;
  };
  const suspects = new Map<string, { taps: string[]; ports: FirewallPort[] }>();
  const suspect = (owner: string, tap?: string, port?: FirewallPort): void => {
    const s = suspects.get(owner) ?? { taps: [], ports: [] };
    if (tap) s.taps.push(tap);
    if (port) s.ports.push(port);
    suspects.set(owner, s);
  };
  for (const l of current)
    if (isOurs(l.name) && !liveTaps.has(l.name)) suspect(ownerOf(l.name) ?? '', l.name);
  for (const p of ports) if (!liveTaps.has(p.ifname)) suspect(ownerOf(p.ifname) ?? '', undefined, p);
  const deletions: Promise<void>[] = [];
  for (const [owner, s] of suspects) {
    let lock: { release(): void } | undefined;
    try {
      if (owner) {
        lock = await m.lockVm(owner, opts.signal);
        if (await m.store.records.get(owner)) continue; // created meanwhile: not an orphan
      }
      faultPoint('reconcile:orphans'); // test builds only: TAPNET_FAULTS (faults.ts)
      // Deleted meanwhile (by the process that released the VM, which held its lock until then).
      if (owner) s.taps = s.taps.filter((tap) => findLink(m.nl, tap) !== undefined);
      if (s.ports.length) {
        m.firewall.removePorts(s.ports);
        report.orphanFirewallElements.push(...s.ports.map((p) => p.ifname));
      }
      for (const tap of s.taps) {
        deletions.push(
          m.reapTap(tap).then(
            () => void report.orphanTaps.push(tap),
            (e: unknown) => fail(`orphan TAP ${tap}`, e),
          ),
        );
      }
      await Promise.all(deletions.splice(0));
    } catch (e) {
      fail(`orphans of ${owner || 'unknown owner'}`, e);
    } finally {
      lock?.release();
    }
  }

  // 4. CNI mode: VM namespaces nobody owns (a crash between creating the namespace and the record).
  const liveIds = new Set(live.map((r) => r.vmId));
  for (const net of m.config.networks.values()) {
    if (net.mode !== 'cni' || !net.cni) continue;
    for (const vmId of vmNetnsIds(net.cni)) {
      if (liveIds.has(vmId)) continue;
      const lock = await m.lockVm(vmId, opts.signal);
      try {
        if (await m.store.records.get(vmId)) continue;
        await cniDel(m.cni, net, vmId);
        report.orphanNetns.push(vmNetnsName(net.cni, vmId));
      } catch (e) {
        fail(`orphan namespace of ${vmId}`, e);
      } finally {
        lock.release();
      }
    }
  }

  // 5. Firewall elements of live VMs (idempotent: re-adding what exists changes nothing).
  const ready = live.filter(
    (r) => r.state === 'ready' && r.mode !== 'cni' && m.config.networks.has(r.network),
  );
  if (ready.length) {
    try {
      m.firewall.addVms(ready.map((r) => m.firewallVm(r)));
    } catch (e) {
      fail('firewall elements of live VMs', e);
    }
    for (const r of ready) {
      const net = m.network(r.network);
      if (!r.policy && !net.policy) continue;
      try {
        await installPolicy(m, r, net); // idempotent: re-applies after a flushed ruleset
      } catch (e) {
        fail(`policy of ${r.vmId}`, e);
      }
    }
  }

  faultPoint('reconcile:before-leases'); // test builds only: TAPNET_FAULTS (faults.ts)

  // 6. Leases: free those without a record; take again those a ready VM lost (see reclaimLost).
  try {
    const all = await listAllLeases(m.store.leases);
    const { records: recs, problems } = await m.store.records.list();
    const leases = await releaseOrphans({
      leases: m.store.leases,
      records: m.store.records,
      locks: m.store.locks,
      ipam: m.ipam,
      orphans: orphansAmong(all, [...recs.map((r) => r.vmId), ...problems.map((p) => p.vmId)]),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    report.orphanLeases = leases.released.map((o) => `${o.pool.network}:${o.address} (${o.owner})`);
    for (const f of leases.failures as TapnetError[]) fail('orphan lease', f);
    await reclaimLost(m, all, recs, report, fail, opts.signal);
  } catch (e) {
    fail('leases', e);
  }
  // The TAPs of records finished above are deleted in the background: reconcile answers once they are gone.
  await m.settled();
  return report;
}

/**
 * A ready VM whose lease is gone still uses its address, which the next ensure would hand out again.
 * Local stores cannot get there (the record is written after the lease, removed before it), but in
 * the cluster store a write that etcd applied and never answered can, and so can a lease removed by
 * hand. Take the address again under the VM's lock; one that another VM holds now is reported.
 */
async function reclaimLost(
  m: NetworkManager,
  all: PoolLeases[],
  records: VmRecord[],
  report: ReconcileReport,
  fail: (what: string, e: unknown) => void,
  signal?: AbortSignal,
): Promise<void> {
  const held = new Map(all.map((p) => [poolKey(p.pool), p.leases]));
  const lost = (r: VmRecord): PoolRequest[] => {
    if (r.state !== 'ready' || r.mode === 'cni' || !m.config.networks.has(r.network)) return [];
    const pools = m.pools(m.network(r.network));
    const out: PoolRequest[] = [];
    for (const [spec, addr] of [
      [pools.v4, r.ipv4],
      [pools.v6, r.ipv6],
    ] as const) {
      if (!spec || !addr) continue;
      const address = addr.split('/')[0]!;
      if (held.get(poolKey(m.ipam.pool(spec).ref))?.get(address) !== r.vmId)
        out.push({ pool: spec, address });
    }
    return out;
  };
  for (const r0 of records) {
    if (lost(r0).length === 0) continue;
    const lock = await m.lockVm(r0.vmId, signal);
    try {
      const r = await m.store.records.get(r0.vmId);
      const wanted = r ? lost(r) : [];
      if (wanted.length === 0) continue;
      await m.ipam.allocateAll(r!.vmId, wanted);
      report.reclaimedLeases.push(...wanted.map((w) => `${r!.network}:${w.address} (${r!.vmId})`));
    } catch (e) {
      const t = toTapnetError(e, 'ERR_INTERNAL', 'claim');
      fail(
        `the lost lease of ${r0.vmId}`,
        new TapnetError(t.code, `VM ${r0.vmId} lost its lease and cannot take it again: ${t.message}`, {
          cause: t,
        }),
      );
    } finally {
      lock.release();
    }
  }
}
