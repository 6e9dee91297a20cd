/**
 * The OpenAPI part of per-VM policies (merged into the document by openapi.ts):
 * GET, PUT and DELETE /v1/vms/{vmId}/policy.
 */

import { error, type Json, json, ref, vmId } from './openapi-build.js';

const rule: Json = {
  type: 'object',
  properties: {
    direction: { type: 'string', enum: ['ingress', 'egress'] },
    protocol: { type: 'string', enum: ['tcp', 'udp', 'icmp', 'icmpv6', 'any'] },
    ports: {
      type: 'array',
      items: { oneOf: [{ type: 'integer' }, { type: 'string', description: 'a range, "1000-2000"' }] },
    },
    peers: { type: 'array', items: { type: 'string', description: 'a CIDR, vm:<id> or network:<name>' } },
    action: { type: 'string', enum: ['allow', 'deny', 'reject'] },
    priority: { type: 'integer' },
  },
  required: ['direction', 'action'],
};

/** Component schemas. */
export const POLICY_SCHEMAS: Record<string, Json> = {
  Policy: {
    type: 'object',
    description: 'A VM firewall policy (docs/POLICY.md); every field is checked and errors name it',
    properties: {
      default: { type: 'string', enum: ['allow', 'deny'] },
      rules: { type: 'array', items: rule },
    },
  },
};

/** Paths. */
export const POLICY_PATHS: Record<string, Json> = {
  '/v1/vms/{vmId}/policy': {
    parameters: [vmId],
    get: {
      operationId: 'getPolicy',
      summary: 'The VM’s own policy ({} when it has none)',
      responses: {
        '200': json({ type: 'object', properties: { policy: ref('Policy') } }, 'The policy'),
        '400': error('Invalid vmId'),
        '404': error('No such VM'),
      },
    },
    put: {
      operationId: 'setPolicy',
      summary: 'Set the VM’s policy, live (established flows that stay allowed keep going)',
      requestBody: { required: true, content: { 'application/json': { schema: ref('Policy') } } },
      responses: {
        '200': json(ref('NetworkInfo'), 'The VM’s network with its policy'),
        '400': error('Invalid policy (the message names the field)'),
        '404': error('No such VM'),
      },
    },
    delete: {
      operationId: 'removePolicy',
      summary: 'Remove the VM’s own policy (its network’s default policy stays)',
      responses: {
        '200': json(ref('NetworkInfo'), 'The VM’s network'),
        '400': error('Invalid vmId'),
        '404': error('No such VM'),
      },
    },
  },
};
