import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCniError } from '../../src/cni/errors.js';
import { resultFromStdout } from '../../src/cni/invoke.js';
import { compareGoStrings, goMarshal, goMarshalIndent, goQuote, goStruct } from '../../src/cni/json.js';
import { createResult, createResultFromJSON, marshalResult, resultToMap } from '../../src/cni/result.js';

// Bytes Go 1.19's encoding/json produced for the same values (captured with the go-libcni harness).
const GO_STDIN_FIRST =
  '{"a":{"x":1,"y":2},"capabilities":{"mac":false,"portMappings":true},"cniVersion":"1.0.0","name":"fakenet","num":1e+21,"runtimeConfig":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]},"small":1e-7,"type":"fake","zeta":"\\u003c\\u0026\\u003e"}';

describe('cni JSON as Go writes it', () => {
  it('sorts map keys by bytes, keeps struct order, escapes like encoding/json', () => {
    const v = JSON.parse(
      '{"type":"fake","capabilities":{"portMappings":true,"mac":false},"zeta":"<&>","num":1e21,"small":1e-7,"a":{"y":2,"x":1},"cniVersion":"1.0.0","name":"fakenet","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}',
    );
    assert.equal(goMarshal(v), GO_STDIN_FIRST);
    assert.equal(
      goMarshal(goStruct(['z', 1], ['a', undefined], ['b', [1, undefined]])),
      '{"z":1,"b":[1,null]}',
    );
    assert.equal(
      goQuote('a\nb\t"\\\u0001\u2028</>&é'),
      '"a\\nb\\t\\"\\\\\\u0001\\u2028\\u003c/\\u003e\\u0026é"',
    );
    assert.equal(goQuote('\ud800x'), '"\\ufffdx"');
    assert.equal(goMarshal(-0), '-0');
    assert.equal(goMarshal(Buffer.from('hi\n')), '"aGkK"');
    assert.ok(compareGoStrings('Z', 'a') < 0);
    assert.ok(compareGoStrings('\uffff', '\u{10000}') < 0); // UTF-16 order would say otherwise
  });

  it('indents as json.MarshalIndent', () => {
    assert.equal(
      goMarshalIndent({ b: [], a: { c: [1, 2], d: {} }, s: 'x,{}:' }),
      '{\n    "a": {\n        "c": [\n            1,\n            2\n        ],\n        "d": {}\n    },\n    "b": [],\n    "s": "x,{}:"\n}',
    );
  });
});

