/**
 * Prometheus metrics, fed by tapnet's diagnostics channels (channels.ts) and, at scrape time, by gauges
 * read from the running manager (IPAM pool usage, active VMs) and by the traffic and drop counters
 * (vmstats.ts): per network always, per VM only when switched on (one set of series per VM: the
 * cardinality switch `daemon.metrics.perVm`, capped at `maxVms`). The only module that imports prom-client.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { PoolStats } from '../ipam/pool.js';
import { REPAIR_KINDS } from '../manager/report.js';
import {
  type CniExecEvent,
  channels,
  type EnsureEvent,
  type ReconcileEvent,
  type ReleaseEvent,
} from './channels.js';
import type { StatsReport, VmStats } from './vmstats.js';

/** What the scrape-time gauges read. */
export interface MetricsSource {
  /** VMs with a network right now. */
  activeVms(): number | Promise<number>;
  /** Usage of every configured pool. */
  pools(): Promise<PoolStats[]>;
  /** Traffic and drop counters (collectStats); `vms: false`: the networks' figures only. */
  stats?(opts: { vms: boolean }): Promise<StatsReport>;
}

/** The cardinality switch: per-VM series, and at most how many VMs get them. */
export interface PerVmMetrics {
  /** Export tapnet_vm_* series (default false: one set of about a dozen series per VM). */
  perVm: boolean;
  /** VMs exported, the first by vmId; the others are counted in tapnet_vm_metrics_omitted. */
  maxVms: number;
}

/** Default of PerVmMetrics.maxVms (and of `daemon.metrics.maxVms`). */
export const DEFAULT_MAX_VM_METRICS = 1000;

export interface MetricsOptions {
  /** The source of scrape-time gauges; called at each scrape (the daemon swaps managers on reload). */
  source?: () => MetricsSource | undefined;
  /** Also export Node's process metrics (CPU, memory, event loop lag) as tapnet_process_*. Default true. */
  processMetrics?: boolean;
  /** The per-VM switch, read at every scrape (the daemon's configuration may be reloaded). Default off. */
  perVm?: () => PerVmMetrics;
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
  private readonly traffic: TrafficMetrics;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    this.traffic = new TrafficMetrics(this.registry, opts);
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
      help: `things reconcile repaired, by kind (${REPAIR_KINDS.join(', ')})`,
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

