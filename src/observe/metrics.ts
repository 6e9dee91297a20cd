/**
 * Prometheus metrics, fed by tapnet's diagnostics channels (channels.ts) and, at scrape time, by gauges
 * read from the running manager (IPAM pool usage, active VMs). The only module that imports prom-client.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { PoolStats } from '../ipam/pool.js';
import {
  type CniExecEvent,
  channels,
  type EnsureEvent,
  type ReconcileEvent,
  type ReleaseEvent,
} from './channels.js';

/** What the scrape-time gauges read. */
export interface MetricsSource {
  /** VMs with a network right now. */
  activeVms(): number | Promise<number>;
  /** Usage of every configured pool. */
  pools(): Promise<PoolStats[]>;
}

export interface MetricsOptions {
  /** The source of scrape-time gauges; called at each scrape (the daemon swaps managers on reload). */
  source?: () => MetricsSource | undefined;
  /** Also export Node's process metrics (CPU, memory, event loop lag) as tapnet_process_*. Default true. */
  processMetrics?: boolean;
}

/** Seconds: from half a millisecond (an idempotent ensure) to ten seconds (a stuck lock). */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Subscribes to the channels while open; `close()` unsubscribes. One per daemon. */
export class TapnetMetrics {
  readonly registry = new Registry();
  private readonly ensureTotal: Counter<'network' | 'mode' | 'outcome' | 'code'>;
  private readonly ensureSeconds: Histogram<'network' | 'mode' | 'outcome'>;
  private readonly releaseTotal: Counter<'network' | 'outcome' | 'code'>;
  private readonly releaseSeconds: Histogram<'network' | 'outcome'>;
  private readonly reconcileTotal: Counter<'outcome'>;
  private readonly reconcileSeconds: Histogram;
  private readonly repairsTotal: Counter<'kind'>;
  private readonly cniSeconds: Histogram<'plugin' | 'command' | 'outcome'>;
  private readonly httpTotal: Counter<'method' | 'route' | 'status'>;
  private readonly httpSeconds: Histogram<'method' | 'route'>;
  private readonly unsubscribers: (() => void)[] = [];

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    this.ensureTotal = new Counter({
      name: 'tapnet_ensure_total',
      help: 'ensure calls by network, mode, outcome (created, existing, error) and error code',
      labelNames: ['network', 'mode', 'outcome', 'code'],
      registers,
    });
    this.ensureSeconds = new Histogram({
      name: 'tapnet_ensure_duration_seconds',
      help: 'ensure call duration',
      labelNames: ['network', 'mode', 'outcome'],
      buckets: BUCKETS,
      registers,
    });
    this.releaseTotal = new Counter({
      name: 'tapnet_release_total',
      help: 'release calls by network, outcome (released, unknown, error) and error code',
      labelNames: ['network', 'outcome', 'code'],
      registers,
    });
    this.releaseSeconds = new Histogram({
      name: 'tapnet_release_duration_seconds',
      help: 'release call duration',
      labelNames: ['network', 'outcome'],
      buckets: BUCKETS,
      registers,
    });
    this.reconcileTotal = new Counter({
      name: 'tapnet_reconcile_total',
      help: 'reconcile passes',
      labelNames: ['outcome'],
      registers,
    });
    this.reconcileSeconds = new Histogram({
      name: 'tapnet_reconcile_duration_seconds',
      help: 'reconcile pass duration',
      buckets: [...BUCKETS, 30, 60],
      registers,
    });
    this.repairsTotal = new Counter({
      name: 'tapnet_reconcile_repairs_total',
      help: 'things reconcile repaired, by kind (orphanTaps, incompleteRecords, recreatedTaps, orphanLeases, orphanFirewallElements)',
      labelNames: ['kind'],
      registers,
    });
    this.cniSeconds = new Histogram({
      name: 'tapnet_cni_plugin_duration_seconds',
      help: 'CNI plugin executions (CNI mode) by plugin, command and outcome',
      labelNames: ['plugin', 'command', 'outcome'],
      buckets: BUCKETS,
      registers,
    });
    this.httpTotal = new Counter({
      name: 'tapnet_api_requests_total',
      help: 'API requests by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: 'tapnet_api_request_duration_seconds',
      help: 'API request duration by method and route',
      labelNames: ['method', 'route'],
      buckets: BUCKETS,
      registers,
    });
    const source = opts.source;
    new Gauge({
      name: 'tapnet_active_vms',
      help: 'VMs with a network',
      registers,
      async collect() {
        const s = source?.();
        if (s) this.set(await s.activeVms());
      },
    });
    const poolGauge = (name: string, help: string, pick: (p: PoolStats) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['network', 'subnet'],
        registers,
        async collect() {
          const s = source?.();
          this.reset();
          if (!s) return;
          for (const p of await s.pools()) this.set({ network: p.network, subnet: p.subnet }, pick(p));
        },
      });
    poolGauge('tapnet_ipam_pool_size', 'addresses the pool can hand out', (p) => Number(p.size));
    poolGauge('tapnet_ipam_pool_used', 'addresses of the pool in use', (p) => Number(p.used));
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'tapnet_' });
    this.listen(channels.ensure, (e: EnsureEvent) => {
      this.ensureTotal.inc({ network: e.network, mode: e.mode, outcome: e.outcome, code: e.code ?? '' });
      this.ensureSeconds.observe(
        { network: e.network, mode: e.mode, outcome: e.outcome },
        e.durationMs / 1000,
      );
    });
    this.listen(channels.release, (e: ReleaseEvent) => {
      const network = e.network ?? '';
      this.releaseTotal.inc({ network, outcome: e.outcome, code: e.code ?? '' });
      this.releaseSeconds.observe({ network, outcome: e.outcome }, e.durationMs / 1000);
    });
    this.listen(channels.reconcile, (e: ReconcileEvent) => {
      this.reconcileTotal.inc({ outcome: e.outcome });
      this.reconcileSeconds.observe(e.durationMs / 1000);
      for (const [kind, n] of Object.entries(e.repairs)) if (n > 0) this.repairsTotal.inc({ kind }, n);
    });
    this.listen(channels.cniExec, (e: CniExecEvent) => {
      this.cniSeconds.observe(
        { plugin: e.plugin, command: e.command, outcome: e.outcome },
        e.durationMs / 1000,
      );
    });
  }

  private listen<T>(
    ch: { subscribe(f: (m: T) => void): void; unsubscribe(f: (m: T) => void): boolean },
    f: (m: T) => void,
  ): void {
    ch.subscribe(f);
    this.unsubscribers.push(() => ch.unsubscribe(f));
  }

  /** Count one API request (route is the route template, e.g. `/v1/vms/{vmId}`: bounded cardinality). */
  recordRequest(method: string, route: string, status: number, seconds: number): void {
    this.httpTotal.inc({ method, route, status: String(status) });
    this.httpSeconds.observe({ method, route }, seconds);
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Content type of text(). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Stop listening to the channels. Idempotent. */
  close(): void {
    for (const u of this.unsubscribers.splice(0)) u();
  }
}
