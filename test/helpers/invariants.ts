/**
 * The invariant checker of the torture suites: compares a NetworkManager's store with the kernel, the
 * firewall and (CNI mode) the plugins' host side, independently of tapnet's own verify/reconcile, and
 * returns every violation as a line `<kind>: <what>` (an empty list means the invariants hold).
 *
 * Direct mode: every record is 'ready' (when settled), its TAP exists (tun, alias `tapnet:<vmId>`, up,
 * a port of its bridge or, routed, with its /32 and /128 routes), its leases are owned by it and its
 * firewall port holds exactly its MAC and addresses; no lease without a record; no address held twice;
 * no TAP with tapnet's naming or alias without a record; no firewall port without a record.
 * CNI mode: every record's namespace exists and holds its TAP; its result cache file and host-local
 * lease exist; no namespace, cache file, host-local lease or bridge port without a record.
 * Files backend: no temp files older than the store's cleanup age; lock files are listed separately
 * (lockFiles()), since the store keeps them as long as a VM id is in use.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ResolvedNetwork } from '../../src/manager/config.js';
import type { NetworkManager } from '../../src/manager/manager.js';
import { isTapnetTapName } from '../../src/manager/names.js';
import type { VmRecord } from '../../src/manager/types.js';
import { listRoutes } from '../../src/net/addr.js';
import { findLink, type Link, listLinks } from '../../src/net/link.js';
import { listNetns, NETNS_RUN_DIR, openNetns } from '../../src/net/netns.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';

export interface InvariantOptions {
  /**
   * After a reconcile nothing may be half-done: records 'creating'/'releasing' are violations. false while
   * other processes may still be working (then only what must hold at every instant is checked).
   */
  settled?: boolean;
  /** Netlink socket in the namespace where CNI plugins put their host side (default: this process's). */
  cniHostNl?: NetlinkSocket;
}

/** Where a CNI network's plugins keep their host side, read from its conflist. */
export interface CniHostSide {
  bridge?: string;
  /** host-local's data directory for this network: `<dataDir>/<conflist name>/`. */
  leaseDir?: string;
  cacheResults: string;
  conflistName: string;
  netnsPrefix: string;
  ifname: string;
}

/** The host-side places of a CNI network (bridge name, host-local dir, result cache). */
export function cniHostSide(m: NetworkManager, net: ResolvedNetwork): CniHostSide {
  const c = net.cni!;
  const list = m.cni.conflist(c);
  const first = list.plugins[0] as unknown as Record<string, unknown> | undefined;
  const ipam = first?.ipam as Record<string, unknown> | undefined;
  const out: CniHostSide = {
    cacheResults: join(c.cacheDir, 'results'),
    conflistName: list.name,
    netnsPrefix: c.netnsPrefix,
    ifname: c.ifname,
  };
  if (typeof first?.bridge === 'string') out.bridge = first.bridge;
  if (ipam?.type === 'host-local') {
    out.leaseDir = join(typeof ipam.dataDir === 'string' ? ipam.dataDir : '/var/lib/cni/networks', list.name);
  }
  return out;
}

const sameSet = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && [...a].sort().join() === [...b].sort().join();

/** Check every invariant; returns the violations (empty: all hold). */
export async function checkInvariants(m: NetworkManager, opts: InvariantOptions = {}): Promise<string[]> {
  const settled = opts.settled ?? true;
  // Settled: the TAPs of released VMs, deleted in the background, are gone too.
  if (settled) await m.settled();
  const v: string[] = [];
  const { records, problems } = await m.store.records.list();
  for (const p of problems) v.push(`corrupt-record: ${p.vmId}: ${p.error.code} ${p.error.message}`);
  for (const r of records) {
    if (settled && r.state !== 'ready') v.push(`incomplete-record: ${r.vmId} is ${r.state}`);
    if (!m.config.networks.has(r.network)) v.push(`unknown-network: ${r.vmId} is on ${r.network}`);
  }
  const direct = records.filter((r) => r.mode !== 'cni');
  const cni = records.filter((r) => r.mode === 'cni');
  await checkDirect(m, direct, v, settled);
  for (const net of m.config.networks.values()) {
    if (net.mode === 'cni')
      checkCni(
        m,
        net,
        cni.filter((r) => r.network === net.name),
        v,
        opts.cniHostNl,
        settled,
      );
  }
  checkStoreFiles(m, v);
  return v;
}

