/**
 * The API's routes over a TapnetApi: matching, authentication (TCP), body validation, one structured log
 * line and one metrics observation per request, errors as `{code, message}`. Knows nothing of sockets
 * and signals (server.ts) — so unit tests can drive it with a fake service.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { TapnetError } from '../errors.js';
import type { TapnetMetrics } from '../observe/metrics.js';
import { validateVmId } from '../validate.js';
import { sendResponseWithFds } from './fdpass.js';
import { HttpError, publicError, readJsonBody, sendError, sendJson, validateBody } from './http.js';
import { VERSION } from './openapi.js';
import { ensureBodySchema, policyBodySchema } from './schemas.js';
import { dropFds, type TapnetApi } from './service.js';

/** What the routes need from the daemon. */
export interface ApiContext {
  /** Run `fn` with the service (waits while the daemon starts or reloads; 503 while it shuts down). */
  use<T>(fn: (api: TapnetApi) => Promise<T>): Promise<T>;
  /** Ready: started, reconciled, not draining. */
  ready(): 'ready' | 'starting' | 'reloading' | 'draining';
  logger: Logger;
  metrics?: TapnetMetrics;
  maxBodyBytes: number;
  openapi: Record<string, unknown>;
  /** The effective configuration (GET /v1/config). */
  config(): unknown;
  startedAt: number;
}

/** Which listener a request came in on. */
export type Listener = { kind: 'unix' } | { kind: 'tcp'; token: () => string | undefined };

interface Reply {
  status: number;
  json?: unknown;
  text?: string;
  contentType?: string;
  fds?: number[];
}

interface Call {
  req: IncomingMessage;
  params: { vmId?: string };
  listener: Listener;
  log: Record<string, unknown>;
}

interface Route {
  method: string;
  /** Template, e.g. /v1/vms/{vmId}/stats. */
  path: string;
  /** The operation's name in logs. */
  op: string;
  /** Logged at debug, not info (probes and scrapes). */
  quiet?: boolean;
  handle(ctx: ApiContext, c: Call): Promise<Reply>;
}

const vm = (c: Call): string => validateVmId(c.params.vmId);

/** The query string of a request. */
const query = (c: Call): URLSearchParams => new URL(c.req.url ?? '/', 'http://localhost').searchParams;

/** A boolean query parameter: absent, `true`/`1` or `false`/`0`; anything else is refused. */
function flag(value: string | null, name: string): boolean {
  if (value === null || value === 'false' || value === '0') return false;
  if (value === 'true' || value === '1' || value === '') return true;
  throw new TapnetError('ERR_INVALID_ARGUMENT', `query parameter ${name} must be true or false`, {
    details: { [name]: value.slice(0, 64) },
  });
}

type OptionalOp = 'statsAll' | 'usage' | 'collectUsage' | 'setPolicy' | 'getPolicy';

/** An operation a TapnetApi may lack (embedders' services): ERR_NOT_FOUND when it does. */
function op<K extends OptionalOp>(a: TapnetApi, k: K): NonNullable<TapnetApi[K]> {
  const f = a[k];
  if (!f) throw new TapnetError('ERR_NOT_FOUND', `this tapnet service does not offer ${k}`);
  return f.bind(a) as NonNullable<TapnetApi[K]>;
}

async function body(ctx: ApiContext, c: Call) {
  return validateBody(ensureBodySchema, await readJsonBody(c.req, ctx.maxBodyBytes));
}

