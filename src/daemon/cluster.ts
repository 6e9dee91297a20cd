/**
 * Cluster mode for the daemon and the CLI (docs/CLUSTER.md): when the configuration has a `cluster` key,
 * the state store is etcd and networks with `scope: cluster` span the hosts through a VXLAN overlay.
 * ClusterNode wires the library's pieces in the order they need — etcd store with the overlay publisher,
 * membership, republish, then (after the NetworkManager opened over the store) the cluster networks'
 * bridges and the overlay agent. ClusterService is the TapnetApi over that manager: the overlay is
 * repaired after every reconcile, and an etcd outage surfaces as ERR_UNAVAILABLE (retryable).
 */

import { type EtcdStore, openEtcdStore } from '../cluster/etcd-store.js';
import { ClusterMember } from '../cluster/membership.js';
import { OverlayAgent, vmOverlayPublisher } from '../cluster/overlay.js';
import { overlayMtu } from '../cluster/overlay-kernel.js';
import type { LoadedConfig } from '../config/load.js';
import { type ClusterConfig, managerPart, type TapnetConfig } from '../config/schema.js';
import { isTapnetError, TapnetError, toTapnetError } from '../errors.js';
import { parseIp } from '../ip.js';
import type { ManagerConfigInput } from '../manager/config.js';
import { type NetworkManager, VM_RECORD_SCHEMA } from '../manager/manager.js';
import type { NetworkInfo, ReconcileReport, VmRecord } from '../manager/types.js';
import { getLink } from '../net/link.js';
import { openNetns } from '../net/netns.js';
import { NetlinkSocket } from '../netlink/socket.js';
import type { DoctorOptions } from '../observe/doctor.js';
import { LocalLockService } from '../store/locks.js';
import { openStateDir } from '../store/statedir.js';
import type { EnsureBody } from './schemas.js';
import { ManagerService } from './service.js';

/** The cluster configuration, or ERR_CONFIG naming what is missing. */
export function requireCluster(cfg: TapnetConfig): ClusterConfig {
  if (!cfg.cluster) {
    throw new TapnetError(
      'ERR_CONFIG',
      'cluster mode is not configured: set cluster.endpoints, cluster.vtep and cluster.underlay (docs/CLUSTER.md)',
    );
  }
  return cfg.cluster;
}

/** What decides whether a reload must open a new service: the manager's keys and the cluster's. */
export function serviceConfigKey(cfg: TapnetConfig): string {
  return JSON.stringify([managerPart(cfg), cfg.cluster ?? null]);
}

/** A netlink socket in the managed namespace (`ip -n NETNS …`), or in ours. */
function openNetlinkIn(netns: string | undefined): NetlinkSocket {
  if (netns === undefined) return NetlinkSocket.open();
  const ns = openNetns(netns);
  try {
    return NetlinkSocket.open({ nsFd: ns.fd });
  } finally {
    ns.close();
  }
}

/** The underlay's MTU (`ip link show dev UNDERLAY`); ERR_CONFIG naming cluster.underlay when it is missing. */
function underlayMtu(nl: NetlinkSocket, underlay: string): number {
  try {
    return getLink(nl, underlay).mtu ?? 1500;
  } catch (e) {
    if (!isTapnetError(e, 'ERR_LINK_NOT_FOUND')) throw e;
    throw new TapnetError(
      'ERR_CONFIG',
      `cluster.underlay: no interface ${underlay} in the managed namespace`,
      {
        cause: e,
        details: { underlay },
      },
    );
  }
}

/** The cluster pieces of one process around one NetworkManager. */
export class ClusterNode {
  overlay: OverlayAgent | undefined;
  private closed = false;

  private constructor(
    readonly config: ClusterConfig,
    readonly store: EtcdStore<VmRecord>,
    /** This host's membership (the daemon joins; the in-process CLI does not). */
    readonly member: ClusterMember | undefined,
    private readonly nl: NetlinkSocket,
    /** The manager's configuration, cluster networks' MTU defaulting to the overlay MTU. */
    readonly managerInput: ManagerConfigInput,
    /** Names of the networks with `scope: cluster`. */
    readonly networks: string[],
  ) {}

