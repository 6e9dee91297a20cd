/**
 * Guest renderers: a VM interface's network configuration as the guest kernel (`ip=`), Firecracker,
 * QEMU, Cloud Hypervisor and cloud-init want it. Pure functions over GuestNetConfig; re-exports only.
 */
export {
  type CloudHypervisorNetOptions,
  renderCloudHypervisorNet,
} from './cloud-hypervisor.js';
export {
  type CloudInitEthernet,
  type CloudInitNetworkConfig,
  type CloudInitNetworkConfigV2,
  type CloudInitOptions,
  type CloudInitRoute,
  renderCloudInitNetworkConfig,
  toYaml,
  yamlQuote,
} from './cloud-init.js';
export {
  type FirecrackerNetOptions,
  type FirecrackerNetworkInterface,
  type FirecrackerRateLimiter,
  type FirecrackerTokenBucket,
  firecrackerNetworkInterfacePath,
  MIN_REFILL_MS,
  renderFirecrackerBootArgs,
  renderFirecrackerNetworkInterface,
  toFirecrackerRateLimiter,
  toVmmTokenBucket,
} from './firecracker.js';
export { type KernelIpConfig, parseKernelIpArg, renderKernelIpArg } from './kernel-ip.js';
export { type QemuMachine, type QemuNetOptions, renderQemuNetArgs, vhostNetAvailable } from './qemu.js';
export {
  assertNoSyntax,
  type GuestAddress,
  type GuestNetConfig,
  type GuestRateLimit,
  MAX_DNS,
  MAX_QUEUES,
  MAX_RATE,
  type TokenBucketSpec,
  type ValidGuestNetConfig,
  validateGuestNetConfig,
  validateHostname,
} from './types.js';
