import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  confFiles,
  confListFromBytes,
  confListFromFile,
  injectConf,
  listNetworkNames,
  loadNetworkConf,
  pluginConfFromBytes,
} from '../../src/cni/conf.js';
import { isTapnetError } from '../../src/errors.js';

const b = (v: unknown): Buffer => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
const isConfig = (re: RegExp) => (e: unknown) =>
  isTapnetError(e, 'ERR_CONFIG') && re.test((e as Error).message);

describe('cni conflist parsing', () => {
  it('parses a conflist, keeping the file bytes and handing each plugin on as Go re-encodes it', () => {
    const bytes = b(
      '{"cniVersion":"1.0.0","name":"n1","disableCheck":"TRUE","plugins":[{"type":"bridge","zeta":"<>","a":1},{"type":"tuning","capabilities":{"mac":true,"x":false}}]}',
    );
    const l = confListFromBytes(bytes);
    assert.equal(l.name, 'n1');
    assert.equal(l.cniVersion, '1.0.0');
    assert.equal(l.disableCheck, true);
    assert.equal(l.disableGC, false);
    assert.equal(l.bytes, bytes);
    assert.equal(l.plugins.length, 2);
    assert.equal(l.plugins[0]!.bytes.toString(), '{"a":1,"type":"bridge","zeta":"\\u003c\\u003e"}');
    assert.deepEqual(l.plugins[1]!.network.capabilities, { mac: true, x: false });
  });

  it('picks the version from cniVersions', () => {
    const l = confListFromBytes(
      b({
        cniVersion: '0.3.1',
        cniVersions: ['0.4.0', '1.0.0', '1.1.0', '2.0.0'],
        name: 'v',
        plugins: [{ type: 't' }],
      }),
    );
    assert.equal(l.cniVersion, '1.1.0');
  });

  it('rejects malformed conflists with libcni’s reasons', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['{not json', /error parsing configuration list/],
      ['[1]', /not a JSON object/],
      [{ plugins: [{ type: 't' }] }, /no name/],
      [{ name: 5, plugins: [] }, /invalid name type/],
      [{ name: 'n', cniVersion: 1, plugins: [] }, /invalid cniVersion type/],
      [{ name: 'n', cniVersions: '1.0.0', plugins: [] }, /invalid type for cniVersions/],
      [{ name: 'n', cniVersions: [1], plugins: [] }, /cniVersions index 0/],
      [{ name: 'n', cniVersions: ['x.y'], plugins: [] }, /invalid cniVersions entry x.y at index 0/],
      [{ name: 'n', disableCheck: 'yes', plugins: [] }, /invalid value "yes" for disableCheck/],
      [{ name: 'n', disableGC: 1, plugins: [] }, /invalid type number for disableGC/],
      [{ name: 'n', plugins: {} }, /invalid 'plugins' type/],
      [{ name: 'n', plugins: [] }, /no plugins in list/],
      [{ name: 'n', plugins: [{ name: 'x' }] }, /failed to parse plugin config 0: .*missing 'type'/],
      [
        { name: 'n', plugins: [{ type: 't', capabilities: { a: 'yes' } }] },
        /failed to parse plugin config 0/,
      ],
      [{ name: 'n', plugins: [{ type: 't', ipam: { type: 7 } }] }, /failed to parse plugin config 0/],
      [{ name: 'n', loadOnlyInlinedPlugins: true }, /`loadOnlyInlinedPlugins` is true, and no 'plugins' key/],
    ];
    for (const [v, re] of cases)
      assert.throws(() => confListFromBytes(b(v)), isConfig(re), JSON.stringify(v));
    // plugins may be absent when they come from <dir>/<name>/
    assert.equal(confListFromBytes(b({ name: 'n' })).plugins.length, 0);
  });

  it('injects values as InjectConf does (re-encoded, re-parsed, no empty keys or nil values)', () => {
    const p = pluginConfFromBytes(b('{"type":"t","runtimeConfig":{"old":1},"z":1}'));
    const q = injectConf(p, { name: 'n', cniVersion: '1.0.0', runtimeConfig: { mac: 'aa' } });
    assert.equal(
      q.bytes.toString(),
      '{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"mac":"aa"},"type":"t","z":1}',
    );
    assert.equal(q.network.name, 'n');
    assert.throws(() => injectConf(p, { '': 1 }), isConfig(/keys cannot be empty/));
    assert.throws(() => injectConf(p, { x: null }), isConfig(/key 'x' value must not be nil/));
  });
});

