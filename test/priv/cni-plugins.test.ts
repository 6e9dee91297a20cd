/**
 * tapnet's libcni against Debian's real CNI plugins (containernetworking-plugins, /usr/lib/cni), in
 * namespaces of our own inside the test sandbox: every verb, chains, version conversion, failures.
 * iproute2 and iptables are used only as oracles.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CallTiming, CniRuntime } from '../../src/cni/api.js';
import { confListFromBytes, loadNetworkConf } from '../../src/cni/conf.js';
import { isCniError } from '../../src/cni/errors.js';
import { inProcessPlugins } from '../../src/cni/plugins/index.js';
import type { NetworkConfigList, Result100, RuntimeConf } from '../../src/cni/types.js';
import { toCurrentResult } from '../../src/cni/version.js';
import { isTapnetError } from '../../src/errors.js';
import { deleteLink, findLink } from '../../src/net/link.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const DEBIAN_CNI = '/usr/lib/cni';
const PLUGINS = ['bridge', 'host-local', 'ptp', 'firewall', 'tuning', 'bandwidth', 'portmap', 'static'];
const skip =
  privSkipReason() ??
  (PLUGINS.every((p) => existsSync(join(DEBIAN_CNI, p)))
    ? undefined
    : `Debian's containernetworking-plugins not in ${DEBIAN_CNI}`);
const noIptables =
  spawnSync('iptables', ['--version']).status === 0
    ? undefined
    : 'iptables not installed (firewall, portmap)';

describe('cni with Debian’s plugins', { skip }, () => {
  const root = mkdtempSync(join(tmpdir(), 'tapnet-cni-priv-'));
  const fakes = join(root, 'fakes');
  const ipamDir = join(root, 'ipam');
  const tag = `${process.pid % 10000}`;
  const bridges: string[] = [];
  const spaces: TestNetns[] = [];
  let host: NetlinkSocket;
  let rt: CniRuntime;

  before(() => {
    mkdirSync(fakes);
    host = NetlinkSocket.open();
    rt = new CniRuntime({
      pluginPaths: [fakes, DEBIAN_CNI],
      cacheDir: join(root, 'cache'),
      timeoutMs: 20_000,
    });
    const fake = (name: string, onAdd: string): void =>
      writeFileSync(
        join(fakes, name),
        `#!/bin/sh\ncat > ${root}/${name}.$CNI_COMMAND.stdin\n[ "$CNI_COMMAND" = VERSION ] && { echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}'; exit 0; }\n[ "$CNI_COMMAND" = ADD ] || exit 0\n${onAdd}\n`,
        { mode: 0o755 },
      );
    fake('crash', 'echo "panic: runtime error: invalid memory address" >&2; exit 2');
    fake('garbage', 'echo "this is not JSON"');
    fake('hang', 'sleep 60 & wait');
    fake('recorder', 'echo \'{"cniVersion":"1.0.0"}\'');
  });
  after(() => {
    for (const s of spaces) s.destroy();
    for (const b of bridges) if (findLink(host, b)) deleteLink(host, b);
    host?.close();
    rmSync(root, { recursive: true, force: true });
  });

  const ns = (t: string): TestNetns => {
    const s = makeTestNetns(`cni${t}`);
    spaces.push(s);
    return s;
  };
  const att = (s: TestNetns, id: string, extra: Partial<RuntimeConf> = {}): RuntimeConf => ({
    containerId: id,
    netns: `/run/netns/${s.name}`,
    ifName: 'eth0',
    ...extra,
  });
  const conflist = (v: Record<string, unknown>): NetworkConfigList =>
    confListFromBytes(Buffer.from(JSON.stringify(v)));
  const bridgePlugin = (br: string, subnet: string, extra: Record<string, unknown> = {}) => {
    bridges.push(br);
    return {
      type: 'bridge',
      bridge: br,
      isGateway: true,
      ipam: { type: 'host-local', subnet, dataDir: ipamDir },
      ...extra,
    };
  };
  const addrsIn = (s: TestNetns, dev: string): string[] =>
    s
      .ipJson<Array<{ addr_info: Array<{ local: string; prefixlen: number; family: string }> }>>(
        'addr',
        'show',
        'dev',
        dev,
      )[0]!
      .addr_info.filter((a) => a.family === 'inet')
      .map((a) => `${a.local}/${a.prefixlen}`);
  const leases = (net: string): string[] =>
    existsSync(join(ipamDir, net)) ? readdirSync(join(ipamDir, net)).filter((f) => /^\d/.test(f)) : [];

  it('bridge + host-local: ADD, CHECK, DEL, DEL again — with the effects a user would check', async () => {
    const s = ns('a');
    const l = conflist({
      cniVersion: '1.0.0',
      name: `br-${tag}`,
      plugins: [bridgePlugin(`tnb${tag}a`, '198.18.10.0/24')],
    });
    const timing = {} as CallTiming;
    const res = toCurrentResult(await rt.addNetworkList(l, att(s, 'vm-a'), { timing }));
    const eth0 = res.interfaces!.findIndex((i) => i.name === 'eth0');
    assert.equal(res.interfaces![eth0]!.sandbox, `/run/netns/${s.name}`);
    assert.deepEqual(res.ips, [{ interface: eth0, address: '198.18.10.2/24', gateway: '198.18.10.1' }]);
    assert.deepEqual(addrsIn(s, 'eth0'), ['198.18.10.2/24']);
    assert.ok(findLink(host, `tnb${tag}a`), 'bridge on the host side');
    assert.deepEqual(leases(`br-${tag}`), ['198.18.10.2']);
    assert.equal(timing.invocations.length, 1);
    assert.ok(timing.pluginMs > 0 && timing.overheadMs >= 0);
    assert.deepEqual(toCurrentResult(rt.getNetworkListCachedResult(l, att(s, 'vm-a'))!), res);

    await rt.checkNetworkList(l, att(s, 'vm-a'));
    await rt.delNetworkList(l, att(s, 'vm-a'));
    assert.equal(findLink(s.nl, 'eth0'), undefined);
    assert.deepEqual(leases(`br-${tag}`), []);
    assert.equal(rt.getNetworkListCachedResult(l, att(s, 'vm-a')), undefined);
    await rt.delNetworkList(l, att(s, 'vm-a')); // nothing left: still success
  });

  it('CHECK notices what was broken behind its back', async () => {
    const s = ns('chk');
    const l = conflist({
      cniVersion: '1.0.0',
      name: `chk-${tag}`,
      plugins: [bridgePlugin(`tnb${tag}c`, '198.18.11.0/24')],
    });
    await rt.addNetworkList(l, att(s, 'vm-chk'));
    s.ip('addr', 'flush', 'dev', 'eth0');
    await assert.rejects(
      rt.checkNetworkList(l, att(s, 'vm-chk')),
      (e) => isCniError(e) && /failed \(check\)/.test(e.message),
    );
    await rt.delNetworkList(l, att(s, 'vm-chk'));
  });

  it('a chain: bridge → tuning (mac, sysctl) → bandwidth → portmap → firewall, capabilities from runtimeConfig', {
    skip: noIptables,
  }, async () => {
    const s = ns('chain');
    const name = `chain-${tag}`;
    const l = conflist({
      cniVersion: '1.0.0',
      name,
      plugins: [
        bridgePlugin(`tnb${tag}h`, '198.18.12.0/24'),
        { type: 'tuning', capabilities: { mac: true }, sysctl: { 'net.core.somaxconn': '777' } },
        { type: 'bandwidth', capabilities: { bandwidth: true } },
        { type: 'portmap', capabilities: { portMappings: true }, snat: true },
        { type: 'firewall', backend: 'iptables' },
      ],
    });
    const a = att(s, 'vm-chain', {
      capabilityArgs: {
        mac: '02:aa:bb:cc:dd:01',
        bandwidth: {
          ingressRate: 8_000_000,
          ingressBurst: 80_000,
          egressRate: 8_000_000,
          egressBurst: 80_000,
        },
        portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }],
        ips: ['198.18.12.50'], // not declared by any plugin: never passed
      },
    });
    const res = toCurrentResult(await rt.addNetworkList(l, a));
    const link = s.ipJson<Array<{ address: string }>>('link', 'show', 'dev', 'eth0')[0]!;
    assert.equal(link.address, '02:aa:bb:cc:dd:01');
    assert.equal(
      s.ns.run(() => readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim()),
      '777',
    );
    const hostVeth = res.interfaces!.find((i) => !i.sandbox && i.name.startsWith('veth'))!.name;
    assert.match(execFileSync('tc', ['qdisc', 'show', 'dev', hostVeth], { encoding: 'utf8' }), /tbf/);
    assert.match(
      execFileSync('iptables', ['-t', 'nat', '-S'], { encoding: 'utf8' }),
      /CNI-DN-.*--dport 18080/,
    );
    assert.match(execFileSync('iptables', ['-S'], { encoding: 'utf8' }), /CNI-FORWARD/);
    const tuningIn = readFileSync(join(root, 'cache', 'results', `${name}-vm-chain-eth0`), 'utf8');
    assert.match(tuningIn, /"capabilityArgs":\{"bandwidth"/);
    // disableCheck is honoured; portmap 1.1.1's own CHECK fails without IPv6 addresses, so check the rest
    const timing = {} as CallTiming;
    await rt.checkNetworkList({ ...l, disableCheck: true }, a, { timing });
    assert.equal(timing.invocations.length, 0);
    await rt.checkNetworkList({ ...l, plugins: l.plugins.filter((p) => p.network.type !== 'portmap') }, a);
    await rt.delNetworkList(l, a);
    assert.doesNotMatch(execFileSync('iptables', ['-t', 'nat', '-S'], { encoding: 'utf8' }), /--dport 18080/);
    assert.equal(findLink(host, hostVeth), undefined);
  });

  it('ptp + static at 0.3.1, 0.4.0 and 1.0.0: results in the list’s version, converted to the current one', async () => {
    for (const [i, v] of ['0.3.1', '0.4.0', '1.0.0'].entries()) {
      const s = ns(`v${i}`);
      const l = conflist({
        cniVersion: v,
        name: `ptp${i}-${tag}`,
        plugins: [
          {
            type: 'ptp',
            ipam: {
              type: 'static',
              addresses: [{ address: `198.18.13.${10 + i}/24`, gateway: '198.18.13.1' }],
            },
          },
        ],
      });
      const r = await rt.addNetworkList(l, att(s, `vm-v${i}`));
      assert.equal(r.cniVersion, v);
      const cur: Result100 = toCurrentResult(r);
      assert.equal(cur.ips![0]!.address, `198.18.13.${10 + i}/24`);
      assert.deepEqual(addrsIn(s, 'eth0'), [`198.18.13.${10 + i}/24`]);
      if (v !== '0.3.1') await rt.checkNetworkList(l, att(s, `vm-v${i}`));
      else await assert.rejects(rt.checkNetworkList(l, att(s, `vm-v${i}`)), (e) => isCniError(e, 1));
      await rt.delNetworkList(l, att(s, `vm-v${i}`));
      assert.equal(findLink(s.nl, 'eth0'), undefined);
    }
  });

  it('cniVersions picks 1.1.0, which these plugins do not speak: verify() says so, ADD fails with code 1', async () => {
    const s = ns('v11');
    const l = conflist({
      cniVersion: '0.4.0',
      cniVersions: ['0.4.0', '1.0.0', '1.1.0'],
      name: `v11-${tag}`,
      plugins: [
        {
          type: 'ptp',
          ipam: { type: 'static', addresses: [{ address: '198.18.14.2/24', gateway: '198.18.14.1' }] },
        },
      ],
    });
    assert.equal(l.cniVersion, '1.1.0');
    await assert.rejects(
      rt.verify(l),
      (e) =>
        isCniError(e, 1) &&
        /plugin "ptp" \(\/usr\/lib\/cni\/ptp\) does not support config version "1.1.0" \(supports 0.1.0, .*1.0.0\)/.test(
          e.message,
        ),
    );
    await assert.rejects(
      rt.addNetworkList(l, att(s, 'vm-v11')),
      (e) => isCniError(e, 1) && /incompatible CNI versions/.test(e.message),
    );
    await rt.delNetworkList(l, att(s, 'vm-v11')).catch(() => undefined);
    // STATUS and GC's plugin verb need 1.1.0: with 1.0.0 they are no-ops that succeed
    await rt.getStatusNetworkList(conflist({ cniVersion: '1.0.0', name: 'st', plugins: [{ type: 'ptp' }] }));
  });

  it('a missing plugin and a malformed conflist', async () => {
    const s = ns('miss');
    const l = conflist({
      cniVersion: '1.0.0',
      name: `miss-${tag}`,
      plugins: [
        {
          type: 'ptp',
          ipam: { type: 'static', addresses: [{ address: '198.18.15.2/24', gateway: '198.18.15.1' }] },
        },
        { type: 'no-such-plugin' },
      ],
    });
    await assert.rejects(
      rt.verify(l),
      (e) =>
        isTapnetError(e, 'ERR_NOT_FOUND') &&
        e.message.includes(`plugin "no-such-plugin" not found in ${fakes}, ${DEBIAN_CNI}`),
    );
    await assert.rejects(
      rt.addNetworkList(l, att(s, 'vm-miss')),
      (e) =>
        isTapnetError(e, 'ERR_NOT_FOUND') &&
        /^plugin type="no-such-plugin" failed \(add\): failed to find plugin/.test(e.message),
    );
    // ptp ran before the missing one; DEL of the list fails on the missing plugin too (as libcni's)
    await assert.rejects(rt.delNetworkList(l, att(s, 'vm-miss')), (e) => isTapnetError(e, 'ERR_NOT_FOUND'));
    await rt.delNetworkList({ ...l, plugins: [l.plugins[0]!] }, att(s, 'vm-miss'));
    assert.equal(findLink(s.nl, 'eth0'), undefined);
    const dir = join(root, 'conf-bad');
    mkdirSync(dir);
    writeFileSync(join(dir, '10-bad.conflist'), '{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":');
    assert.throws(
      () => loadNetworkConf(dir, 'bad'),
      (e) => isTapnetError(e, 'ERR_CONFIG') && /10-bad.conflist/.test(e.message),
    );
  });

  it('host-local exhausted: the third ADD on a /30 fails, DEL frees the addresses', async () => {
    const name = `x30-${tag}`;
    const l = conflist({
      cniVersion: '1.0.0',
      name,
      plugins: [
        {
          type: 'ptp',
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: '198.18.16.0/30', gateway: '198.18.17.1' }]],
            dataDir: ipamDir,
          },
        },
      ],
    });
    const s = [ns('x0'), ns('x1'), ns('x2')];
    const got = [];
    for (const [i, sp] of s.entries()) {
      try {
        got.push(toCurrentResult(await rt.addNetworkList(l, att(sp, `vm-x${i}`))).ips![0]!.address);
      } catch (e) {
        got.push(e);
      }
    }
    assert.deepEqual(got.slice(0, 2), ['198.18.16.1/30', '198.18.16.2/30']);
    assert.ok(
      isCniError(got[2]) &&
        /no IP addresses available in range set: 198.18.16.1-198.18.16.2/.test((got[2] as Error).message),
    );
    for (const [i, sp] of s.entries()) await rt.delNetworkList(l, att(sp, `vm-x${i}`));
    assert.deepEqual(leases(name), []);
  });

  it('a plugin that crashes, prints garbage or hangs after bridge: ADD fails typed, DEL cleans up', async () => {
    for (const [bad, check] of [
      [
        'crash',
        (e: unknown) =>
          isCniError(e, 0) &&
          /netplugin failed: "panic: runtime error.*": exit status 2/.test((e as Error).message),
      ],
      [
        'garbage',
        (e: unknown) => isCniError(e, 6) && /failed to unmarshal raw result/.test((e as Error).message),
      ],
      ['hang', (e: unknown) => isTapnetError(e, 'ERR_TIMEOUT')],
    ] as const) {
      const s = ns(bad.slice(0, 4));
      const name = `${bad}-${tag}`;
      const l = conflist({
        cniVersion: '1.0.0',
        name,
        plugins: [
          bridgePlugin(
            `tnb${tag}x${bad[0]}`,
            `198.18.${21 + ['crash', 'garbage', 'hang'].indexOf(bad)}.0/24`,
          ),
          { type: bad },
        ],
      });
      const t0 = Date.now();
      await assert.rejects(rt.addNetworkList(l, att(s, `vm-${bad}`), { timeoutMs: 1500 }), check, bad);
      assert.ok(Date.now() - t0 < 10_000);
      assert.ok(findLink(s.nl, 'eth0'), 'bridge ran before the failure');
      assert.equal(leases(name).length, 1);
      await rt.delNetworkList(l, att(s, `vm-${bad}`), { timeoutMs: 5000 });
      assert.equal(findLink(s.nl, 'eth0'), undefined);
      assert.deepEqual(leases(name), []);
    }
  });

  it('DEL after the namespace is gone still releases everything; the cache is written by ADD and used by DEL', async () => {
    const s = ns('gone');
    const name = `gone-${tag}`;
    const l = conflist({
      cniVersion: '1.0.0',
      name,
      plugins: [{ type: 'recorder' }, bridgePlugin(`tnb${tag}g`, '198.18.19.0/24')],
    });
    const res = await rt.addNetworkList(l, att(s, 'vm-gone'));
    const cacheFile = join(root, 'cache', 'results', `${name}-vm-gone-eth0`);
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8'));
    assert.equal(cached.kind, 'cniCacheV1');
    assert.equal(Buffer.from(cached.config, 'base64').toString(), l.bytes.toString());
    assert.equal(cached.netns, `/run/netns/${s.name}`);
    s.destroy();
    await rt.delNetworkList(l, att(s, 'vm-gone'));
    const delIn = JSON.parse(readFileSync(join(root, 'recorder.DEL.stdin'), 'utf8'));
    assert.deepEqual(delIn.prevResult, JSON.parse(JSON.stringify(res)));
    assert.deepEqual(leases(name), []);
    assert.equal(existsSync(cacheFile), false);
  });

  it('in-process plugins chain with exec’d ones: bridge (exec) → tc-redirect-tap (in-process)', async () => {
    const s = ns('inproc');
    const withOurs = new CniRuntime({
      pluginPaths: [DEBIAN_CNI],
      cacheDir: join(root, 'cache-inproc'),
      inProcessPlugins,
    });
    const l = conflist({
      cniVersion: '1.0.0',
      name: `inproc-${tag}`,
      plugins: [bridgePlugin(`tnb${tag}i`, '198.18.24.0/24'), { type: 'tc-redirect-tap' }],
    });
    const a = att(s, 'vm-inproc', { ifName: 'veth0' });
    const timing = {} as CallTiming;
    const res = toCurrentResult(await withOurs.addNetworkList(l, a, { timing }));
    assert.deepEqual(
      timing.invocations.map((i) => [i.type, i.inProcess, i.path]),
      [
        ['bridge', false, join(DEBIAN_CNI, 'bridge')],
        ['tc-redirect-tap', true, undefined],
      ],
    );
    assert.ok(timing.invocations[0]!.spawnMs! > 0);
    assert.ok(
      res.interfaces!.some((i) => i.name === 'tap0'),
      JSON.stringify(res),
    );
    assert.ok(findLink(s.nl, 'tap0'));
    await withOurs.checkNetworkList(l, a);
    await withOurs.delNetworkList(l, a);
    assert.equal(findLink(s.nl, 'tap0'), undefined);
    assert.equal(findLink(s.nl, 'veth0'), undefined);
  });

  it('GC deletes stale attachments found in the cache (the GC verb itself needs 1.1.0)', async () => {
    const name = `gc-${tag}`;
    const l = conflist({
      cniVersion: '1.0.0',
      name,
      plugins: [bridgePlugin(`tnb${tag}z`, '198.18.20.0/24')],
    });
    const keep = ns('gck');
    const stale = ns('gcs');
    await rt.addNetworkList(l, att(keep, 'vm-keep'));
    await rt.addNetworkList(l, att(stale, 'vm-stale'));
    assert.equal(leases(name).length, 2);
    await rt.gcNetworkList(l, { validAttachments: [{ containerID: 'vm-keep', ifname: 'eth0' }] });
    assert.ok(findLink(keep.nl, 'eth0'));
    assert.equal(findLink(stale.nl, 'eth0'), undefined);
    assert.equal(leases(name).length, 1);
    await rt.delNetworkList(l, att(keep, 'vm-keep'));
  });
});
