/**
 * The daemon (`tapnet serve`): the API on a Unix socket (mode 0600) and optionally on loopback TCP with a
 * bearer token, over one NetworkManager. Listens first and answers /healthz at once; API calls wait for
 * the startup reconcile (/readyz says when). SIGTERM: stop accepting, finish the calls in flight (up to
 * daemon.shutdownTimeoutMs), keep the VMs' networks (unless daemon.keepNetworksOnExit is false), exit.
 * SIGHUP: reload the configuration — log level and token at once; a changed manager configuration opens
 * a new manager (with a reconcile) once the calls in flight are done.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname } from 'node:path';
import { describeConfig, type LoadedConfig, readApiToken, reloadConfig } from '../config/load.js';
import { managerPart, parseHostPort } from '../config/schema.js';
import { TapnetError, toTapnetError } from '../errors.js';
import type { Firewall } from '../firewall/types.js';
import { NetworkManager } from '../manager/manager.js';
import { repairCount } from '../manager/report.js';
import { type MetricsSource, TapnetMetrics } from '../observe/metrics.js';
import { DaemonClient } from './client.js';
import { ClusterService, openClusterManager, retryUnavailable, serviceConfigKey } from './cluster.js';
import { HttpError } from './http.js';
import { createLogger, type Logger } from './log.js';
import { sdNotify } from './notify.js';
import { buildOpenApi } from './openapi.js';
import { type ApiContext, createHandler, type Listener } from './routes.js';
import { ManagerService, type TapnetApi } from './service.js';

export interface DaemonOptions {
  loaded: LoadedConfig;
  logger?: Logger;
  /** Firewall driver instead of the configured one (tests). */
  firewall?: Firewall;
  /** Handle SIGTERM/SIGINT (shutdown) and SIGHUP (reload). Default false (embedding, tests). */
  handleSignals?: boolean;
  /** Open the service over a configuration (tests substitute a fake). Default: a NetworkManager. */
  openService?: (loaded: LoadedConfig) => Promise<{ api: TapnetApi; source?: MetricsSource }>;
}

type State = 'starting' | 'ready' | 'reloading' | 'draining' | 'closed';

export class Daemon {
  private state: State = 'starting';
  private api: TapnetApi | undefined;
  private source: MetricsSource | undefined;
  private gate: Promise<void>;
  private openGate: () => void = () => {};
  private calls = 0;
  private requests = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly servers: http.Server[] = [];
  private token: string | undefined;
  /** Why the service could not be opened yet (etcd unreachable at start): calls fail with it meanwhile. */
  private startError: TapnetError | undefined;
  private readonly signalHandlers: [NodeJS.Signals, () => void][] = [];
  private finished!: () => void;
  readonly metrics: TapnetMetrics;
  readonly logger: Logger;
  /** Resolves when the daemon has shut down. */
  readonly done: Promise<void>;
  /** Resolves when the first reconcile is done; rejects when the manager cannot be opened. */
  ready!: Promise<void>;
  readonly startedAt = Date.now();

  private constructor(
    private loaded: LoadedConfig,
    private readonly opts: DaemonOptions,
  ) {
    this.logger = opts.logger ?? createLogger(loaded.config.log.level);
    this.metrics = new TapnetMetrics({
      source: () => this.source,
      perVm: () => this.loaded.config.daemon.metrics,
    });
    this.gate = new Promise((r) => {
      this.openGate = r;
    });
    this.done = new Promise((r) => {
      this.finished = r;
    });
  }

  /** Listen, then open the manager in the background (see `ready`). Throws when a listener fails. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const d = new Daemon(opts.loaded, opts);
    try {
      d.token = readApiToken(opts.loaded.config);
      await d.listenUnix(opts.loaded.config.api.socket);
      if (opts.loaded.config.api.tcp) await d.listenTcp(opts.loaded.config.api.tcp);
    } catch (e) {
      await d.closeServers();
      d.metrics.close();
      throw e;
    }
    if (opts.handleSignals) d.installSignals();
    d.ready = d.openInitial();
    d.ready.catch(() => {});
    return d;
  }

  /** The Unix socket path. */
  get socket(): string {
    return this.loaded.config.api.socket;
  }

