/**
 * What both the daemon and the in-process CLI offer: one interface (TapnetApi) with two implementations —
 * ManagerService over a NetworkManager in this process, and DaemonClient (client.ts) over the API.
 */
import type { LoadedConfig } from '../config/load.js';
import { TapnetError } from '../errors.js';
import type { NetworkManager } from '../manager/manager.js';
import type { NetworkInfo, ReconcileReport } from '../manager/types.js';
import { closeTapFds } from '../net/tap.js';
import { type DoctorOptions, type DoctorReport, runDoctor } from '../observe/doctor.js';
import { parseSince, type UsageEntry, UsageLedger, type UsageReport } from '../observe/usage.js';
import { type VerifyReport, verify } from '../observe/verify.js';
import { StatsReader, type StatsReport, type VmStats } from '../observe/vmstats.js';
import type { EnsureBody } from './schemas.js';

/** Everything a VM manager (or the CLI) can ask tapnet. */
export interface TapnetApi {
  /** Give `vmId` its network, or return the one it has. `tap: 'fd'` is for ensureWithTapFds only. */
  ensure(vmId: string, opts?: EnsureBody): Promise<NetworkInfo>;
  /** Like ensure, and hand over the TAP's open queue fds (info.tapFds; yours to close). */
  ensureWithTapFds(vmId: string, opts?: EnsureBody): Promise<NetworkInfo & { tapFds: number[] }>;
  /**
   * Take the network back; unknown VMs are a no-op. Answers once the network is unusable and freed;
   * `wait`: also once the kernel has deleted the TAP (see ReleaseOptions).
   */
  release(vmId: string, opts?: { wait?: boolean }): Promise<void>;
  get(vmId: string): Promise<NetworkInfo | undefined>;
  list(): Promise<NetworkInfo[]>;
  stats(vmId: string): Promise<VmStats>;
  /** Counters of these VMs (all when undefined) and their networks' drops. */
  statsAll?(vmIds?: string[]): Promise<StatsReport>;
  /** Sample and return the usage export (`since`: ISO time or duration like 15m; see parseSince). */
  usage?(opts?: { since?: string }): Promise<UsageReport>;
  /** Hand over and forget a released VM's final usage. */
  collectUsage?(vmId: string): Promise<UsageEntry>;
  /** Set (or with null, remove) a VM's own firewall policy, live. */
  setPolicy?(vmId: string, policy: Record<string, unknown> | null): Promise<NetworkInfo>;
  /** A VM's own policy document (undefined: none). */
  getPolicy?(vmId: string): Promise<unknown>;
  /** Reconcile and repair. */
  gc(): Promise<ReconcileReport>;
  /** Compare, change nothing. */
  verify(): Promise<VerifyReport>;
  doctor(): Promise<DoctorReport>;
  close(): Promise<void>;
}

function noFdOnPut(opts: EnsureBody | undefined): void {
  if (opts?.tap === 'fd') {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      'tap: "fd" needs the fds handed over: use POST /v1/vms/{vmId}/tap-fd (DaemonClient.ensureWithTapFds)',
    );
  }
}

/** TapnetApi over a NetworkManager in this process. */
export class ManagerService implements TapnetApi {
  readonly statsReader: StatsReader;
  readonly usageLedger: UsageLedger;
  private usageTimer: NodeJS.Timeout | undefined;
  private usagePass: Promise<unknown> | undefined;
  private usageRetentionMs: number | undefined;

  constructor(
    readonly manager: NetworkManager,
    readonly loaded: LoadedConfig,
    private readonly doctorOptions: Partial<DoctorOptions> = {},
  ) {
    this.statsReader = new StatsReader(manager);
    this.usageLedger = new UsageLedger(manager.config.stateDir);
  }

