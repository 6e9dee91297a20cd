import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import type { NetworkInfo } from '../../src/manager/types.js';
import { renderFirecrackerVmConfig, validateFirecrackerConfig } from '../../src/vm/firecracker.js';
import { qemuArgv, qemuKernelCmdline } from '../../src/vm/qemu-args.js';

const info: NetworkInfo = {
  vmId: 'vm1',
  network: 'default',
  mode: 'direct',
  topology: 'bridge',
  tap: 'tn0123456789',
  mac: '02:00:00:00:00:05',
  ipv4: '198.18.0.5/22',
  gateway4: '198.18.0.1',
  dns: ['198.18.0.53'],
  mtu: 1500,
  bridge: 'tn-default',
  queues: 1,
  vnetHdr: true,
  tapMode: 'persistent',
  createdAt: '2026-01-01T00:00:00.000Z',
};

describe('Firecracker VM configuration', () => {
  it('is complete and valid against Firecracker’s schema, with ip= and rate limiters from tapnet', () => {
    const c = renderFirecrackerVmConfig({
      info,
      kernel: '/srv/vmlinux',
      rootfs: '/srv/rootfs.ext4',
      vcpus: 2,
      memoryMiB: 512,
      rateLimit: { rx: { bytesPerSec: 12_500_000, burstBytes: 2_500_000 }, tx: { opsPerSec: 1000 } },
      extraBootArgs: ['tapnet.name=vm1'],
    });
    assert.deepEqual(validateFirecrackerConfig(c), []);
    assert.equal(
      c['boot-source'].boot_args,
      'console=ttyS0 reboot=k panic=1 pci=off ip=198.18.0.5::198.18.0.1:255.255.252.0::eth0:off:198.18.0.53 tapnet.name=vm1',
    );
    assert.deepEqual(c['network-interfaces'], [
      {
        iface_id: 'eth0',
        host_dev_name: 'tn0123456789',
        guest_mac: '02:00:00:00:00:05',
        rx_rate_limiter: { bandwidth: { size: 2_500_000, refill_time: 200 } },
        tx_rate_limiter: { ops: { size: 1000, refill_time: 1000 } },
      },
    ]);
    assert.deepEqual(c['machine-config'], { vcpu_count: 2, mem_size_mib: 512, smt: false });
    assert.equal(c.drives[0]!.is_root_device, true);
  });

  it('the schema check finds unknown fields, wrong types, missing and out-of-range values', () => {
    const bad = {
      'boot-source': { boot_args: 1 },
      'machine-config': { vcpu_count: 3, mem_size_mib: 128, turbo: true },
      'network-interfaces': [
        {
          iface_id: 'eth0',
          host_dev_name: 'tap0',
          rx_rate_limiter: { bandwidth: { size: -1, refill_time: 100 } },
        },
      ],
    };
    const paths = validateFirecrackerConfig(bad).map((v) => `${v.path} ${v.message}`);
    assert.ok(paths.includes('$.boot-source.kernel_image_path is required'), paths.join('\n'));
    assert.ok(paths.includes('$.boot-source.boot_args must be a string'));
    assert.ok(paths.includes('$.machine-config.turbo is not a known field'));
    assert.ok(
      paths.some((p) =>
        p.startsWith('$.network-interfaces[0].rx_rate_limiter.bandwidth.size must be from 0'),
      ),
    );
    assert.ok(paths.includes('$.machine-config.vcpu_count must be 1 or an even number'));
  });

  it('refuses a TAP handed out as fds and bad paths', () => {
    assert.throws(
      () => renderFirecrackerVmConfig({ info: { ...info, tapMode: 'fd' }, kernel: '/k' }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => renderFirecrackerVmConfig({ info, kernel: 'relative' }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => renderFirecrackerVmConfig({ info, kernel: '/k', extraBootArgs: ['a b'] }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });
});

describe('QEMU command line', () => {
  const base = {
    name: 'vm1',
    kernel: '/k',
    initrd: '/i',
    machine: 'microvm' as const,
    accel: 'tcg' as const,
  };
  it('microvm under TCG: TSC frequency given, serial on stdio, NIC fragment appended', () => {
    const argv = qemuArgv({
      ...base,
      tscKhz: 2_600_000,
      kernelIpArg: 'ip=198.18.0.5::198.18.0.1:255.255.252.0::eth0:off',
      netArgs: ['-netdev', 'tap,id=net0,fd=3'],
    });
    const s = argv.join(' ');
    assert.match(s, /-M microvm -accel tcg /);
    assert.match(s, /-serial stdio/);
    assert.ok(argv.at(-1) === 'tap,id=net0,fd=3');
    const cmdline = argv[argv.indexOf('-append') + 1]!;
    assert.match(cmdline, /tsc_early_khz=2600000 tsc=reliable/);
    assert.match(cmdline, /tapnet\.name=vm1 ip=198\.18\.0\.5::/);
  });
  it('q35 boots through qboot; KVM gets the host CPU and no TSC hint', () => {
    const s = qemuArgv({ ...base, machine: 'q35', accel: 'kvm', tscKhz: 2_600_000 }).join(' ');
    assert.match(s, /-M q35 -accel kvm -cpu host/);
    assert.match(s, /-bios \/usr\/share\/qemu\/qboot\.rom/);
    assert.doesNotMatch(qemuKernelCmdline({ ...base, accel: 'kvm', tscKhz: 2_600_000 }), /tsc_early_khz/);
  });
  it('refuses names, paths and kernel words that would change the command line', () => {
    for (const bad of [
      { name: 'a b' },
      { kernel: '/k,x' },
      { extraKernelArgs: ['x y'] },
      { extraKernelArgs: ['"q"'] },
    ]) {
      assert.throws(
        () => qemuArgv({ ...base, ...bad }),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
        JSON.stringify(bad),
      );
    }
  });
});
