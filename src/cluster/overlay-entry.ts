/**
 * What a host publishes for each ready VM of a cluster network (`overlay/<network>/<host>/<vmId>`), and
 * the check every other host applies before programming it. Pure.
 */
import { parseIp, validateUnicastMac } from '../ip.js';
import type { OverlayPublisher } from './etcd-records.js';

/** The overlay entry a host publishes for a VM. */
export interface OverlayEntry {
  mac: string;
  ipv4?: string;
  ipv6?: string;
  vtep: string;
}

/** The fields of a VM record the overlay needs (the manager's VmRecord has them). */
export interface OverlayVmRecord {
  vmId: string;
  network: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
}

/**
 * The publisher for EtcdStore: VMs of the cluster networks publish {mac, addresses, vtep}. `vtep` is this
 * host's underlay address.
 */
export function vmOverlayPublisher<T extends OverlayVmRecord>(
  clusterNetworks: Iterable<string>,
  vtep: string,
): OverlayPublisher<T> {
  const nets = new Set(clusterNetworks);
  parseIp(vtep, 'VTEP address');
  return (r) => {
    if (!nets.has(r.network)) return undefined;
    const entry: OverlayEntry = {
      mac: r.mac,
      vtep,
      ...(r.ipv4 ? { ipv4: r.ipv4 } : {}),
      ...(r.ipv6 ? { ipv6: r.ipv6 } : {}),
    };
    return { network: r.network, entry: entry as unknown as Record<string, unknown> };
  };
}

/** Parse a published entry; undefined when it is not one (then it is ignored, never programmed). */
export function parseOverlayEntry(text: string): OverlayEntry | undefined {
  try {
    const v = JSON.parse(text) as Partial<OverlayEntry>;
    if (typeof v.mac !== 'string' || typeof v.vtep !== 'string') return undefined;
    parseIp(v.vtep);
    const e: OverlayEntry = { mac: validateUnicastMac(v.mac), vtep: v.vtep };
    if (typeof v.ipv4 === 'string' && parseIp(v.ipv4).family === 4) e.ipv4 = v.ipv4;
    if (typeof v.ipv6 === 'string' && parseIp(v.ipv6).family === 6) e.ipv6 = v.ipv6;
    return e;
  } catch {
    return undefined;
  }
}
