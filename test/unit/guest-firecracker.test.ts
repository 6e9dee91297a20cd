import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  firecrackerNetworkInterfacePath,
  type GuestNetConfig,
  renderFirecrackerBootArgs,
  renderFirecrackerNetworkInterface,
  toVmmTokenBucket,
} from '../../src/guest/index.js';

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

describe('renderFirecrackerNetworkInterface', () => {
  it('renders the minimal body, keys in the swagger order', () => {
    const body = renderFirecrackerNetworkInterface(base, { ifaceId: 'eth0' });
    assert.deepEqual(body, { iface_id: 'eth0', host_dev_name: 'tn3f2a9c01', guest_mac: '52:54:00:12:34:56' });
    assert.equal(
      JSON.stringify(body),
      '{"iface_id":"eth0","host_dev_name":"tn3f2a9c01","guest_mac":"52:54:00:12:34:56"}',
    );
  });

  it('advertises the MTU only when asked', () => {
    assert.equal(
      renderFirecrackerNetworkInterface({ ...base, mtu: 9000 }, { ifaceId: 'net_1' }).mtu,
      undefined,
    );
    assert.deepEqual(
      renderFirecrackerNetworkInterface({ ...base, mtu: 9000 }, { ifaceId: 'net_1', advertiseMtu: true }),
      {
        iface_id: 'net_1',
        host_dev_name: 'tn3f2a9c01',
        guest_mac: '52:54:00:12:34:56',
        mtu: 9000,
      },
    );
  });

  it('maps rate limits: rx (to the guest) and tx (from the guest), bandwidth and ops', () => {
    const body = renderFirecrackerNetworkInterface(
      {
        ...base,
        rateLimit: {
          // 100 Mbit/s, default burst: one second's worth.
          rx: { bytesPerSec: 12_500_000, opsPerSec: 1000, burstOps: 50 },
          // 100 Mbit/s with a 1.5 MB bucket (120 ms of traffic) and a 1 MiB one-time credit.
          tx: { bytesPerSec: 12_500_000, burstBytes: 1_500_000, initialBurstBytes: 1_048_576 },
        },
      },
      { ifaceId: 'eth0' },
    );
    assert.deepEqual(body, {
      iface_id: 'eth0',
      host_dev_name: 'tn3f2a9c01',
      guest_mac: '52:54:00:12:34:56',
      rx_rate_limiter: {
        bandwidth: { size: 12_500_000, refill_time: 1000 },
        // 50 ops is 50 ms of 1000 ops/s: raised to the 100 ms floor → 100 ops per 100 ms.
        ops: { size: 100, refill_time: 100 },
      },
      tx_rate_limiter: {
        bandwidth: { size: 1_500_000, one_time_burst: 1_048_576, refill_time: 120 },
      },
    });
    assert.equal(
      JSON.stringify(body.tx_rate_limiter),
      '{"bandwidth":{"size":1500000,"one_time_burst":1048576,"refill_time":120}}',
    );
  });

  it('refuses what Firecracker cannot do, and bad ids', () => {
    refused(() => renderFirecrackerNetworkInterface({ ...base, tapFd: 3 }, { ifaceId: 'eth0' }), /by name/);
    refused(
      () => renderFirecrackerNetworkInterface({ ...base, queues: 2 }, { ifaceId: 'eth0' }),
      /one queue pair/,
    );
    for (const bad of ['', 'eth-0', 'eth0/../drives', 'a'.repeat(65), 'eth0\n', 'e"th0']) {
      refused(() => renderFirecrackerNetworkInterface(base, { ifaceId: bad }), /iface_id/);
    }
    refused(() => renderFirecrackerNetworkInterface(base, undefined as unknown as { ifaceId: string }));
    refused(() =>
      renderFirecrackerNetworkInterface(
        { ...base, rateLimit: { rx: { bytesPerSec: -1 } } },
        { ifaceId: 'eth0' },
      ),
    );
  });

  it('gives the request path', () => {
    assert.equal(firecrackerNetworkInterfacePath('eth0'), '/network-interfaces/eth0');
    refused(() => firecrackerNetworkInterfacePath('../actions'));
  });
});

describe('toVmmTokenBucket', () => {
  it('keeps the rate exact and the capacity near the burst', () => {
    assert.deepEqual(toVmmTokenBucket(3), { size: 3, refill_time: 1000 });
    // 1 MB burst at 3 MB/s: refill round(333.3) = 333 ms, size 3e6 × 0.333 = 999,000 (rate still 3 MB/s).
    assert.deepEqual(toVmmTokenBucket(3_000_000, 1_000_000), { size: 999_000, refill_time: 333 });
    // A 64-byte burst at 1000 B/s is 64 ms: raised to 100 ms → 100 bytes.
    assert.deepEqual(toVmmTokenBucket(1000, 64), { size: 100, refill_time: 100 });
    // 5 ops/s with a burst of 1: one op every 200 ms.
    assert.deepEqual(toVmmTokenBucket(5, 1), { size: 1, refill_time: 200 });
    // 2 s of burst.
    assert.deepEqual(toVmmTokenBucket(1_000_000, 2_000_000, 0), { size: 2_000_000, refill_time: 2000 });
  });
});

describe('renderFirecrackerBootArgs', () => {
  it('is the kernel ip= argument for eth0', () => {
    assert.equal(
      renderFirecrackerBootArgs(base),
      'ip=198.18.0.5::198.18.0.1:255.255.255.0::eth0:off:198.18.0.1',
    );
  });
});
