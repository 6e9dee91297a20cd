import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { describeConfig, envVariables, loadConfig, readApiToken, sourceOf } from '../../src/config/load.js';
import { DEFAULT_SOCKET, isLoopbackHost, managerPart, parseHostPort } from '../../src/config/schema.js';
import { isTapnetError, type TapnetError } from '../../src/errors.js';

describe('configuration loading: file, then TAPNET_* environment, then flags', () => {
  let dir: string;
  let yaml: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'tapnet-config-'));
    yaml = join(dir, 'config.yaml');
    writeFileSync(
      yaml,
      [
        'stateDir: /srv/tapnet',
        'defaultNetwork: vms',
        'networks:',
        '  vms:',
        '    subnet4: 198.18.0.0/24',
        '    dns: [198.18.0.53]',
        'api:',
        '  socket: /run/file.sock',
        'log:',
        '  level: warn',
        '',
      ].join('\n'),
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const noFiles = { defaultFiles: [] as string[] };

  it('defaults make zero configuration work', () => {
    const c = loadConfig({ env: {}, ...noFiles });
    assert.equal(c.file, undefined);
    assert.equal(c.config.api.socket, DEFAULT_SOCKET);
    assert.equal(c.config.log.level, 'info');
    assert.equal(c.config.daemon.keepNetworksOnExit, true);
    assert.equal(c.config.stateDir, '/var/lib/tapnet');
    assert.deepEqual([...c.resolved.networks.keys()], ['default']);
    assert.equal(sourceOf(c.sources, 'api.socket'), 'default');
    const mp = Object.keys(managerPart(c.config));
    for (const k of ['api', 'log', 'daemon']) assert.ok(!mp.includes(k), `${k} is the daemon's`);
    for (const k of ['stateDir', 'networks', 'defaultNetwork', 'firewall'])
      assert.ok(mp.includes(k), `${k} is the manager's`);
    assert.deepEqual(
      mp.sort(),
      Object.keys(c.config)
        .filter((k) => !['api', 'log', 'daemon'].includes(k))
        .sort(),
    );
  });

  it('the first default file that exists is read', () => {
    const c = loadConfig({ env: {}, defaultFiles: [join(dir, 'missing.yaml'), yaml] });
    assert.equal(c.file, yaml);
    assert.equal(c.config.stateDir, '/srv/tapnet');
  });

  it('precedence: flag > env > file > default, and every value says where it came from', () => {
    const c = loadConfig({
      configFile: yaml,
      env: {
        TAPNET_LOG_LEVEL: 'debug',
        TAPNET_SOCKET: '/run/env.sock',
        TAPNET_SHUTDOWN_TIMEOUT_MS: '5000',
        TAPNET_KEEP_NETWORKS_ON_EXIT: 'false',
      },
      flags: [{ key: 'api.socket', value: '/run/flag.sock', flag: '--socket' }],
    });
    assert.equal(c.config.api.socket, '/run/flag.sock');
    assert.equal(c.config.log.level, 'debug');
    assert.equal(c.config.stateDir, '/srv/tapnet');
    assert.equal(c.config.daemon.shutdownTimeoutMs, 5000);
    assert.equal(c.config.daemon.keepNetworksOnExit, false);
    const by = new Map(describeConfig(c).map((e) => [e.key, e]));
    assert.equal(by.get('api.socket')!.source, 'flag --socket');
    assert.equal(by.get('log.level')!.source, 'env TAPNET_LOG_LEVEL');
    assert.equal(by.get('stateDir')!.source, `file ${yaml}`);
    assert.equal(by.get('networks.vms.subnet4')!.source, `file ${yaml}`);
    assert.equal(by.get('networks.vms.mtu')!.source, 'default');
    assert.equal(by.get('networks.vms.gateway4')!.source, 'derived');
    assert.equal(by.get('networks.vms.gateway4')!.value, '198.18.0.1');
    assert.equal(by.get('networks.vms.bridge')!.value, 'tn-vms');
    assert.equal(by.get('firewall')!.source, 'default');
  });

  it('TAPNET_CONFIG names the file; JSON works too; TAPNET_NETWORKS takes JSON', () => {
    const json = join(dir, 'c.json');
    writeFileSync(
      json,
      JSON.stringify({ defaultNetwork: 'a', networks: { a: { subnet4: '198.18.1.0/24' } } }),
    );
    const c = loadConfig({ env: { TAPNET_CONFIG: json }, ...noFiles });
    assert.equal(c.file, json);
    assert.equal(c.resolved.networks.get('a')!.gateway4, '198.18.1.1');
    const e = loadConfig({
      env: { TAPNET_NETWORKS: '{"b":{"subnet4":"198.18.2.0/24"}}', TAPNET_DEFAULT_NETWORK: 'b' },
      ...noFiles,
    });
    assert.deepEqual([...e.resolved.networks.keys()], ['b']);
    assert.equal(sourceOf(e.sources, 'networks.b.subnet4'), 'env TAPNET_NETWORKS');
  });

  it('every environment variable maps to a schema key, with the right kind', () => {
    const vars = new Map(envVariables().map((v) => [v.name, v]));
    assert.deepEqual(vars.get('TAPNET_STATE_DIR'), {
      name: 'TAPNET_STATE_DIR',
      key: 'stateDir',
      kind: 'string',
    });
    assert.equal(vars.get('TAPNET_NETWORKS')!.kind, 'json');
    assert.equal(vars.get('TAPNET_SHUTDOWN_TIMEOUT_MS')!.kind, 'number');
    assert.equal(vars.get('TAPNET_KEEP_NETWORKS_ON_EXIT')!.kind, 'boolean');
    assert.equal(vars.get('TAPNET_SOCKET')!.key, 'api.socket');
  });

  it('errors name the key, the bad value and where it came from', () => {
    const bad = (opts: Parameters<typeof loadConfig>[0], ...res: RegExp[]) => {
      let err: TapnetError | undefined;
      try {
        loadConfig({ ...noFiles, ...opts });
      } catch (e) {
        if (isTapnetError(e, 'ERR_CONFIG')) err = e;
        else throw e;
      }
      assert.ok(err, 'ERR_CONFIG expected');
      for (const re of res) assert.match(err.message, re);
      return err;
    };
    const e1 = bad(
      { env: { TAPNET_SHUTDOWN_TIMEOUT_MS: 'soon' } },
      /daemon\.shutdownTimeoutMs: .*expected number.*value "soon", from env TAPNET_SHUTDOWN_TIMEOUT_MS/,
    );
    assert.deepEqual(e1.details, {
      key: 'daemon.shutdownTimeoutMs',
      value: 'soon',
      source: 'env TAPNET_SHUTDOWN_TIMEOUT_MS',
    });
    bad({ env: { TAPNET_LOG_LEVEL: 'loud' } }, /log\.level: .*value "loud", from env TAPNET_LOG_LEVEL/);
    bad(
      { flags: [{ key: 'api.socket', value: 'relative.sock', flag: '--socket' }] },
      /api\.socket: must be an absolute path \(value "relative\.sock", from flag --socket\)/,
    );
    const typo = join(dir, 'typo.yaml');
    writeFileSync(typo, 'api:\n  sockett: /x\nnetworks:\n  n:\n    subnet4: 198.18.0.0/33\n');
    bad(
      { configFile: typo },
      /api\.sockett: unknown key/,
      new RegExp(
        `networks\\.n\\.subnet4: must be an IPv4 CIDR.*value "198\\.18\\.0\\.0/33", from file ${typo.replace(/\./g, '\\.')}`,
      ),
    );
    bad(
      { env: { TAPNET_API_TCP: '192.0.2.1:80', TAPNET_API_TOKEN: 'x'.repeat(20) } },
      /api\.tcp: must be a loopback address/,
    );
    bad({ env: { TAPNET_API_TCP: '127.0.0.1:7070' } }, /api\.tcp: needs api\.token or api\.tokenFile/);
    const secret = bad(
      { env: { TAPNET_API_TOKEN: 'short' } },
      /api\.token: must be at least 16 characters \(value \*\*\*, from env TAPNET_API_TOKEN\)/,
    );
    assert.doesNotMatch(secret.message, /short/);
    bad({ configFile: join(dir, 'nope.yaml') }, /cannot read config file .*nope\.yaml/);
    const broken = join(dir, 'broken.yaml');
    writeFileSync(broken, 'a: 1\n  b: 2\n');
    bad({ configFile: broken }, /broken\.yaml:2: bad indentation/);
    const list = join(dir, 'list.yaml');
    writeFileSync(list, '- a\n- b\n');
    bad({ configFile: list }, /must hold a mapping/);
    bad(
      { env: { TAPNET_NETWORKS: '{"a":{"subnet4":"198.18.0.0/24"}}', TAPNET_DEFAULT_NETWORK: 'nope' } },
      /defaultNetwork: no network named nope/,
    );
  });

  it('the API token comes from api.token or the first line of api.tokenFile', () => {
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'abcdefghijklmnopqrstuvwxyz\nignored\n');
    const c = loadConfig({
      env: { TAPNET_API_TCP: '[::1]:7070', TAPNET_API_TOKEN_FILE: tokenFile },
      ...noFiles,
    });
    assert.equal(readApiToken(c.config), 'abcdefghijklmnopqrstuvwxyz');
    const shown = describeConfig(
      loadConfig({ env: { TAPNET_API_TOKEN: 'a-secret-token-of-20' }, ...noFiles }),
    );
    assert.equal(shown.find((e) => e.key === 'api.token')!.value, '***');
    writeFileSync(tokenFile, 'short\n');
    assert.throws(() => readApiToken(c.config), /less than 16 characters/);
    assert.equal(readApiToken(loadConfig({ env: {}, ...noFiles }).config), undefined);
  });

  it('host:port parsing and loopback detection', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:7070'), { host: '127.0.0.1', port: 7070 });
    assert.deepEqual(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
    assert.equal(parseHostPort('127.0.0.1'), undefined);
    assert.equal(parseHostPort('127.0.0.1:0'), undefined);
    assert.equal(parseHostPort('127.0.0.1:65536'), undefined);
    for (const h of ['127.0.0.1', '127.255.0.9', '::1', 'localhost']) assert.ok(isLoopbackHost(h), h);
    for (const h of ['0.0.0.0', '198.18.0.1', '::', 'example.com']) assert.ok(!isLoopbackHost(h), h);
  });
});
