import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CNI_ERROR,
  CniError,
  isCniError,
  parseSpecError,
  pluginErrorFrom,
  toCniErrorJSON,
  wrapCniError,
} from '../../src/cni/errors.js';
import { ERROR_CODES, isTapnetError, TapnetError } from '../../src/errors.js';

const none = Buffer.alloc(0);

describe('cni errors', () => {
  it('are TapnetErrors with code ERR_CNI carrying the spec code', () => {
    assert.ok('ERR_CNI' in ERROR_CODES);
    const e = new CniError(7, 'Invalid Configuration', 'Network 198.18.0.0/31 too small to allocate from.');
    assert.ok(e instanceof TapnetError);
    assert.ok(isTapnetError(e, 'ERR_CNI'));
    assert.ok(isCniError(e, 7));
    assert.equal(isCniError(new CniError(1, 'x'), 7), false);
    assert.equal(e.message, 'Invalid Configuration; Network 198.18.0.0/31 too small to allocate from.');
    assert.deepEqual(e.toJSON(), {
      code: 'ERR_CNI',
      message: e.message,
      details: {
        cniCode: 7,
        cniMsg: 'Invalid Configuration',
        cniDetails: 'Network 198.18.0.0/31 too small to allocate from.',
      },
    });
    assert.deepEqual(e.toCniJSON('1.1.0'), {
      cniVersion: '1.1.0',
      code: 7,
      msg: 'Invalid Configuration',
      details: 'Network 198.18.0.0/31 too small to allocate from.',
    });
    const w = wrapCniError('plugin type="bridge" failed (add)', e, { plugin: 'bridge' });
    assert.equal(w.cniCode, 7);
    assert.equal(w.cause, e);
    assert.match(w.message, /^plugin type="bridge" failed \(add\): Invalid Configuration; Network/);
    assert.equal(w.details.plugin, 'bridge');
  });

  it('parses a failed plugin’s output as libcni’s RawExec does', () => {
    const a = pluginErrorFrom(
      Buffer.from('{"cniVersion":"1.0.0","code":11,"msg":"try later","details":"busy"}'),
      Buffer.from('log'),
      'exit status 1',
    );
    assert.ok(isCniError(a, CNI_ERROR.TRY_AGAIN_LATER));
    assert.equal(a.message, 'try later; busy');
    assert.equal(a.details.stderr, 'log');
    const b = pluginErrorFrom(Buffer.from('{"code":120,"msg":"plugin specific"}'), none, 'exit status 3');
    assert.equal(b.cniCode, 120);
    const c = pluginErrorFrom(Buffer.from('garbage!'), none, 'exit status 1');
    assert.equal(c.cniCode, 0);
    assert.match(c.message, /^netplugin failed but error parsing its diagnostic message "garbage!": /);
    const d = pluginErrorFrom(none, Buffer.from('panic: boom\n'), 'exit status 2');
    assert.equal(d.message, 'netplugin failed: "panic: boom\\n": exit status 2');
    const e = pluginErrorFrom(none, none, 'signal: killed');
    assert.equal(e.message, 'netplugin failed with no error message: signal: killed');
  });

  it('decodes the error object with Go’s types (code uint, strings), case-insensitively', () => {
    assert.deepEqual(parseSpecError('{"Code":4,"MSG":"m"}'), { code: 4, msg: 'm', details: '' });
    assert.deepEqual(parseSpecError('null'), { code: 0, msg: '', details: '' });
    for (const bad of ['{"code":-1}', '{"code":1.5}', '{"code":"7"}', '{"msg":1}', '[1]', '"x"']) {
      assert.throws(() => parseSpecError(bad), SyntaxError, bad);
    }
  });

  it('turns any thrown value into the spec’s error object for plugins to print', () => {
    assert.deepEqual(toCniErrorJSON(new CniError(3, 'gone'), '1.0.0'), {
      cniVersion: '1.0.0',
      code: 3,
      msg: 'gone',
    });
    assert.equal(toCniErrorJSON(new TapnetError('ERR_INVALID_ARGUMENT', 'bad'), '1.0.0').code, 7);
    assert.equal(toCniErrorJSON(new TapnetError('ERR_NETNS_NOT_FOUND', 'no ns'), '1.0.0').code, 8);
    assert.equal(toCniErrorJSON(new TapnetError('ERR_TIMEOUT', 'slow'), '1.0.0').code, 11);
    assert.equal(toCniErrorJSON(new Error('x'), '1.0.0').code, 999);
  });
});
