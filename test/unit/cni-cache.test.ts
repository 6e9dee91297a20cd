import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CNI_CACHE_V1, decodeCacheFile, encodeCacheFile, ResultCache } from '../../src/cni/cache.js';
import { isCniError } from '../../src/cni/errors.js';
import { createResultFromJSON } from '../../src/cni/result.js';
import type { RuntimeConf } from '../../src/cni/types.js';

// Written by Go libcni (AddNetworkList via the go-libcni harness) for network "gold", container "ctr-9",
// interface "net1", CNI_ARGS "K8S_POD_NAME=p;IgnoreUnknown=1" and the capability arguments below.
const GO_CACHE_FILE =
  '{"kind":"cniCacheV1","containerId":"ctr-9","config":"eyJjbmlWZXJzaW9uIjoiMC40LjAiLCJuYW1lIjoiZ29sZCIsInBsdWdpbnMiOlt7InR5cGUiOiJmYWtlMiIsImNhcGFiaWxpdGllcyI6eyJwb3J0TWFwcGluZ3MiOnRydWV9fV19Cg==","ifName":"net1","networkName":"gold","cniArgs":[["K8S_POD_NAME","p"],["IgnoreUnknown","1"]],"capabilityArgs":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}],"z":{"a":[true,null,"\\u003c"],"b":1}},"result":{"cniVersion":"0.4.0","dns":{"nameservers":["198.18.0.1"],"search":["a\\u003cb\\u003e\\u0026c"]},"interfaces":[{"mac":"aa:bb:cc:00:11:22","name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"198.18.0.5/24","gateway":"198.18.0.1","interface":0,"version":"4"},{"address":"fd00::5/64","version":"6"}],"routes":[{"dst":"0.0.0.0/0","gw":"198.18.0.1"}]}}';
const GOLD_CONFIG =
  '{"cniVersion":"0.4.0","name":"gold","plugins":[{"type":"fake2","capabilities":{"portMappings":true}}]}\n';
const PLUGIN_OUTPUT =
  '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:00:11:22","sandbox":"/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"198.18.0.5/24","gateway":"198.18.0.1"},{"version":"6","address":"FD00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"198.18.0.1"}],"dns":{"nameservers":["198.18.0.1"],"search":["a<b>&c"]}}';

const rt: RuntimeConf = {
  containerId: 'ctr-9',
  netns: '',
  ifName: 'net1',
  args: [
    ['K8S_POD_NAME', 'p'],
    ['IgnoreUnknown', '1'],
  ],
  capabilityArgs: JSON.parse(
    '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"z":{"b":1,"a":[true,null,"<"]}}',
  ),
};

