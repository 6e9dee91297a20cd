import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { type GuestNetConfig, renderCloudHypervisorNet } from '../../src/guest/index.js';

const base: GuestNetConfig = {
  vmId: 'vm1',
  ifname: 'tn3f2a9c01',
  mac: '52:54:00:12:34:56',
  ipv4: '198.18.0.5/24',
  gateway4: '198.18.0.1',
  dns: ['198.18.0.1'],
  mtu: 1500,
};

function refused(fn: () => unknown, what?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isTapnetError(e, 'ERR_INVALID_ARGUMENT'), `expected ERR_INVALID_ARGUMENT, got ${String(e)}`);
    if (what) assert.match(e.message, what);
    return true;
  });
}

describe('renderCloudHypervisorNet', () => {
  it('TAP by name; the guest address is NOT passed (ip=/mask= would land on the host TAP)', () => {
    const arg = renderCloudHypervisorNet(base);
    assert.equal(arg, 'tap=tn3f2a9c01,mac=52:54:00:12:34:56,num_queues=2');
    assert.ok(!arg.includes('198.18.0.5'));
  });

  it('TAP by fd, single and multi-queue (num_queues counts both directions)', () => {
    assert.equal(
      renderCloudHypervisorNet({ ...base, tapFd: 3 }),
      'fd=[3],mac=52:54:00:12:34:56,num_queues=2',
    );
    assert.equal(
      renderCloudHypervisorNet({ ...base, queues: 2, tapFds: [3, 4] }),
      'fd=[3,4],mac=52:54:00:12:34:56,num_queues=4',
    );
    assert.equal(
      renderCloudHypervisorNet({ ...base, queues: 4 }),
      'tap=tn3f2a9c01,mac=52:54:00:12:34:56,num_queues=8',
    );
    refused(() => renderCloudHypervisorNet({ ...base, queues: 2, tapFd: 3 }), /tapFds/);
  });

  it('options: host address, MTU, id', () => {
    assert.equal(
      renderCloudHypervisorNet(base, { hostAddress: '198.18.0.1/24', advertiseMtu: true, id: 'nic0' }),
      'tap=tn3f2a9c01,mac=52:54:00:12:34:56,ip=198.18.0.1,mask=255.255.255.0,num_queues=2,mtu=1500,id=nic0',
    );
    refused(() => renderCloudHypervisorNet(base, { hostAddress: 'fd00::1/64' }), /IPv4/);
    refused(() => renderCloudHypervisorNet(base, { hostAddress: '198.18.0.1' }));
  });

  it('one rate limit for both directions, in Firecracker token-bucket terms', () => {
    const spec = {
      bytesPerSec: 12_500_000,
      burstBytes: 1_500_000,
      initialBurstBytes: 1_048_576,
      opsPerSec: 1000,
    };
    assert.equal(
      renderCloudHypervisorNet({ ...base, rateLimit: { rx: spec, tx: { ...spec } } }),
      'tap=tn3f2a9c01,mac=52:54:00:12:34:56,num_queues=2,' +
        'bw_size=1500000,bw_one_time_burst=1048576,bw_refill_time=120,ops_size=1000,ops_refill_time=1000',
    );
    refused(() => renderCloudHypervisorNet({ ...base, rateLimit: { rx: spec } }), /both directions/);
    refused(
      () => renderCloudHypervisorNet({ ...base, rateLimit: { rx: spec, tx: { ...spec, bytesPerSec: 1 } } }),
      /both directions/,
    );
  });

  it('refuses hostile values', () => {
    for (const ifname of ['tap0,fd=[0]', 'tap=0', 'tap[0]', 'ta"p0', 'tap\n0']) {
      refused(() => renderCloudHypervisorNet({ ...base, ifname }));
    }
    refused(() => renderCloudHypervisorNet(base, { id: 'nic0,tap=eth0' }), /id/);
    refused(() => renderCloudHypervisorNet(base, { id: '_x' }), /id/);
  });
});
