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
import { type VerifyReport, verify } from '../observe/verify.js';
import { type VmStats, vmStats } from '../observe/vmstats.js';
import type { EnsureBody } from './schemas.js';

/** Everything a VM manager (or the CLI) can ask tapnet. */
export interface TapnetApi {
  /** Give `vmId` its network, or return the one it has. `tap: 'fd'` is for ensureWithTapFds only. */
  ensure(vmId: string, opts?: EnsureBody): Promise<NetworkInfo>;
  /** Like ensure, and hand over the TAP's open queue fds (info.tapFds; yours to close). */
  ensureWithTapFds(vmId: string, opts?: EnsureBody): Promise<NetworkInfo & { tapFds: number[] }>;
  /** Take the network back; unknown VMs are a no-op. */
  release(vmId: string): Promise<void>;
  get(vmId: string): Promise<NetworkInfo | undefined>;
  list(): Promise<NetworkInfo[]>;
  stats(vmId: string): Promise<VmStats>;
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
  constructor(
    readonly manager: NetworkManager,
    readonly loaded: LoadedConfig,
    private readonly doctorOptions: Partial<DoctorOptions> = {},
  ) {}

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

  release(vmId: string): Promise<void> {
    return this.manager.release(vmId);
  }

  get(vmId: string): Promise<NetworkInfo | undefined> {
    return this.manager.get(vmId);
  }

  list(): Promise<NetworkInfo[]> {
    return this.manager.list();
  }

  stats(vmId: string): Promise<VmStats> {
    return vmStats(this.manager, vmId);
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

  close(): Promise<void> {
    return this.manager.close();
  }
}

/** Close fds handed out by ensureWithTapFds that could not be delivered. */
export function dropFds(fds: number[] | undefined): Promise<void> {
  return fds?.length ? closeTapFds(fds) : Promise.resolve();
}