async function checkDirect(
  m: NetworkManager,
  records: VmRecord[],
  v: string[],
  settled: boolean,
): Promise<void> {
  const links = listLinks(m.nl, { kind: 'tun' });
  const byName = new Map(links.map((l) => [l.name, l]));
  const nets = [...m.config.networks.values()].filter((n) => n.mode === 'direct');
  const bridges = new Map<string, Link | undefined>(nets.map((n) => [n.name, findLink(m.nl, n.bridge)]));
  for (const n of nets) {
    // Networks are set up on first use: a bridge must exist once a VM is on it.
    const used = records.some((r) => r.network === n.name);
    if (used && !bridges.get(n.name)) v.push(`network: bridge ${n.bridge} of ${n.name} is missing`);
  }
  const routes4 = listRoutes(m.nl, 4);
  const routes6 = nets.some((n) => n.subnet6) ? listRoutes(m.nl, 6) : [];
  const ports = m.firewall.listVms();
  const portByIf = new Map(ports.map((p) => [p.ifname, p]));
  const tapOwner = new Map<string, string>();
  const ipOwner = new Map<string, string>();

  for (const r of records) {
    const prev = tapOwner.get(r.tap);
    if (prev) v.push(`duplicate-tap: ${r.tap} belongs to ${prev} and ${r.vmId}`);
    tapOwner.set(r.tap, r.vmId);
    for (const ip of [r.ipv4, r.ipv6]) {
      if (!ip) continue;
      const o = ipOwner.get(`${r.network}/${ip}`);
      if (o) v.push(`duplicate-ip: ${ip} is held by ${o} and ${r.vmId}`);
      ipOwner.set(`${r.network}/${ip}`, r.vmId);
    }
    if (!settled && r.state !== 'ready') continue;
    const net = m.config.networks.get(r.network);
    const link = byName.get(r.tap);
    if (!link) {
      v.push(`missing-tap: ${r.vmId} has no TAP ${r.tap}`);
    } else {
      if (link.alias !== `tapnet:${r.vmId}`)
        v.push(`tap-alias: ${r.tap} has alias ${link.alias} (VM ${r.vmId})`);
      if (!link.up) v.push(`tap-down: ${r.tap} of ${r.vmId}`);
      if (net && r.topology === 'bridge') {
        const br = bridges.get(net.name);
        if (br && link.master !== br.index)
          v.push(`tap-detached: ${r.tap} of ${r.vmId} is not a port of ${net.bridge}`);
      }
      if (r.topology === 'routed') {
        if (r.ipv4 && !routes4.some((x) => x.dst === `${r.ipv4}/32` && x.oif === link.index)) {
          v.push(`missing-route: ${r.ipv4}/32 dev ${r.tap} (VM ${r.vmId})`);
        }
        if (r.ipv6 && !routes6.some((x) => x.dst === `${r.ipv6}/128` && x.oif === link.index)) {
          v.push(`missing-route: ${r.ipv6}/128 dev ${r.tap} (VM ${r.vmId})`);
        }
      }
    }
    const port = portByIf.get(r.tap);
    if (m.firewall.kind === 'nftables') {
      if (!port) v.push(`missing-firewall-element: ${r.vmId} (${r.tap}) has no firewall port`);
      else {
        const want = (a?: string) => (a ? [a] : []);
        if (!sameSet(port.macs, [r.mac]))
          v.push(`firewall-mac: ${r.tap} has ${port.macs.join(' ')}, want ${r.mac}`);
        if (!sameSet(port.ipv4, want(r.ipv4)))
          v.push(`firewall-ipv4: ${r.tap} has ${port.ipv4.join(' ')}, want ${r.ipv4}`);
        if (!sameSet(port.ipv6, want(r.ipv6)))
          v.push(`firewall-ipv6: ${r.tap} has ${port.ipv6.join(' ')}, want ${r.ipv6}`);
        if (port.network !== r.network)
          v.push(`firewall-network: ${r.tap} counts into ${port.network}, want ${r.network}`);
      }
    }
  }
  // Orphans: TAPs with tapnet's naming or alias, firewall ports, leases.
  const prefixes = nets.map((n) => n.tapPrefix);
  for (const l of links) {
    const ours = prefixes.some((p) => isTapnetTapName(p, l.name)) || l.alias?.startsWith('tapnet:');
    if (ours && !tapOwner.has(l.name)) v.push(`orphan-tap: ${l.name} (alias ${l.alias ?? '-'})`);
  }
  for (const p of ports) if (!tapOwner.has(p.ifname)) v.push(`orphan-firewall-element: ${p.ifname}`);
  const known = new Map(records.map((r) => [r.vmId, r]));
  const { problems } = await m.store.records.list();
  const unreadable = new Set(problems.map((p) => p.vmId));
  for (const pool of await m.store.leases.pools()) {
    const leases = await m.store.leases.leases(pool);
    for (const [addr, owner] of leases) {
      const r = known.get(owner);
      if (!r) {
        if (!unreadable.has(owner))
          v.push(`orphan-lease: ${pool.network}:${addr} held by ${owner} (no record)`);
      } else if (r.network !== pool.network || (r.ipv4 !== addr && r.ipv6 !== addr)) {
        v.push(
          `stray-lease: ${pool.network}:${addr} held by ${owner}, whose record says ${r.ipv4 ?? ''} ${r.ipv6 ?? ''}`,
        );
      }
    }
    for (const r of records) {
      if (r.network !== pool.network) continue;
      for (const a of [r.ipv4, r.ipv6]) {
        if (a && inPool(pool.subnet, a) && leases.get(a) !== r.vmId) {
          v.push(`missing-lease: ${r.vmId} has ${a} but the lease is ${leases.get(a) ?? 'free'}`);
        }
      }
    }
  }
}

function inPool(subnet: string, addr: string): boolean {
  return subnet.includes(':') === addr.includes(':');
}

