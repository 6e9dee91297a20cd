/**
 * Per-VM Prometheus series behind the cardinality switch: absent (not even HELP lines) when off,
 * present with the kernel's values when on, capped at maxVms with the rest counted; the per-network drop
 * counters are there either way; the switch is read at every scrape.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TapnetMetrics } from '../../src/observe/metrics.js';
import type { StatsReport, VmStats } from '../../src/observe/vmstats.js';

const vm = (vmId: string, rx: number): VmStats => ({
  vmId,
  network: 'vms',
  mode: 'direct',
  tap: `tn-${vmId}`,
  operstate: 'up',
  guestRx: { bytes: rx, packets: rx / 100, errors: 0, dropped: 1 },
  guestTx: { bytes: 2 * rx, packets: 3, errors: 2, dropped: 0 },
  policyDrops: { egress: { packets: 7, bytes: 700 }, ingress: { packets: 1, bytes: 60 } },
  networkDrops: { spoof: { packets: 5, bytes: 300 }, isolate: { packets: 0, bytes: 0 } },
  collectedAt: '2026-01-01T00:00:00.000Z',
});

function report(n: number): StatsReport {
  return {
    collectedAt: '2026-01-01T00:00:00.000Z',
    vms: Array.from({ length: n }, (_, i) => vm(`vm-${String(i).padStart(2, '0')}`, 1000 * (i + 1))),
    networks: [
      {
        network: 'vms',
        mode: 'direct',
        vms: n,
        drops: { spoof: { packets: 5, bytes: 300 }, isolate: { packets: 2, bytes: 120 } },
      },
      { network: 'pods', mode: 'cni', vms: 0, drops: null },
    ],
    unregisteredDrops: { packets: 4, bytes: 240 },
    problems: [],
  };
}

describe('per-VM metrics and the cardinality switch', () => {
  it('off by default: no tapnet_vm_* at all; network drops are there', async () => {
    const asked: boolean[] = [];
    const m = new TapnetMetrics({
      processMetrics: false,
      source: () => ({
        activeVms: () => 3,
        pools: async () => [],
        stats: async (o) => {
          asked.push(o.vms);
          return report(3);
        },
      }),
    });
    try {
      const text = await m.text();
      assert.doesNotMatch(text, /tapnet_vm_/);
      assert.match(text, /^tapnet_network_spoof_dropped_packets_total\{network="vms"\} 5$/m);
      assert.match(text, /^tapnet_network_isolation_dropped_bytes_total\{network="vms"\} 120$/m);
      assert.doesNotMatch(text, /network="pods"/, 'CNI networks have no tapnet firewall counters');
      assert.match(text, /^tapnet_unregistered_dropped_packets_total 4$/m);
      assert.deepEqual(asked, [false], 'per-VM counters are not even read');
    } finally {
      m.close();
    }
  });

  it('on: every VM’s counters from the guest’s side, policy drops by direction; capped at maxVms', async () => {
    let cfg = { perVm: true, maxVms: 2 };
    const m = new TapnetMetrics({
      processMetrics: false,
      perVm: () => cfg,
      source: () => ({ activeVms: () => 3, pools: async () => [], stats: async () => report(3) }),
    });
    try {
      let text = await m.text();
      assert.match(text, /^# TYPE tapnet_vm_rx_bytes_total counter$/m);
      assert.match(text, /^tapnet_vm_rx_bytes_total\{vm="vm-00",network="vms"\} 1000$/m);
      assert.match(text, /^tapnet_vm_tx_bytes_total\{vm="vm-01",network="vms"\} 4000$/m);
      assert.match(text, /^tapnet_vm_rx_packets_total\{vm="vm-01",network="vms"\} 20$/m);
      assert.match(text, /^tapnet_vm_tx_errors_total\{vm="vm-00",network="vms"\} 2$/m);
      assert.match(text, /^tapnet_vm_rx_dropped_total\{vm="vm-00",network="vms"\} 1$/m);
      assert.match(
        text,
        /^tapnet_vm_policy_dropped_packets_total\{vm="vm-00",network="vms",direction="egress"\} 7$/m,
      );
      assert.match(
        text,
        /^tapnet_vm_policy_dropped_bytes_total\{vm="vm-00",network="vms",direction="ingress"\} 60$/m,
      );
      assert.doesNotMatch(text, /vm="vm-02"/, 'the third VM is over the cap');
      assert.match(text, /^tapnet_vm_metrics_omitted 1$/m);
      // The values are the kernel's at each scrape (set, not added up).
      text = await m.text();
      assert.match(text, /^tapnet_vm_rx_bytes_total\{vm="vm-00",network="vms"\} 1000$/m);
      // Switched off (a configuration reload): the series go away.
      cfg = { perVm: false, maxVms: 2 };
      text = await m.text();
      assert.doesNotMatch(text, /tapnet_vm_/);
      cfg = { perVm: true, maxVms: 10 };
      text = await m.text();
      assert.match(text, /vm="vm-02"/);
      assert.match(text, /^tapnet_vm_metrics_omitted 0$/m);
    } finally {
      m.close();
    }
  });

  it('a failing read is counted, and leaves no stale series', async () => {
    let fail = false;
    const m = new TapnetMetrics({
      processMetrics: false,
      perVm: () => ({ perVm: true, maxVms: 10 }),
      source: () => ({
        activeVms: () => 1,
        pools: async () => [],
        stats: async () => {
          if (fail) throw new Error('netlink went away');
          return report(1);
        },
      }),
    });
    try {
      assert.match(await m.text(), /vm="vm-00"/);
      fail = true;
      const text = await m.text();
      assert.doesNotMatch(text, /vm="vm-00"/);
      assert.match(text, /^tapnet_stats_errors_total 1$/m);
    } finally {
      m.close();
    }
  });
});