  /** The manager serving calls (undefined before the first open, or with a substituted service). */
  get manager(): NetworkManager | undefined {
    return this.api instanceof ManagerService ? this.api.manager : undefined;
  }

  private context(): ApiContext {
    return {
      use: (fn) => this.use(fn),
      ready: () => (this.state === 'closed' ? 'draining' : this.state),
      logger: this.logger,
      metrics: this.metrics,
      maxBodyBytes: this.loaded.config.api.maxBodyBytes,
      openapi: buildOpenApi(),
      config: () => describeConfig(this.loaded),
      startedAt: this.startedAt,
    };
  }

  private async use<T>(fn: (api: TapnetApi) => Promise<T>): Promise<T> {
    const draining = () => new HttpError(503, 'ERR_ABORTED', 'tapnet is shutting down');
    if (this.state === 'draining' || this.state === 'closed') throw draining();
    const notYet = () => this.state === 'starting' && this.startError !== undefined;
    if (notYet()) throw this.startError!;
    await this.gate;
    if (notYet()) throw this.startError!;
    if (this.stopping() || !this.api) throw draining();
    this.calls++;
    try {
      return await fn(this.api);
    } finally {
      this.calls--;
      this.wakeIdle();
    }
  }

  /** Re-read through a method: the state changes while callers await. */
  private stopping(): boolean {
    return this.state === 'draining' || this.state === 'closed';
  }

