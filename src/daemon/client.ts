/**
 * A client of the daemon's API (Unix socket, or loopback TCP with a bearer token) implementing TapnetApi,
 * so the CLI — or any Node program — uses the daemon exactly like an in-process manager. Errors come back
 * as TapnetErrors with the daemon's code. ensureWithTapFds() receives TAP fds over the Unix socket
 * (SCM_RIGHTS) on a socket of its own, since Node's sockets cannot read ancillary data.
 */
import http from 'node:http';
import { DEFAULT_SOCKET } from '../config/schema.js';
import { ERROR_CODES, type ErrorCode, TapnetError } from '../errors.js';
import type { NetworkInfo, ReconcileReport } from '../manager/types.js';
import type { DoctorReport } from '../observe/doctor.js';
import type { UsageEntry, UsageReport } from '../observe/usage.js';
import type { VerifyReport } from '../observe/verify.js';
import type { StatsReport, VmStats } from '../observe/vmstats.js';
import * as libc from '../sys/libc.js';
import { connectUnix, recvWithFdsAsync } from '../sys/scm.js';
import { validateVmId } from '../validate.js';
import type { EnsureBody } from './schemas.js';
import type { TapnetApi } from './service.js';

export interface DaemonClientOptions {
  /** The Unix socket (default /run/tapnet/tapnet.sock). Ignored when `tcp` is set. */
  socket?: string;
  /** Loopback TCP instead of the socket; needs `token`. */
  tcp?: { host: string; port: number };
  token?: string;
  /** Per-request timeout (default 120 s: an ensure may wait for a VM's lock). */
  timeoutMs?: number;
}

/** What probe() found at a socket path. */
export type DaemonState = 'answering' | 'stale' | 'absent';

function toError(status: number, body: unknown): TapnetError {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const code = (
    typeof b.code === 'string' && b.code in ERROR_CODES
      ? b.code
      : status === 404
        ? 'ERR_NOT_FOUND'
        : 'ERR_INTERNAL'
  ) as ErrorCode;
  const message = typeof b.message === 'string' ? b.message : `the daemon answered HTTP ${status}`;
  return new TapnetError(code, message, {
    ...(typeof b.errno === 'string' ? { errno: b.errno } : {}),
    ...(typeof b.syscall === 'string' ? { syscall: b.syscall } : {}),
    ...(typeof b.extack === 'string' ? { extack: b.extack } : {}),
    details: { ...((b.details as Record<string, unknown>) ?? {}), httpStatus: status },
  });
}

const vmPath = (vmId: string, suffix = '') => `/v1/vms/${encodeURIComponent(validateVmId(vmId))}${suffix}`;

export class DaemonClient implements TapnetApi {
  readonly socket: string;
  private readonly agent: http.Agent;

  constructor(private readonly opts: DaemonClientOptions = {}) {
    this.socket = opts.socket ?? DEFAULT_SOCKET;
    if (opts.tcp && !opts.token)
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'a TCP client needs the API token');
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** Is a daemon answering on `socket`? (`stale`: the file exists, nobody answers.) */
  static async probe(socket: string, timeoutMs = 1000): Promise<DaemonState> {
    const c = new DaemonClient({ socket, timeoutMs });
    try {
      await c.health();
      return 'answering';
    } catch (e) {
      const errno = (e as { details?: { errno?: string } }).details?.errno;
      return errno === 'ENOENT' ? 'absent' : 'stale';
    } finally {
      await c.close();
    }
  }

