import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { firecrackerConflist, writeConflist } from '../../src/manager/cni-conflist.js';

describe('Firecracker conflist generation', () => {
  it('defaults to fcbr0 on 10.168.0.0/24 with bridge → tc-redirect-tap', () => {
    assert.deepEqual(firecrackerConflist(), {
      cniVersion: '1.0.0',
      name: 'fcnet',
      plugins: [
        {
          type: 'bridge',
          bridge: 'fcbr0',
          isGateway: true,
          ipMasq: true,
          ipam: {
            type: 'host-local',
            subnet: '10.168.0.0/24',
            gateway: '10.168.0.1',
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
        { type: 'tc-redirect-tap' },
      ],
    });
  });

  it('takes its options and refuses bad ones', () => {
    const c = firecrackerConflist({
      name: 'vmnet',
      bridge: 'vmbr1',
      subnet: '198.18.40.0/24',
      gateway: '198.18.40.254',
      mtu: 1400,
    });
    const br = (c.plugins as Record<string, unknown>[])[0]!;
    assert.equal(br.bridge, 'vmbr1');
    assert.equal(br.mtu, 1400);
    assert.equal((br.ipam as { gateway: string }).gateway, '198.18.40.254');
    for (const bad of [
      { name: '../x' },
      { bridge: 'x'.repeat(16) },
      { subnet: '198.18.0.0/31' },
      { subnet: 'fd00::/64' },
      { gateway: '198.19.0.1' },
      { cniVersion: '1.0' },
    ]) {
      assert.throws(
        () => firecrackerConflist(bad),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
        JSON.stringify(bad),
      );
    }
  });

  it('writes <dir>/<name>.conflist atomically, leaving no temp file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tapnet-conf-'));
    try {
      const path = writeConflist(join(dir, 'net.d'), firecrackerConflist({ subnet: '198.18.41.0/24' }));
      assert.equal(path, join(dir, 'net.d', 'fcnet.conflist'));
      assert.deepEqual(readdirSync(join(dir, 'net.d')), ['fcnet.conflist']);
      assert.equal(JSON.parse(readFileSync(path, 'utf8')).name, 'fcnet');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