describe('cni configuration discovery', () => {
  const root = mkdtempSync(join(tmpdir(), 'tapnet-cni-conf-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  const dir = (files: Record<string, unknown>): string => {
    const d = join(root, `d${n++}`);
    mkdirSync(d);
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(d, name, '..'), { recursive: true });
      writeFileSync(join(d, name), typeof content === 'string' ? content : JSON.stringify(content));
    }
    return d;
  };

  it('lists conf files sorted by name, skipping directories and other extensions', () => {
    const d = dir({
      'b.conflist': '{}',
      'a.conflist': '{}',
      'c.conf': '{}',
      'x.txt': '',
      'sub.conflist/x': '',
    });
    symlinkSync(join(d, 'a.conflist'), join(d, 'l.conflist'));
    assert.deepEqual(
      confFiles(d, ['.conflist']).map((f) => f.slice(d.length + 1)),
      ['a.conflist', 'b.conflist', 'l.conflist'],
    );
    assert.deepEqual(confFiles(join(root, 'missing'), ['.conf']), []);
  });

  it('loads the first conflist (in name order) whose name matches', () => {
    const d = dir({
      '20-b.conflist': { cniVersion: '1.0.0', name: 'net', plugins: [{ type: 'second' }] },
      '10-a.conflist': { cniVersion: '1.0.0', name: 'net', plugins: [{ type: 'first' }] },
      '05-other.conflist': { cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'o' }] },
    });
    const l = loadNetworkConf(d, 'net');
    assert.equal(l.plugins[0]!.network.type, 'first');
    assert.equal(l.file, join(d, '10-a.conflist'));
    assert.deepEqual(listNetworkNames(d), ['other', 'net']);
  });

  it('fails on a malformed conflist met before the match, as libcni does', () => {
    const d = dir({
      '01-bad.conflist': '{"name":',
      '02-good.conflist': { name: 'net', plugins: [{ type: 't' }] },
    });
    assert.throws(() => loadNetworkConf(d, 'net'), isConfig(/01-bad.conflist/));
  });

  it('appends <dir>/<name>/*.conf plugins unless loadOnlyInlinedPlugins', () => {
    const d = dir({
      'net.conflist': { cniVersion: '1.1.0', name: 'net', plugins: [{ type: 'inline' }] },
      'net/2-b.conf': { type: 'b' },
      'net/1-a.conf': { type: 'a' },
      'net/ignored.json': { type: 'no' },
      'only.conflist': {
        cniVersion: '1.1.0',
        name: 'only',
        loadOnlyInlinedPlugins: true,
        plugins: [{ type: 'inline' }],
      },
      'only/1.conf': { type: 'never' },
      'dironly.conflist': { cniVersion: '1.1.0', name: 'dironly' },
      'dironly/p.conf': { type: 'fromdir' },
    });
    assert.deepEqual(
      loadNetworkConf(d, 'net').plugins.map((p) => p.network.type),
      ['inline', 'a', 'b'],
    );
    assert.deepEqual(
      loadNetworkConf(d, 'only').plugins.map((p) => p.network.type),
      ['inline'],
    );
    assert.deepEqual(
      loadNetworkConf(d, 'dironly').plugins.map((p) => p.network.type),
      ['fromdir'],
    );
    // a conflist left without plugins is an error, and (as in libcni) breaks loading of any name after it
    const e = dir({
      'a-empty.conflist': { cniVersion: '1.1.0', name: 'empty' },
      'b.conflist': { name: 'b', plugins: [{ type: 't' }] },
    });
    assert.throws(() => confListFromFile(join(e, 'a-empty.conflist')), isConfig(/no plugin configs found/));
    assert.throws(() => loadNetworkConf(e, 'b'), isConfig(/no plugin configs found/));
  });

  it('falls back to single-plugin .conf/.json files, up-converted with Go’s bytes', () => {
    const d = dir({
      'a.conflist': { name: 'other', plugins: [{ type: 't' }] },
      '10-single.conf':
        '{"cniVersion":"0.4.0","name":"single","type":"bridge","zeta":"<>","ipam":{"type":"host-local","subnet":"198.18.0.0/24"},"num":1.50}',
      '20-js.json': { cniVersion: '0.3.1', name: 'js', type: 'ptp' },
    });
    const l = loadNetworkConf(d, 'single');
    // exactly what Go libcni's ConfListFromConf produced for this file
    assert.equal(
      l.bytes.toString(),
      '{"cniVersion":"0.4.0","name":"single","plugins":[{"cniVersion":"0.4.0","ipam":{"subnet":"198.18.0.0/24","type":"host-local"},"name":"single","num":1.5,"type":"bridge","zeta":"\\u003c\\u003e"}]}',
    );
    assert.equal(
      l.plugins[0]!.bytes.toString(),
      '{"cniVersion":"0.4.0","ipam":{"subnet":"198.18.0.0/24","type":"host-local"},"name":"single","num":1.5,"type":"bridge","zeta":"\\u003c\\u003e"}',
    );
    assert.equal(loadNetworkConf(d, 'js').plugins[0]!.network.type, 'ptp');
  });

  it('says which network is missing and where it looked (ERR_NOT_FOUND)', () => {
    const d = dir({ 'a.conflist': { name: 'other', plugins: [{ type: 't' }] } });
    assert.throws(
      () => loadNetworkConf(d, 'nope'),
      (e) =>
        isTapnetError(e, 'ERR_NOT_FOUND') &&
        e.message === `no net configuration with name "nope" in ${d}` &&
        e.details.dir === d,
    );
    const empty = dir({});
    assert.throws(
      () => loadNetworkConf(empty, 'nope'),
      (e) => isTapnetError(e, 'ERR_NOT_FOUND') && /no net configurations found/.test(e.message),
    );
  });
});
