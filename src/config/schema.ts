/**
 * The whole configuration of tapnet: the manager's keys (src/manager/config.ts: networks, state dir,
 * firewall, …) plus the daemon's own — the API listeners, logging and shutdown behaviour — in one zod
 * schema, so one file and one validation cover everything.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { ClusterKeys, validateHostName } from '../cluster/keys.js';
import { parseIp } from '../ip.js';
import { type ManagerConfigInput, managerConfigSchema } from '../manager/config.js';
import { validateIfname } from '../validate.js';

/** Where the daemon listens unless configured otherwise. */
export const DEFAULT_SOCKET = '/run/tapnet/tapnet.sock';

/** Configuration files looked for, in order, when none is named (--config or TAPNET_CONFIG). */
export const DEFAULT_CONFIG_FILES: readonly string[] = [
  '/etc/tapnet/config.yaml',
  '/etc/tapnet/config.yml',
  '/etc/tapnet/config.json',
];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `host:port` (IPv6 in brackets) → parts; undefined when malformed. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** True for 127.0.0.0/8, ::1 and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  try {
    const ip = parseIp(host);
    return ip.family === 4 ? ip.value >> 24n === 127n : ip.value === 1n;
  } catch {
    return false;
  }
}

const absolutePath = z
  .string()
  .min(1)
  .refine((s) => s.startsWith('/') && !s.includes('\0'), 'must be an absolute path');

export const apiConfigSchema = z
  .object({
    /** The Unix socket (mode 0600): the API's main door, and the only one that can pass TAP fds. */
    socket: absolutePath.default(DEFAULT_SOCKET),
    /** Also listen on TCP, loopback only (`127.0.0.1:7070`, `[::1]:7070`); needs a token. */
    tcp: z
      .string()
      .refine((s) => {
        const hp = parseHostPort(s);
        return hp !== undefined && isLoopbackHost(hp.host);
      }, 'must be a loopback address and port like 127.0.0.1:7070 or [::1]:7070')
      .optional(),
    /** Bearer token for TCP clients (at least 16 characters). Prefer tokenFile. */
    token: z.string().min(16, 'must be at least 16 characters').optional(),
    /** File holding the bearer token (first line). */
    tokenFile: absolutePath.optional(),
    /** Largest request body accepted. */
    maxBodyBytes: z
      .number()
      .int()
      .min(1024)
      .max(16 << 20)
      .default(64 << 10),
  })
  .strict();

export const logConfigSchema = z
  .object({
    /** pino level: one JSON line per operation at info. */
    level: z.enum(LOG_LEVELS).default('info'),
  })
  .strict();

export const daemonConfigSchema = z
  .object({
    /** VMs' networks outlive the daemon (default). false: release every VM on SIGTERM. */
    keepNetworksOnExit: z.boolean().default(true),
    /** How long SIGTERM waits for calls in flight before exiting anyway. */
    shutdownTimeoutMs: z.number().int().min(0).max(600_000).default(30_000),
    /** Reconcile when starting (default; repairs what a crash or a reboot left). */
    reconcileOnStart: z.boolean().default(true),
    /** Traffic monitoring: per-VM Prometheus series and the usage export's sampling (docs/USAGE.md). */
    metrics: z
      .object({
        /** Per-VM series (tapnet_vm_*) on /metrics: off by default, about a dozen series per VM. */
        perVm: z.boolean().default(false),
        /** At most this many VMs get per-VM series (the first by vmId); tapnet_vm_metrics_omitted counts the rest. */
        maxVms: z.number().int().min(0).max(100_000).default(1000),
        /** How often the daemon samples every VM's counters into the usage export; 0: only on demand and at release. */
        usageIntervalSeconds: z.number().int().min(0).max(86_400).default(60),
        /** Released VMs' final totals not collected within this many hours are forgotten; 0: kept until collected. */
        usageRetentionHours: z.number().int().min(0).max(87_600).default(168),
      })
      .strict()
      .prefault({}),
  })
  .strict();

