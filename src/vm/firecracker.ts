/**
 * A complete Firecracker VM configuration for a VM that tapnet networks: the JSON for
 * `firecracker --no-api --config-file vm.json` (boot-source with tapnet's kernel `ip=`, drives,
 * machine-config, network-interfaces with rate limiters from tapnet's renderer), checked against
 * Firecracker's published API schema (vendored in firecracker-api.ts).
 *
 * Firecracker opens the TAP itself, by name, in the namespace it runs in: give the VM a persistent TAP
 * (`ensure(vmId)`, the default) and start Firecracker in `info.netns` (the jailer's `--netns`) when tapnet
 * manages another namespace. It cannot take a TAP fd and has one queue pair per interface.
 */
import { invalidArgument, TapnetError } from '../errors.js';
import { renderFirecrackerNetworkInterface } from '../guest/firecracker.js';
import { renderKernelIpArg } from '../guest/kernel-ip.js';
import type { GuestNetConfig, GuestRateLimit } from '../guest/types.js';
import type { NetworkInfo } from '../manager/types.js';
import { validateInt, validateVmId } from '../validate.js';
import { FIRECRACKER_API_VERSION, FIRECRACKER_DEFINITIONS } from './firecracker-api.js';
import { type SchemaViolation, validateSwagger } from './swagger.js';

export interface FirecrackerVmOptions {
  /** The VM's network from NetworkManager.ensure() (persistent TAP). */
  info: NetworkInfo;
  /** Uncompressed kernel (vmlinux) on the host. */
  kernel: string;
  initrd?: string;
  /** Root file system image; without it the VM runs from its initrd. */
  rootfs?: string;
  rootReadOnly?: boolean;
  vcpus?: number;
  memoryMiB?: number;
  /** Bandwidth limits per direction (rx = to the guest), rendered by tapnet's Firecracker renderer. */
  rateLimit?: GuestRateLimit;
  /** Send `mtu` in the interface (Firecracker versions whose API has it); default false. */
  advertiseMtu?: boolean;
  /** Kernel command-line words before tapnet's `ip=` (default: serial console, no reboot, no PCI). */
  bootArgs?: string[];
  /** Extra words after `ip=` (e.g. `tapnet.name=vm1` for tapnet's guest fixture). */
  extraBootArgs?: string[];
  /** Guest-side interface id; default `eth0`. */
  ifaceId?: string;
}

/** The `--config-file` document (the subset tapnet writes; see FullVmConfiguration in the schema). */
export interface FirecrackerVmConfig {
  'boot-source': { kernel_image_path: string; boot_args: string; initrd_path?: string };
  drives: { drive_id: string; path_on_host: string; is_root_device: boolean; is_read_only: boolean }[];
  'machine-config': { vcpu_count: number; mem_size_mib: number; smt: boolean };
  'network-interfaces': Record<string, unknown>[];
}

/** Firecracker's usual kernel arguments: serial console, reboot via keyboard controller, panic → exit, no PCI. */
export const FIRECRACKER_DEFAULT_BOOT_ARGS = ['console=ttyS0', 'reboot=k', 'panic=1', 'pci=off'];

const WORD_RE = /^[\x21-\x7e]+$/;

function words(list: readonly string[], what: string): string[] {
  return list.map((w) => {
    if (typeof w !== 'string' || !WORD_RE.test(w) || w.includes('"')) {
      throw invalidArgument(`${what} ${JSON.stringify(w)} must be printable ASCII without blanks or quotes`, {
        value: w,
      });
    }
    return w;
  });
}

function hostPath(p: unknown, what: string): string {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0')) {
    throw invalidArgument(`${what} ${JSON.stringify(p)} must be an absolute path`, { value: p });
  }
  return p;
}

/** The renderers' input for a VM's network (what NetworkInfo says, plus optional rate limits). */
export function guestNetConfigOf(info: NetworkInfo, rateLimit?: GuestRateLimit): GuestNetConfig {
  return {
    vmId: info.vmId,
    ifname: info.tap,
    mac: info.mac,
    dns: info.dns,
    mtu: info.mtu,
    queues: info.queues,
    vnetHdr: info.vnetHdr,
    ...(info.ipv4 ? { ipv4: info.ipv4 } : {}),
    ...(info.gateway4 ? { gateway4: info.gateway4 } : {}),
    ...(info.ipv6 ? { ipv6: info.ipv6 } : {}),
    ...(info.gateway6 ? { gateway6: info.gateway6 } : {}),
    ...(rateLimit ? { rateLimit } : {}),
  };
}

