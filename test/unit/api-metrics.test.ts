/**
 * Metrics: diagnostics channel messages become Prometheus counters and histograms (by network, mode,
 * outcome and error code); gauges read the source at scrape time; closing unsubscribes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { channels } from '../../src/observe/channels.js';
import { TapnetMetrics } from '../../src/observe/metrics.js';

describe('metrics from diagnostics channels', () => {
  it('counts ensure/release/reconcile/CNI events and reads gauges at scrape time', async () => {
    let active = 3;
    const m = new TapnetMetrics({
      processMetrics: false,
      source: () => ({
        activeVms: () => active,
        pools: async () => [{ network: 'vms', subnet: '198.18.0.0/24', size: 253n, used: 3n, leases: 4 }],
      }),
    });
    try {
      assert.equal(channels.ensure.hasSubscribers, true);
      channels.ensure.publish({
        vmId: 'a',
        network: 'vms',
        mode: 'direct',
        outcome: 'created',
        durationMs: 2,
      });
      channels.ensure.publish({
        vmId: 'a',
        network: 'vms',
        mode: 'direct',
        outcome: 'existing',
        durationMs: 0.3,
      });
      channels.ensure.publish({
        vmId: 'b',
        network: 'vms',
        mode: 'direct',
        outcome: 'error',
        code: 'ERR_IPAM_EXHAUSTED',
        durationMs: 1,
      });
      channels.release.publish({
        vmId: 'a',
        network: 'vms',
        mode: 'direct',
        outcome: 'released',
        durationMs: 20,
      });
      channels.release.publish({ vmId: 'z', outcome: 'unknown', durationMs: 0.1 });
      channels.reconcile.publish({
        outcome: 'ok',
        repairs: { orphanTaps: 2, orphanLeases: 0 },
        errors: 0,
        durationMs: 50,
      });
      channels.cniExec.publish({ plugin: 'bridge', command: 'ADD', outcome: 'ok', durationMs: 18 });
      m.recordRequest('PUT', '/v1/vms/{vmId}', 200, 0.002);
      const text = await m.text();
      const has = (re: RegExp) => assert.match(text, re);
      has(/^tapnet_ensure_total\{network="vms",mode="direct",outcome="created",code=""\} 1$/m);
      has(/^tapnet_ensure_total\{network="vms",mode="direct",outcome="existing",code=""\} 1$/m);
      has(
        /^tapnet_ensure_total\{network="vms",mode="direct",outcome="error",code="ERR_IPAM_EXHAUSTED"\} 1$/m,
      );
      has(
        /^tapnet_ensure_duration_seconds_bucket\{le="0\.0025",network="vms",mode="direct",outcome="created"\} 1$/m,
      );
      has(/^tapnet_release_total\{network="vms",outcome="released",code=""\} 1$/m);
      has(/^tapnet_release_total\{network="",outcome="unknown",code=""\} 1$/m);
      has(/^tapnet_reconcile_total\{outcome="ok"\} 1$/m);
      has(/^tapnet_reconcile_repairs_total\{kind="orphanTaps"\} 2$/m);
      assert.doesNotMatch(text, /kind="orphanLeases"/, 'zero repairs add no series');
      has(/^tapnet_cni_plugin_duration_seconds_count\{plugin="bridge",command="ADD",outcome="ok"\} 1$/m);
      has(/^tapnet_api_requests_total\{method="PUT",route="\/v1\/vms\/\{vmId\}",status="200"\} 1$/m);
      has(/^tapnet_active_vms 3$/m);
      has(/^tapnet_ipam_pool_size\{network="vms",subnet="198\.18\.0\.0\/24"\} 253$/m);
      has(/^tapnet_ipam_pool_used\{network="vms",subnet="198\.18\.0\.0\/24"\} 3$/m);
      active = 5;
      assert.match(await m.text(), /^tapnet_active_vms 5$/m);
    } finally {
      m.close();
    }
    assert.equal(channels.ensure.hasSubscribers, false, 'close() unsubscribes');
  });

  it('process metrics are exported with the tapnet_ prefix', async () => {
    const m = new TapnetMetrics();
    try {
      assert.match(await m.text(), /^tapnet_process_cpu_seconds_total /m);
    } finally {
      m.close();
    }
  });
});
