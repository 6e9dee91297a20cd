/**
 * Host checks for `tapnet doctor` that need no manager: privileges, kernel modules, /dev/net/tun,
 * /dev/kvm, CNI plugin directories, and a DNS probe. Each returns a DoctorCheck with the fix.
 */
import { accessSync, constants, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { TapnetError, toTapnetError } from '../errors.js';
import { ipToBytes, parseIp } from '../ip.js';
import * as libc from '../sys/libc.js';
import { withNetns } from '../sys/ns.js';
import { connect, sockaddrInet } from '../sys/scm.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'info';

export interface DoctorCheck {
  /** Stable id, e.g. `module.tun`, `network.vms.bridge`. */
  id: string;
  status: CheckStatus;
  /** What was checked and what was found. */
  message: string;
  /** What to do when it is not ok. */
  fix?: string;
}

/** Where the host files are (tests point these elsewhere). */
export interface HostPaths {
  proc: string;
  sys: string;
  dev: string;
  modules: string;
}

export const HOST_PATHS: HostPaths = {
  proc: '/proc',
  sys: '/sys',
  dev: '/dev',
  modules: `/lib/modules/${release()}`,
};

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;

/** Effective capabilities: CAP_NET_ADMIN and CAP_SYS_ADMIN are what tapnet needs. */
export function checkPrivileges(p: HostPaths = HOST_PATHS): DoctorCheck {
  let eff = 0n;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`${p.proc}/self/status`, 'utf8'));
    eff = m ? BigInt(`0x${m[1]}`) : 0n;
  } catch {}
  const missing = [
    [CAP_NET_ADMIN, 'CAP_NET_ADMIN'],
    [CAP_SYS_ADMIN, 'CAP_SYS_ADMIN'],
  ]
    .filter(([bit]) => ((eff >> (bit as bigint)) & 1n) === 0n)
    .map(([, name]) => name as string);
  if (!missing.length)
    return { id: 'privileges', status: 'ok', message: 'CAP_NET_ADMIN and CAP_SYS_ADMIN are effective' };
  return {
    id: 'privileges',
    status: 'fail',
    message: `missing ${missing.join(' and ')}`,
    fix: 'run as root, or under systemd with AmbientCapabilities=CAP_NET_ADMIN CAP_SYS_ADMIN (packaging/systemd/tapnet.service)',
  };
}

type ModuleState = 'loaded' | 'builtin' | 'available' | 'missing';

/** Is a kernel module loaded (/proc/modules, /sys/module), built in (modules.builtin) or installable (modules.dep)? */
export function moduleState(name: string, p: HostPaths = HOST_PATHS): ModuleState {
  const read = (f: string): string => {
    try {
      return readFileSync(f, 'utf8');
    } catch {
      return '';
    }
  };
  if (
    read(`${p.proc}/modules`)
      .split('\n')
      .some((l) => l.split(' ')[0] === name)
  )
    return 'loaded';
  const file = new RegExp(`/${name.replace(/_/g, '[-_]')}\\.ko(\\.[a-z]+)?(:|$)`, 'm');
  if (file.test(read(`${p.modules}/modules.builtin`))) return 'builtin';
  if (existsSync(`${p.sys}/module/${name}`)) return 'loaded';
  if (file.test(read(`${p.modules}/modules.dep`))) return 'available';
  return 'missing';
}

const MODULE_ROLE: Record<string, { role: string; required: boolean }> = {
  tun: { role: 'TAP devices', required: true },
  bridge: { role: 'bridge networks', required: true },
  vhost_net: {
    role: 'vhost-net (QEMU/Cloud Hypervisor offload, about twice the throughput)',
    required: false,
  },
  nf_tables: { role: 'NAT and anti-spoofing (nftables)', required: true },
};

/** What a module gives, seen working (e.g. /dev/net/tun opens): a module without a file is then built in. */
export type ModuleEvidence = Partial<Record<'tun' | 'bridge' | 'vhost_net' | 'nf_tables', boolean>>;

/**
 * One check per kernel module tapnet relies on. `nftablesRequired` false when the firewall is `none`.
 * Kernels without module metadata (no /lib/modules/<release>, common in VMs and custom kernels) cannot
 * tell built in from missing: `evidence` of the feature working then decides.
 */
