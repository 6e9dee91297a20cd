import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCniError } from '../../src/cni/errors.js';
import {
  parseCniArgs,
  validateCniArgs,
  validateContainerId,
  validateInterfaceName,
  validateNetworkName,
} from '../../src/cni/validate.js';

describe('cni validation (libcni pkg/utils)', () => {
  it('accepts container IDs and network names of [a-zA-Z0-9][a-zA-Z0-9_.-]*', () => {
    for (const ok of ['a', '0', 'cnitool-77383ca0a0715733ca6f', 'A.b_c-d', 'x..y']) {
      assert.equal(validateContainerId(ok), ok);
      assert.equal(validateNetworkName(ok), ok);
    }
  });

  it('refuses bad container IDs: 3 when missing, 4 when malformed', () => {
    assert.throws(
      () => validateContainerId(''),
      (e) => isCniError(e, 3) && e.message === 'missing containerID',
    );
    for (const bad of ['-a', '.a', 'a/b', '../x', 'a b', 'a;b', 'é', 'a\n']) {
      assert.throws(
        () => validateContainerId(bad),
        (e) => isCniError(e, 4) && e.cniMsg === 'invalid characters in containerID' && e.cniDetails === bad,
        bad,
      );
    }
  });

  it('refuses bad network names with 7', () => {
    assert.throws(
      () => validateNetworkName(''),
      (e) => isCniError(e, 7) && e.cniMsg === 'missing network name:',
    );
    for (const bad of ['_n', 'a/b', 'net work', 'a:b']) {
      assert.throws(
        () => validateNetworkName(bad),
        (e) => isCniError(e, 7),
        bad,
      );
    }
  });

  it('checks interface names by the kernel’s rules, with 4', () => {
    for (const ok of ['eth0', 'a', 'x'.repeat(15), 'tap-1.2_3', 'é'])
      assert.equal(validateInterfaceName(ok), ok);
    const cases: Array<[string, string]> = [
      ['', 'interface name is empty'],
      ['x'.repeat(16), 'interface name is too long'],
      ['éééééééé', 'interface name is too long'], // 16 bytes
      ['.', 'interface name is . or ..'],
      ['..', 'interface name is . or ..'],
      ['a/b', 'interface name contains / or : or whitespace characters'],
      ['a:b', 'interface name contains / or : or whitespace characters'],
      ['a b', 'interface name contains / or : or whitespace characters'],
      ['a\u00a0b', 'interface name contains / or : or whitespace characters'],
    ];
    for (const [bad, msg] of cases) {
      assert.throws(
        () => validateInterfaceName(bad),
        (e) => isCniError(e, 4) && e.cniMsg === msg,
        bad,
      );
    }
  });

  it('parses CNI_ARGS like cnitool and refuses pairs that would change the joined string', () => {
    assert.deepEqual(parseCniArgs('A=1;B=x'), [
      ['A', '1'],
      ['B', 'x'],
    ]);
    assert.deepEqual(parseCniArgs(''), []);
    for (const bad of ['A', 'A=', '=1', 'A=1=2', 'A=1;;B=2'])
      assert.throws(
        () => parseCniArgs(bad),
        (e) => isCniError(e, 4),
        bad,
      );
    validateCniArgs([['IgnoreUnknown', '1']]);
    for (const bad of [[['A;B', '1']], [['A', '1;B=2']], [['', 'x']], [['A=B', 'x']]] as Array<
      Array<[string, string]>
    >) {
      assert.throws(
        () => validateCniArgs(bad),
        (e) => isCniError(e, 4),
        JSON.stringify(bad),
      );
    }
  });
});
