/**
 * tapnet's tc-redirect-tap: a CNI plugin, config-compatible with awslabs/tc-redirect-tap, that adapts a
 * chained plugin's veth (e.g. from `bridge` or `ptp`) to a TAP for a microVM. In the network namespace
 * CNI_NETNS it
 *   ADD:   creates a persistent TAP (`ip tuntap add dev tapN mode tap vnet_hdr user U group G`) with the
 *          veth's MTU, up; then `tc qdisc add dev X ingress; tc filter add dev X parent ffff: protocol all
 *          u32 match u32 0 0 action mirred egress redirect dev Y` both ways (TAP → veth, veth → TAP), so
 *          the guest behind the TAP owns the veth's layer 2 (its MAC and IPs, which the result hands over);
 *   DEL:   removes the redirect filters from the veth (and its ingress qdisc when nothing else is on it)
 *          and the TAP; success when any of it, or the namespace, is already gone;
 *   CHECK: the TAP exists with the veth's MTU and both redirects are in place;
 *   STATUS: /dev/net/tun exists (else code 50); GC: nothing to do (all of it lives in per-VM namespaces).
 * Name and owner of the TAP come from CNI_ARGS (TC_REDIRECT_TAP_NAME/_UID/_GID; see
 * tc-redirect-tap-conf.ts). Everything goes through netlink and ioctls on sockets opened inside CNI_NETNS.
 */
import { existsSync } from 'node:fs';
import {
  isAlreadyGone,
  isTapnetError,
  type TapnetError,
  teardownError,
  toTapnetError,
} from '../../errors.js';
import { findLink, getLink, type Link, listLinks } from '../../net/link.js';
import { type Netns, openNetns } from '../../net/netns.js';
import { createTap, TUN_DEVICE } from '../../net/tap.js';
import {
  delFilter,
  delQdisc,
  type Filter,
  listFilters,
  redirectIngress,
  removeRedirectIngress,
} from '../../net/tc.js';
import { AttrMap } from '../../netlink/attr.js';
import { RTM_DELLINK, RTM_NEWQDISC, TC_H_INGRESS, TCA_KIND } from '../../netlink/constants.js';
import { encodeLinkRequest } from '../../netlink/link.js';
import { NetlinkSocket } from '../../netlink/socket.js';
import type { MirredAction, TcAction } from '../../netlink/tc-action.js';
import { TCMSG_LEN } from '../../netlink/tc-constants.js';
import { readTcmsg } from '../../netlink/tc-msg.js';
import { encodeGetQdiscs } from '../../netlink/tc-qdisc.js';
import { encodeResult } from './result.js';
import {
  type CmdArgs,
  CNI_ERR,
  cniFailure,
  dispatch,
  type PluginFuncs,
  type PluginOutput,
  toCniError,
} from './skel.js';
import {
  buildAddResult,
  noPrevResult,
  parseTapArgs,
  pickTapName,
  prevResultOf,
  type TapArgs,
  vmTapPair,
} from './tc-redirect-tap-conf.js';

/** The `type` in a network config, as awslabs' plugin is named. */
export const TC_REDIRECT_TAP_TYPE = 'tc-redirect-tap';
/** Other names our implementation answers to (e.g. installed next to awslabs' binary). */
export const TC_REDIRECT_TAP_ALIASES = ['tapnet-tc-redirect-tap'] as const;
/** Every spec version that allows chaining (awslabs' plugin: all of libcni's but 0.1.0 and 0.2.0). */
export const TC_REDIRECT_TAP_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** The namespace CNI_NETNS and a netlink socket inside it. */
interface Sandbox {
  ns: Netns;
  nl: NetlinkSocket;
}

/**
 * Open CNI_NETNS and a netlink socket in it; undefined when it does not exist (no file, or a file that is
 * no longer a namespace: an unmounted /run/netns entry).
 */
