/**
 * The NetworkManager's public types: what a VM manager asks for (EnsureOptions) and what it gets back
 * (NetworkInfo), and the durable record behind each VM.
 */
import type { PolicyDocument } from '../policy/types.js';
import type { StoredRecord } from '../store/types.js';
import type { BandwidthLimits, Vmm } from './limits.js';

/** How the VMM gets the TAP. */
export type TapMode = 'persistent' | 'fd';

/** Options of release() and releaseMany(). */
export interface ReleaseOptions {
  signal?: AbortSignal;
  /**
   * Resolve only once the kernel has deleted the TAP. By default release answers as soon as the VM's
   * network is unusable (firewall elements gone, TAP doomed) and its address and record are freed; the
   * kernel's deletion, which waits for RCU grace periods, finishes in the background, batched with other
   * releases (see settled()). An ensure of the same VM, in any process, waits for it.
   */
  wait?: boolean;
}

export interface EnsureOptions {
  /** Network name (default: the configured default network). */
  network?: string;
  /** A static IPv4 address (with or without /prefix) instead of the next free one. */
  ipv4?: string;
  /** A static IPv6 address. */
  ipv6?: string;
  /** A MAC for the guest instead of the one derived from the VM id. */
  mac?: string;
  /**
   * 'persistent' (default): a TAP that outlives tapnet's fds, for VMMs that open it by name (Firecracker,
   * QEMU ifname=). 'fd': NetworkInfo.tapFds holds open queue fds to hand to the VMM (QEMU fd=N); the TAP
   * vanishes when the last fd closes.
   */
  tap?: TapMode;
  /** Owner uid/gid of a persistent TAP (non-root VMMs, jailers). */
  tapUid?: number;
  tapGid?: number;
  /** Multi-queue count (default 1). */
  queues?: number;
  /** virtio-net header on the TAP (default true: offloads, about twice the throughput). */
  vnetHdr?: boolean;
  /** Abort a call that is waiting (e.g. for the VM's lock). */
  signal?: AbortSignal;
  /** The VM's firewall policy (docs/POLICY.md); adds to its network's default policy. Direct mode. */
  policy?: unknown;
  /** Bandwidth limits: rx = to the guest, tx = from the guest, bytes/s (+ burst). Direct mode. */
  bandwidth?: BandwidthLimits;
  /** The VMM, for where limits go: tc on the TAP (qemu, cloud-hypervisor) or Firecracker's rate limiters. */
  vmm?: Vmm;
}

/** Everything a VMM and a guest need to use the network. JSON-serialisable except tapFds. */
export interface NetworkInfo {
  vmId: string;
  network: string;
  /** direct: tapnet's own TAP/IPAM/firewall; cni: a per-VM namespace set up by a CNI conflist. */
  mode: 'direct' | 'cni';
  topology: 'bridge' | 'routed';
  /** Host TAP device name. */
  tap: string;
  /** Open TAP queue fds (tap: 'fd', or on request): pass to the VMM; yours to close. Not in JSON. */
  tapFds?: number[];
  /** Guest MAC. */
  mac: string;
  /** Guest IPv4 address in CIDR form, e.g. `198.18.0.5/22`. */
  ipv4?: string;
  gateway4?: string;
  ipv6?: string;
  gateway6?: string;
  dns: string[];
  mtu: number;
  /** The bridge the TAP is a port of (bridge topology). */
  bridge?: string;
  /** The namespace the TAP lives in (a path): CNI mode's per-VM namespace, or the manager's when not its own. */
  netns?: string;
  queues: number;
  vnetHdr: boolean;
  tapMode: TapMode;
  createdAt: string;
  /** The VM's own policy, when it has one. */
  policy?: PolicyDocument;
  /** Its bandwidth limits, when it has any. */
  bandwidth?: BandwidthLimits;
  /** Firecracker: the limits as its rx/tx rate limiters (for PUT/PATCH /network-interfaces). */
  firecrackerRateLimiters?: Record<string, unknown>;
}

/** What a CNI-mode record keeps of the ADD result (NetworkInfo fields that do not derive from config). */
export interface CniRecordInfo {
  /** The conflist's name. */
  network: string;
  /** CNI_IFNAME (the veth in the VM's namespace whose traffic the TAP takes over). */
  ifname: string;
  ipv4?: string;
  gateway4?: string;
  ipv6?: string;
  gateway6?: string;
  dns: string[];
  mtu: number;
}

/** The durable record of one VM's network. */
export interface VmRecord extends StoredRecord {
  /** Absent in records written before CNI mode existed: 'direct'. */
  mode?: 'direct' | 'cni';
  /** CNI mode: the VM's namespace (path). */
  netns?: string;
  /** CNI mode: what ADD returned. */
  cni?: CniRecordInfo;
  network: string;
  topology: 'bridge' | 'routed';
  tap: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
  tapMode: TapMode;
  queues: number;
  vnetHdr: boolean;
  tapUid?: number;
  tapGid?: number;
  createdAt: string;
  policy?: PolicyDocument;
  bandwidth?: BandwidthLimits;
  vmm?: Vmm;
}

/** What reconcile found and repaired. */
export interface ReconcileReport {
  /** TAPs with tapnet's naming that no record owns: removed. */
  orphanTaps: string[];
  /** Records left half-done by a crash ('creating'/'releasing'): rolled back. */
  incompleteRecords: string[];
  /** Ready records whose TAP had vanished: the TAP was re-created. */
  recreatedTaps: string[];
  /** TAPs found off their bridge or down (e.g. the bridge was deleted and re-created): attached and up again. */
  reattachedTaps: string[];
  /** Leases whose owner has no record: freed. */
  orphanLeases: string[];
  /**
   * Addresses of ready VMs whose lease had gone (an etcd outage in the middle of a write, or a lease
   * deleted by hand): taken again, so the address is not handed to another VM.
   */
  reclaimedLeases: string[];
  /** Firewall elements without a VM: removed. */
  orphanFirewallElements: string[];
  /** CNI mode: VM namespaces without a record: DEL run, namespace removed. */
  orphanNetns: string[];
  /** Records that could not be read (quarantined). */
  corruptRecords: string[];
  /** Problems reconcile could not repair. */
  errors: { code: string; message: string }[];
}

/** Counters and gauges for a metrics snapshot. */
export interface ManagerMetrics {
  ensures: { ok: number; failed: number; existing: number };
  releases: { ok: number; failed: number; unknown: number };
  activeVms: number;
  reconciles: number;
  repairs: number;
  lastEnsureMs?: number;
  lastReleaseMs?: number;
}
