/**
 * tc-redirect-tap's inputs and result, without the kernel: CNI_ARGS (TC_REDIRECT_TAP_NAME/_UID/_GID),
 * the chained `prevResult`, the result ADD prints, and how DEL and CHECK find the TAP again in a result.
 *
 * The result follows awslabs/tc-redirect-tap (and firecracker-go-sdk's vmconf, which reads it): to the
 * previous result it appends
 *   1. the TAP:             `{name: TAP, mac: TAP's MAC, sandbox: CNI_NETNS}`
 *   2. the VM's interface:  `{name: TAP, mac: the veth's MAC, sandbox: CNI_CONTAINERID}` — a pseudo-device
 *      that says how to configure the guest's NIC: the guest takes over the veth's MAC and addresses;
 * and a copy of each IP of the veth (`CNI_IFNAME` in `CNI_NETNS`) pointing at the VM's interface.
 * Pure.
 */
import { invalidArgument } from '../../errors.js';
import { validateIfname } from '../../validate.js';
import { type CniInterface, type CniResult, parsePrevResult } from './result.js';
import { CNI_ERR, cniFailure } from './skel.js';

/** The CNI_ARGS keys tc-redirect-tap reads (also accepted as environment variables; CNI_ARGS wins). */
export const TAP_ARG_NAME = 'TC_REDIRECT_TAP_NAME';
export const TAP_ARG_UID = 'TC_REDIRECT_TAP_UID';
export const TAP_ARG_GID = 'TC_REDIRECT_TAP_GID';

/** The name the kernel would give an unnamed TAP: the lowest free `tapN`. */
export const DEFAULT_TAP_TEMPLATE = 'tap%d';

const MAX_ID = 0xfffffffe; // (uid_t)-1 means "none" to the kernel

export interface TapArgs {
  /** A fixed name, or a template with one `%d` (the lowest free number is used). */
  tapName: string;
  /** TUNSETOWNER / TUNSETGROUP: given, or the plugin's effective uid/gid (as tc-redirect-tap). */
  uid: number;
  gid: number;
}

/**
 * Split CNI_ARGS (`K=V;K=V`) as tc-redirect-tap does: every part must hold a `=`; the value is everything
 * after the first one; a later duplicate wins.
 */