  /** The Prometheus text exposition (reads the traffic and drop counters first). */
  async text(): Promise<string> {
    await this.traffic.refresh();
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

type VmLabel = 'vm' | 'network';

/**
 * The counters read at scrape time: per network (drops) always, per VM (traffic, policy drops) when
 * switched on. Values are the kernel's, set at each scrape (a re-created TAP starts again from zero,
 * which Prometheus' rate() treats as a counter reset).
 */
class TrafficMetrics {
  private readonly vmMetrics: {
    metric: Counter<VmLabel> | Counter<VmLabel | 'direction'> | Gauge;
    name: string;
  }[] = [];
  private readonly vmTraffic: [Counter<VmLabel>, (v: VmStats) => number][] = [];
  private readonly policyPackets: Counter<VmLabel | 'direction'>;
  private readonly policyBytes: Counter<VmLabel | 'direction'>;
  private readonly omitted: Gauge;
  private readonly spoof: [Counter<'network'>, Counter<'network'>];
  private readonly isolate: [Counter<'network'>, Counter<'network'>];
  private readonly unregistered: Counter;
  private readonly errors: Counter;
  private registered = false;
  private running: Promise<void> | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly opts: MetricsOptions,
  ) {
    const registers = [registry];
    const none: Registry[] = [];
    const vmCounter = (name: string, help: string, pick: (v: VmStats) => number) => {
      const c = new Counter({ name, help, labelNames: ['vm', 'network'], registers: none });
      this.vmTraffic.push([c, pick]);
      this.vmMetrics.push({ metric: c, name });
    };
    const sides = [
      ['rx', 'received by the guest (transmitted by its TAP)', (v: VmStats) => v.guestRx],
      ['tx', 'sent by the guest (received by its TAP)', (v: VmStats) => v.guestTx],
    ] as const;
    for (const [dir, what, side] of sides) {
      vmCounter(
        `tapnet_vm_${dir}_bytes_total`,
        `bytes ${what}; IFLA_STATS64 of the TAP`,
        (v) => side(v).bytes,
      );
      vmCounter(`tapnet_vm_${dir}_packets_total`, `packets ${what}`, (v) => side(v).packets);
      vmCounter(`tapnet_vm_${dir}_errors_total`, `errors on packets ${what}`, (v) => side(v).errors);
      vmCounter(
        `tapnet_vm_${dir}_dropped_total`,
        `packets ${what}, dropped by the TAP`,
        (v) => side(v).dropped,
      );
    }
    this.policyPackets = new Counter({
      name: 'tapnet_vm_policy_dropped_packets_total',
      help: "packets the VM's network policy dropped or rejected, by direction (egress: from the VM)",
      labelNames: ['vm', 'network', 'direction'],
      registers: none,
    });
    this.policyBytes = new Counter({
      name: 'tapnet_vm_policy_dropped_bytes_total',
      help: "bytes the VM's network policy dropped or rejected, by direction",
      labelNames: ['vm', 'network', 'direction'],
      registers: none,
    });
    this.omitted = new Gauge({
      name: 'tapnet_vm_metrics_omitted',
      help: 'VMs left out of the tapnet_vm_* series by daemon.metrics.maxVms',
      registers: none,
    });
    this.vmMetrics.push(
      { metric: this.policyPackets, name: 'tapnet_vm_policy_dropped_packets_total' },
      { metric: this.policyBytes, name: 'tapnet_vm_policy_dropped_bytes_total' },
      { metric: this.omitted, name: 'tapnet_vm_metrics_omitted' },
    );
    const netCounter = (name: string, help: string) =>
      new Counter({ name, help, labelNames: ['network'], registers });
    this.spoof = [
      netCounter(
        'tapnet_network_spoof_dropped_packets_total',
        "packets from the network's VMs dropped by anti-spoofing",
      ),
      netCounter(
        'tapnet_network_spoof_dropped_bytes_total',
        "bytes from the network's VMs dropped by anti-spoofing",
      ),
    ];
    this.isolate = [
      netCounter(
        'tapnet_network_isolation_dropped_packets_total',
        'packets dropped between this network and other tapnet networks',
      ),
      netCounter(
        'tapnet_network_isolation_dropped_bytes_total',
        'bytes dropped between this network and other tapnet networks',
      ),
    ];
    this.unregistered = new Counter({
      name: 'tapnet_unregistered_dropped_packets_total',
      help: 'frames from TAPs with a tapnet prefix that belong to no VM, dropped',
      registers,
    });
    this.errors = new Counter({
      name: 'tapnet_stats_errors_total',
      help: 'scrapes whose traffic and drop counters could not be read',
      registers,
    });
  }

  private setRegistered(on: boolean): void {
    if (on === this.registered) return;
    for (const m of this.vmMetrics) {
      if (on) this.registry.registerMetric(m.metric);
      else this.registry.removeSingleMetric(m.name);
    }
    this.registered = on;
  }

  /** Read the counters once; concurrent scrapes share the reading. */
  refresh(): Promise<void> {
    this.running ??= this.read().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async read(): Promise<void> {
    const cfg = this.opts.perVm?.() ?? { perVm: false, maxVms: DEFAULT_MAX_VM_METRICS };
    this.setRegistered(cfg.perVm);
    const source = this.opts.source?.();
    let report: StatsReport | undefined;
    try {
      report = source?.stats ? await source.stats({ vms: cfg.perVm }) : undefined;
    } catch {
      this.errors.inc();
    }
    for (const c of [...this.spoof, ...this.isolate, this.unregistered]) c.reset();
    for (const m of this.vmMetrics) m.metric.reset();
    if (!report) return;
    for (const n of report.networks) {
      if (!n.drops) continue;
      this.spoof[0].inc({ network: n.network }, n.drops.spoof.packets);
      this.spoof[1].inc({ network: n.network }, n.drops.spoof.bytes);
      this.isolate[0].inc({ network: n.network }, n.drops.isolate.packets);
      this.isolate[1].inc({ network: n.network }, n.drops.isolate.bytes);
    }
    if (report.unregisteredDrops) this.unregistered.inc(report.unregisteredDrops.packets);
    if (!cfg.perVm) return;
    const vms = [...report.vms].sort((a, b) => a.vmId.localeCompare(b.vmId));
    const kept = vms.slice(0, Math.max(0, cfg.maxVms));
    this.omitted.set(vms.length - kept.length);
    for (const v of kept) {
      const labels = { vm: v.vmId, network: v.network };
      for (const [c, pick] of this.vmTraffic) c.inc(labels, pick(v));
      if (!v.policyDrops) continue;
      for (const direction of ['egress', 'ingress'] as const) {
        this.policyPackets.inc({ ...labels, direction }, v.policyDrops[direction].packets);
        this.policyBytes.inc({ ...labels, direction }, v.policyDrops[direction].bytes);
      }
    }
  }
}