export function checkModules(
  nftablesRequired: boolean,
  evidence: ModuleEvidence = {},
  p: HostPaths = HOST_PATHS,
): DoctorCheck[] {
  const metadata = existsSync(p.modules);
  return Object.entries(MODULE_ROLE).map(([name, { role, required }]): DoctorCheck => {
    const state = moduleState(name, p);
    const id = `module.${name}`;
    if (state === 'loaded' || state === 'builtin')
      return { id, status: 'ok', message: `${name} is ${state} (${role})` };
    if (state === 'available') {
      return {
        id,
        status: 'ok',
        message: `${name} is installed, not loaded yet; the kernel loads it on first use (${role})`,
      };
    }
    if (evidence[name as keyof ModuleEvidence]) {
      return {
        id,
        status: 'ok',
        message: `${name} works (built in: no module file${metadata ? '' : `, no ${p.modules}`}) (${role})`,
      };
    }
    const needed = required && (name !== 'nf_tables' || nftablesRequired);
    const fix = `install the kernel's modules package, then: modprobe ${name} && echo ${name} >> /etc/modules-load.d/tapnet.conf`;
    if (!metadata) {
      return {
        id,
        status: needed ? 'warn' : 'info',
        message: `${name}: cannot tell whether it is built in (no ${p.modules}) (${role})`,
        fix,
      };
    }
    return {
      id,
      status: needed ? 'fail' : 'warn',
      message: `${name} is neither loaded, built in nor installed (${role})`,
      fix,
    };
  });
}

/** /dev/net/tun exists, is the TUN character device (10, 200) and opens read-write. */
export function checkTun(p: HostPaths = HOST_PATHS): DoctorCheck {
  const path = `${p.dev}/net/tun`;
  const fix =
    'modprobe tun; if the node is missing: mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun';
  if (!existsSync(path)) return { id: 'dev.tun', status: 'fail', message: `${path} does not exist`, fix };
  const st = statSync(path);
  const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
  const minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
  if (!st.isCharacterDevice() || major !== 10 || minor !== 200) {
    return {
      id: 'dev.tun',
      status: 'fail',
      message: `${path} is not the TUN device (expected char 10:200)`,
      fix,
    };
  }
  try {
    libc.close(libc.open(path, libc.O_RDWR | libc.O_CLOEXEC));
  } catch (e) {
    return {
      id: 'dev.tun',
      status: 'fail',
      message: `${path} cannot be opened: ${toTapnetError(e).message}`,
      fix: 'run tapnet as root (or with CAP_NET_ADMIN)',
    };
  }
  return { id: 'dev.tun', status: 'ok', message: `${path} opens read-write` };
}

const KVM_GET_API_VERSION = 0xae00;

/**
 * /dev/kvm: present, opens read-write and answers KVM_GET_API_VERSION (12). The node existing proves
 * nothing (containers and VMs without nested virtualisation often have a dead one). tapnet itself does
 * not need KVM, so problems are warnings.
 */
