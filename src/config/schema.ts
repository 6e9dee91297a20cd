/**
 * The whole configuration of tapnet: the manager's keys (src/manager/config.ts: networks, state dir,
 * firewall, …) plus the daemon's own — the API listeners, logging and shutdown behaviour — in one zod
 * schema, so one file and one validation cover everything.
 */
import { z } from 'zod';
import { parseIp } from '../ip.js';
import { type ManagerConfigInput, managerConfigSchema } from '../manager/config.js';

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
      })
      .strict()
      .prefault({}),
  })
  .strict();

/** The keys this schema adds to the manager's. */
export const DAEMON_KEYS = ['api', 'log', 'daemon'] as const;

export const tapnetConfigSchema = managerConfigSchema
  .extend({
    api: apiConfigSchema.prefault({}),
    log: logConfigSchema.prefault({}),
    daemon: daemonConfigSchema.prefault({}),
  })
  .superRefine((c, ctx) => {
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