  ensure(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo> {
    noFdOnPut(opts);
    return this.manager.ensure(vmId, opts);
  }

  async ensureWithTapFds(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo & { tapFds: number[] }> {
    let info = await this.manager.ensure(vmId, { ...opts, tap: opts.tap ?? 'fd' });
    if (!info.tapFds?.length && info.tapMode === 'persistent') {
      // Created (or found) persistent: open its queues now.
      info = await this.manager.ensure(vmId, { ...opts, tap: 'fd' });
    }
    if (!info.tapFds?.length) {
      throw new TapnetError(
        'ERR_CONFLICT',
        `the fd-mode TAP of VM ${vmId} is held by its VMM already; release the VM to start over`,
        {
          details: { vmId, tap: info.tap },
        },
      );
    }
    return info as NetworkInfo & { tapFds: number[] };
  }

  /** Release, after sampling the VM's usage one last time (its TAP's counters die with it). */
  async release(vmId: string, opts: { wait?: boolean } = {}): Promise<void> {
    await this.usageLedger.sample(this.manager, { vmIds: [vmId], final: true }).catch(() => undefined);
    return this.manager.release(vmId, opts.wait ? { wait: true } : {});
  }

  get(vmId: string): Promise<NetworkInfo | undefined> {
    return this.manager.get(vmId);
  }

  list(): Promise<NetworkInfo[]> {
    return this.manager.list();
  }

  setPolicy(vmId: string, policy: Record<string, unknown> | null): Promise<NetworkInfo> {
    return this.manager.setPolicy(vmId, policy);
  }

  getPolicy(vmId: string): Promise<unknown> {
    return this.manager.getPolicy(vmId);
  }

  stats(vmId: string): Promise<VmStats> {
    return this.statsReader.vm(vmId);
  }

  statsAll(vmIds?: string[]): Promise<StatsReport> {
    return this.statsReader.all(vmIds);
  }

  usage(opts: { since?: string } = {}): Promise<UsageReport> {
    const since = opts.since === undefined ? undefined : parseSince(opts.since);
    return this.usageLedger.usage(this.manager, since ? { since } : {});
  }

  collectUsage(vmId: string): Promise<UsageEntry> {
    return this.usageLedger.collect(this.manager, vmId);
  }

  /** Sample every VM's usage now (the daemon: periodically, and before releasing everything). */
  sampleUsage(): Promise<{ problems: UsageReport['problems'] }> {
    const pass = this.usageLedger.refresh(
      this.manager,
      this.usageRetentionMs !== undefined ? { retentionMs: this.usageRetentionMs } : {},
    );
    const settled = pass.then(
      () => undefined,
      () => undefined,
    );
    this.usagePass = settled;
    void settled.then(() => {
      if (this.usagePass === settled) this.usagePass = undefined;
    });
    return pass;
  }

  /**
   * Sample every `intervalMs` (0: never) until close(), which samples a last time. Failures go to
   * `onError`; the next pass retries.
   */
  startUsageSampling(
    intervalMs: number,
    onError: (e: unknown) => void,
    opts: { retentionMs?: number } = {},
  ): void {
    if (intervalMs <= 0 || this.usageTimer) return;
    this.usageRetentionMs = opts.retentionMs;
    this.usageTimer = setInterval(() => {
      if (!this.usagePass) this.sampleUsage().catch(onError);
    }, intervalMs);
    this.usageTimer.unref();
  }

  gc(): Promise<ReconcileReport> {
    return this.manager.reconcile();
  }

  verify(): Promise<VerifyReport> {
    return verify(this.manager);
  }

  doctor(): Promise<DoctorReport> {
    return runDoctor({ ...this.doctorOptions, loaded: this.loaded, manager: this.manager });
  }

  async close(): Promise<void> {
    if (this.usageTimer) {
      clearInterval(this.usageTimer);
      this.usageTimer = undefined;
      await this.usagePass;
      await this.sampleUsage().catch(() => undefined); // a restart loses nothing
    }
    return this.manager.close();
  }
}

/** Close fds handed out by ensureWithTapFds that could not be delivered. */
export function dropFds(fds: number[] | undefined): Promise<void> {
  return fds?.length ? closeTapFds(fds) : Promise.resolve();
}
