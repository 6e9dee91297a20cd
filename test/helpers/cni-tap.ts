/**
 * Helpers for the privileged tc-redirect-tap suites: run the plugin in-process or exec a plugin file as a
 * runtime does, a "host" namespace with a bridge and per-VM namespaces wired like the bridge plugin
 * wires them, tc as the oracle, and an ARP exchange through a TAP.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tcRedirectTapPlugin } from '../../src/cni/plugins/index.js';
import { closeTapFds, openTap } from '../../src/net/tap.js';
import { makeTestNetns, type TestNetns } from './priv.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
/** The standalone executable (scripts/build-plugin.mjs). */
export const PLUGIN_EXE = join(root, 'dist', 'cni', 'tc-redirect-tap');
const ARP_CHILD = join(here, '..', 'fixtures', 'tap-arp-child.js');

export type Cmd = 'ADD' | 'DEL' | 'CHECK';
export interface Out {
  stdout: Buffer;
  exitCode: number;
}
export type Runner = (cmd: Cmd, env: Record<string, string>, stdin: Buffer) => Promise<Out>;

/** Build dist/cni/tc-redirect-tap when it is missing (a launcher unless esbuild is installed). */
export function ensurePluginBuilt(): void {
  if (existsSync(PLUGIN_EXE)) return;
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-plugin.mjs')], { encoding: 'utf8' });
  assert.equal(r.status, 0, `build-plugin: ${r.stderr}`);
}

export const inProcess: Runner = (cmd, env, stdin) => tcRedirectTapPlugin.run(cmd, env, stdin);

/** Exec a plugin file as a runtime does: CNI_COMMAND and CNI_* in the environment, the config on stdin. */
export function execPlugin(
  file: string,
  cmd: string,
  env: Record<string, string>,
  stdin: Buffer,
  wrap: string[] = [],
): Promise<Out> {
  return new Promise((resolve, reject) => {
    const argv = [...wrap, file];
    const p = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env, CNI_COMMAND: cmd },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const chunks: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => chunks.push(d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ stdout: Buffer.concat(chunks), exitCode: code ?? -1 }));
    p.stdin.end(stdin);
  });
}

export const standalone: Runner = (cmd, env, stdin) => execPlugin(PLUGIN_EXE, cmd, env, stdin);

export interface ResultJson {
  cniVersion: string;
  interfaces: { name: string; mac?: string; sandbox?: string }[];
  ips: { interface?: number; address: string; gateway?: string }[];
  routes?: { dst: string; gw?: string }[];
}

export interface LinkJson {
  ifname: string;
  ifindex: number;
  mtu: number;
  address: string;
  flags: string[];
  linkinfo?: { info_kind: string; info_data?: Record<string, unknown> };
}

interface TcFilterJson {
  pref: number;
  kind: string;
  options?: { actions?: { kind: string; mirred_action: string; direction: string; to_dev: string }[] };
}

/** The plugin succeeded; its stdout. */
export function ok(out: Out, what: string): string {
  assert.equal(out.exitCode, 0, `${what} failed: ${out.stdout.toString()}`);
  return out.stdout.toString();
}

/** The plugin failed; its error object. */
export function failure(out: Out): { code: number; msg: string } {
  assert.equal(out.exitCode, 1, `expected a failure: ${out.stdout.toString()}`);
  return JSON.parse(out.stdout.toString()) as { code: number; msg: string };
}

/** A tc-redirect-tap network config. */
export function tapConf(prevResult?: object, cniVersion = '1.0.0'): Buffer {
  return Buffer.from(
    JSON.stringify({
      cniVersion,
      name: 'crtnet',
      type: 'tc-redirect-tap',
      ...(prevResult ? { prevResult } : {}),
    }),
  );
}

/** The CNI_* variables for one attachment (CNI_IFNAME eth0). */
export function cniEnv(
  containerId: string,
  netns: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/usr/lib/cni',
    ...extra,
  };
}

/** Link names in a namespace, sorted. */
export function linkNames(ns: TestNetns): string[] {
  return ns
    .ipJson<LinkJson[]>('link', 'show')
    .map((l) => l.ifname)
    .sort();
}

function tcJson<T>(ns: TestNetns, ...args: string[]): T {
  return JSON.parse(
    execFileSync('ip', ['netns', 'exec', ns.name, 'tc', '-j', ...args], { encoding: 'utf8' }) || '[]',
  ) as T;
}