function checkCni(
  m: NetworkManager,
  net: ResolvedNetwork,
  records: VmRecord[],
  v: string[],
  hostNl: NetlinkSocket | undefined,
  settled: boolean,
): void {
  const h = cniHostSide(m, net);
  const ids = new Set(records.map((r) => r.vmId));
  const prefix = `${h.netnsPrefix}-`;
  for (const r of records) {
    if (!settled && r.state !== 'ready') continue;
    if (!r.netns || !existsSync(r.netns)) {
      v.push(`missing-netns: ${r.vmId} (${r.netns})`);
      continue;
    }
    if (!tapInNetns(r.netns, r.tap)) v.push(`missing-tap: ${r.vmId} has no TAP ${r.tap} in ${r.netns}`);
    const cache = join(h.cacheResults, `${h.conflistName}-${r.vmId}-${h.ifname}`);
    if (!existsSync(cache)) v.push(`missing-cache-file: ${cache}`);
    const ip = r.cni?.ipv4?.split('/')[0];
    if (h.leaseDir && ip && !existsSync(join(h.leaseDir, ip)))
      v.push(`missing-lease: host-local ${ip} of ${r.vmId}`);
  }
  for (const n of listNetns()) {
    if (n.startsWith(prefix) && !ids.has(n.slice(prefix.length)))
      v.push(`orphan-netns: ${NETNS_RUN_DIR}/${n}`);
  }
  for (const f of safeList(h.cacheResults)) {
    const m2 = f.startsWith(`${h.conflistName}-`) && f.endsWith(`-${h.ifname}`);
    const id = m2 ? f.slice(h.conflistName.length + 1, -(h.ifname.length + 1)) : undefined;
    if (!id || !ids.has(id)) v.push(`orphan-cache-file: ${join(h.cacheResults, f)}`);
  }
  if (h.leaseDir) {
    const byIp = new Map(records.map((r) => [r.cni?.ipv4?.split('/')[0], r.vmId]));
    for (const f of safeList(h.leaseDir)) {
      if (!/^[0-9.]+$|:/.test(f) || f.startsWith('last_reserved_ip')) continue;
      const owner = readFileSync(join(h.leaseDir, f), 'utf8').split(/\r?\n/)[0]!.trim();
      if (!ids.has(owner)) v.push(`orphan-lease: host-local ${f} held by ${owner} (no record)`);
      else if (byIp.get(f) !== owner) v.push(`stray-lease: host-local ${f} held by ${owner}`);
    }
  }
  if (h.bridge) {
    const nl = hostNl ?? NetlinkSocket.open();
    try {
      const br = findLink(nl, h.bridge);
      if (br) {
        const ports = listLinks(nl, { master: br.index });
        if (ports.length !== records.length) {
          v.push(`bridge-ports: ${h.bridge} has ${ports.length} ports for ${records.length} CNI VMs`);
        }
      } else if (records.length) v.push(`network: CNI bridge ${h.bridge} is missing`);
    } finally {
      if (!hostNl) nl.close();
    }
  }
}

function tapInNetns(path: string, tap: string): boolean {
  try {
    const ns = openNetns(path);
    try {
      const nl = NetlinkSocket.open({ nsFd: ns.fd });
      try {
        return findLink(nl, tap)?.kind === 'tun';
      } finally {
        nl.close();
      }
    } finally {
      ns.close();
    }
  } catch {
    return false;
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => !f.startsWith('.'));
  } catch {
    return [];
  }
}

/** Temp files a crashed writer left, older than the store removes them (60 s): the store's cleanup failed. */
function checkStoreFiles(m: NetworkManager, v: string[]): void {
  const root = m.config.stateDir;
  const walk = (dir: string, depth: number): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(dir, n);
      if (n.startsWith('.') && n.endsWith('.tmp')) {
        if (Date.now() - statSync(p).mtimeMs > 120_000) v.push(`stale-temp-file: ${p}`);
      } else if (depth < 5 && statSync(p, { throwIfNoEntry: false })?.isDirectory()) walk(p, depth + 1);
    }
  };
  walk(root, 0);
}

/** Lock files of the files backend whose VM has no record (kept by design until release({forget})). */
export async function orphanLockFiles(m: NetworkManager): Promise<string[]> {
  const dir = join(m.config.stateDir, 'locks', 'vm');
  const { records } = await m.store.records.list();
  const ids = new Set(records.map((r) => r.vmId));
  return safeList(dir)
    .filter((f) => f.endsWith('.lock') && !ids.has(f.slice(0, -5)))
    .map((f) => join(dir, f));
}

/** Temp files (any age) under the state directory: what a crash left for the store's cleanup. */
export function tempFiles(stateDir: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, depth: number): void => {
    for (const n of safeList2(dir)) {
      const p = join(dir, n);
      if (n.startsWith('.') && n.endsWith('.tmp')) out.push(p);
      else if (depth < 5 && statSync(p, { throwIfNoEntry: false })?.isDirectory()) walk(p, depth + 1);
    }
  };
  walk(stateDir, 0);
  return out;
}

function safeList2(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