  /**
   * Open the etcd store (with the overlay publisher) and, with `join`, register this host and republish
   * its overlay entries. Reads the underlay's MTU (`ip link show dev UNDERLAY`): a cluster network without
   * an explicit `mtu` gets the overlay MTU. ERR_UNAVAILABLE when etcd cannot be reached.
   */
  static async open(loaded: LoadedConfig, opts: { join: boolean }): Promise<ClusterNode> {
    const cfg = requireCluster(loaded.config);
    const networks = [...loaded.resolved.networks.values()]
      .filter((n) => n.scope === 'cluster')
      .map((n) => n.name);
    const nl = openNetlinkIn(loaded.config.netns);
    let store: EtcdStore<VmRecord> | undefined;
    try {
      const mtu = overlayMtu(underlayMtu(nl, cfg.underlay), parseIp(cfg.vtep).family);
      const nets = { ...loaded.config.networks };
      for (const n of networks) if (!loaded.sources.has(`networks.${n}.mtu`)) nets[n] = { ...nets[n]!, mtu };
      const managerInput = { ...managerPart(loaded.config), networks: nets };
      store = await openEtcdStore<VmRecord>({
        endpoints: cfg.endpoints,
        host: cfg.host,
        schema: VM_RECORD_SCHEMA,
        publish: vmOverlayPublisher<VmRecord>(networks, cfg.vtep),
        ...(cfg.prefix !== undefined ? { prefix: cfg.prefix } : {}),
        ...(cfg.ttl !== undefined ? { ttl: cfg.ttl } : {}),
        ...(cfg.locks === 'local'
          ? { locks: new LocalLockService(openStateDir(loaded.config.stateDir)) }
          : {}),
      });
      let member: ClusterMember | undefined;
      if (opts.join) {
        member = await ClusterMember.join({
          client: store.client,
          session: store.session,
          host: cfg.host,
          vtep: cfg.vtep,
          ...(cfg.prefix !== undefined ? { prefix: cfg.prefix } : {}),
        });
        await store.records.republish();
      }
      return new ClusterNode(cfg, store, member, nl, managerInput, networks);
    } catch (e) {
      if (store) await store.session.close({ revoke: true }).catch(() => undefined);
      store?.close();
      nl.close();
      throw e;
    }
  }

  /**
   * Make the cluster networks' bridges and start the overlay agent (VXLAN devices, remote VMs programmed
   * from a watch). ERR_CONFIG when another host defines a network differently or the MTU is too large.
   */
  async start(m: NetworkManager): Promise<void> {
    for (const n of this.networks) m.ensureNetwork(m.network(n));
    this.overlay = await OverlayAgent.start(
      {
        client: this.store.client,
        nl: this.nl,
        host: this.config.host,
        vtep: this.config.vtep,
        underlay: this.config.underlay,
        ...(this.config.prefix !== undefined ? { prefix: this.config.prefix } : {}),
      },
      this.networks.map((name) => {
        const r = m.network(name);
        return {
          name,
          topology: r.topology,
          bridge: r.bridge,
          mtu: r.mtu,
          ...(r.subnet4 ? { subnet4: r.subnet4 } : {}),
          ...(r.subnet6 ? { subnet6: r.subnet6 } : {}),
          ...(r.vni !== undefined ? { vni: r.vni } : {}),
        };
      }),
    );
  }

  /** Put the overlay's kernel side back after a reconcile (a re-created bridge loses its VXLAN port). */
  async repair(): Promise<void> {
    await this.overlay?.repair();
  }

