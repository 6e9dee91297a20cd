/**
 * QEMU: the `-netdev tap,…` / `-device virtio-net-…` argv fragment for one VM interface (net/tap.c option
 * rules; virtio-net and virtio-pci device properties). QEMU's option syntax splits on ',' (and ',,' escapes
 * one): we never escape, we refuse any value holding a comma. Pure, except vhostNetAvailable() which looks
 * at /dev.
 */
import { statSync } from 'node:fs';
import { invalidArgument } from '../errors.js';
import { assertNoSyntax, type GuestNetConfig, validateGuestNetConfig } from './types.js';

export type QemuMachine = 'microvm' | 'q35' | 'pc';

export interface QemuNetOptions {
  /** `microvm` gets virtio-net-device (virtio-mmio); `q35` and `pc` get virtio-net-pci. */
  machine: QemuMachine;
  /**
   * Add `vhost=on` (in-kernel virtio-net data path). Only when /dev/vhost-net exists: QEMU refuses to start
   * with vhost=on without it. See vhostNetAvailable().
   */
  vhost: boolean;
  /** The netdev id; default 'net0'. QEMU ids: a letter, then letters, digits, '-', '.', '_'. */
  id?: string;
  /** Add `host_mtu=<mtu>` to the device (advertised to the guest via VIRTIO_NET_F_MTU; QEMU ≥ 2.9). */
  advertiseMtu?: boolean;
}

const QEMU_ID_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,127}$/;
const QEMU_SYNTAX = ',';

/**
 * The argv fragment for one interface: `['-netdev', 'tap,…', '-device', 'virtio-net-…,…']`.
 *
 * - TAP given as an fd (`tapFd`): `tap,id=net0,fd=N`. With fd=, QEMU refuses ifname=, script=,
 *   downscript=, vnet_hdr= and queues= (it probes the header support from the fd), so none is rendered.
 * - Multi-queue TAP as fds (`tapFds`): `tap,id=net0,fds=N:M:…`, same restrictions.
 * - TAP by name: `tap,id=net0,ifname=<tap>,script=no,downscript=no[,vnet_hdr=on|off][,queues=N]`.
 * - `vhost=on` only when opts.vhost is true.
 * - Device: `virtio-net-device,netdev=net0,mac=<mac>` (microvm) or `virtio-net-pci,netdev=…,mac=…`
 *   (q35/pc); with N > 1 queues `mq=on`, and on PCI `vectors=2N+2` (one MSI-X vector per queue, plus
 *   config and control).
 *
 * Throws ERR_INVALID_ARGUMENT for any invalid or comma-holding value.
 */
export function renderQemuNetArgs(cfg: GuestNetConfig, opts: QemuNetOptions): string[] {
  const v = validateGuestNetConfig(cfg);
  if (typeof opts !== 'object' || opts === null) throw invalidArgument('QEMU options must be an object');
  if (opts.machine !== 'microvm' && opts.machine !== 'q35' && opts.machine !== 'pc') {
    throw invalidArgument(`QEMU machine ${JSON.stringify(opts.machine)} must be microvm, q35 or pc`);
  }
  if (typeof opts.vhost !== 'boolean') throw invalidArgument('QEMU option vhost must be a boolean');
  const id = opts.id ?? 'net0';
  if (typeof id !== 'string' || !QEMU_ID_RE.test(id)) {
    throw invalidArgument(`QEMU netdev id ${JSON.stringify(id)} must be a letter then A-Z a-z 0-9 - . _`, {
      value: id,
    });
  }
  const netdev = ['tap', `id=${id}`];
  if (v.tapFd !== undefined) {
    if (v.queues > 1) {
      throw invalidArgument(`QEMU takes one fd per queue: pass tapFds (${v.queues} fds) instead of tapFd`);
    }
    netdev.push(`fd=${v.tapFd}`);
  } else if (v.tapFds !== undefined) {
    netdev.push(`fds=${v.tapFds.join(':')}`);
  } else {
    netdev.push(`ifname=${assertNoSyntax(v.ifname, 'TAP name', QEMU_SYNTAX, 'QEMU options')}`);
    netdev.push('script=no', 'downscript=no');
    if (v.vnetHdr !== undefined) netdev.push(`vnet_hdr=${v.vnetHdr ? 'on' : 'off'}`);
    if (v.queues > 1) netdev.push(`queues=${v.queues}`);
  }
  if (opts.vhost) netdev.push('vhost=on');

  const pci = opts.machine !== 'microvm';
  const device = [pci ? 'virtio-net-pci' : 'virtio-net-device', `netdev=${id}`, `mac=${v.mac}`];
  if (v.queues > 1) {
    device.push('mq=on');
    if (pci) device.push(`vectors=${2 * v.queues + 2}`);
  }
  if (opts.advertiseMtu) device.push(`host_mtu=${v.mtu}`);
  return ['-netdev', netdev.join(','), '-device', device.join(',')];
}

/**
 * True when /dev/vhost-net exists and is a character device, i.e. QEMU's `vhost=on` can work (permissions
 * are not checked). Synchronous stat only; `path` is for tests.
 */
export function vhostNetAvailable(path = '/dev/vhost-net'): boolean {
  try {
    return statSync(path).isCharacterDevice();
  } catch {
    return false;
  }
}