export function parseCniArgs(s: string): Map<string, string> {
  const out = new Map<string, string>();
  if (s === '') return out;
  for (const pair of s.split(';')) {
    const eq = pair.indexOf('=');
    if (eq < 0) {
      throw cniFailure(
        CNI_ERR.invalidEnvironment,
        `Invalid cni arguments format, ${JSON.stringify(pair)} (CNI_ARGS)`,
      );
    }
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

function parseId(key: string, v: string): number {
  if (!/^\d{1,10}$/.test(v) || Number(v) > MAX_ID) {
    throw cniFailure(
      CNI_ERR.invalidEnvironment,
      `${key} should be a decimal id from 0 to ${MAX_ID}, got ${JSON.stringify(v)}`,
    );
  }
  return Number(v);
}

/** A TAP name or `%d` template: the kernel's interface name rules, at most one `%d` and no other `%`. */
export function validateTapName(name: string, what = TAP_ARG_NAME): string {
  try {
    const probe = name.replace('%d', '0');
    if (probe.includes('%')) throw invalidArgument(`${what} may hold one %d and no other %`);
    validateIfname(probe, what);
    return name;
  } catch (e) {
    throw cniFailure(
      CNI_ERR.invalidEnvironment,
      `${what} ${JSON.stringify(name)} is not a valid interface name`,
      (e as Error).message,
      e,
    );
  }
}

/** The TAP's name and owner from CNI_ARGS, then the environment, then the defaults. */
export function parseTapArgs(
  cniArgs: string,
  env: Readonly<Record<string, string | undefined>>,
  defaults: { uid: number; gid: number },
): TapArgs {
  const args = parseCniArgs(cniArgs);
  const get = (k: string): string | undefined => args.get(k) ?? (env[k] || undefined);
  const name = get(TAP_ARG_NAME);
  const uid = get(TAP_ARG_UID);
  const gid = get(TAP_ARG_GID);
  return {
    tapName: name !== undefined && name !== '' ? validateTapName(name) : DEFAULT_TAP_TEMPLATE,
    uid: uid !== undefined ? parseId(TAP_ARG_UID, uid) : defaults.uid,
    gid: gid !== undefined ? parseId(TAP_ARG_GID, gid) : defaults.gid,
  };
}

/** The first free name for a `%d` template (the kernel's dev_alloc_name), or the name itself. */
export function pickTapName(template: string, taken: ReadonlySet<string>): string {
  if (!template.includes('%d')) return template;
  for (let n = 0; n < 32768; n++) {
    const name = template.replace('%d', String(n));
    if (!taken.has(name)) return validateTapName(name);
  }
  throw cniFailure(CNI_ERR.internal, `no free name for ${template}`);
}

/**
 * The chained result from the config (stdin), in the 1.x shape, or undefined when there is none.
 * Field types are checked as Go's types.NetConf would; a bad prevResult is a decoding failure (6).
 */
export function prevResultOf(conf: Record<string, unknown>, cniVersion: string): CniResult | undefined {
  if (conf.type !== undefined && conf.type !== null && typeof conf.type !== 'string') {
    throw cniFailure(CNI_ERR.decodingFailure, 'failure parsing network config: "type" is not a string');
  }
  const raw = conf.prevResult;
  if (raw === undefined || raw === null) return undefined;
  return parsePrevResult(raw, cniVersion);
}

/** The error for a verb that needs a previous result and got none. */
export function noPrevResult(): never {
  throw cniFailure(
    CNI_ERR.invalidNetworkConfig,
    'no previous result was found, was this plugin chained with a previous one?',
  );
}

/** The IPs of the interface `name` in `sandbox` (tc-redirect-tap's InterfaceIPs). */
export function interfaceIps(r: CniResult, name: string, sandbox: string): CniResult['ips'] {
  return r.ips.filter((ip) => {
    if (ip.interface === undefined) return false;
    const i = r.interfaces[ip.interface];
    return i !== undefined && i.name === name && i.sandbox === sandbox;
  });
}

export interface AddedTap {
  tapName: string;
  tapMac?: string;
  /** CNI_IFNAME: the veth whose traffic the TAP takes over. */
  vethName: string;
  vethMac?: string;
  /** CNI_NETNS as given. */
  netns: string;
  /** CNI_CONTAINERID: the VM. */
  containerId: string;
}

/** ADD's result: `prev` plus the TAP, the VM's pseudo-interface, and the veth's IPs for the VM. */
export function buildAddResult(prev: CniResult, a: AddedTap): CniResult {
  const r: CniResult = structuredClone(prev);
  const ips = interfaceIps(prev, a.vethName, a.netns);
  const tap: CniInterface = { name: a.tapName, sandbox: a.netns };
  if (a.tapMac) tap.mac = a.tapMac;
  const vm: CniInterface = { name: a.tapName, sandbox: a.containerId };
  if (a.vethMac) vm.mac = a.vethMac;
  r.interfaces.push(tap, vm);
  const vmIndex = r.interfaces.length - 1;
  for (const ip of ips) {
    const copy: CniResult['ips'][number] = { address: ip.address, interface: vmIndex };
    if (ip.gateway) copy.gateway = ip.gateway;
    r.ips.push(copy);
  }
  return r;
}

/**
 * The VM's pseudo-interface (the one whose sandbox is the container ID) and the TAP (same name, another
 * sandbox) in a result, as tc-redirect-tap's VMTapPair finds them.
 */
export function vmTapPair(r: CniResult, containerId: string): { vm: CniInterface; tap: CniInterface } {
  const inVm = r.interfaces.filter((i) => i.sandbox === containerId);
  const others = r.interfaces.filter((i) => i.sandbox !== containerId);
  if (inVm.length !== 1) {
    throw cniFailure(
      CNI_ERR.invalidNetworkConfig,
      inVm.length === 0
        ? `the previous result has no interface for VM ${JSON.stringify(containerId)} (sandbox = CNI_CONTAINERID)`
        : `expected to find at most 1 interface in sandbox ${JSON.stringify(containerId)}, but instead found ${inVm.length}`,
    );
  }
  const vm = inVm[0]!;
  const taps = others.filter((i) => i.name === vm.name);
  if (taps.length !== 1) {
    throw cniFailure(
      CNI_ERR.invalidNetworkConfig,
      taps.length === 0
        ? `the previous result has no TAP named ${JSON.stringify(vm.name)}`
        : `expected to find at most 1 interface with name ${JSON.stringify(vm.name)}, but instead found ${taps.length}`,
    );
  }
  return { vm, tap: taps[0]! };
}
