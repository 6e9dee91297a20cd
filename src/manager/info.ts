/**
 * From a VM record to the NetworkInfo a VM manager receives, and the guest/VMM configuration rendered
 * from it (kernel ip=, Firecracker, QEMU, Cloud Hypervisor, cloud-init).
 */
import { renderCloudHypervisorNet } from '../guest/cloud-hypervisor.js';
import { renderCloudInitNetworkConfig } from '../guest/cloud-init.js';
import { renderFirecrackerNetworkInterface } from '../guest/firecracker.js';
import { renderKernelIpArg } from '../guest/kernel-ip.js';
import { renderQemuNetArgs, vhostNetAvailable } from '../guest/qemu.js';
import type { GuestNetConfig } from '../guest/types.js';
import type { ResolvedNetwork } from './config.js';
import { ROUTED_GATEWAY6 } from './network.js';
import type { CniRecordInfo, NetworkInfo, VmRecord } from './types.js';

/** The guest's view of its addresses: network prefix for IPv4 (both topologies); /128 + fe80::1 for routed IPv6. */
export function toNetworkInfo(r: VmRecord, net: ResolvedNetwork, netnsPath?: string): NetworkInfo {
  if (r.mode === 'cni' && r.cni) return cniInfo(r, r.cni);
  const routed = r.topology === 'routed';
  const info: NetworkInfo = {
    vmId: r.vmId,
    network: r.network,
    mode: 'direct',
    topology: r.topology,
    tap: r.tap,
    mac: r.mac,
    dns: net.dns,
    mtu: net.mtu,
    queues: r.queues,
    vnetHdr: r.vnetHdr,
    tapMode: r.tapMode,
    createdAt: r.createdAt,
  };
  if (r.ipv4) {
    info.ipv4 = `${r.ipv4}/${net.prefix4}`;
    if (net.gateway4) info.gateway4 = net.gateway4;
  }
  if (r.ipv6) {
    info.ipv6 = routed ? `${r.ipv6}/128` : `${r.ipv6}/${net.prefix6}`;
    info.gateway6 = routed ? ROUTED_GATEWAY6 : net.gateway6!;
  }
  if (!routed) info.bridge = net.bridge;
  if (netnsPath) info.netns = netnsPath;
  if (r.policy) info.policy = r.policy;
  if (r.bandwidth) info.bandwidth = r.bandwidth;
  return info;
}

function cniInfo(r: VmRecord, c: CniRecordInfo): NetworkInfo {
  const info: NetworkInfo = {
    vmId: r.vmId,
    network: r.network,
    mode: 'cni',
    topology: 'bridge',
    tap: r.tap,
    mac: r.mac,
    dns: c.dns,
    mtu: c.mtu,
    queues: r.queues,
    vnetHdr: r.vnetHdr,
    tapMode: r.tapMode,
    createdAt: r.createdAt,
  };
  if (c.ipv4) info.ipv4 = c.ipv4;
  if (c.gateway4) info.gateway4 = c.gateway4;
  if (c.ipv6) info.ipv6 = c.ipv6;
  if (c.gateway6) info.gateway6 = c.gateway6;
  if (r.netns) info.netns = r.netns;
  return info;
}

/** What renderGuestConfig returns: ready-to-use configuration for the guest and each VMM. */
export interface GuestConfigs {
  /** Kernel `ip=` argument (IPv4 only; undefined for IPv6-only VMs). */
  kernelIpArg?: string;
  /** Body of Firecracker's `PUT /network-interfaces/eth0` (single-queue TAPs: Firecracker has no multi-queue). */
  firecracker?: Record<string, unknown>;
  /** QEMU `-netdev`/`-device` argv: by TAP name, and with `fd=3` for a TAP passed as fd 3. */
  qemu: { byName: string[]; byFd: string[] };
  /** Cloud Hypervisor `--net` value. */
  cloudHypervisor: string;
  /** cloud-init network-config v2 (YAML). */
  cloudInit: string;
}

function guestNet(info: NetworkInfo, hostname?: string): GuestNetConfig {
  const cfg: GuestNetConfig = {
    vmId: info.vmId,
    ifname: info.tap,
    mac: info.mac,
    dns: info.dns,
    mtu: info.mtu,
    queues: info.queues,
    vnetHdr: info.vnetHdr,
  };
  if (info.ipv4) cfg.ipv4 = info.ipv4;
  if (info.gateway4) cfg.gateway4 = info.gateway4;
  if (info.ipv6) cfg.ipv6 = info.ipv6;
  if (info.gateway6) cfg.gateway6 = info.gateway6;
  if (hostname) cfg.hostname = hostname;
  return cfg;
}

/**
 * Render every guest/VMM configuration for a VM. `vhost` defaults to whether /dev/vhost-net exists
 * (QEMU aborts on vhost=on without it); `machine` is QEMU's (microvm → virtio-mmio, q35/pc → PCI).
 */
export function renderGuestConfig(
  info: NetworkInfo,
  opts: { machine?: 'microvm' | 'q35' | 'pc'; vhost?: boolean; hostname?: string } = {},
): GuestConfigs {
  const cfg = guestNet(info, opts.hostname);
  const machine = opts.machine ?? 'q35';
  const vhost = opts.vhost ?? vhostNetAvailable();
  // The VMM gets the TAP's queues as fds 3, 4, … (spawn stdio mapping).
  const byFd =
    info.queues === 1
      ? { ...cfg, tapFd: 3 }
      : { ...cfg, tapFds: Array.from({ length: info.queues }, (_, i) => 3 + i) };
  return {
    ...(info.ipv4 ? { kernelIpArg: renderKernelIpArg(cfg) } : {}),
    ...(info.queues === 1
      ? {
          firecracker: renderFirecrackerNetworkInterface(cfg, { ifaceId: 'eth0' }) as unknown as Record<
            string,
            unknown
          >,
        }
      : {}),
    qemu: {
      byName: renderQemuNetArgs(cfg, { machine, vhost }),
      byFd: renderQemuNetArgs(byFd, { machine, vhost }),
    },
    cloudHypervisor: renderCloudHypervisorNet(cfg),
    cloudInit: renderCloudInitNetworkConfig(cfg).yaml,
  };
}