describe('cni result cache (cniCacheV1)', () => {
  const root = mkdtempSync(join(tmpdir(), 'tapnet-cni-cache-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('writes byte-for-byte what Go libcni writes, atomically, 0600 in a 0700 directory', () => {
    const cache = new ResultCache(join(root, 'a'));
    cache.add(createResultFromJSON(PLUGIN_OUTPUT), Buffer.from(GOLD_CONFIG), 'gold', rt);
    const file = join(root, 'a', 'results', 'gold-ctr-9-net1');
    assert.equal(readFileSync(file, 'utf8'), GO_CACHE_FILE);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(root, 'a', 'results')).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(join(root, 'a', 'results')), ['gold-ctr-9-net1']); // no temp file left
  });

  it('an entry prepared while plugins run commits the same bytes; a discarded one leaves nothing', async () => {
    const cache = new ResultCache(join(root, 'p'));
    const pending = cache.prepare('gold', rt);
    await cache.commit(pending, createResultFromJSON(PLUGIN_OUTPUT), Buffer.from(GOLD_CONFIG), 'gold', rt);
    assert.equal(readFileSync(join(root, 'p', 'results', 'gold-ctr-9-net1'), 'utf8'), GO_CACHE_FILE);
    const other = cache.prepare('gold', { containerId: 'x', ifName: 'eth0' });
    await other.discard();
    assert.deepEqual(readdirSync(join(root, 'p', 'results')), ['gold-ctr-9-net1']);
    // a cache directory that cannot be made: the commit reports it (code 5)
    writeFileSync(join(root, 'blocker'), '');
    const blocked = new ResultCache(join(root, 'blocker', 'sub'));
    await assert.rejects(
      blocked.commit(blocked.prepare('gold', rt), undefined, Buffer.from('{}'), 'gold', rt),
      (e) => isCniError(e, 5) && e.errno === 'ENOTDIR',
    );
  });

  it('decodes Go’s file and re-encodes it identically; netns is written when known', () => {
    const info = decodeCacheFile(GO_CACHE_FILE);
    assert.equal(info.kind, CNI_CACHE_V1);
    assert.equal(info.config.toString(), GOLD_CONFIG);
    assert.deepEqual(info.cniArgs, rt.args);
    assert.equal(encodeCacheFile(info), GO_CACHE_FILE);
    const withNs = encodeCacheFile({ ...info, netns: '/run/netns/vm1' });
    assert.match(withNs, /"networkName":"gold","netns":"\/run\/netns\/vm1","cniArgs"/);
    for (const bad of ['{"config":"not base64!"}', '{"cniArgs":"x"}', '{"result":[1]}', '{"kind":5}', '[]']) {
      assert.throws(() => decodeCacheFile(bad), bad);
    }
  });

  it('reads Go’s file back as the result, converted to the version asked for', () => {
    const dir = join(root, 'b');
    mkdirSync(join(dir, 'results'), { recursive: true });
    writeFileSync(join(dir, 'results', 'gold-ctr-9-net1'), GO_CACHE_FILE);
    const cache = new ResultCache(dir);
    const r040 = cache.getResult('gold', '0.4.0', rt);
    assert.deepEqual(r040, createResultFromJSON(PLUGIN_OUTPUT));
    const r100 = cache.getResult('gold', '1.0.0', rt);
    assert.equal(r100?.cniVersion, '1.0.0');
    assert.equal(cache.getResult('gold', '0.4.0', { containerId: 'other', ifName: 'net1' }), undefined);
    const cfg = cache.getConfig('gold', {
      containerId: 'ctr-9',
      ifName: 'net1',
      netns: '/x',
      args: [['A', 'B']],
    });
    assert.equal(cfg?.config.toString(), GOLD_CONFIG);
    assert.deepEqual(cfg?.rt.args, rt.args);
    assert.deepEqual(cfg?.rt.capabilityArgs, JSON.parse(GO_CACHE_FILE).capabilityArgs);
    assert.equal(cfg?.rt.netns, '/x');
  });

  it('reads legacy (pre-cniCacheV1) files, and refuses wrong kinds for the config', () => {
    const dir = join(root, 'c');
    mkdirSync(join(dir, 'results'), { recursive: true });
    writeFileSync(join(dir, 'results', 'old-c1-eth0'), PLUGIN_OUTPUT);
    const cache = new ResultCache(dir);
    assert.equal(cache.getResult('old', '0.4.0', { containerId: 'c1', ifName: 'eth0' })?.cniVersion, '0.4.0');
    assert.throws(
      () => cache.getConfig('old', { containerId: 'c1', ifName: 'eth0', netns: '' }),
      /wrong kind/,
    );
    writeFileSync(join(dir, 'results', 'bad-c1-eth0'), 'abc');
    assert.throws(
      () => cache.getResult('bad', '0.4.0', { containerId: 'c1', ifName: 'eth0' }),
      (e) => isCniError(e, 6),
    );
    // a conversion the cached result cannot make
    writeFileSync(join(dir, 'results', 'noip-c1-eth0'), '{"cniVersion":"1.0.0"}');
    assert.throws(
      () => cache.getResult('noip', '0.2.0', { containerId: 'c1', ifName: 'eth0' }),
      /failed to convert cached result to config version "0.2.0"/,
    );
  });

  it('lists attachments as GetCachedAttachments does, filtered by container', () => {
    const dir = join(root, 'd');
    const cache = new ResultCache(dir);
    const res = createResultFromJSON(PLUGIN_OUTPUT);
    cache.add(res, Buffer.from('{}'), 'n1', { containerId: 'c1', netns: '/run/netns/c1', ifName: 'eth0' });
    cache.add(res, Buffer.from('{}'), 'n2', {
      containerId: 'c1',
      netns: '/run/netns/c1',
      ifName: 'eth1',
      args: [['A', 'B']],
    });
    cache.add(res, Buffer.from('{}'), 'n1', { containerId: 'c2', netns: '/run/netns/c2', ifName: 'eth0' });
    writeFileSync(join(dir, 'results', 'junk-c1-eth9'), 'not json');
    writeFileSync(join(dir, 'results', 'n3-c1-eth3'), '{"kind":"other"}');
    assert.deepEqual(
      cache.attachments().map((a) => `${a.network}/${a.containerId}/${a.ifName}/${a.netns}`),
      ['n1/c1/eth0//run/netns/c1', 'n1/c2/eth0//run/netns/c2', 'n2/c1/eth1//run/netns/c1'],
    );
    assert.deepEqual(
      cache.attachments('c1').map((a) => a.network),
      ['n1', 'n2'],
    );
    assert.deepEqual(cache.attachments('c1')[1]?.cniArgs, [['A', 'B']]);
    cache.del('n1', { containerId: 'c1', ifName: 'eth0' });
    cache.del('n1', { containerId: 'c1', ifName: 'eth0' }); // already gone: fine
    assert.deepEqual(
      cache.attachments('c1').map((a) => a.network),
      ['n2'],
    );
    assert.deepEqual(new ResultCache(join(root, 'none')).attachments(), []);
  });

  it('never builds a path from hostile names', () => {
    const cache = new ResultCache(join(root, 'e'));
    for (const [n, c, i] of [
      ['../x', 'c', 'e'],
      ['n', 'a/b', 'e'],
      ['n', 'c', '..'],
      ['', 'c', 'e'],
    ]) {
      assert.throws(
        () => cache.filePath(n!, c!, i!),
        (e) => isCniError(e, 4),
        `${n} ${c} ${i}`,
      );
    }
  });
});
