import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  ERROR_CODES,
  isAlreadyGone,
  isTapnetError,
  TapnetError,
  teardownError,
  toTapnetError,
} from '../../src/errors.js';

describe('errors', () => {
  it('docs/ERRORS.md lists exactly the codes in ERROR_CODES', () => {
    const doc = readFileSync(new URL('../../../docs/ERRORS.md', import.meta.url), 'utf8');
    const documented = [...doc.matchAll(/^\| `(ERR_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    assert.deepEqual(documented.sort(), Object.keys(ERROR_CODES).sort());
  });

  it('carries code, errno, syscall, extack and details, and serialises them', () => {
    const e = new TapnetError('ERR_NETLINK', 'x failed', {
      errno: 'EINVAL',
      syscall: 'RTM_NEWLINK',
      extack: 'bad attr',
      details: { a: 1 },
    });
    assert.equal(isTapnetError(e, 'ERR_NETLINK'), true);
    assert.equal(isTapnetError(new Error('x'), 'ERR_NETLINK'), false);
    assert.equal(isTapnetError(e, 'ERR_CONFLICT', 'ERR_NETLINK'), true);
    assert.deepEqual(e.toJSON(), {
      code: 'ERR_NETLINK',
      message: 'x failed',
      errno: 'EINVAL',
      syscall: 'RTM_NEWLINK',
      extack: 'bad attr',
      details: { a: 1 },
    });
  });

  it('wraps foreign errors and treats missing objects as already gone', () => {
    const w = toTapnetError(new Error('boom'), 'ERR_STORE', 'reading');
    assert.equal(w.code, 'ERR_STORE');
    assert.equal(w.message, 'reading: boom');
    assert.ok(isAlreadyGone(new TapnetError('ERR_SYSCALL', 'x', { errno: 'ENOENT' })));
    assert.ok(!isAlreadyGone(new TapnetError('ERR_SYSCALL', 'x', { errno: 'EPERM' })));
    const t = teardownError('release vm1', [
      new TapnetError('ERR_FIREWALL', 'a'),
      new TapnetError('ERR_NETLINK', 'b'),
    ]);
    assert.equal(t.code, 'ERR_TEARDOWN');
    assert.equal((t.details.failures as unknown[]).length, 2);
  });
});