function openSandbox(path: string): Sandbox | undefined {
  if (path === '') return undefined;
  let ns: Netns;
  try {
    ns = openNetns(path.includes('/') ? path : `./${path}`);
  } catch (e) {
    if (isTapnetError(e, 'ERR_NETNS_NOT_FOUND')) return undefined;
    throw cniFailure(
      CNI_ERR.internal,
      `failed to open netns at path ${JSON.stringify(path)}: ${(e as Error).message}`,
      '',
      e,
      isTapnetError(e) ? e.code : 'ERR_SYSCALL',
    );
  }
  try {
    return { ns, nl: NetlinkSocket.open({ nsFd: ns.fd }) };
  } catch (e) {
    ns.close();
    if (isTapnetError(e) && e.syscall === 'setns' && e.errno === 'EINVAL') return undefined;
    throw e;
  }
}

function closeSandbox(sb: Sandbox): void {
  sb.nl.close();
  sb.ns.close();
}

function requireSandbox(a: CmdArgs): Sandbox {
  const sb = openSandbox(a.netns);
  if (!sb) {
    throw cniFailure(
      CNI_ERR.invalidEnvironment,
      `netns path ${JSON.stringify(a.netns)} does not exist (CNI_NETNS)`,
    );
  }
  return sb;
}

function ownIds(): { uid: number; gid: number } {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}

function redirectLink(nl: NetlinkSocket, a: CmdArgs): Link {
  const l = findLink(nl, a.ifname);
  if (!l) {
    throw cniFailure(
      CNI_ERR.internal,
      `failed to find redirect interface ${JSON.stringify(a.ifname)} in ${a.netns}`,
      'the previous plugin in the chain must create CNI_IFNAME in CNI_NETNS',
      undefined,
      'ERR_LINK_NOT_FOUND',
    );
  }
  return l;
}

/** Run `fn`; a failure without a CNI code is re-thrown with `what` before its message (same tapnet code). */
function inContext<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (isTapnetError(e) && typeof e.details.cniCode === 'number') throw e;
    const c = toCniError(e);
    throw cniFailure(c.code, `${what}: ${c.msg}`, c.details, e, isTapnetError(e) ? e.code : 'ERR_INTERNAL');
  }
}

/** Create the TAP (or reattach to an existing TAP of a fixed name). Returns it and whether we made it. */
function makeTap(sb: Sandbox, t: TapArgs, mtu: number | undefined): { tap: Link; created: boolean } {
  const template = t.tapName.includes('%d');
  const taken = new Set(template ? listLinks(sb.nl).map((l) => l.name) : []);
  for (let attempt = 0; ; attempt++) {
    const name = pickTapName(t.tapName, taken);
    const existed = !template && findLink(sb.nl, name) !== undefined;
    try {
      createTap(
        {
          name,
          nsFd: sb.ns.fd,
          persistent: true,
          vnetHdr: true,
          owner: t.uid,
          group: t.gid,
          exclusive: template,
          up: true,
          ...(mtu !== undefined ? { mtu } : {}),
        },
        sb.nl,
      );
    } catch (e) {
      // Another ADD took this number between our look and our create: take the next one.
      if (template && attempt < 8 && isTapnetError(e, 'ERR_CONFLICT')) {
        taken.add(name);
        continue;
      }
      throw e;
    }
    return { tap: getLink(sb.nl, name), created: !existed };
  }
}