/**
 * Build the configuration and check it against Firecracker's schema. Throws ERR_INVALID_ARGUMENT for bad
 * options, a TAP handed out as fds (Firecracker opens it by name) or a schema violation (details.violations).
 */
export function renderFirecrackerVmConfig(o: FirecrackerVmOptions): FirecrackerVmConfig {
  const info = o.info;
  validateVmId(info?.vmId);
  if (info.tapMode === 'fd') {
    throw invalidArgument(
      `VM ${info.vmId}: Firecracker opens its TAP by name; ensure it with tap: 'persistent'`,
    );
  }
  const cfg = guestNetConfigOf(info, o.rateLimit);
  const iface = renderFirecrackerNetworkInterface(cfg, {
    ifaceId: o.ifaceId ?? 'eth0',
    advertiseMtu: o.advertiseMtu ?? false,
  });
  const bootArgs = [
    ...words(o.bootArgs ?? FIRECRACKER_DEFAULT_BOOT_ARGS, 'boot argument'),
    ...(info.ipv4 ? [renderKernelIpArg(cfg)] : []),
    ...words(o.extraBootArgs ?? [], 'boot argument'),
  ];
  const config: FirecrackerVmConfig = {
    'boot-source': {
      kernel_image_path: hostPath(o.kernel, 'kernel'),
      boot_args: bootArgs.join(' '),
      ...(o.initrd !== undefined ? { initrd_path: hostPath(o.initrd, 'initrd') } : {}),
    },
    drives: o.rootfs
      ? [
          {
            drive_id: 'rootfs',
            path_on_host: hostPath(o.rootfs, 'rootfs'),
            is_root_device: true,
            is_read_only: o.rootReadOnly ?? false,
          },
        ]
      : [],
    'machine-config': {
      vcpu_count: validateInt(o.vcpus ?? 1, 'vcpus', 1, 32),
      mem_size_mib: validateInt(o.memoryMiB ?? 256, 'memoryMiB', 16, 1 << 20),
      smt: false,
    },
    'network-interfaces': [iface as unknown as Record<string, unknown>],
  };
  assertValidFirecrackerConfig(config);
  return config;
}

/** Every way `config` breaks Firecracker's FullVmConfiguration schema (empty when valid). */
export function validateFirecrackerConfig(config: unknown): SchemaViolation[] {
  const out = validateSwagger(config, { $ref: '#/definitions/FullVmConfiguration' }, FIRECRACKER_DEFINITIONS);
  // Firecracker's own checks beyond the schema: 1 or an even number of vCPUs; unique ids.
  const c = config as Partial<FirecrackerVmConfig> | undefined;
  const vcpus = c?.['machine-config']?.vcpu_count;
  if (typeof vcpus === 'number' && vcpus > 1 && vcpus % 2 === 1) {
    out.push({ path: '$.machine-config.vcpu_count', message: 'must be 1 or an even number' });
  }
  for (const [key, id] of [
    ['network-interfaces', 'iface_id'],
    ['drives', 'drive_id'],
  ] as const) {
    const list = (c as Record<string, unknown> | undefined)?.[key];
    if (!Array.isArray(list)) continue;
    const ids = list.map((x) => (x as Record<string, unknown>)?.[id]);
    ids.forEach((v, i) => {
      if (ids.indexOf(v) !== i)
        out.push({ path: `$.${key}[${i}].${id}`, message: `duplicate ${id} ${JSON.stringify(v)}` });
    });
  }
  return out;
}

/** Throw ERR_INVALID_ARGUMENT listing every violation when `config` is not a valid Firecracker config. */
export function assertValidFirecrackerConfig(config: unknown): void {
  const violations = validateFirecrackerConfig(config);
  if (violations.length === 0) return;
  throw new TapnetError(
    'ERR_INVALID_ARGUMENT',
    `not a valid Firecracker ${FIRECRACKER_API_VERSION} configuration: ${violations.map((v) => `${v.path} ${v.message}`).join('; ')}`,
    { details: { violations } },
  );
}

/** The argv to boot it: `firecracker --no-api --config-file <path>` (run it in info.netns, if any). */
export function firecrackerArgv(configPath: string, binary = 'firecracker'): string[] {
  return [binary, '--no-api', '--config-file', hostPath(configPath, 'config path')];
}
