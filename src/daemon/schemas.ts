/**
 * The API's request bodies as zod schemas: the daemon validates with them, and the OpenAPI document
 * (openapi.ts) is generated from them, so the two cannot drift apart. Syntax of addresses and names is
 * checked again by the manager (ERR_INVALID_ARGUMENT → 400 as well).
 */
import { z } from 'zod';

const rateSchema = z
  .object({
    rateBps: z.number().int().min(1).max(1e12).describe('bytes per second'),
    burstBytes: z
      .number()
      .int()
      .min(1)
      .max(1e12)
      .describe('bucket size in bytes (default: 1/10 s worth, at least one MTU)')
      .optional(),
  })
  .strict();

const bandwidthSchema = z
  .object({
    rx: rateSchema.describe('to the guest').optional(),
    tx: rateSchema.describe('from the guest').optional(),
  })
  .strict()
  .describe('Bandwidth limits');

export const ensureBodySchema = z
  .object({
    network: z
      .string()
      .min(1)
      .max(63)
      .describe('Network name (default: the configured default network)')
      .optional(),
    ipv4: z
      .string()
      .min(1)
      .max(64)
      .describe('Static IPv4 address, with or without /prefix, instead of the next free one')
      .optional(),
    ipv6: z.string().min(1).max(64).describe('Static IPv6 address').optional(),
    mac: z
      .string()
      .min(1)
      .max(17)
      .describe('Guest MAC (default: derived from the network and VM id)')
      .optional(),
    tap: z
      .enum(['persistent', 'fd'])
      .describe(
        'persistent (default for PUT): a TAP the VMM opens by name. fd: a TAP that lives as long as its fds — only with POST /v1/vms/{vmId}/tap-fd, which hands the fds over (SCM_RIGHTS)',
      )
      .optional(),
    tapUid: z
      .number()
      .int()
      .min(0)
      .max(4294967294)
      .describe('Owner uid of a persistent TAP (non-root VMMs, jailers)')
      .optional(),
    tapGid: z.number().int().min(0).max(4294967294).describe('Owner gid of a persistent TAP').optional(),
    queues: z
      .number()
      .int()
      .min(1)
      .max(256)
      .describe('TAP queues (multi-queue virtio-net); default 1')
      .optional(),
    vnetHdr: z.boolean().describe('virtio-net header on the TAP (default true)').optional(),
    policy: z
      .record(z.string(), z.unknown())
      .describe('The VM’s firewall policy (docs/POLICY.md); validated field by field, errors name the field')
      .optional(),
    bandwidth: bandwidthSchema.optional(),
    vmm: z
      .enum(['qemu', 'firecracker', 'cloud-hypervisor'])
      .describe('Where limits go: tc on the TAP (qemu, cloud-hypervisor) or Firecracker’s rate limiters')
      .optional(),
  })
  .strict()
  .describe('What a VM needs: every field is optional');

/** PUT /v1/vms/{vmId}/policy: a policy document (validated by the policy parser). */
export const policyBodySchema = z
  .record(z.string(), z.unknown())
  .describe('A policy document (docs/POLICY.md)');

export type EnsureBody = z.output<typeof ensureBodySchema>;