async function add(a: CmdArgs): Promise<string> {
  const prev = prevResultOf(a.conf, a.cniVersion);
  const t = parseTapArgs(a.args, a.env, ownIds());
  const sb = requireSandbox(a);
  try {
    if (!prev) noPrevResult();
    const veth = redirectLink(sb.nl, a);
    const { tap, created } = inContext(`failed to create the TAP in ${a.netns}`, () =>
      makeTap(sb, t, veth.mtu),
    );
    try {
      inContext(`failed to redirect between ${tap.name} and ${veth.name}`, () => {
        redirectIngress(sb.nl, tap.index, veth.index);
        redirectIngress(sb.nl, veth.index, tap.index);
      });
    } catch (e) {
      // Undo what this ADD did; the caller's DEL may never come (no cached result after a failed ADD).
      try {
        removeRedirectIngress(sb.nl, veth.index);
      } catch {}
      try {
        if (created) sb.nl.request(encodeLinkRequest(RTM_DELLINK, 0, { index: tap.index }), tap.name);
      } catch {}
      throw e;
    }
    const result = buildAddResult(prev, {
      tapName: tap.name,
      ...(tap.mac ? { tapMac: tap.mac } : {}),
      vethName: veth.name,
      ...(veth.mac ? { vethMac: veth.mac } : {}),
      netns: a.netns,
      containerId: a.containerId,
    });
    return encodeResult(result, a.cniVersion);
  } finally {
    closeSandbox(sb);
  }
}

function isEgressRedirect(x: TcAction): x is MirredAction {
  return x.kind === 'mirred' && 'ifindex' in x && x.mode === 'redirect' && x.direction === 'egress';
}

/** True when every action of `f` is `mirred egress redirect` to `ifindex`. */
function redirectsTo(f: Filter, ifindex: number): boolean {
  return f.actions.length > 0 && f.actions.every((x) => isEgressRedirect(x) && x.ifindex === ifindex);
}

/** The TAP a veth's ingress redirects to, judged by the filters alone (DEL without a result or a name). */
function tapFromFilters(nl: NetlinkSocket, filters: Filter[]): Link | undefined {
  for (const f of filters) {
    for (const x of f.actions) {
      if (!isEgressRedirect(x) || x.ifindex <= 0) continue;
      const l = findLink(nl, x.ifindex);
      if (l?.kind === 'tun') return l;
    }
  }
  return undefined;
}

async function del(a: CmdArgs): Promise<void> {
  const prev = prevResultOf(a.conf, a.cniVersion);
  const t = parseTapArgs(a.args, a.env, ownIds());
  const sb = openSandbox(a.netns);
  if (!sb) return; // everything we make lives in the namespace: gone with it
  const failures: TapnetError[] = [];
  const step = async (what: string, fn: () => void | Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      if (!isAlreadyGone(e)) failures.push(toTapnetError(e, 'ERR_INTERNAL', what));
    }
  };
  try {
    let tapName: string | undefined;
    if (prev) {
      try {
        tapName = vmTapPair(prev, a.containerId).tap.name;
      } catch {}
    }
    if (tapName === undefined && !t.tapName.includes('%d')) tapName = t.tapName;
    let tap = tapName !== undefined ? findLink(sb.nl, tapName) : undefined;
    if (tap && tap.kind !== 'tun') tap = undefined; // not ours: never delete another kind of device
    const veth = findLink(sb.nl, a.ifname);
    if (veth) {
      await step(`remove the redirect filters from ${veth.name}`, () => {
        const filters = listFilters(sb.nl, veth.index);
        tap ??= tapFromFilters(sb.nl, filters);
        // Ours (any priority: awslabs' plugin lets the kernel pick one), and any left dangling by a TAP
        // deleted behind our back (mirred then reports ifindex 0).
        const prios = new Set(
          filters.filter((f) => (tap && redirectsTo(f, tap.index)) || redirectsTo(f, 0)).map((f) => f.prio),
        );
        for (const prio of prios) delFilter(sb.nl, veth.index, { prio });
        if (listFilters(sb.nl, veth.index).length === 0) delQdisc(sb.nl, veth.index, { kind: 'ingress' });
      });
    }
    if (tap) {
      const { index, name } = tap;
      // Off the event loop: the kernel waits for an RCU grace period before it answers.
      await step(`delete ${name}`, async () => {
        await sb.nl.requestAsync(encodeLinkRequest(RTM_DELLINK, 0, { index }), name);
      });
    }
  } finally {
    closeSandbox(sb);
  }
  if (failures.length) {
    const e = teardownError(`tc-redirect-tap DEL in ${a.netns}`, failures);
    throw cniFailure(
      CNI_ERR.internal,
      e.message,
      failures.map((f) => f.message).join('; '),
      e,
      'ERR_TEARDOWN',
    );
  }
}