  /** Let every idle() waiter re-check its own condition (calls only, or calls and requests). */
  private wakeIdle(): void {
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves when no call (and, with `requests`, no request) is in flight, or after `ms`. */
  private idle(ms: number, requests: boolean): Promise<boolean> {
    const isIdle = () => this.calls === 0 && (!requests || this.requests === 0);
    if (isIdle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        resolve(false);
      }, ms);
      const check = () => {
        if (done) return;
        if (isIdle()) {
          done = true;
          clearTimeout(timer);
          resolve(true);
        } else this.idleWaiters.push(check);
      };
      this.idleWaiters.push(check);
    });
  }

  private async openService(loaded: LoadedConfig): Promise<{ api: TapnetApi; source?: MetricsSource }> {
    if (this.opts.openService) return this.opts.openService(loaded);
    const options = { reconcile: false, ...(this.opts.firewall ? { firewall: this.opts.firewall } : {}) };
    const { node, manager: m } = loaded.config.cluster
      ? await openClusterManager(
          loaded,
          (input, store) => NetworkManager.open(input, { ...options, store }),
          true,
        )
      : { node: undefined, manager: await NetworkManager.open(managerPart(loaded.config), options) };
    try {
      if (loaded.config.daemon.reconcileOnStart) {
        const t0 = performance.now();
        const r = await m.reconcile();
        const repairs = repairCount(r);
        this.logger.info(
          {
            op: 'reconcile',
            durationMs: Math.round(performance.now() - t0),
            repairs,
            report: r,
            outcome: r.errors.length ? 'error' : 'ok',
          },
          'reconcile',
        );
      }
      await node?.start(m);
    } catch (e) {
      await m.close();
      await node?.close();
      throw e;
    }
    const service = node ? new ClusterService(m, loaded, node) : new ManagerService(m, loaded);
    const source: MetricsSource = {
      activeVms: () => m.metrics().activeVms,
      stats: (o) => service.statsReader.all(o.vms ? undefined : []),
      pools: async () => {
        const out = [];
        for (const net of m.config.networks.values()) {
          const p = m.pools(net);
          for (const spec of [p.v4, p.v6]) if (spec) out.push(await m.ipam.pool(spec).stats());
        }
        return out;
      },
    };
    const { usageIntervalSeconds, usageRetentionHours } = loaded.config.daemon.metrics;
    service.startUsageSampling(
      usageIntervalSeconds * 1000,
      (e) => {
        const t = toTapnetError(e);
        this.logger.warn({ op: 'usage', code: t.code, error: t.toJSON() }, 'usage sample failed');
      },
      { retentionMs: usageRetentionHours * 3_600_000 },
    );
    return { api: service, source };
  }

  private async openInitial(): Promise<void> {
    try {
      const { api, source } = await retryUnavailable(() => this.openService(this.loaded), {
        stopped: () => this.stopping(),
        onRetry: (e, delayMs) => {
          this.startError = e;
          const wake = this.openGate; // callers waiting for the start get the error now
          this.gate = new Promise((r) => {
            this.openGate = r;
          });
          wake();
          this.logger.warn({ op: 'start', code: e.code, error: e.toJSON(), retryInMs: delayMs }, 'retrying');
        },
      });
      this.startError = undefined;
      this.api = api;
      this.source = source;
      if (this.state === 'starting') this.state = 'ready';
      this.openGate();
      this.logger.info(
        { op: 'start', socket: this.socket, tcp: this.loaded.config.api.tcp, config: this.loaded.file },
        'ready',
      );
      sdNotify('READY=1\nSTATUS=serving');
    } catch (e) {
      const t = toTapnetError(e);
      this.logger.fatal({ op: 'start', code: t.code, error: t.toJSON() }, 'cannot open the network manager');
      await this.shutdown('startup failure');
      throw t;
    }
  }

  private track(handler: http.RequestListener): http.RequestListener {
    return (req, res) => {
      this.requests++;
      res.once('close', () => {
        this.requests--;
        this.wakeIdle();
      });
      if (this.state === 'draining') res.shouldKeepAlive = false;
      handler(req, res);
    };
  }

  private async listenUnix(path: string): Promise<void> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket())
        throw new TapnetError('ERR_CONFLICT', `${path} exists and is not a socket`);
      if ((await DaemonClient.probe(path)) === 'answering') {
        throw new TapnetError('ERR_CONFLICT', `another tapnet daemon answers on ${path}`, {
          details: { socket: path },
        });
      }
      unlinkSync(path); // stale: its daemon is gone
    }
    const server = http.createServer(this.track(createHandler(this.context(), { kind: 'unix' })));
    const umask = process.umask(0o177); // the socket is born 0600: no window where others can connect
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    chmodSync(path, 0o600);
    this.servers.push(server);
  }

  private async listenTcp(address: string): Promise<void> {
    const hp = parseHostPort(address)!;
    if (!this.token) throw new TapnetError('ERR_CONFIG', 'api.tcp needs api.token or api.tokenFile');
    const listener: Listener = { kind: 'tcp', token: () => this.token };
    const server = http.createServer(this.track(createHandler(this.context(), listener)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) =>
        reject(new TapnetError('ERR_CONFLICT', `cannot listen on ${address}: ${e.message}`, { cause: e })),
      );
      server.listen(hp.port, hp.host, () => resolve());
    });
    this.servers.push(server);
  }

  private installSignals(): void {
    const on = (sig: NodeJS.Signals, f: () => void) => {
      process.on(sig, f);
      this.signalHandlers.push([sig, f]);
    };
    on('SIGTERM', () => void this.shutdown('SIGTERM'));
    on('SIGINT', () => void this.shutdown('SIGINT'));
    on('SIGHUP', () => void this.reload());
  }

  /** Reload the configuration from the same file, environment and flags (SIGHUP). */
  async reload(): Promise<void> {
    if (this.state !== 'ready') {
      this.logger.warn({ op: 'reload', state: this.state }, 'reload ignored');
      return;
    }
    let next: LoadedConfig;
    try {
      next = reloadConfig(this.loaded);
    } catch (e) {
      const t = toTapnetError(e);
      this.logger.error(
        { op: 'reload', outcome: 'error', code: t.code, error: t.toJSON() },
        'configuration not reloaded',
      );
      return;
    }
    this.logger.level = next.config.log.level;
    try {
      this.token = readApiToken(next.config);
    } catch (e) {
      this.logger.error(
        { op: 'reload', code: toTapnetError(e).code, error: toTapnetError(e).toJSON() },
        'token not reloaded',
      );
    }
    const a = this.loaded.config.api;
    const b = next.config.api;
    if (a.socket !== b.socket || a.tcp !== b.tcp)
      this.logger.warn({ op: 'reload' }, 'api.socket and api.tcp apply after a restart');
    const managerChanged = serviceConfigKey(this.loaded.config) !== serviceConfigKey(next.config);
    if (!managerChanged) {
      this.loaded = next;
      this.logger.info({ op: 'reload', outcome: 'ok', managerReopened: false }, 'configuration reloaded');
      return;
    }
    sdNotify('RELOADING=1');
    this.state = 'reloading';
    this.gate = new Promise((r) => {
      this.openGate = r;
    });
    await this.idle(this.loaded.config.daemon.shutdownTimeoutMs, false);
    try {
      const opened = await this.openService(next);
      const old = this.api;
      this.api = opened.api;
      this.source = opened.source;
      this.loaded = next;
      await old?.close();
      this.logger.info({ op: 'reload', outcome: 'ok', managerReopened: true }, 'configuration reloaded');
    } catch (e) {
      const t = toTapnetError(e);
      this.logger.error(
        { op: 'reload', outcome: 'error', code: t.code, error: t.toJSON() },
        'new configuration not applied; the old one stays',
      );
    } finally {
      if (this.state === 'reloading') this.state = 'ready';
      this.openGate();
      sdNotify('READY=1');
    }
  }

  /**
   * Stop accepting connections; resolves when every connection is closed. Connections already accepted
   * stay open — http.Server.close() would also close those whose request is not parsed yet, and their
   * clients would see a reset instead of a 503 — until closeAllConnections() after the drain.
   */
  private closeServers(): Promise<void> {
    return Promise.all(
      this.servers.map(
        (s) => new Promise<void>((resolve) => net.Server.prototype.close.call(s, () => resolve())),
      ),
    ).then(() => undefined);
  }

  /**
   * Stop: refuse new calls, finish those in flight (up to daemon.shutdownTimeoutMs), keep or release the
   * VMs' networks as configured, close the manager, remove the socket. Idempotent.
   */
  async shutdown(reason = 'shutdown'): Promise<void> {
    if (this.state === 'draining' || this.state === 'closed') return this.done;
    const wasStarting = this.state === 'starting';
    this.state = 'draining';
    sdNotify('STOPPING=1');
    this.logger.info({ op: 'shutdown', reason, inFlight: this.calls }, 'shutting down');
    this.openGate(); // waiting callers see 'draining' and get 503
    const closing = this.closeServers();
    const drained = await this.idle(this.loaded.config.daemon.shutdownTimeoutMs, true);
    if (!drained)
      this.logger.warn({ op: 'shutdown', inFlight: this.calls }, 'calls still in flight at the deadline');
    for (const s of this.servers) s.closeAllConnections();
    await closing;
    if (this.api && !this.loaded.config.daemon.keepNetworksOnExit && !wasStarting) {
      const m = this.manager;
      if (m) {
        // Their TAPs' counters die with them: the usage export takes them first.
        if (this.api instanceof ManagerService) await this.api.sampleUsage().catch(() => undefined);
        const listed = await m.list().catch((e: unknown) => {
          const t = toTapnetError(e);
          this.logger.error(
            { op: 'shutdown', code: t.code, error: t.toJSON() },
            'cannot list the VMs to release',
          );
          return [];
        });
        const ids = listed.map((i) => i.vmId);
        const r = await m.releaseMany(ids);
        this.logger.info(
          { op: 'shutdown', released: r.released.length, failed: r.failed.length },
          'released every VM (keepNetworksOnExit: false)',
        );
      }
    }
    await (this.api instanceof ClusterService ? this.api.close({ final: true }) : this.api?.close());
    this.metrics.close();
    try {
      if (existsSync(this.socket) && lstatSync(this.socket).isSocket()) unlinkSync(this.socket);
    } catch {}
    // Until here a repeated SIGTERM is absorbed (shutdown is idempotent) instead of killing us mid-drain.
    for (const [sig, f] of this.signalHandlers.splice(0)) process.off(sig, f);
    this.state = 'closed';
    this.logger.info({ op: 'shutdown', outcome: 'ok' }, 'stopped');
    this.logger.flush?.();
    this.finished();
  }
}
