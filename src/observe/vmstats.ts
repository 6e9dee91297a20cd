/**
 * Traffic counters of one VM: its TAP's IFLA_STATS64 (`ip -s link show TAP`), presented from the guest's
 * side — what the host's TAP transmits, the guest receives.
 */
import { TapnetError } from '../errors.js';
import type { NetworkManager } from '../manager/manager.js';
import { findLink } from '../net/link.js';

export interface TrafficCounters {
  bytes: number;
  packets: number;
  errors: number;
  dropped: number;
}

export interface VmStats {
  vmId: string;
  network: string;
  tap: string;
  /** Operational state of the TAP (`up` once a VMM holds it and the link is up; `down` otherwise). */
  operstate: string;
  /** Received by the guest (transmitted by the TAP). */
  guestRx: TrafficCounters;
  /** Sent by the guest (received by the TAP). */
  guestTx: TrafficCounters;
  collectedAt: string;
}

/** Counters of `vmId`. ERR_NOT_FOUND when it has no network; ERR_LINK_NOT_FOUND when its TAP is gone. */
export async function vmStats(m: NetworkManager, vmId: string): Promise<VmStats> {
  const info = await m.get(vmId);
  if (!info) throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`, { details: { vmId } });
  const link = findLink(m.nl, info.tap);
  if (!link?.stats) {
    throw new TapnetError(
      'ERR_LINK_NOT_FOUND',
      `TAP ${info.tap} of VM ${vmId} does not exist (run tapnet gc to re-create it)`,
      {
        details: { vmId, tap: info.tap },
      },
    );
  }
  const s = link.stats;
  return {
    vmId,
    network: info.network,
    tap: info.tap,
    operstate: (link.operstate ?? (link.up ? 'up' : 'down')).toLowerCase(),
    guestRx: { bytes: s.txBytes, packets: s.txPackets, errors: s.txErrors, dropped: s.txDropped },
    guestTx: { bytes: s.rxBytes, packets: s.rxPackets, errors: s.rxErrors, dropped: s.rxDropped },
    collectedAt: new Date().toISOString(),
  };
}
