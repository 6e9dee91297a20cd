/**
 * The OpenAPI parts of statistics and the usage export (merged into the document by openapi.ts):
 * GET /v1/vms/{vmId}/stats, GET /v1/stats, GET /v1/usage, DELETE /v1/usage/{vmId}.
 */

import {
  arr,
  error,
  int,
  type Json,
  json,
  nullable,
  obj,
  ref,
  str,
  time,
  VM_ID_SCHEMA,
  vmId,
} from './openapi-build.js';

const mode: Json = { type: 'string', enum: ['direct', 'cni'] };

const counters = obj({ bytes: int(), packets: int(), errors: int(), dropped: int() }, [
  'bytes',
  'packets',
  'errors',
  'dropped',
]);
const drop = obj({ packets: int(), bytes: int() }, ['packets', 'bytes']);
const usageCounters = obj({ bytes: int(), packets: int() }, ['bytes', 'packets']);
const problem = obj({ vmId: str(), network: str(), code: str(), message: str() }, ['code', 'message']);

/** Component schemas. */
export const STATS_SCHEMAS: Record<string, Json> = {
  VmStats: obj(
    {
      vmId: str(),
      network: str(),
      mode,
      tap: str(),
      netns: str('CNI mode: the namespace the TAP lives in'),
      operstate: str('up once a VMM holds the TAP'),
      guestRx: { ...counters, description: 'Received by the guest (transmitted by the TAP)' },
      guestTx: { ...counters, description: 'Sent by the guest (received by the TAP)' },
      policyDrops: nullable(
        obj({ egress: drop, ingress: drop }, ['egress', 'ingress']),
        'Dropped or rejected by this VM’s network policy (egress: from the VM); null in CNI mode, with the "none" firewall, or when the network’s firewall is incomplete',
      ),
      networkDrops: nullable(
        ref('NetworkDrops'),
        'Drops of the VM’s whole network: the firewall counts anti-spoofing and isolation per network, not per VM; null in CNI mode and with the "none" firewall',
      ),
      collectedAt: time(),
    },
    ['vmId', 'network', 'tap', 'operstate', 'guestRx', 'guestTx', 'collectedAt'],
  ),
  NetworkDrops: obj(
    {
      spoof: {
        ...drop,
        description: 'Anti-spoofing: wrong source MAC/IP, rogue RA/DHCP servers, other ethertypes',
      },
      isolate: { ...drop, description: 'Isolation: traffic between this network and other tapnet networks' },
    },
    ['spoof', 'isolate'],
  ),
  StatsReport: obj(
    {
      collectedAt: time(),
      vms: arr(ref('VmStats')),
      networks: arr(
        obj(
          {
            network: str(),
            mode,
            vms: int('VMs of this network in the report'),
            drops: nullable(
              ref('NetworkDrops'),
              'null: no tapnet firewall counters (CNI mode, "none" firewall)',
            ),
          },
          ['network', 'mode', 'vms', 'drops'],
        ),
      ),
      unregisteredDrops: nullable(
        drop,
        'Frames from TAPs with a tapnet prefix that belong to no VM, dropped',
      ),
      problems: { ...arr(problem), description: 'What could not be read (e.g. a VM whose TAP is gone)' },
    },
    ['collectedAt', 'vms', 'networks', 'unregisteredDrops', 'problems'],
  ),
  UsageEntry: obj(
    {
      vmId: str(),
      network: str(),
      mode,
      state: {
        type: 'string',
        enum: ['active', 'released'],
        description: 'released: final totals, kept until collected',
      },
      guestRx: {
        ...usageCounters,
        description: 'Received by the guest since tapnet first saw it, across TAP re-creations',
      },
      guestTx: { ...usageCounters, description: 'Sent by the guest since tapnet first saw it' },
      resets: int('Counter resets folded in (re-created TAPs, reboots)'),
      firstSeenAt: time(),
      lastChangeAt: time('When the totals last grew'),
      releasedAt: time(),
    },
    ['vmId', 'network', 'mode', 'state', 'guestRx', 'guestTx', 'resets', 'firstSeenAt', 'lastChangeAt'],
  ),
  UsageReport: obj({ sampledAt: time(), vms: arr(ref('UsageEntry')), problems: arr(problem) }, [
    'sampledAt',
    'vms',
    'problems',
  ]),
};

/** Paths. */
export const STATS_PATHS: Record<string, Json> = {
  '/v1/vms/{vmId}/stats': {
    parameters: [vmId],
    get: {
      operationId: 'vmStats',
      summary: 'Traffic counters of the VM’s TAP, its policy drops and its network’s drops',
      responses: {
        '200': json(ref('VmStats'), 'Counters'),
        '404': error('No such VM, or its TAP is gone'),
        '400': error('Invalid vmId or body'),
      },
    },
  },
  '/v1/stats': {
    get: {
      operationId: 'stats',
      summary:
        'Traffic counters of every VM (or of the `vm`s named), their policy drops and their networks’ drops',
      parameters: [
        {
          name: 'vm',
          in: 'query',
          required: false,
          description: 'Only these VMs (repeat: ?vm=a&vm=b); unknown ones are listed in problems',
          schema: arr(VM_ID_SCHEMA),
          style: 'form',
          explode: true,
        },
      ],
      responses: { '200': json(ref('StatsReport'), 'Counters'), '400': error('Invalid vm') },
    },
  },
  '/v1/usage': {
    get: {
      operationId: 'usage',
      summary:
        'Cumulative bytes and packets per VM that survive TAP re-creations; samples the counters first (docs/USAGE.md)',
      parameters: [
        {
          name: 'since',
          in: 'query',
          required: false,
          description:
            'Only VMs whose totals grew, or that were released, at or after this time: ISO 8601 (2024-05-01T12:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)',
          schema: { type: 'string' },
        },
      ],
      responses: { '200': json(ref('UsageReport'), 'Usage'), '400': error('Malformed since') },
    },
  },
  '/v1/usage/{vmId}': {
    parameters: [vmId],
    delete: {
      operationId: 'collectUsage',
      summary: 'Hand over a released VM’s final totals and forget them (once you have stored them)',
      responses: {
        '200': json(ref('UsageEntry'), 'The final totals, now forgotten'),
        '400': error('Invalid vmId'),
        '404': error('No usage recorded for the VM'),
        '409': error('The VM still has a network: its totals keep growing'),
      },
    },
  },
};
