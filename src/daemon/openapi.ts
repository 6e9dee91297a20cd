/**
 * The OpenAPI 3.1 document of the daemon's API, built from the same zod schemas the daemon validates
 * request bodies with. Served at GET /openapi and kept in the repository as docs/openapi.json (a unit test
 * fails when they differ; regenerate with `node dist/src/daemon/openapi.js > docs/openapi.json`).
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { arr, error, int, type Json, json, obj, ref, str, vmId } from './openapi-build.js';
import { POLICY_PATHS, POLICY_SCHEMAS } from './openapi-policy.js';
import { STATS_PATHS, STATS_SCHEMAS } from './openapi-stats.js';
import { ensureBodySchema } from './schemas.js';

/** tapnet's version, from package.json. */
export const VERSION: string = (() => {
  try {
    return (
      JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
        version: string;
      }
    ).version;
  } catch {
    return '0.0.0';
  }
})();

function fromZod(schema: z.ZodType): Json {
  const { $schema: _s, ...rest } = z.toJSONSchema(schema) as Json;
  return rest;
}

const SCHEMAS: Record<string, Json> = {
  EnsureRequest: fromZod(ensureBodySchema),
  Error: obj(
    {
      code: {
        type: 'string',
        enum: Object.keys(ERROR_CODES),
        description: 'Stable error code (docs/ERRORS.md)',
      },
      message: str('Human-readable explanation'),
      errno: str(),
      syscall: str(),
      extack: str('The kernel’s extended ACK message'),
      details: { type: 'object', additionalProperties: true },
    },
    ['code', 'message'],
  ),
  NetworkInfo: obj(
    {
      vmId: str(),
      network: str(),
      mode: { type: 'string', enum: ['direct', 'cni'] },
      topology: { type: 'string', enum: ['bridge', 'routed'] },
      tap: str('Host TAP device name'),
      mac: str('Guest MAC'),
      ipv4: str('Guest IPv4 address in CIDR form, e.g. 198.18.0.5/22'),
      gateway4: str(),
      ipv6: str(),
      gateway6: str(),
      dns: arr(str()),
      mtu: int(),
      bridge: str('The bridge the TAP is a port of (bridge topology)'),
      netns: str('The namespace the TAP lives in, when not the daemon’s own'),
      queues: int(),
      vnetHdr: { type: 'boolean' },
      tapMode: { type: 'string', enum: ['persistent', 'fd'] },
      createdAt: { type: 'string', format: 'date-time' },
      fds: int('POST …/tap-fd only: how many fds came with the response (SCM_RIGHTS), in queue order'),
    },
    [
      'vmId',
      'network',
      'mode',
      'topology',
      'tap',
      'mac',
      'dns',
      'mtu',
      'queues',
      'vnetHdr',
      'tapMode',
      'createdAt',
    ],
  ),
  ...STATS_SCHEMAS,
  ...POLICY_SCHEMAS,
  ReconcileReport: obj(
    {
      orphanTaps: arr(str()),
      incompleteRecords: arr(str()),
      recreatedTaps: arr(str()),
      reattachedTaps: arr(str()),
      orphanLeases: arr(str()),
      reclaimedLeases: arr(str('addresses of ready VMs whose lease had gone, taken again')),
      orphanFirewallElements: arr(str()),
      orphanNetns: arr(str('CNI mode: VM namespaces without a record, removed')),
      corruptRecords: arr(str()),
      errors: arr(obj({ code: str(), message: str() }, ['code', 'message'])),
    },
    [
      'orphanTaps',
      'incompleteRecords',
      'recreatedTaps',
      'orphanLeases',
      'orphanFirewallElements',
      'corruptRecords',
      'errors',
    ],
  ),
  VerifyReport: obj(
    {
      ok: { type: 'boolean' },
      vms: int(),
      networks: int(),
      problems: arr(
        obj({ kind: str(), vmId: str(), object: str(), message: str(), fix: str() }, [
          'kind',
          'object',
          'message',
          'fix',
        ]),
      ),
    },
    ['ok', 'vms', 'networks', 'problems'],
  ),
  DoctorReport: obj(
    {
      ok: { type: 'boolean' },
      counts: obj({ ok: int(), warn: int(), fail: int(), info: int() }),
      checks: arr(
        obj(
          {
            id: str(),
            status: { type: 'string', enum: ['ok', 'warn', 'fail', 'info'] },
            message: str(),
            fix: str(),
          },
          ['id', 'status', 'message'],
        ),
      ),
    },
    ['ok', 'counts', 'checks'],
  ),
  ConfigEntry: obj(
    { key: str(), value: {}, source: str('default, derived, file PATH, env NAME or flag --x') },
    ['key', 'value', 'source'],
  ),
};

const ensureBody: Json = {
  required: false,
  content: { 'application/json': { schema: ref('EnsureRequest') } },
};
const common = {
  '400': error('Invalid vmId or body'),
  '500': error('Failure (e.g. ERR_TEARDOWN with every failed step)'),
  '503': {
    ...error('Shutting down (ERR_ABORTED), or cluster mode with etcd unreachable (ERR_UNAVAILABLE: retry)'),
    headers: {
      'Retry-After': {
        description: 'ERR_UNAVAILABLE: seconds to wait before retrying',
        schema: { type: 'integer' },
      },
    },
  },
};

