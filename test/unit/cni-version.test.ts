import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isCniError } from '../../src/cni/errors.js';
import { createResult, createResultFromJSON, marshalResult } from '../../src/cni/result.js';
import { ALL_VERSIONS, type CniResult } from '../../src/cni/types.js';
import {
  compareVersions,
  convertResult,
  decodePluginInfo,
  parseVersion,
  pickVersion,
  toCurrentResult,
  versionAtLeast,
} from '../../src/cni/version.js';

interface GoldenCase {
  input: Record<string, unknown>;
  go: Record<string, Record<string, unknown>>;
}
const golden = JSON.parse(
  readFileSync(new URL('../../../test/fixtures/go-libcni/conversions.json', import.meta.url), 'utf8'),
) as { cases: GoldenCase[] };

/** Go libcni 1.1.2 writes an empty dns in 1.x results; libcni ≥ 1.2 (and we) leave it out. */
function normalizeGo(v: Record<string, unknown>): Record<string, unknown> {
  const o = { ...v };
  if (typeof o.cniVersion === 'string' && o.cniVersion.startsWith('1.') && JSON.stringify(o.dns) === '{}')
    delete o.dns;
  return o;
}

const asJson = (r: CniResult): unknown => JSON.parse(marshalResult(r));

describe('cni versions', () => {
  it('parses and compares versions as libcni does ("" is 0.1.0)', () => {
    assert.deepEqual(parseVersion(''), [0, 1, 0]);
    assert.deepEqual(parseVersion('1.1'), [1, 1, 0]);
    assert.deepEqual(parseVersion('+1.02.3'), [1, 2, 3]);
    assert.equal(compareVersions('0.3.1', '0.4.0'), -1);
    assert.equal(compareVersions('1.0.0', '1.0'), 0);
    assert.ok(versionAtLeast('1.1.0', '0.4.0'));
    assert.ok(!versionAtLeast('0.3.1', '0.4.0'));
    for (const bad of ['1.2.3.4', 'a.b', '1..0', '1.x']) {
      assert.throws(
        () => parseVersion(bad),
        (e) => isCniError(e, 1),
        bad,
      );
    }
  });

  it('picks the highest cniVersions entry this library supports, cniVersion included', () => {
    assert.equal(pickVersion('0.4.0', undefined), '0.4.0');
    assert.equal(pickVersion('9.9.9', undefined), '9.9.9'); // without cniVersions: taken as written
    assert.equal(pickVersion('0.3.1', ['1.0.0', '0.4.0']), '1.0.0');
    assert.equal(pickVersion('', ['0.4.0', '1.1.0', '2.0.0']), '1.1.0');
    assert.equal(pickVersion('1.0.0', ['3.0.0']), '1.0.0');
    assert.equal(pickVersion('5.0.0', ['4.0.0']), '5.0.0'); // nothing usable: cniVersion stays
    assert.throws(
      () => pickVersion('', ['1.x']),
      (e) => isCniError(e, 7),
    );
  });

  it('decodes VERSION answers, with the 0.2.0 special case', () => {
    assert.deepEqual(decodePluginInfo('{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'), {
      cniVersion: '1.0.0',
      supportedVersions: ['0.4.0', '1.0.0'],
    });
    assert.deepEqual(decodePluginInfo('{"cniVersion":"0.2.0"}').supportedVersions, ['0.1.0', '0.2.0']);
    assert.throws(() => decodePluginInfo('{"supportedVersions":["1.0.0"]}'), /missing field cniVersion/);
    assert.throws(() => decodePluginInfo('{"cniVersion":"1.0.0"}'), /missing field supportedVersions/);
    assert.throws(
      () => decodePluginInfo('garbage'),
      (e) => isCniError(e, 6),
    );
  });

  it('converts every golden result to every version exactly as Go libcni does', () => {
    let compared = 0;
    for (const c of golden.cases) {
      const r = createResultFromJSON(JSON.stringify(c.input));
      for (const [v, expected] of Object.entries(c.go)) {
        if ('error' in expected) {
          assert.throws(
            () => convertResult(r, v),
            (e) => isCniError(e) && e.message === expected.error,
            `${c.input.cniVersion} → ${v}`,
          );
        } else {
          assert.deepEqual(
            asJson(convertResult(r, v)),
            normalizeGo(expected),
            `${c.input.cniVersion} → ${v}`,
          );
        }
        compared++;
      }
    }
    assert.equal(compared, golden.cases.length * 6);
  });

  it('converts to 1.1.0 (the current version) as to 1.0.0', () => {
    for (const c of golden.cases) {
      const r = createResultFromJSON(JSON.stringify(c.input));
      const cur = toCurrentResult(r);
      assert.equal(cur.cniVersion, '1.1.0');
      const expected = normalizeGo(c.go['1.0.0']!);
      assert.deepEqual(asJson(cur), { ...expected, cniVersion: '1.1.0' });
    }
  });

  it('round-trips every version through every other version that can hold it', () => {
    const r020 = createResult('0.2.0', golden.cases[0]!.input);
    const full = ALL_VERSIONS.filter((v) => v !== '0.1.0');
    for (const via of full) {
      const there = convertResult(r020, via);
      const back = convertResult(there, '0.2.0');
      assert.deepEqual(
        asJson(back),
        { ...(asJson(r020 as CniResult) as object), cniVersion: '0.2.0' },
        `0.2.0 → ${via} → 0.2.0`,
      );
    }
    const r100 = createResult('1.1.0', {
      ...golden.cases[7]!.input,
      cniVersion: '1.1.0',
      interfaces: [{ name: 'tap0', mac: 'aa:bb:cc:dd:ee:03' }],
    });
    for (const via of ['0.3.0', '0.3.1', '0.4.0', '1.0.0']) {
      assert.deepEqual(
        asJson(convertResult(convertResult(r100, via), '1.1.0')),
        asJson(r100),
        `1.1.0 → ${via} → 1.1.0`,
      );
    }
  });

  it('drops what older versions cannot hold: 1.1.0 mtu/socketPath/pciID going to 0.4.0', () => {
    const r = createResult('1.1.0', {
      cniVersion: '1.1.0',
      interfaces: [
        {
          name: 'tap0',
          mac: 'aa:bb:cc:dd:ee:ff',
          mtu: 1400,
          sandbox: '/run/netns/x',
          socketPath: '/s',
          pciID: '0000:00:01.0',
        },
      ],
      ips: [{ interface: 0, address: '198.18.0.2/24' }],
    });
    assert.deepEqual(asJson(convertResult(r, '0.4.0')), {
      cniVersion: '0.4.0',
      interfaces: [{ name: 'tap0', mac: 'aa:bb:cc:dd:ee:ff', sandbox: '/run/netns/x' }],
      ips: [{ version: '4', interface: 0, address: '198.18.0.2/24' }],
      dns: {},
    });
  });

  it('refuses unknown target versions and treats "" as 0.1.0', () => {
    const r = createResultFromJSON(JSON.stringify(golden.cases[0]!.input));
    assert.throws(
      () => convertResult(r, '0.5.0'),
      (e) => isCniError(e, 1) && /no converter for CNI result version 0.1.0 to 0.5.0/.test(e.message),
    );
    assert.equal(convertResult(r, '').cniVersion, '0.1.0');
  });
});
