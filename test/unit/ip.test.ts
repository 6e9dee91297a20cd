import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  canonicalIp,
  cidrContains,
  cidrsOverlap,
  formatCidr,
  formatIp,
  parseCidr,
  parseIp,
  parseMac,
  validateUnicastMac,
} from '../../src/ip.js';
import { validateIfname, validateName, validateVmId } from '../../src/validate.js';

const invalid = (fn: () => unknown) => assert.throws(fn, (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'));

describe('IP parsing and formatting', () => {
  it('parses and canonicalizes IPv4 and IPv6', () => {
    assert.equal(canonicalIp('198.18.0.1'), '198.18.0.1');
    assert.equal(canonicalIp('FD00:0:0::1'), 'fd00::1');
    assert.equal(canonicalIp('::'), '::');
    assert.equal(canonicalIp('::ffff:198.18.0.1'), '::ffff:c612:1');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalIp('fd00:1:2:3:4:5:6:7'), 'fd00:1:2:3:4:5:6:7');
    assert.equal(formatIp(6, 0n), '::');
  });

  it('rejects malformed addresses', () => {
    for (const s of [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '256.1.1.1',
      '01.2.3.4',
      '1.2.3.4 ',
      'fd00:::1',
      'fd00::1::2',
      '1:2:3:4:5:6:7:8:9',
      'g::1',
      '198.18.0.1; flush ruleset',
    ]) {
      invalid(() => parseIp(s));
    }
  });

  it('parses CIDRs, keeps host bits apart, checks containment and overlap', () => {
    const c = parseCidr('198.18.0.1/24');
    assert.equal(formatCidr(c), '198.18.0.0/24');
    assert.equal(formatIp(4, c.addr), '198.18.0.1');
    assert.ok(cidrContains(c, parseIp('198.18.0.200')));
    assert.ok(!cidrContains(c, parseIp('198.18.1.1')));
    assert.ok(cidrsOverlap(parseCidr('198.18.0.0/16'), parseCidr('198.18.4.0/24')));
    assert.ok(!cidrsOverlap(parseCidr('198.18.0.0/24'), parseCidr('198.18.1.0/24')));
    for (const s of ['198.18.0.0', '198.18.0.0/33', '198.18.0.0/-1', 'fd00::/129', '198.18.0.0/2 4'])
      invalid(() => parseCidr(s));
  });

  it('parses MACs strictly and refuses multicast for VMs', () => {
    assert.deepEqual([...parseMac('02:AA:bb:00:00:01')], [2, 0xaa, 0xbb, 0, 0, 1]);
    for (const s of ['02:aa:bb:00:00', '02-aa-bb-00-00-01', '02:aa:bb:00:00:01:02', 'zz:aa:bb:00:00:01'])
      invalid(() => parseMac(s));
    invalid(() => validateUnicastMac('01:00:5e:00:00:01'));
    invalid(() => validateUnicastMac('00:00:00:00:00:00'));
  });
});

describe('name validation', () => {
  it('interface names: at most 15 bytes, no slash, colon, space or NUL', () => {
    assert.equal(validateIfname('tn0123456789abc'), 'tn0123456789abc');
    for (const s of ['', 'tn0123456789abcd', 'a/b', 'a:b', 'a b', 'a\0b', '.', '..', 'tåp', 'a\nb'])
      invalid(() => validateIfname(s));
  });

  it('VM ids and names cannot be paths', () => {
    assert.equal(validateVmId('vm-1.a_b'), 'vm-1.a_b');
    for (const s of [
      '',
      '../../etc',
      '/etc',
      'a/b',
      '.hidden',
      'a..b',
      'x'.repeat(129),
      'vm\0',
      'vm 1',
      'vм1',
    ])
      invalid(() => validateVmId(s));
    for (const s of ['', 'a/b', '..', 'x'.repeat(64)]) invalid(() => validateName(s));
  });
});