describe('cni results', () => {
  it('decodes as Go: unknown fields dropped, keys case-insensitive, addresses canonical, zero numbers left out', () => {
    const r = createResult('1.0.0', {
      CNIVERSION: '1.0.0',
      Interfaces: [{ NAME: 'eth0', mac: 'AA:BB', mtu: 0, extra: 1 }],
      ips: [
        { address: 'FD00:0:0::0001/64', gateway: '' },
        { address: '::ffff:198.18.0.1/120', gateway: '::ffff:198.18.0.254', interface: 0 },
      ],
      routes: [{ dst: '0.0.0.0/0', mtu: 0, table: 0 }],
      dns: { nameservers: [], search: null },
      whatever: { a: 1 },
    });
    assert.deepEqual(r, {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'eth0', mac: 'AA:BB' }],
      ips: [{ address: 'fd00::1/64' }, { interface: 0, address: '198.18.0.1/24', gateway: '198.18.0.254' }],
      routes: [{ dst: '0.0.0.0/0', table: 0 }],
    });
  });

  it('encodes 0.x in struct order with dns always present, 1.x sorted without an empty dns', () => {
    const r040 = createResult('0.4.0', {
      cniVersion: '0.4.0',
      ips: [{ address: '198.18.0.2/24', version: '4', gateway: '198.18.0.1' }],
      interfaces: [{ sandbox: '/x', name: 'e' }],
    });
    assert.equal(
      marshalResult(r040),
      '{"cniVersion":"0.4.0","interfaces":[{"name":"e","sandbox":"/x"}],"ips":[{"version":"4","address":"198.18.0.2/24","gateway":"198.18.0.1"}],"dns":{}}',
    );
    const r020 = createResult('0.2.0', {
      cniVersion: '0.2.0',
      ip4: { routes: [{ gw: '198.18.0.1', dst: '0.0.0.0/0' }], ip: '198.18.0.2/24' },
    });
    assert.equal(
      marshalResult(r020),
      '{"cniVersion":"0.2.0","ip4":{"ip":"198.18.0.2/24","routes":[{"dst":"0.0.0.0/0","gw":"198.18.0.1"}]},"dns":{}}',
    );
    const r100 = createResult('1.1.0', {
      cniVersion: '1.1.0',
      ips: [{ address: '198.18.0.2/24', interface: 0 }],
      interfaces: [{ name: 't', mtu: 9000 }],
    });
    assert.equal(
      marshalResult(r100),
      '{"cniVersion":"1.1.0","interfaces":[{"mtu":9000,"name":"t"}],"ips":[{"address":"198.18.0.2/24","interface":0}]}',
    );
    // the cache's form: every level a sorted map
    assert.deepEqual(Object.keys(resultToMap(r040)), ['cniVersion', 'dns', 'interfaces', 'ips']);
  });

  it('rejects wrong types and bad addresses with spec code 6, and versions the type does not hold', () => {
    const bad: unknown[] = [
      { cniVersion: '1.0.0', ips: {} },
      { cniVersion: '1.0.0', ips: [{ address: 'nope' }] },
      { cniVersion: '1.0.0', ips: [{ address: '198.18.0.1/33' }] },
      { cniVersion: '1.0.0', ips: [{ address: '198.18.0.1/24', gateway: '1.2.3' }] },
      { cniVersion: '1.0.0', interfaces: [{ name: 5 }] },
      { cniVersion: '1.0.0', routes: [{ dst: '0.0.0.0/0', mtu: 1.5 }] },
      { cniVersion: '1.0.0', routes: [{ gw: '198.18.0.1' }] },
      { cniVersion: '1.0.0', interfaces: [null] },
      [1, 2],
    ];
    for (const b of bad)
      assert.throws(
        () => createResult('1.0.0', b),
        (e) => isCniError(e, 6),
        JSON.stringify(b),
      );
    assert.throws(
      () => createResult('1.0.0', { cniVersion: '0.4.0' }),
      /result type supports \[1.0.0 1.1.0\] but unmarshalled CNIVersion is "0.4.0"/,
    );
    assert.throws(
      () => createResult('2.0.0', {}),
      (e) => isCniError(e, 1) && /unsupported CNI result version "2.0.0"/.test(e.message),
    );
    assert.equal(createResult('', {}).cniVersion, '0.1.0');
    assert.equal(createResultFromJSON('null').cniVersion, '0.1.0');
  });

  it('takes a result without cniVersion to be in the configuration version (libcni #895)', () => {
    const conf = Buffer.from('{"cniVersion":"0.4.0","name":"n","type":"t"}');
    const r = resultFromStdout(conf, Buffer.from('{"ips":[{"version":"4","address":"198.18.0.3/24"}]}'));
    assert.equal(r.cniVersion, '0.4.0');
    assert.equal(resultFromStdout(conf, Buffer.from('null')).cniVersion, '0.4.0');
    assert.equal(resultFromStdout(Buffer.from('{"name":"n"}'), Buffer.from('{}')).cniVersion, '0.1.0');
    // a declared version wins over the configuration's
    assert.equal(resultFromStdout(conf, Buffer.from('{"cniVersion":"1.0.0"}')).cniVersion, '1.0.0');
    assert.throws(
      () => resultFromStdout(conf, Buffer.from('not json')),
      (e) => isCniError(e, 6) && /failed to unmarshal raw result/.test(e.message),
    );
    assert.throws(
      () => resultFromStdout(conf, Buffer.from('[1]')),
      (e) => isCniError(e, 6),
    );
  });
});