  /**
   * Stop the overlay agent (its kernel entries stay), then end the session, revoking its lease. With
   * `leave`, first leave the cluster cleanly: this host's overlay entries and `alive` key are withdrawn.
   * Never throws: etcd may be gone (the lease then runs out by itself).
   */
  async close(opts: { leave?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.overlay?.close();
    await this.store.sync();
    if (opts.leave) await this.member?.leave().catch(() => undefined);
    await this.store.session.close({ revoke: true }).catch(() => undefined);
    this.store.close();
    this.nl.close();
  }
}

/** True when every failure inside an ERR_TEARDOWN (nested ones too) is ERR_UNAVAILABLE. */
function onlyUnavailable(e: TapnetError): boolean {
  type F = { code?: string; details?: { failures?: unknown[] } };
  const leaves: string[] = [];
  const walk = (f: F): void => {
    if (f.code === 'ERR_TEARDOWN' && Array.isArray(f.details?.failures))
      for (const x of f.details.failures) walk(x as F);
    else leaves.push(f.code ?? '');
  };
  walk(e.toJSON() as F);
  return leaves.length > 0 && leaves.every((c) => c === 'ERR_UNAVAILABLE');
}

/**
 * An ERR_TEARDOWN that failed only because etcd could not be reached is ERR_UNAVAILABLE (retry: the
 * record stays `releasing` and the retry finishes it); anything else is returned unchanged.
 */
export function surfaceUnavailable(e: unknown): unknown {
  if (!isTapnetError(e, 'ERR_TEARDOWN') || !onlyUnavailable(e)) return e;
  return new TapnetError('ERR_UNAVAILABLE', `${e.message} (the cluster store cannot be reached; retry)`, {
    cause: e,
    details: e.details ?? {},
  });
}

const rethrow = (e: unknown): never => {
  throw surfaceUnavailable(e);
};

/** TapnetApi over a NetworkManager on the etcd store, with the overlay kept in step. */
export class ClusterService extends ManagerService {
  constructor(
    manager: NetworkManager,
    loaded: LoadedConfig,
    readonly node: ClusterNode,
    doctorOptions: Partial<DoctorOptions> = {},
  ) {
    super(manager, loaded, doctorOptions);
  }

  override ensure(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo> {
    return super.ensure(vmId, opts).catch(rethrow);
  }

  override ensureWithTapFds(
    vmId: string,
    opts: EnsureBody = {},
  ): Promise<NetworkInfo & { tapFds: number[] }> {
    return super.ensureWithTapFds(vmId, opts).catch(rethrow);
  }

  override release(vmId: string): Promise<void> {
    return super.release(vmId).catch(rethrow);
  }

  /** Reconcile, then repair the overlay (a failure of the repair is listed in the report's errors). */
  override async gc(): Promise<ReconcileReport> {
    const r = await super.gc().catch(rethrow);
    await this.node.repair().catch((e: unknown) => {
      const t = toTapnetError(e);
      r.errors.push({ code: t.code, message: `overlay repair: ${t.message}` });
    });
    return r;
  }

  /**
   * Close the manager and the cluster pieces. `final` (the daemon's exit): leave the cluster cleanly when
   * this host has no VM left; VMs that keep their network keep their overlay entries, so the other hosts
   * keep reaching them (the host then shows expired until its daemon is back).
   */
  override async close(opts: { final?: boolean } = {}): Promise<void> {
    let leave = false;
    if (opts.final)
      leave = await this.manager.list().then(
        (l) => l.length === 0,
        () => false,
      );
    try {
      await super.close();
    } finally {
      await this.node.close({ leave });
    }
  }
}

/** Open the daemon's service in cluster mode, the manager over the etcd store (the caller reconciles). */
export async function openClusterManager(
  loaded: LoadedConfig,
  open: (input: ManagerConfigInput, store: EtcdStore<VmRecord>) => Promise<NetworkManager>,
  join: boolean,
): Promise<{ node: ClusterNode; manager: NetworkManager }> {
  const node = await ClusterNode.open(loaded, { join });
  try {
    return { node, manager: await open(node.managerInput, node.store) };
  } catch (e) {
    await node.close();
    throw e;
  }
}

/**
 * Run `open` until it succeeds, retrying while it fails with ERR_UNAVAILABLE (etcd unreachable when the
 * daemon starts), with backoff from 1 s to 5 s. `onRetry` is told each time; `stopped()` ends the wait
 * with the last error.
 */
export async function retryUnavailable<T>(
  open: () => Promise<T>,
  o: { stopped: () => boolean; onRetry: (e: TapnetError, delayMs: number) => void },
): Promise<T> {
  for (let delay = 1000; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await open();
    } catch (e) {
      if (!isTapnetError(e, 'ERR_UNAVAILABLE') || o.stopped()) throw e;
      o.onRetry(e, delay);
      await new Promise((r) => setTimeout(r, delay));
      if (o.stopped()) throw e;
    }
  }
}
