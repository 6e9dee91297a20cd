/**
 * QEMU's command line for a tapnet microVM, as data: machine, accelerator, direct kernel boot of an
 * uncompressed kernel and initramfs, serial console on stdio, and the network fragment from tapnet's
 * renderers. Pure, except hostTscKhz() which reads /proc/cpuinfo.
 */
import { readFileSync } from 'node:fs';
import { invalidArgument } from '../errors.js';
import { validateInt, validateVmId } from '../validate.js';

/** `microvm`: virtio-mmio devices announced through ACPI, no PCI, fastest boot. `q35`: PCI (virtio-net-pci). */
export type VmMachine = 'microvm' | 'q35';
/** `tcg`: QEMU's emulator, works everywhere. `kvm`: only where a real KVM boots a guest (see accel.ts). */
export type QemuAccel = 'tcg' | 'kvm';

/** Where Debian's qemu-system-data keeps qboot, the minimal firmware used with q35. */
export const QBOOT_ROM = '/usr/share/qemu/qboot.rom';

export interface QemuCommandOptions {
  /** The VM's name: QEMU's `-name` and the guest's `tapnet.name=` (its web page says it). A VM id. */
  name: string;
  kernel: string;
  initrd: string;
  machine: VmMachine;
  accel: QemuAccel;
  /** Guest memory, MiB (default 256). */
  memoryMiB?: number;
  /** vCPUs (default 1). */
  cpus?: number;
  /** The `-netdev …`/`-device …` fragment (renderGuestConfig(...).qemu.byFd / byName); none: no NIC. */
  netArgs?: string[];
  /** The kernel `ip=` argument from renderGuestConfig(...).kernelIpArg. */
  kernelIpArg?: string;
  /** Host TSC frequency in kHz, for `tsc_early_khz=` under TCG (the guest cannot calibrate without HPET/PM timer). */
  tscKhz?: number;
  /** More kernel command-line words (each printable ASCII without blanks or quotes). */
  extraKernelArgs?: string[];
  /** Firmware for q35 (default qboot); ignored for microvm. */
  bios?: string;
}

const KERNEL_WORD_RE = /^[\x21-\x7e]+$/;

function kernelWord(w: unknown, what: string): string {
  if (typeof w !== 'string' || !KERNEL_WORD_RE.test(w) || w.includes('"')) {
    throw invalidArgument(`${what} ${JSON.stringify(w)} must be printable ASCII without blanks or quotes`, {
      value: w,
    });
  }
  return w;
}

function pathArg(p: unknown, what: string): string {
  if (typeof p !== 'string' || p === '' || p.includes(',') || p.includes('\0')) {
    throw invalidArgument(`${what} ${JSON.stringify(p)} must be a path without commas`, { value: p });
  }
  return p;
}

/**
 * The guest kernel's command line: serial console, quiet, no reboot loop on panic, no crypto self-tests
 * (0.2–0.4 s under TCG), `tsc_early_khz=… tsc=reliable` under TCG, `tapnet.name=`, then `ip=` and extras.
 */
export function qemuKernelCmdline(o: QemuCommandOptions): string {
  const words = ['console=ttyS0', 'quiet', 'panic=-1', 'cryptomgr.notests', 'rdinit=/init'];
  if (o.accel === 'tcg' && o.tscKhz !== undefined) {
    words.push(`tsc_early_khz=${validateInt(o.tscKhz, 'tscKhz', 1000, 100_000_000)}`, 'tsc=reliable');
  }
  if (o.machine === 'microvm') words.push('pci=off');
  words.push(`tapnet.name=${validateVmId(o.name)}`);
  if (o.kernelIpArg !== undefined) words.push(kernelWord(o.kernelIpArg, 'kernel ip= argument'));
  for (const w of o.extraKernelArgs ?? []) words.push(kernelWord(w, 'kernel argument'));
  return words.join(' ');
}

/**
 * QEMU's argv (without the binary). Devices: only the serial console (stdio: stdin carries commands, stdout
 * the console) and the NIC; no display, no default devices, no user config; `-no-reboot` so a guest panic
 * ends QEMU. Throws ERR_INVALID_ARGUMENT for bad values.
 */
export function qemuArgv(o: QemuCommandOptions): string[] {
  if (o.machine !== 'microvm' && o.machine !== 'q35') {
    throw invalidArgument(`machine ${JSON.stringify(o.machine)} must be microvm or q35`);
  }
  if (o.accel !== 'tcg' && o.accel !== 'kvm')
    throw invalidArgument(`accel ${JSON.stringify(o.accel)} must be tcg or kvm`);
  const mem = validateInt(o.memoryMiB ?? 256, 'memoryMiB', 64, 65536);
  const cpus = validateInt(o.cpus ?? 1, 'cpus', 1, 64);
  const argv = [
    '-name',
    validateVmId(o.name),
    // microvm keeps ACPI on: its virtio-mmio devices are announced through ACPI.
    '-M',
    o.machine === 'microvm' ? 'microvm' : 'q35',
    '-accel',
    o.accel,
    ...(o.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m',
    `${mem}M`,
    '-smp',
    String(cpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-serial',
    'stdio',
    ...(o.machine === 'q35' ? ['-bios', pathArg(o.bios ?? QBOOT_ROM, 'bios')] : []),
    '-kernel',
    pathArg(o.kernel, 'kernel'),
    '-initrd',
    pathArg(o.initrd, 'initrd'),
    '-append',
    qemuKernelCmdline(o),
  ];
  if (o.netArgs) {
    if (!Array.isArray(o.netArgs) || o.netArgs.some((a) => typeof a !== 'string')) {
      throw invalidArgument('netArgs must be an array of strings');
    }
    argv.push(...o.netArgs);
  }
  return argv;
}

let cachedKhz: number | undefined | null = null;

/** The host CPU's clock in kHz from /proc/cpuinfo (`cpu MHz` × 1000), or undefined when not shown. */
export function hostTscKhz(): number | undefined {
  if (cachedKhz !== null) return cachedKhz;
  try {
    const m = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    cachedKhz = m ? Math.round(Number(m[1]) * 1000) : undefined;
  } catch {
    cachedKhz = undefined;
  }
  return cachedKhz;
}