export function checkKvm(p: HostPaths = HOST_PATHS): DoctorCheck {
  const path = `${p.dev}/kvm`;
  if (!existsSync(path)) {
    return {
      id: 'dev.kvm',
      status: 'warn',
      message: `${path} does not exist: microVMs cannot use hardware virtualisation here`,
      fix: 'enable VT-x/AMD-V in firmware (or nested virtualisation for a VM), then modprobe kvm_intel or kvm_amd',
    };
  }
  let fd: number | undefined;
  try {
    fd = libc.open(path, libc.O_RDWR | libc.O_CLOEXEC);
    const v = libc.ioctlInt(fd, KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
    if (v !== 12)
      return {
        id: 'dev.kvm',
        status: 'warn',
        message: `${path} answers KVM API version ${v}, not 12`,
        fix: 'update the kernel or the VMM',
      };
    return { id: 'dev.kvm', status: 'ok', message: `${path} opens and answers KVM_GET_API_VERSION = 12` };
  } catch (e) {
    const t = toTapnetError(e);
    const perm = t.code === 'ERR_PERMISSION_DENIED';
    return {
      id: 'dev.kvm',
      status: 'warn',
      message: `${path} exists but ${perm ? 'cannot be opened' : 'does not answer'}: ${t.message}`,
      fix: perm
        ? 'add the VMM user to the kvm group'
        : 'the kvm module is not working: check dmesg for kvm errors',
    };
  } finally {
    if (fd !== undefined) libc.close(fd);
  }
}

export const CNI_BIN_DIRS: readonly string[] = ['/opt/cni/bin', '/usr/lib/cni', '/usr/libexec/cni'];
export const CNI_CONF_DIR = '/etc/cni/net.d';

/** CNI plugins (bridge, host-local, loopback) and the configuration directory. `required` in CNI mode. */
export function checkCni(
  required: boolean,
  binDirs: readonly string[] = CNI_BIN_DIRS,
  confDir = CNI_CONF_DIR,
): DoctorCheck[] {
  const missing: CheckStatus = required ? 'fail' : 'info';
  const want = ['bridge', 'host-local', 'loopback'];
  const found = binDirs.filter((d) => existsSync(d));
  const plugins = new Set(found.flatMap((d) => readdirSync(d)));
  const out: DoctorCheck[] = [];
  if (!found.length) {
    out.push({
      id: 'cni.plugins',
      status: missing,
      message: `no CNI plugin directory (${binDirs.join(', ')})`,
      fix: 'install containernetworking-plugins (only needed in CNI mode)',
    });
  } else {
    const lack = want.filter((p) => !plugins.has(p));
    out.push({
      id: 'cni.plugins',
      status: lack.length ? missing : 'ok',
      message: lack.length
        ? `${found.join(', ')} lacks ${lack.join(', ')}`
        : `${want.join(', ')} found in ${found.join(', ')}`,
      ...(lack.length ? { fix: 'install containernetworking-plugins (only needed in CNI mode)' } : {}),
    });
  }
  let confs: string[] = [];
  try {
    accessSync(confDir, constants.R_OK);
    confs = readdirSync(confDir).filter((f) => /\.(conf|conflist|json)$/.test(f));
  } catch {}
  out.push(
    existsSync(confDir)
      ? { id: 'cni.conf', status: 'ok', message: `${confDir} holds ${confs.length} network configuration(s)` }
      : {
          id: 'cni.conf',
          status: missing,
          message: `${confDir} does not exist`,
          fix: `mkdir -p ${confDir} (only needed in CNI mode)`,
        },
  );
  return out;
}

/** What a DNS probe found. */
export type DnsProbe = 'answered' | 'refused' | 'unreachable' | 'timeout';

/**
 * Send one DNS query (`. NS`, recursion desired) to `server`:53 from the namespace behind `nsFd` (the
 * managed namespace: where guests' traffic is NATed from) and wait up to `timeoutMs` for any answer.
 */
export async function probeDns(
  server: string,
  nsFd: number | undefined,
  timeoutMs = 1500,
): Promise<DnsProbe> {
  const ip = parseIp(server);
  const SOCK_NONBLOCK = 0o4000;
  const fd = withNetns(nsFd, () =>
    libc.socket(ip.family === 4 ? 2 : 10, libc.SOCK_DGRAM | libc.SOCK_CLOEXEC | SOCK_NONBLOCK, 0),
  );
  try {
    const id = Math.floor(Math.random() * 0xffff);
    const q = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
    try {
      connect(fd, sockaddrInet(ipToBytes(ip.family, ip.value), 53), `${server}:53`);
      libc.send(fd, q);
    } catch (e) {
      if (e instanceof TapnetError && (e.errno === 'ENETUNREACH' || e.errno === 'EHOSTUNREACH'))
        return 'unreachable';
      throw e;
    }
    const buf = Buffer.alloc(512);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const n = libc.recvOrAgain(fd, buf, libc.MSG_DONTWAIT);
        if (n >= 2 && buf.readUInt16BE(0) === id) return 'answered';
      } catch (e) {
        if (e instanceof TapnetError && e.errno === 'ECONNREFUSED') return 'refused';
        if (e instanceof TapnetError && (e.errno === 'ENETUNREACH' || e.errno === 'EHOSTUNREACH'))
          return 'unreachable';
        throw e;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return 'timeout';
  } finally {
    libc.close(fd);
  }
}