/**
 * Whether the device has an ingress (or clsact) qdisc: `tc qdisc show dev X ingress`. Reads only each
 * qdisc's header and kind, so the options of qdiscs we do not model (a TAP's pfifo_fast) cannot fail it.
 */
function hasIngressQdisc(nl: NetlinkSocket, ifindex: number): boolean {
  return nl.dump(encodeGetQdiscs(), 'qdisc dump').some((m) => {
    if (m.type !== RTM_NEWQDISC) return false;
    const h = readTcmsg(m.payload);
    if (h.ifindex !== ifindex || h.parent !== TC_H_INGRESS) return false;
    const kind = AttrMap.parse(m.payload, TCMSG_LEN).str(TCA_KIND);
    return kind === 'ingress' || kind === 'clsact';
  });
}

function hasRedirect(nl: NetlinkSocket, from: number, to: number): boolean {
  return listFilters(nl, from).some((f) => redirectsTo(f, to));
}

function check(a: CmdArgs): void {
  const prev = prevResultOf(a.conf, a.cniVersion);
  parseTapArgs(a.args, a.env, ownIds());
  const sb = requireSandbox(a);
  try {
    if (!prev) noPrevResult();
    const { vm, tap: tapIface } = vmTapPair(prev, a.containerId);
    // CHECK failures: the attachment is not as ADD left it.
    const fail = (msg: string): never => {
      throw cniFailure(CNI_ERR.internal, msg, '', undefined, 'ERR_CONFLICT');
    };
    const tap = findLink(sb.nl, tapIface.name) ?? fail(`TAP ${tapIface.name} does not exist in ${a.netns}`);
    if (tap.kind !== 'tun' || tap.tun?.type !== 'tap') fail(`${tap.name} in ${a.netns} is not a TAP`);
    const veth = redirectLink(sb.nl, a);
    if (tap.mtu !== veth.mtu) fail(`${tap.name} has MTU ${tap.mtu}, ${veth.name} has ${veth.mtu}`);
    if (vm.mac && veth.mac && vm.mac.toLowerCase() !== veth.mac) {
      fail(`the VM's interface has MAC ${vm.mac} in the result, but ${veth.name} has ${veth.mac}`);
    }
    for (const l of [tap, veth]) {
      if (!hasIngressQdisc(sb.nl, l.index)) fail(`did not find the ingress qdisc on ${l.name}`);
    }
    if (!hasRedirect(sb.nl, tap.index, veth.index)) fail(`no filter redirects ${tap.name} to ${veth.name}`);
    if (!hasRedirect(sb.nl, veth.index, tap.index)) fail(`no filter redirects ${veth.name} to ${tap.name}`);
  } finally {
    closeSandbox(sb);
  }
}

/** STATUS (1.1.0): ready to serve ADD when the kernel has TAP devices. */
function status(): void {
  if (!existsSync(TUN_DEVICE)) {
    throw cniFailure(CNI_ERR.pluginNotAvailable, `${TUN_DEVICE} is missing: load the tun module`);
  }
}

const funcs: PluginFuncs = {
  add,
  del,
  check,
  status,
  // GC: nothing to collect; everything we make lives in per-VM namespaces, removed by their runtime.
};

/**
 * Run one CNI command exactly as the tc-redirect-tap executable would: `command` (CNI_COMMAND), the CNI_*
 * environment and the network config on stdin in; what it prints on stdout and its exit code out.
 */
export function runTcRedirectTap(
  command: string,
  env: Readonly<Record<string, string | undefined>>,
  stdin: Buffer,
): Promise<PluginOutput> {
  return dispatch(command, env, stdin, funcs, { supportedVersions: TC_REDIRECT_TAP_VERSIONS });
}
