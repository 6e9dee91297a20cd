/**
 * A QEMU microVM launcher on top of tapnet: the worked example for users and the helper of the end-to-end
 * tests, the benchmark and the demo.
 *
 * Direct mode: tapnet's NetworkManager.ensure(vmId, { tap: 'fd' }) gives open TAP queue fds; they are
 * passed to QEMU through spawn's stdio as fds 3, 4, … (`-netdev tap,fd=3`), so QEMU needs no privileges
 * and no access to the namespace the TAP lives in. The launcher keeps its own copies open until QEMU has
 * exited (closing the last fd of a non-persistent TAP deletes the TAP). A persistent TAP can be opened by
 * name instead (`ifname=`), with QEMU started inside the TAP's namespace.
 *
 * CNI mode: the runtime gives a namespace path and the name of the TAP inside it (tc-redirect-tap); QEMU is
 * started inside that namespace and opens the TAP by name.
 *
 * The guest's MAC, `ip=` argument and `-netdev`/`-device` fragment all come from tapnet's renderers;
 * `vhost=on` is rendered only where /dev/vhost-net exists.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { isTapnetError, TapnetError } from '../errors.js';
import { renderKernelIpArg } from '../guest/kernel-ip.js';
import { renderQemuNetArgs, vhostNetAvailable } from '../guest/qemu.js';
import type { GuestNetConfig } from '../guest/types.js';
import { renderGuestConfig } from '../manager/info.js';
import type { NetworkInfo } from '../manager/types.js';
import { openNetns } from '../net/netns.js';
import { closeTapFds } from '../net/tap.js';
import { validateInt, validateVmId } from '../validate.js';
import { resolveAccel } from './accel.js';
import { type GuestFixture, loadGuestFixture } from './fixture.js';
import { hostTscKhz, type QemuAccel, qemuArgv, type VmMachine } from './qemu-args.js';
import { type GuestExecResult, SerialConsole } from './serial.js';

/** How the VM gets its network. */
export type QemuNetwork =
  /**
   * Direct mode, TAP fds from `ensure(vmId, { tap: 'fd' })` (info.tapFds) passed as fds 3, 4, …. The launcher
   * closes them once QEMU has exited (and deletes info.tapFds) unless `closeFds` is false.
   */
  | {
      mode: 'fd';
      info: NetworkInfo;
      /** Close info.tapFds once QEMU has exited (default true). */
      closeFds?: boolean;
    }
  /** A persistent TAP from `ensure(vmId)`, opened by name inside info.netns (the manager's namespace). */
  | { mode: 'name'; info: NetworkInfo }
  /** CNI mode: QEMU runs inside `netns` (a path or a name under /run/netns) and opens `guest.ifname` there. */
  | { mode: 'cni'; netns: string; guest: GuestNetConfig };

export interface QemuVmOptions {
  /** The VM's name (a VM id): QEMU's -name and the guest's `tapnet.name=`. */
  name: string;
  network?: QemuNetwork;
  /** `microvm` (default; virtio-mmio) or `q35` (virtio-net-pci, qboot firmware). */
  machine?: VmMachine;
  /** `auto` (default): KVM only if a KVM guest really boots here (probed once per host boot), else TCG. */
  accel?: QemuAccel | 'auto';
  /** The kernel and initramfs (default: the fixture in .cache/guest, see fixture.ts). */
  fixture?: GuestFixture;
  memoryMiB?: number;
  cpus?: number;
  /** `vhost=on` for the NIC; default: whether /dev/vhost-net exists. */
  vhost?: boolean;
  /** More kernel command-line words. */
  extraKernelArgs?: string[];
  /** The QEMU binary (default `qemu-system-x86_64` from PATH). */
  qemu?: string;
  /** How long to wait for the guest's ready marker (default 60 s). */
  readyTimeoutMs?: number;
  /** Every console line, as it arrives. */
  onConsoleLine?: (line: string) => void;
  /**
   * Run QEMU as this user and group, without capabilities (spawn's setgid/setuid; supplementary groups
   * dropped). With the TAP passed as an fd QEMU needs no privilege at all; it must be able to read the
   * kernel and initramfs.
   */
  runAs?: { uid: number; gid: number };
}

/** How QEMU ended. */
export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** QEMUs this process started and that still run: killed if this process exits first. */
const running = new Set<ChildProcess>();
let exitHook = false;