/** `tc filter show dev DEV ingress`: the targets of its mirred egress redirects, as `kind:to_dev`. */
export function redirectTargets(ns: TestNetns, dev: string): string[] {
  return tcJson<TcFilterJson[]>(ns, 'filter', 'show', 'dev', dev, 'ingress').flatMap((f) =>
    (f.options?.actions ?? [])
      .filter((a) => a.kind === 'mirred' && a.mirred_action === 'redirect' && a.direction === 'egress')
      .map((a) => `${f.kind}:${a.to_dev}`),
  );
}

/** Whether `tc qdisc show dev DEV` lists an ingress qdisc. */
export function hasIngress(ns: TestNetns, dev: string): boolean {
  return tcJson<{ kind: string }[]>(ns, 'qdisc', 'show', 'dev', dev).some((q) => q.kind === 'ingress');
}

/**
 * Be the guest: open the TAP inside its namespace (vnet header on), write an ARP request for `target` from
 * `mac`/`ip`, and return what the child saw ("reply <mac>" when the answer came back into the TAP).
 */
export async function arpThroughTap(
  ns: TestNetns,
  tap: string,
  mac: string,
  ip: string,
  target: string,
): Promise<string> {
  const { fds } = openTap(tap, { nsFd: ns.ns.fd, vnetHdr: true });
  try {
    const child = spawn(process.execPath, [ARP_CHILD, mac, ip, target], {
      stdio: ['ignore', 'pipe', 'inherit', fds[0]!],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    await new Promise((r) => child.on('close', r));
    return out.trim();
  } finally {
    await closeTapFds(fds);
  }
}

export interface Vm {
  ns: TestNetns;
  /** CNI_NETNS. */
  path: string;
  /** The third octet of its 198.18.N.0/24. */
  net: number;
  vethMac: string;
  /** What the bridge plugin would have returned for it (1.0.0). */
  prev: ResultJson;
}

/** The host: a namespace with bridge crtbr0 (fixed MAC); VMs get a /24 each, the bridge its .1. */
export class TapWorld {
  readonly host: TestNetns;
  readonly bridgeMac = '02:00:5e:12:00:01';
  private readonly vms: TestNetns[] = [];
  private subnet = 40;

  constructor() {
    this.host = makeTestNetns('crt-host');
    // A fixed MAC: a bridge without one takes its lowest port's, and changes it as ports come and go.
    this.host.ip('link', 'add', 'crtbr0', 'address', this.bridgeMac, 'type', 'bridge');
    this.host.ip('link', 'set', 'crtbr0', 'up');
  }

  /** A bare namespace removed with the world. */
  netns(tag: string): TestNetns {
    const ns = makeTestNetns(tag);
    this.vms.push(ns);
    execFileSync('ip', [
      'netns',
      'exec',
      ns.name,
      'sysctl',
      '-qw',
      'net.ipv6.conf.all.disable_ipv6=1',
      'net.ipv6.conf.default.disable_ipv6=1',
    ]);
    return ns;
  }

  /** A VM namespace with eth0 (MTU 1400, 198.18.N.2/24) whose peer is a port of crtbr0 (198.18.N.1/24). */
  vm(tag: string): Vm {
    const net = this.subnet++;
    const ns = this.netns(tag);
    const port = `crtp${net}`;
    this.host.ip('addr', 'add', `198.18.${net}.1/24`, 'dev', 'crtbr0');
    this.host.ip(
      'link',
      'add',
      port,
      'mtu',
      '1400',
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      ns.name,
    );
    this.host.ip('link', 'set', port, 'master', 'crtbr0', 'up');
    ns.ip('addr', 'add', `198.18.${net}.2/24`, 'dev', 'eth0');
    ns.ip('link', 'set', 'eth0', 'mtu', '1400', 'up');
    const vethMac = ns.ipJson<LinkJson[]>('link', 'show', 'eth0')[0]!.address;
    const path = `/run/netns/${ns.name}`;
    const prev: ResultJson = {
      cniVersion: '1.0.0',
      interfaces: [
        { name: 'crtbr0', mac: this.bridgeMac },
        { name: port },
        { name: 'eth0', mac: vethMac, sandbox: path },
      ],
      ips: [{ interface: 2, address: `198.18.${net}.2/24`, gateway: `198.18.${net}.1` }],
      routes: [{ dst: '0.0.0.0/0', gw: `198.18.${net}.1` }],
    };
    return { ns, path, net, vethMac, prev };
  }

  destroy(): void {
    for (const ns of this.vms) ns.destroy();
    this.host.destroy();
  }
}
