/**
 * Statistics and the usage export as users reach them: `tapnet serve` with VMs whose TAPs carry real
 * frames, the CLI through the daemon and in-process (--local, sharing the usage files), GET /v1/stats,
 * /metrics with the per-VM switch off and then on (a SIGHUP reload), `stats --watch` piped, and the
 * usage export's lifecycle (periodic samples, release, --collect).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { getLink } from '../../src/net/link.js';
import { closeTapFds, openTap } from '../../src/net/tap.js';
import { ethernet, ipv4Udp } from '../helpers/packets.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { CLI, type DaemonHarness, startDaemon } from './api-harness.js';

const skip = privSkipReason();
const VNET_HDR = Buffer.alloc(10);

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('stats and usage through the daemon and the CLI', { skip }, () => {
  let t: TestNetns;
  let d: DaemonHarness;
  let env: NodeJS.ProcessEnv;
  const fds = new Map<string, number>();
  const sent = new Map<string, number>();
  const tapnet = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
  const json = (...args: string[]) => {
    const r = tapnet(...args, '--json');
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };

  /** Play VM `id`'s guest: `n` UDP frames to the gateway. */
  async function send(id: string, n: number): Promise<void> {
    const info = (await d.call('GET', `/v1/vms/${id}`)).json;
    if (!fds.has(id)) fds.set(id, openTap(info.tap, { nsFd: t.ns.fd, vnetHdr: true }).fds[0]!);
    const frame = ethernet(
      getLink(t.nl, 'tnsc0').mac!,
      info.mac,
      0x0800,
      ipv4Udp(info.ipv4.split('/')[0], '198.18.33.1', 40000, 9, Buffer.alloc(64)),
    );
    for (let i = 0; i < n; i++) writeSync(fds.get(id)!, Buffer.concat([VNET_HDR, frame]));
    sent.set(id, (sent.get(id) ?? 0) + n * frame.length);
  }

  before(async () => {
    t = makeTestNetns('stcli');
    d = await startDaemon(t, {
      tag: 'stcli',
      config: {
        defaultNetwork: 'vms',
        networks: { vms: { bridge: 'tnsc0', subnet4: '198.18.33.0/24' } },
        daemon: { metrics: { usageIntervalSeconds: 1 } },
      },
    });
    env = { ...process.env, TAPNET_CONFIG: d.configFile };
    assert.equal(tapnet('up', 'vm1', 'vm2').status, 0);
    await send('vm1', 10);
    await send('vm2', 4);
  });
  after(async () => {
    for (const fd of fds.values()) await closeTapFds([fd]);
    await d?.stop();
    d?.cleanup();
    t?.destroy();
  });

  it('GET /v1/stats: both VMs with exact counters, the network’s drops, problems for unknown VMs', async () => {
    const r = await d.call('GET', '/v1/stats');
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.json.vms.map((v: { vmId: string }) => v.vmId),
      ['vm1', 'vm2'],
    );
    assert.equal(r.json.vms[0].guestTx.bytes, sent.get('vm1'));
    assert.equal(r.json.vms[1].guestTx.packets, 4);
    assert.equal(r.json.vms[0].mode, 'direct');
    assert.deepEqual(r.json.vms[0].policyDrops, {
      egress: { packets: 0, bytes: 0 },
      ingress: { packets: 0, bytes: 0 },
    });
    const net = r.json.networks.find((n: { network: string }) => n.network === 'vms');
    assert.equal(net.vms, 2);
    assert.equal(typeof net.drops.spoof.packets, 'number');
    const some = await d.call('GET', '/v1/stats?vm=vm2&vm=ghost');
    assert.deepEqual(
      some.json.vms.map((v: { vmId: string }) => v.vmId),
      ['vm2'],
    );
    assert.deepEqual(
      some.json.problems.map((p: { vmId: string }) => p.vmId),
      ['ghost'],
    );
    assert.equal((await d.call('GET', '/v1/stats?vm=..%2F..')).status, 400);
  });

  it('tapnet stats: the table with the network’s drops under it; --json as before', () => {
    const r = tapnet('stats');
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /^VM\s+TAP\s+STATE\s+GUEST RX\s+RX PKTS\s+GUEST TX\s+TX PKTS\s+ERRORS\s+DROPPED\s+POLICY DROPS$/m,
    );
    assert.match(r.stdout, /^vm1\s+\S+\s+up\s/m);
    assert.match(r.stdout, /^network vms: anti-spoofing dropped \d+ packet\(s\), isolation \d+/m);
    const list = json('stats', 'vm1');
    assert.equal(list[0].guestTx.bytes, sent.get('vm1'));
  });

  it('stats --watch piped: one JSON line per sample, rates from the second on, no terminal codes', async () => {
    const r = tapnet('stats', '--watch', '--interval', '0.3', '--count', '3');
    assert.equal(r.status, 0, r.stderr);
    assert.ok(!r.stdout.includes('\x1b'));
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 3);
    assert.equal(lines[0].vms[0].rates, null);
    for (const k of [
      'guestRxBytesPerSecond',
      'guestTxBytesPerSecond',
      'guestRxPacketsPerSecond',
      'guestTxPacketsPerSecond',
    ])
      assert.equal(typeof lines[2].vms[0].rates[k], 'number');
    assert.equal(lines[2].vms[0].guestTx.bytes, sent.get('vm1'));
    const local = tapnet('--local', 'stats', 'vm2', '--watch', '--interval', '0.1', '--count', '2');
    assert.equal(local.status, 0, local.stderr);
    assert.deepEqual(
      local.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).vms.map((v: { vmId: string }) => v.vmId)),
      [['vm2'], ['vm2']],
    );
    assert.equal(tapnet('stats', '--watch', '--interval', '0').status, 2, 'interval must be positive');
  });

  it('/metrics: no per-VM series by default; switched on by a reload, capped at maxVms', async () => {
    let text = (await d.call('GET', '/metrics')).text;
    assert.doesNotMatch(text, /tapnet_vm_/);
    assert.match(text, /^tapnet_network_spoof_dropped_packets_total\{network="vms"\} \d+$/m);
    const cfg = JSON.parse(readFileSync(d.configFile, 'utf8'));
    cfg.daemon = { metrics: { perVm: true, maxVms: 1, usageIntervalSeconds: 1 } };
    writeFileSync(d.configFile, JSON.stringify(cfg));
    d.proc.kill('SIGHUP');
    text = await until('per-VM series', async () => {
      const m = (await d.call('GET', '/metrics')).text;
      return /tapnet_vm_tx_bytes_total/.test(m) ? m : undefined;
    });
    assert.match(
      text,
      new RegExp(`^tapnet_vm_tx_bytes_total\\{vm="vm1",network="vms"\\} ${sent.get('vm1')}$`, 'm'),
    );
    assert.match(text, /^tapnet_vm_tx_packets_total\{vm="vm1",network="vms"\} 10$/m);
    assert.doesNotMatch(text, /vm="vm2"/, 'over the cap');
    assert.match(text, /^tapnet_vm_metrics_omitted 1$/m);
  });

  it('usage: sampled by the daemon on its own; release samples last; --collect hands over once', async () => {
    // The daemon samples every second without being asked.
    await until('a periodic sample', async () =>
      existsSync(join(d.stateDir, 'usage', 'vm1.json')) ? true : undefined,
    );
    await send('vm1', 3); // whether or not a periodic sample sees these, the release samples them
    await closeTapFds([fds.get('vm1')!]);
    fds.delete('vm1');
    assert.equal(tapnet('down', 'vm1').status, 0);
    const report = json('usage');
    const vm1 = report.vms.find((v: { vmId: string }) => v.vmId === 'vm1');
    assert.equal(vm1.state, 'released');
    assert.equal(vm1.guestTx.bytes, sent.get('vm1'));
    assert.equal(vm1.guestTx.packets, 13);
    const vm2 = report.vms.find((v: { vmId: string }) => v.vmId === 'vm2');
    assert.equal(vm2.state, 'active');
    // In-process (--local) sees the same ledger.
    assert.equal(
      json('--local', 'usage').vms.find((v: { vmId: string }) => v.vmId === 'vm1').guestTx.bytes,
      sent.get('vm1'),
    );
    assert.equal(json('usage', '--since', '1h').vms.length, 2);
    assert.equal(tapnet('usage', '--since', 'last week').status, 2);
    assert.equal((await d.call('GET', '/v1/usage?since=x')).status, 400);
    assert.equal((await d.call('DELETE', '/v1/usage/vm2')).status, 409, 'vm2 still has a network');
    const collected = json('usage', '--collect');
    assert.deepEqual(collected.collected, ['vm1']);
    assert.equal(
      collected.vms.find((v: { vmId: string }) => v.vmId === 'vm1').guestTx.bytes,
      sent.get('vm1'),
    );
    assert.deepEqual(
      json('usage').vms.map((v: { vmId: string }) => v.vmId),
      ['vm2'],
      'collected: forgotten',
    );
    assert.equal((await d.call('DELETE', '/v1/usage/vm1')).status, 404);
    const table = tapnet('usage');
    assert.match(table.stdout, /^VM\s+NETWORK\s+STATE\s+GUEST RX/m);
    assert.match(table.stdout, /^vm2\s+vms\s+active\s/m);
  });
});