const PATHS: Record<string, Json> = {
  '/v1/vms': {
    get: {
      operationId: 'listVms',
      summary: 'Every VM with a network',
      responses: { '200': json(arr(ref('NetworkInfo')), 'NetworkInfo of each VM, sorted by vmId') },
    },
  },
  '/v1/vms/{vmId}': {
    parameters: [vmId],
    put: {
      operationId: 'ensureVm',
      summary: 'Give the VM its network (idempotent: an existing VM gets what it has)',
      requestBody: ensureBody,
      responses: {
        '200': json(ref('NetworkInfo'), 'The VM’s network (same JSON as `tapnet up --json`)'),
        ...common,
        '404': error('Unknown network'),
        '409': error('Address taken (ERR_IPAM_CONFLICT), or the VM is on another network (ERR_CONFLICT)'),
        '507': error('No free address (ERR_IPAM_EXHAUSTED) or the bridge is full (ERR_CAPACITY)'),
      },
    },
    get: {
      operationId: 'getVm',
      summary: 'The VM’s network',
      responses: {
        '200': json(ref('NetworkInfo'), 'Found'),
        '404': error('The VM has no network'),
        '400': common['400'],
      },
    },
    delete: {
      operationId: 'releaseVm',
      summary: 'Take the VM’s network back (204 also when unknown)',
      description:
        'Answers once the network is unusable (firewall elements gone, TAP doomed) and its address and record are freed; the kernel deletes the TAP in the background, batched with other releases (its RCU grace periods cost ≈ 16 ms), and an ensure of the same VM waits for it. With wait=true the answer waits for the deletion too.',
      parameters: [
        {
          name: 'wait',
          in: 'query',
          required: false,
          description: 'Answer only once the kernel has deleted the TAP',
          schema: { type: 'boolean', default: false },
        },
      ],
      responses: { '204': { description: 'Released, or there was nothing to release' }, ...common },
    },
  },
  ...STATS_PATHS,
  ...POLICY_PATHS,
  '/v1/vms/{vmId}/tap-fd': {
    parameters: [vmId],
    post: {
      operationId: 'ensureVmTapFds',
      summary: 'Ensure the VM and receive its TAP queue fds (Unix socket only)',
      description:
        'Like PUT /v1/vms/{vmId}, with `tap` defaulting to `fd`. The response carries the TAP’s open queue fds as SCM_RIGHTS ancillary data on the first bytes of the response, in queue order; `fds` and the X-Tapnet-Fds header say how many. The connection is closed after the response. Use a client that reads ancillary data (recvmsg), e.g. DaemonClient.ensureWithTapFds() in src/daemon/client.ts. Refused on TCP.',
      requestBody: ensureBody,
      responses: {
        '200': {
          ...json(ref('NetworkInfo'), 'The VM’s network; fds attached'),
          headers: { 'X-Tapnet-Fds': { schema: { type: 'integer' }, description: 'Number of fds attached' } },
        },
        ...common,
        '404': error('Unknown network, or requested over TCP'),
        '409': error('The VM’s fd-mode TAP is already held by its VMM'),
      },
    },
  },
  '/v1/gc': {
    post: {
      operationId: 'gc',
      summary: 'Reconcile the state with the kernel and the firewall, and repair',
      responses: { '200': json(ref('ReconcileReport'), 'What was repaired') },
    },
  },
  '/v1/verify': {
    get: {
      operationId: 'verify',
      summary: 'Compare the state with the kernel and the firewall; change nothing',
      responses: { '200': json(ref('VerifyReport'), 'Problems found (ok: false when any)') },
    },
  },
  '/v1/doctor': {
    get: {
      operationId: 'doctor',
      summary: 'Host checks, each with its fix',
      responses: { '200': json(ref('DoctorReport'), 'Checks') },
    },
  },
  '/v1/config': {
    get: {
      operationId: 'config',
      summary: 'The daemon’s effective configuration and where each value came from (secrets as ***)',
      responses: { '200': json(arr(ref('ConfigEntry')), 'Entries') },
    },
  },
  '/healthz': {
    get: {
      operationId: 'health',
      summary: 'Liveness: the process answers',
      responses: {
        '200': json(
          obj({ status: str(), version: str(), pid: int(), uptimeSeconds: { type: 'number' } }),
          'Alive',
        ),
      },
    },
  },
  '/readyz': {
    get: {
      operationId: 'ready',
      summary: 'Readiness: the startup reconcile is done and the daemon is not shutting down',
      responses: {
        '200': json(obj({ status: str() }), 'Ready'),
        '503': json(obj({ status: str() }), 'Starting, reloading or draining'),
      },
    },
  },
  '/metrics': {
    get: {
      operationId: 'metrics',
      summary: 'Prometheus metrics',
      responses: {
        '200': {
          description: 'Text exposition format 0.0.4',
          content: { 'text/plain': { schema: { type: 'string' } } },
        },
      },
    },
  },
  '/openapi': {
    get: {
      operationId: 'openapi',
      summary: 'This document',
      responses: { '200': json({ type: 'object' }, 'OpenAPI 3.1') },
    },
  },
};

/** The OpenAPI document. */
export function buildOpenApi(): Json {
  return {
    openapi: '3.1.0',
    info: {
      title: 'tapnet API',
      version: VERSION,
      description:
        'Networking for microVMs. Served by `tapnet serve` on a Unix socket (default /run/tapnet/tapnet.sock, mode 0600; e.g. `curl --unix-socket /run/tapnet/tapnet.sock http://localhost/v1/vms`) and optionally on loopback TCP, where every request needs `Authorization: Bearer <token>`. Errors are `{code, message}` with a stable code.',
    },
    servers: [
      {
        url: 'http://localhost',
        description: 'The Unix socket (any host name) or the loopback TCP listener',
      },
    ],
    security: [{}, { bearerAuth: [] }],
    paths: PATHS,
    components: {
      schemas: SCHEMAS,
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description: 'Required on TCP; not used on the Unix socket',
        },
      },
    },
  };
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) process.stdout.write(`${JSON.stringify(buildOpenApi(), null, 2)}\n`);