const ROUTES: Route[] = [
  {
    method: 'GET',
    path: '/healthz',
    op: 'health',
    quiet: true,
    handle: async (ctx) => ({
      status: 200,
      json: {
        status: 'ok',
        version: VERSION,
        pid: process.pid,
        uptimeSeconds: (Date.now() - ctx.startedAt) / 1000,
      },
    }),
  },
  {
    method: 'GET',
    path: '/readyz',
    op: 'ready',
    quiet: true,
    handle: async (ctx) => {
      const s = ctx.ready();
      return { status: s === 'ready' ? 200 : 503, json: { status: s } };
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    op: 'metrics',
    quiet: true,
    handle: async (ctx) => {
      if (!ctx.metrics) throw new TapnetError('ERR_NOT_FOUND', 'metrics are disabled');
      return { status: 200, text: await ctx.metrics.text(), contentType: ctx.metrics.contentType };
    },
  },
  {
    method: 'GET',
    path: '/openapi',
    op: 'openapi',
    quiet: true,
    handle: async (ctx) => ({ status: 200, json: ctx.openapi }),
  },
  {
    method: 'GET',
    path: '/openapi.json',
    op: 'openapi',
    quiet: true,
    handle: async (ctx) => ({ status: 200, json: ctx.openapi }),
  },
  {
    method: 'GET',
    path: '/v1/config',
    op: 'config',
    handle: async (ctx) => ({ status: 200, json: ctx.config() }),
  },
  {
    method: 'GET',
    path: '/v1/vms',
    op: 'list',
    quiet: true,
    handle: async (ctx) => ({ status: 200, json: await ctx.use((a) => a.list()) }),
  },
  {
    method: 'PUT',
    path: '/v1/vms/{vmId}',
    op: 'ensure',
    handle: async (ctx, c) => {
      const id = vm(c);
      const opts = await body(ctx, c);
      if (opts.tap === 'fd') {
        throw new TapnetError(
          'ERR_INVALID_ARGUMENT',
          'tap: "fd" hands the TAP\'s fds over: use POST /v1/vms/{vmId}/tap-fd on the Unix socket',
        );
      }
      const info = await ctx.use((a) => a.ensure(id, opts));
      c.log.network = info.network;
      return { status: 200, json: info };
    },
  },
  {
    method: 'GET',
    path: '/v1/vms/{vmId}',
    op: 'get',
    quiet: true,
    handle: async (ctx, c) => {
      const id = vm(c);
      const info = await ctx.use((a) => a.get(id));
      if (!info) throw new TapnetError('ERR_NOT_FOUND', `VM ${id} has no network`, { details: { vmId: id } });
      return { status: 200, json: info };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/vms/{vmId}',
    op: 'release',
    handle: async (ctx, c) => {
      const id = vm(c);
      const wait = flag(query(c).get('wait'), 'wait');
      await ctx.use((a) => a.release(id, wait ? { wait } : {}));
      return { status: 204 };
    },
  },
  {
    method: 'GET',
    path: '/v1/vms/{vmId}/stats',
    op: 'stats',
    quiet: true,
    handle: async (ctx, c) => {
      const id = vm(c);
      return { status: 200, json: await ctx.use((a) => a.stats(id)) };
    },
  },
  {
    method: 'GET',
    path: '/v1/vms/{vmId}/policy',
    op: 'policy-get',
    handle: async (ctx, c) => {
      const id = vm(c);
      const policy = await ctx.use((a) => op(a, 'getPolicy')(id));
      return { status: 200, json: policy === undefined ? {} : { policy } };
    },
  },
  {
    method: 'PUT',
    path: '/v1/vms/{vmId}/policy',
    op: 'policy-set',
    handle: async (ctx, c) => {
      const id = vm(c);
      const doc = validateBody(policyBodySchema, await readJsonBody(c.req, ctx.maxBodyBytes));
      return { status: 200, json: await ctx.use((a) => op(a, 'setPolicy')(id, doc)) };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/vms/{vmId}/policy',
    op: 'policy-rm',
    handle: async (ctx, c) => {
      const id = vm(c);
      return { status: 200, json: await ctx.use((a) => op(a, 'setPolicy')(id, null)) };
    },
  },
  {
    method: 'GET',
    path: '/v1/stats',
    op: 'stats-all',
    quiet: true,
    handle: async (ctx, c) => {
      const ids = query(c).getAll('vm');
      for (const id of ids) validateVmId(id);
      const list = ids.length ? ids : undefined;
      return { status: 200, json: await ctx.use((a) => op(a, 'statsAll')(list)) };
    },
  },
  {
    method: 'GET',
    path: '/v1/usage',
    op: 'usage',
    handle: async (ctx, c) => {
      const since = query(c).get('since');
      return { status: 200, json: await ctx.use((a) => op(a, 'usage')(since === null ? {} : { since })) };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/usage/{vmId}',
    op: 'collect-usage',
    handle: async (ctx, c) => {
      const id = vm(c);
      return { status: 200, json: await ctx.use((a) => op(a, 'collectUsage')(id)) };
    },
  },
  {
    method: 'POST',
    path: '/v1/vms/{vmId}/tap-fd',
    op: 'ensure-fd',
    handle: async (ctx, c) => {
      if (c.listener.kind !== 'unix')
        throw new TapnetError('ERR_NOT_FOUND', 'TAP fds can only be passed over the Unix socket');
      const id = vm(c);
      const opts = await body(ctx, c);
      const info = await ctx.use((a) => a.ensureWithTapFds(id, opts));
      const { tapFds, ...rest } = info;
      c.log.network = info.network;
      c.log.fds = tapFds.length;
      return { status: 200, json: { ...rest, fds: tapFds.length }, fds: tapFds };
    },
  },
  {
    method: 'POST',
    path: '/v1/gc',
    op: 'gc',
    handle: async (ctx) => ({ status: 200, json: await ctx.use((a) => a.gc()) }),
  },
  {
    method: 'GET',
    path: '/v1/verify',
    op: 'verify',
    handle: async (ctx) => ({ status: 200, json: await ctx.use((a) => a.verify()) }),
  },
  {
    method: 'GET',
    path: '/v1/doctor',
    op: 'doctor',
    handle: async (ctx) => ({ status: 200, json: await ctx.use((a) => a.doctor()) }),
  },
];

/** Match a path against the route templates: the routes of that path and the captured vmId. */
function match(pathname: string): { routes: Route[]; params: { vmId?: string } } {
  const seg = pathname.split('/');
  for (const template of new Set(ROUTES.map((r) => r.path))) {
    const t = template.split('/');
    if (t.length !== seg.length) continue;
    const params: { vmId?: string } = {};
    let ok = true;
    for (let i = 0; i < t.length && ok; i++) {
      if (t[i] === '{vmId}') {
        try {
          params.vmId = decodeURIComponent(seg[i]!);
        } catch {
          params.vmId = seg[i]!;
        }
        ok = seg[i] !== '';
      } else ok = t[i] === seg[i];
    }
    if (ok) return { routes: ROUTES.filter((r) => r.path === template), params };
  }
  return { routes: [], params: {} };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time bearer-token check. */
export function authorized(header: string | undefined, token: string | undefined): boolean {
  if (!token) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return timingSafeEqual(digest(m?.[1] ?? ''), digest(token)) && m !== null;
}

/** The request handler for one listener. */
export function createHandler(
  ctx: ApiContext,
  listener: Listener,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void handle(ctx, listener, req, res);
  };
}

async function handle(
  ctx: ApiContext,
  listener: Listener,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const t0 = performance.now();
  const url = new URL(req.url ?? '/', 'http://localhost');
  const { routes, params } = match(url.pathname);
  const route = routes.find((r) => r.method === req.method || (req.method === 'HEAD' && r.method === 'GET'));
  const log: Record<string, unknown> = { op: route?.op ?? 'unknown', method: req.method, path: url.pathname };
  if (params.vmId !== undefined) log.vmId = params.vmId;
  let status = 500;
  let error: TapnetError | undefined;
  try {
    if (listener.kind === 'tcp' && !authorized(req.headers.authorization, listener.token())) {
      throw new HttpError(401, 'ERR_PERMISSION_DENIED', 'missing or wrong bearer token');
    }
    if (!route) {
      if (routes.length) {
        res.setHeader('allow', routes.map((r) => r.method).join(', '));
        throw new HttpError(405, 'ERR_INVALID_ARGUMENT', `${req.method} is not allowed on ${url.pathname}`);
      }
      throw new TapnetError('ERR_NOT_FOUND', `no route ${req.method} ${url.pathname} (see GET /openapi)`);
    }
    const reply = await route.handle(ctx, { req, params, listener, log });
    status = reply.status;
    if (reply.fds) {
      // Our copies are closed whatever happens: the client holds its own once they are sent.
      await sendResponseWithFds(req.socket as Socket, reply.status, reply.json, reply.fds).finally(() =>
        dropFds(reply.fds),
      );
    } else if (reply.text !== undefined) {
      res.writeHead(reply.status, {
        'content-type': reply.contentType ?? 'text/plain',
        'content-length': Buffer.byteLength(reply.text),
      });
      res.end(reply.text);
    } else if (reply.json !== undefined) sendJson(res, reply.status, reply.json);
    else {
      res.writeHead(reply.status);
      res.end();
    }
  } catch (e) {
    const r = sendError(res, e);
    status = r.status;
    error = r.error;
  }
  const ms = performance.now() - t0;
  const routeName = route?.path ?? (routes.length ? routes[0]!.path : 'unmatched');
  ctx.metrics?.recordRequest(req.method ?? '?', routeName, status, ms / 1000);
  const op = String(log.op);
  const entry = { ...log, status, durationMs: Math.round(ms * 1000) / 1000, outcome: error ? 'error' : 'ok' };
  if (error) {
    const level = status >= 500 ? 'error' : 'warn';
    ctx.logger[level]({ ...entry, code: error.code, error: publicError(error) }, `${op} failed`);
  } else if (route?.quiet) ctx.logger.debug(entry, op);
  else ctx.logger.info(entry, op);
}

/** For tests and embedding: the route table (method, path, op). */
export function routeTable(): { method: string; path: string; op: string }[] {
  return ROUTES.map(({ method, path, op }) => ({ method, path, op }));
}