function track(child: ChildProcess): void {
  if (!exitHook) {
    exitHook = true;
    // QEMU does not stop when its stdin closes: without this, a crashed test or demo leaves VMs running.
    process.on('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
  running.add(child);
  child.on('exit', () => running.delete(child));
}

/** A running QEMU microVM. */
export class QemuVm {
  /** Milliseconds from spawning QEMU to the guest's ready marker (network configured, httpd running). */
  readyMs = Number.NaN;
  private exit: QemuExit | undefined;
  private stderr = '';

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
    /** QEMU's full argv (without the binary). */
    readonly argv: string[],
    readonly accel: QemuAccel,
    readonly machine: VmMachine,
    /** The guest's network as tapnet gave it (undefined in CNI mode and without a NIC). */
    readonly info: NetworkInfo | undefined,
    /** The guest's IPv4 address without prefix, when it has one. */
    readonly ipv4: string | undefined,
    readonly serial: SerialConsole,
    /** Resolves when QEMU has exited and the launcher's TAP fds are closed. */
    readonly exited: Promise<QemuExit>,
  ) {}

  /**
   * Start QEMU and wait until the guest has configured its network and serves HTTP (its ready marker).
   * On failure QEMU is killed, the fds closed (fd mode), and ERR_VMM (QEMU failed or exited), ERR_TIMEOUT
   * or ERR_NOT_FOUND (no fixture, no QEMU) is thrown.
   */
  static async start(o: QemuVmOptions): Promise<QemuVm> {
    const name = validateVmId(o.name);
    const fixture = o.fixture ?? loadGuestFixture();
    const machine = o.machine ?? 'microvm';
    const qemu = o.qemu ?? 'qemu-system-x86_64';
    const accel = await resolveAccel(o.accel ?? 'auto', fixture, qemu);
    const vhost = o.vhost ?? vhostNetAvailable();
    const readyTimeoutMs = validateInt(o.readyTimeoutMs ?? 60_000, 'readyTimeoutMs', 1, 3_600_000);
    const net = renderNetwork(o.network, machine, vhost);
    const tscKhz = hostTscKhz();
    const argv = qemuArgv({
      name,
      kernel: fixture.kernel,
      initrd: fixture.initrd,
      machine,
      accel,
      ...(o.memoryMiB !== undefined ? { memoryMiB: o.memoryMiB } : {}),
      ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
      ...(tscKhz !== undefined ? { tscKhz } : {}),
      ...(net.netArgs ? { netArgs: net.netArgs } : {}),
      ...(net.kernelIpArg ? { kernelIpArg: net.kernelIpArg } : {}),
      ...(o.extraKernelArgs ? { extraKernelArgs: o.extraKernelArgs } : {}),
    });
    const stdio: ('pipe' | number)[] = ['pipe', 'pipe', 'pipe', ...net.fds];
    const ids = o.runAs
      ? {
          uid: validateInt(o.runAs.uid, 'runAs.uid', 0, 0xfffffffe),
          gid: validateInt(o.runAs.gid, 'runAs.gid', 0, 0xfffffffe),
        }
      : {};
    const doSpawn = () => spawn(qemu, argv, { stdio, ...ids });
    let child: ChildProcess;
    if (net.netns) {
      // The child inherits the calling thread's namespace at fork: enter, fork, return (all synchronous).
      const ns = openNetns(net.netns);
      try {
        child = ns.run(doSpawn);
      } finally {
        ns.close();
      }
    } else {
      child = doSpawn();
    }
    track(child);
    const serial = new SerialConsole(child.stdout!, child.stdin!, o.onConsoleLine);
    child.stdin!.on('error', () => {}); // EPIPE once QEMU is gone: exit handling reports it
    let vm: QemuVm | undefined;
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      stderr = (stderr + d).slice(-8192);
      if (vm) vm.stderr = stderr;
    });
    const exited = new Promise<QemuExit>((resolve) => {
      let spawnError: Error | undefined;
      child.on('error', (e) => {
        spawnError = e;
        if (child.pid === undefined) finish(null, null);
      });
      child.on('exit', (code, signal) => finish(code, signal));
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (done) return;
        done = true;
        const why = spawnError
          ? new TapnetError(
              (spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_NOT_FOUND' : 'ERR_VMM',
              `cannot start ${qemu}: ${spawnError.message}`,
              { cause: spawnError },
            )
          : new TapnetError(
              'ERR_VMM',
              `QEMU (${name}) exited (${signal ?? `code ${code}`}): ${lastLine(stderr)}`,
              {
                details: { code, signal, stderr: stderr.slice(-2000) },
              },
            );
        serial.close(why);
        const close = net.closeFds.length ? closeTapFds(net.closeFds) : Promise.resolve();
        // Those fds are closed now: make sure nobody closes the numbers again (they may be reused).
        if (net.closeFds.length && o.network?.mode === 'fd') delete o.network.info.tapFds;
        void close.then(() => {
          if (vm) vm.exit = { code, signal };
          resolve({ code, signal });
        });
      };
    });
    vm = new QemuVm(
      name,
      child,
      argv,
      accel,
      machine,
      o.network && o.network.mode !== 'cni' ? o.network.info : undefined,
      net.ipv4,
      serial,
      exited,
    );
    const t0 = performance.now();
    try {
      await serial.waitForLine(new RegExp(`^${fixture.readyMarker}\\b`), readyTimeoutMs);
      vm.readyMs = performance.now() - t0;
      return vm;
    } catch (e) {
      child.kill('SIGKILL');
      await exited;
      if (isTapnetError(e, 'ERR_TIMEOUT')) {
        throw new TapnetError('ERR_TIMEOUT', `VM ${name} was not ready within ${readyTimeoutMs} ms`, {
          cause: e,
          details: { consoleTail: serial.log().slice(-2000), stderr: stderr.slice(-2000) },
        });
      }
      throw e;
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True until QEMU has exited. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The console text so far. */
  console(): string {
    return this.serial.log();
  }

  /** QEMU's stderr (its last 8 KiB). */
  qemuStderr(): string {
    return this.stderr;
  }

  /** Run a one-line shell command in the guest (busybox sh) and return its status and output. */
  exec(command: string, timeoutMs?: number): Promise<GuestExecResult> {
    return this.serial.exec(command, timeoutMs);
  }

  /** Send QEMU a signal now (SIGKILL by default: the abrupt end a crash test wants). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.running) this.child.kill(signal);
  }

  /** Stop QEMU: SIGTERM, SIGKILL after `graceMs`; resolves once it has exited and the fds are closed. */
  async stop(graceMs = 2000): Promise<QemuExit> {
    if (this.exit) return this.exit;
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

interface RenderedNetwork {
  netArgs?: string[];
  kernelIpArg?: string;
  ipv4?: string;
  /** fds for spawn's stdio slots 3, 4, … */
  fds: number[];
  /** fds the launcher closes after QEMU exits. */
  closeFds: number[];
  /** Namespace to start QEMU in. */
  netns?: string;
}

/** The NIC's QEMU arguments, `ip=`, fds and namespace for each network mode, from tapnet's renderers. */
function renderNetwork(n: QemuNetwork | undefined, machine: VmMachine, vhost: boolean): RenderedNetwork {
  if (!n) return { fds: [], closeFds: [] };
  if (n.mode === 'cni') {
    const guest = { ...n.guest, tapFd: undefined, tapFds: undefined };
    return {
      netArgs: renderQemuNetArgs(guest, { machine, vhost }),
      ...(guest.ipv4 ? { kernelIpArg: renderKernelIpArg(guest), ipv4: stripPrefix(guest.ipv4) } : {}),
      fds: [],
      closeFds: [],
      netns: n.netns,
    };
  }
  const g = renderGuestConfig(n.info, { machine, vhost });
  const base = {
    ...(g.kernelIpArg ? { kernelIpArg: g.kernelIpArg } : {}),
    ...(n.info.ipv4 ? { ipv4: stripPrefix(n.info.ipv4) } : {}),
  };
  if (n.mode === 'name') {
    return {
      ...base,
      netArgs: g.qemu.byName,
      fds: [],
      closeFds: [],
      ...(n.info.netns ? { netns: n.info.netns } : {}),
    };
  }
  const fds = n.info.tapFds ?? [];
  if (fds.length !== n.info.queues) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `VM ${n.info.vmId}: mode 'fd' needs ${n.info.queues} open TAP fd(s) in info.tapFds (ensure with tap: 'fd')`,
    );
  }
  return { ...base, netArgs: g.qemu.byFd, fds, closeFds: n.closeFds === false ? [] : fds };
}

function stripPrefix(a: string): string {
  const i = a.indexOf('/');
  return i < 0 ? a : a.slice(0, i);
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop() ?? '';
}