  /** One request; resolves to the parsed JSON (or text) of a 2xx answer, throws a TapnetError otherwise. */
  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const target = this.opts.tcp
      ? { host: this.opts.tcp.host, port: this.opts.tcp.port }
      : { socketPath: this.socket };
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          ...target,
          method,
          path,
          agent: this.agent,
          timeout: this.opts.timeoutMs ?? 120_000,
          headers: {
            host: 'localhost',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
            ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const isJson = String(res.headers['content-type'] ?? '').startsWith('application/json');
            let parsed: unknown = text;
            if (isJson && text) {
              try {
                parsed = JSON.parse(text);
              } catch {
                return reject(
                  new TapnetError('ERR_INTERNAL', `the daemon sent invalid JSON for ${method} ${path}`),
                );
              }
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) resolve((status === 204 ? undefined : parsed) as T);
            else reject(toError(status, parsed));
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new TapnetError('ERR_TIMEOUT', `${method} ${path}: no answer from the daemon in time`)),
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof TapnetError) return reject(e);
        const code: ErrorCode = e.code === 'EACCES' ? 'ERR_PERMISSION_DENIED' : 'ERR_NOT_FOUND';
        reject(
          new TapnetError(
            code,
            `cannot reach the tapnet daemon at ${this.opts.tcp ? `${this.opts.tcp.host}:${this.opts.tcp.port}` : this.socket}: ${e.message}`,
            {
              cause: e,
              details: { errno: e.code },
            },
          ),
        );
      });
      req.end(payload);
    });
  }

  async ensure(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo> {
    return this.request('PUT', vmPath(vmId), opts);
  }

  async release(vmId: string, opts: { wait?: boolean } = {}): Promise<void> {
    await this.request('DELETE', `${vmPath(vmId)}${opts.wait ? '?wait=true' : ''}`);
  }

  async get(vmId: string): Promise<NetworkInfo | undefined> {
    try {
      return await this.request<NetworkInfo>('GET', vmPath(vmId));
    } catch (e) {
      if (e instanceof TapnetError && e.code === 'ERR_NOT_FOUND') return undefined;
      throw e;
    }
  }

  async list(): Promise<NetworkInfo[]> {
    return this.request('GET', '/v1/vms');
  }

  async setPolicy(vmId: string, policy: Record<string, unknown> | null): Promise<NetworkInfo> {
    if (policy === null) return this.request('DELETE', vmPath(vmId, '/policy'));
    return this.request('PUT', vmPath(vmId, '/policy'), policy);
  }

  async getPolicy(vmId: string): Promise<unknown> {
    return (await this.request<{ policy?: unknown }>('GET', vmPath(vmId, '/policy'))).policy;
  }

  async stats(vmId: string): Promise<VmStats> {
    return this.request('GET', vmPath(vmId, '/stats'));
  }

  async statsAll(vmIds?: string[]): Promise<StatsReport> {
    const q = new URLSearchParams();
    for (const id of vmIds ?? []) q.append('vm', validateVmId(id));
    return this.request('GET', `/v1/stats${q.size ? `?${q}` : ''}`);
  }

  async usage(opts: { since?: string } = {}): Promise<UsageReport> {
    const q = opts.since === undefined ? '' : `?${new URLSearchParams({ since: opts.since })}`;
    return this.request('GET', `/v1/usage${q}`);
  }

  async collectUsage(vmId: string): Promise<UsageEntry> {
    return this.request('DELETE', `/v1/usage/${encodeURIComponent(validateVmId(vmId))}`);
  }

  async gc(): Promise<ReconcileReport> {
    return this.request('POST', '/v1/gc');
  }

  async verify(): Promise<VerifyReport> {
    return this.request('GET', '/v1/verify');
  }

  async doctor(): Promise<DoctorReport> {
    return this.request('GET', '/v1/doctor');
  }

  async health(): Promise<{ status: string; version: string; pid: number; uptimeSeconds: number }> {
    return this.request('GET', '/healthz');
  }

  /**
   * Ensure `vmId` and receive its TAP's queue fds (SCM_RIGHTS over the Unix socket). The fds are
   * close-on-exec; pass them to the VMM (e.g. spawn's stdio → fd=3) and close yours afterwards.
   */
  async ensureWithTapFds(vmId: string, opts: EnsureBody = {}): Promise<NetworkInfo & { tapFds: number[] }> {
    if (this.opts.tcp)
      throw new TapnetError('ERR_INVALID_ARGUMENT', 'TAP fds can only be received over the Unix socket');
    const path = vmPath(vmId, '/tap-fd');
    const body = Buffer.from(JSON.stringify(opts));
    const head = `POST ${path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
    const request = Buffer.concat([Buffer.from(head), body]);
    let fd: number;
    try {
      fd = connectUnix(this.socket);
    } catch (e) {
      throw new TapnetError(
        'ERR_NOT_FOUND',
        `cannot reach the tapnet daemon at ${this.socket}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    const fds: number[] = [];
    try {
      const ms = this.opts.timeoutMs ?? 120_000;
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
      tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
      libc.setsockoptBuf(fd, libc.SOL_SOCKET, libc.SO_RCVTIMEO, tv);
      for (let off = 0; off < request.length; ) off += libc.send(fd, request.subarray(off));
      let buf = Buffer.alloc(0);
      let headerEnd = -1;
      let length = -1;
      for (;;) {
        const r = await recvWithFdsAsync(fd, 65536, 256);
        fds.push(...r.fds);
        if (r.data.length === 0) break;
        buf = Buffer.concat([buf, r.data]);
        if (headerEnd < 0) {
          headerEnd = buf.indexOf('\r\n\r\n');
          if (headerEnd >= 0) {
            const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.subarray(0, headerEnd).toString('latin1'));
            length = m ? Number(m[1]) : -1;
          }
        }
        if (headerEnd >= 0 && length >= 0 && buf.length >= headerEnd + 4 + length) break;
      }
      if (headerEnd < 0)
        throw new TapnetError('ERR_INTERNAL', `${path}: the daemon closed the connection without an answer`);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.toString('latin1', 0, 16))?.[1] ?? 0);
      const text = buf.toString('utf8', headerEnd + 4, length >= 0 ? headerEnd + 4 + length : undefined);
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new TapnetError('ERR_INTERNAL', `${path}: the daemon sent invalid JSON`);
      }
      if (status !== 200) throw toError(status, parsed);
      const { fds: declared, ...info } = parsed as NetworkInfo & { fds: number };
      if (declared !== fds.length)
        throw new TapnetError('ERR_INTERNAL', `${path}: expected ${declared} fds, received ${fds.length}`);
      return { ...info, tapFds: fds.splice(0) };
    } finally {
      for (const f of fds) libc.close(f);
      libc.close(fd);
    }
  }

  /** Close idle connections. */
  async close(): Promise<void> {
    this.agent.destroy();
  }
}