const valid = (fn: () => unknown): boolean => {
  try {
    return fn() !== false;
  } catch {
    return false;
  }
};

/**
 * Cluster mode (docs/CLUSTER.md): when present, the state store is etcd, shared by every host, and
 * networks with `scope: cluster` span the hosts through a VXLAN overlay.
 */
export const clusterConfigSchema = z
  .object({
    /** etcd client URLs, tried in turn (`http://198.18.100.254:2379`; no TLS yet). */
    endpoints: z
      .array(
        z
          .string()
          .refine(
            (s) => valid(() => /^http:\/\/[^/?#@]+\/?$/.test(s) && new URL(s)),
            'must be an etcd client URL like http://198.18.100.254:2379',
          ),
      )
      .min(1),
    /** This host's name in the cluster (its records, leases and liveness). Default: the hostname. */
    host: z
      .string()
      .refine((s) => valid(() => validateHostName(s)), 'must be 1-63 characters of A-Z a-z 0-9 _ . -')
      .prefault(() => hostname()),
    /** This host's underlay address: the VXLAN local address, next hop of routed cluster networks. */
    vtep: z.string().refine((s) => valid(() => parseIp(s)), 'must be an IP address'),
    /** The underlay device (VXLAN `dev`); cluster networks' MTU defaults to its MTU − 50 (− 70 over IPv6). */
    underlay: z.string().refine((s) => valid(() => validateIfname(s)), 'must be an interface name'),
    /** Key prefix in etcd. Default /tapnet. */
    prefix: z
      .string()
      .refine((s) => valid(() => new ClusterKeys(s)), 'must look like /tapnet (1-4 segments)')
      .optional(),
    /** Session lease TTL in seconds: a host silent this long shows expired. Default 10. */
    ttl: z.number().int().min(1).max(3600).optional(),
    /** Where per-host locks live: etcd (default, on the session lease) or local (flock; fewer etcd writes). */
    locks: z.enum(['etcd', 'local']).optional(),
  })
  .strict();

export type ClusterConfig = z.output<typeof clusterConfigSchema>;

/** The keys this schema adds to the manager's. */
export const DAEMON_KEYS = ['api', 'log', 'daemon', 'cluster'] as const;

export const tapnetConfigSchema = managerConfigSchema
  .extend({
    api: apiConfigSchema.prefault({}),
    log: logConfigSchema.prefault({}),
    daemon: daemonConfigSchema.prefault({}),
    cluster: clusterConfigSchema.optional(),
  })
  .superRefine((c, ctx) => {
    for (const [name, net] of Object.entries(c.networks)) {
      if (net.scope === 'cluster' && !c.cluster) {
        ctx.addIssue({
          code: 'custom',
          path: ['networks', name, 'scope'],
          message: 'a cluster network needs the cluster key (etcd endpoints, vtep, underlay)',
        });
      }
    }
    if (c.api.tcp && !c.api.token && !c.api.tokenFile) {
      ctx.addIssue({
        code: 'custom',
        path: ['api', 'tcp'],
        message: 'needs api.token or api.tokenFile: the API is never served on TCP without authentication',
      });
    }
    if (c.api.token && c.api.tokenFile) {
      ctx.addIssue({
        code: 'custom',
        path: ['api', 'token'],
        message: 'set api.token or api.tokenFile, not both',
      });
    }
  });

export type TapnetConfigInput = z.input<typeof tapnetConfigSchema>;
export type TapnetConfig = z.output<typeof tapnetConfigSchema>;

/** The manager's part of a validated configuration (what NetworkManager.open takes). */
export function managerPart(cfg: TapnetConfig): ManagerConfigInput {
  const out: Record<string, unknown> = { ...cfg };
  for (const k of DAEMON_KEYS) delete out[k];
  return out as ManagerConfigInput;
}
