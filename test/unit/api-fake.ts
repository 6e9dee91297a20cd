/**
 * A fake TapnetApi (in memory; TAP fds are fds of ordinary files) and a daemon over it on a Unix socket
 * in a temp dir: the API's HTTP layer, lifecycle and fd passing, tested without root.
 */

import { mkdtempSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { type LoadedConfig, loadConfig } from '../../src/config/load.js';
import type { EnsureBody } from '../../src/daemon/schemas.js';
import { Daemon } from '../../src/daemon/server.js';
import type { TapnetApi } from '../../src/daemon/service.js';
import { TapnetError } from '../../src/errors.js';
import { emptyReport } from '../../src/manager/report.js';
import type { NetworkInfo, ReconcileReport } from '../../src/manager/types.js';
import type { DoctorReport } from '../../src/observe/doctor.js';
import type { VerifyReport } from '../../src/observe/verify.js';
import type { VmStats } from '../../src/observe/vmstats.js';

export class FakeApi implements TapnetApi {
  readonly vms = new Map<string, NetworkInfo>();
  readonly calls: string[] = [];
  closed = false;
  /** ensure waits for this before answering (in-flight tests). */
  hold: Promise<void> | undefined;
  /** The next call throws this. */
  failNext: unknown;
  /** Files whose fds ensureWithTapFds hands out, one per queue. */
  fdFiles: string[] = [];
  private n = 0;

  private maybeFail(): void {
    if (this.failNext !== undefined) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
  }

  async ensure(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo> {
    this.calls.push(`ensure ${vmId}`);
    if (this.hold) await this.hold;
    this.maybeFail();
    const have = this.vms.get(vmId);
    if (have) return have;
    const i = this.n++;
    const info: NetworkInfo = {
      vmId,
      network: opts.network ?? 'default',
      mode: 'direct',
      topology: 'bridge',
      tap: `tnfake${i}`,
      mac: opts.mac ?? `02:00:00:00:00:${(i + 2).toString(16).padStart(2, '0')}`,
      ipv4: opts.ipv4 ?? `198.18.0.${i + 2}/24`,
      gateway4: '198.18.0.1',
      dns: [],
      mtu: 1500,
      bridge: 'tn-default',
      queues: opts.queues ?? 1,
      vnetHdr: opts.vnetHdr ?? true,
      tapMode: opts.tap ?? 'persistent',
      createdAt: new Date(0).toISOString(),
    };
    this.vms.set(vmId, info);
    return info;
  }

  async ensureWithTapFds(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo & { tapFds: number[] }> {
    const info = await this.ensure(vmId, { ...opts, tap: opts.tap ?? 'fd' });
    const tapFds = this.fdFiles.slice(0, info.queues).map((f) => openSync(f, 'r'));
    return { ...info, tapFds };
  }

  async release(vmId: string, opts: { wait?: boolean } = {}): Promise<void> {
    this.calls.push(`release ${vmId}${opts.wait ? ' wait' : ''}`);
    this.maybeFail();
    this.vms.delete(vmId);
  }

  async get(vmId: string): Promise<NetworkInfo | undefined> {
    this.maybeFail();
    return this.vms.get(vmId);
  }

  async list(): Promise<NetworkInfo[]> {
    this.maybeFail();
    return [...this.vms.values()].sort((a, b) => a.vmId.localeCompare(b.vmId));
  }

  async stats(vmId: string): Promise<VmStats> {
    const info = this.vms.get(vmId);
    if (!info) throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`);
    const c = { bytes: 1500, packets: 1, errors: 0, dropped: 0 };
    return {
      vmId,
      network: info.network,
      tap: info.tap,
      operstate: 'up',
      guestRx: c,
      guestTx: c,
      collectedAt: new Date(0).toISOString(),
    };
  }

  async gc(): Promise<ReconcileReport> {
    this.calls.push('gc');
    return { ...emptyReport(), orphanTaps: ['tnorphan'] };
  }

  async verify(): Promise<VerifyReport> {
    return { ok: true, vms: this.vms.size, networks: 1, problems: [] };
  }

  async doctor(): Promise<DoctorReport> {
    return {
      ok: true,
      counts: { ok: 1, warn: 0, fail: 0, info: 0 },
      checks: [{ id: 'fake', status: 'ok', message: 'fine' }],
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A logger that keeps its JSON lines. */
export function captureLogger(): { logger: pino.Logger; lines(): Record<string, unknown>[] } {
  const out: string[] = [];
  const logger = pino({ level: 'debug', base: {} }, { write: (s: string) => void out.push(s) });
  return { logger, lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

export interface FakeDaemon {
  daemon: Daemon;
  api: FakeApi;
  /** Every service opened (reloads open new ones). */
  opened: FakeApi[];
  socket: string;
  dir: string;
  configFile: string;
  logs(): Record<string, unknown>[];
  stop(): Promise<void>;
}

/** A Daemon over FakeApi on a socket in a temp dir; `env` adds TAPNET_* settings. */
export async function startFakeDaemon(
  opts: { env?: NodeJS.ProcessEnv; openDelay?: Promise<void>; config?: string } = {},
): Promise<FakeDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'tapnet-api-'));
  const socket = join(dir, 'api.sock');
  const configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, opts.config ?? `stateDir: ${join(dir, 'state')}\n`);
  const loaded: LoadedConfig = loadConfig({
    configFile,
    env: { TAPNET_SOCKET: socket, ...(opts.env ?? {}) },
    defaultFiles: [],
  });
  const { logger, lines } = captureLogger();
  const opened: FakeApi[] = [];
  const daemon = await Daemon.start({
    loaded,
    logger,
    openService: async () => {
      if (opts.openDelay && opened.length === 0) await opts.openDelay;
      const api = new FakeApi();
      opened.push(api);
      return { api };
    },
  });
  const fake: FakeDaemon = {
    daemon,
    get api() {
      return opened.at(-1)!;
    },
    opened,
    socket,
    dir,
    configFile,
    logs: lines,
    async stop() {
      await daemon.shutdown('test');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  if (!opts.openDelay) await daemon.ready;
  return fake;
}

/** How many fds this process has open. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}
