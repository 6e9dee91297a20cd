/**
 * Helpers for privileged tests: why a suite must skip, and a private named namespace per suite.
 * Privileged suites only run inside the sandbox that `npm test` creates (scripts/sandbox.mjs), so they
 * can never touch this machine's own network.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createNetns, deleteNetns, type Netns } from '../../src/net/netns.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';

/** The reason privileged tests cannot run here, or undefined when they can. */
export function privSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)';
  if (process.env.TAPNET_SANDBOX !== '1')
    return 'not inside a private network namespace: run through `npm test`';
  if (!existsSync('/dev/net/tun')) return 'no /dev/net/tun';
  return undefined;
}

/** A test's own named namespace with a netlink socket in it. */
export interface TestNetns {
  name: string;
  ns: Netns;
  nl: NetlinkSocket;
  /** `ip -n <name> -j <args…>` parsed: iproute2 as the test oracle. */
  ipJson<T = unknown>(...args: string[]): T;
  /** `ip -n <name> <args…>` (for setting up peers a test needs, never for what tapnet does). */
  ip(...args: string[]): string;
  /** Delete the namespace and close everything. Idempotent. */
  destroy(): void;
}

let counter = 0;

/** Create a fresh namespace named `t<pid>-<tag>-<n>` with `lo` up. */
export function makeTestNetns(tag: string): TestNetns {
  const name = `t${process.pid}-${tag}-${counter++}`;
  const ns = createNetns(name);
  const nl = NetlinkSocket.open({ nsFd: ns.fd });
  const ip = (...args: string[]): string => execFileSync('ip', ['-n', name, ...args], { encoding: 'utf8' });
  ip('link', 'set', 'lo', 'up');
  let destroyed = false;
  return {
    name,
    ns,
    nl,
    ip,
    ipJson: <T>(...args: string[]): T => JSON.parse(ip('-j', ...args) || 'null') as T,
    destroy() {
      if (destroyed) return;
      destroyed = true;
      nl.close();
      ns.close();
      deleteNetns(name);
    },
  };
}
