/**
 * Security (fast subset): the API socket is 0600 and root's; the TCP API refuses without the right token
 * and compares in constant time; no path built from a VM id escapes the state directory (every store
 * path builder, both backends, the CNI cache, namespace names); no command text is built anywhere in src/;
 * hostile guests playing through TAP fds — ARP spoofing, IPv6 RA and ND spoofing, DHCP/DHCPv6 server
 * impersonation — are dropped and counted. Not covered (asserted as such, so a fix shows up): ND target
 * addresses are not pinned, so a guest may advertise another address from its own link-local source.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ResultCache } from '../../src/cni/cache.js';
import { authorized } from '../../src/daemon/routes.js';
import { isTapnetError } from '../../src/errors.js';
import { vmNetnsName } from '../../src/manager/cni-mode.js';
import type { CniNetworkConfig } from '../../src/manager/config.js';
import type { NetworkManager } from '../../src/manager/manager.js';
import { closeTapFds } from '../../src/net/tap.js';
import { openJournalStore } from '../../src/store/journal.js';
import { openLocalStore } from '../../src/store/local.js';
import { checkInvariants } from '../helpers/invariants.js';
import { privSkipReason } from '../helpers/priv.js';
import { HOSTILE_IDS } from '../torture/corpus.js';
import {
  arp,
  dhcp6Advertise,
  dhcpOffer,
  neighbourAdvert,
  playGuest,
  routerAdvert,
  udp4,
} from '../torture/guest.js';
import {
  directEnv,
  haveDaemon,
  openManager,
  ROOT,
  startReadyDaemon,
  type TortureEnv,
} from '../torture/harness.js';

const skip = privSkipReason();

/** Every file and directory under `dir` (relative), for "nothing appeared outside" checks. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      out.push(relative(dir, p));
      if (statSync(p, { throwIfNoEntry: false })?.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

describe('security: no path from a VM id escapes the state directory', { skip }, () => {
  let env: TortureEnv;
  before(() => {
    env = directEnv('tsp', 128, 2);
  });
  after(() => env?.destroy());

  for (const backend of ['files', 'journal'] as const) {
    it(`${backend} backend: records, leases and locks refuse ${HOSTILE_IDS.length} hostile ids and write nothing outside`, async () => {
      const stateDir = join(env.dir, `state-${backend}`);
      mkdirSync(stateDir, { recursive: true });
      const store =
        backend === 'files'
          ? await openLocalStore({ dir: stateDir })
          : await openJournalStore({ dir: stateDir });
      const outside = tree(env.dir).filter((p) => !p.startsWith(`state-${backend}`));
      const pool = { network: 'n1', subnet: '198.18.0.0/24' };
      try {
        for (const id of HOSTILE_IDS) {
          const refused = (e: unknown) =>
            isTapnetError(e, 'ERR_INVALID_ARGUMENT') || isTapnetError(e, 'ERR_INTERNAL');
          await assert.rejects(
            Promise.resolve().then(() => store.records.get(id)),
            refused,
            JSON.stringify(id),
          );
          await assert.rejects(
            Promise.resolve().then(() => store.records.put({ vmId: id, state: 'ready' })),
            refused,
            JSON.stringify(id),
          );
          await assert.rejects(
            Promise.resolve().then(() => store.records.delete(id)),
            refused,
            JSON.stringify(id),
          );
          await assert.rejects(
            Promise.resolve().then(() => store.locks.acquire('vm', id)),
            refused,
            JSON.stringify(id),
          );
          await assert.rejects(
            Promise.resolve().then(() => store.leases.claim(pool, '198.18.0.9', id)),
            refused,
          );
          await assert.rejects(
            Promise.resolve().then(() =>
              store.leases.claim({ network: id, subnet: pool.subnet }, '198.18.0.9', 'vm-1'),
            ),
            refused,
          );
          await assert.rejects(
            Promise.resolve().then(() => store.leases.claim(pool, id, 'vm-1')),
            refused,
          );
        }
      } finally {
        store.close();
      }
      assert.deepEqual(
        tree(env.dir).filter((p) => !p.startsWith(`state-${backend}`)),
        outside,
        'nothing written outside',
      );
    });
  }

  it('the manager, the CNI cache and namespace names refuse hostile ids', async () => {
    const m = await openManager(env);
    try {
      for (const id of HOSTILE_IDS) {
        await assert.rejects(
          m.ensure(id),
          (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
          JSON.stringify(id),
        );
        await assert.rejects(
          m.release(id),
          (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
          JSON.stringify(id),
        );
        await assert.rejects(m.get(id), (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'), JSON.stringify(id));
        assert.throws(
          () => vmNetnsName({ netnsPrefix: 'tapnet' } as CniNetworkConfig, id),
          (e) => isTapnetError(e),
        );
        const cache = new ResultCache(join(env.dir, 'cache'));
        try {
          const p = cache.filePath('net', id, 'eth0');
          // libcni's rule only refuses separators: a name it accepts must still be inside results/.
          assert.ok(!relative(join(env.dir, 'cache', 'results'), p).startsWith('..'), p);
        } catch (e) {
          assert.ok(isTapnetError(e), String(e));
        }
      }
      assert.deepEqual(await checkInvariants(m), []);
    } finally {
      await m.close();
    }
  });
});

describe('security: no command text is built from input', () => {
  it('src/ never runs a shell: no exec/execSync, no shell: true, no sh -c; spawns take argv arrays', () => {
    const files: string[] = [];
    const walk = (d: string): void => {
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(join(ROOT, 'src'));
    assert.ok(files.length > 50);
    const problems: string[] = [];
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
      const rel = relative(ROOT, f);
      if (/import\s*\{[^}]*\b(exec|execSync)\b[^}]*\}\s*from\s*'node:child_process'/.test(code))
        problems.push(`${rel}: exec/execSync`);
      if (/child_process'\)?\.exec(Sync)?\b|cp\.exec(Sync)?\(/.test(code))
        problems.push(`${rel}: exec/execSync`);
      if (/shell\s*:\s*true/.test(code)) problems.push(`${rel}: shell: true`);
      if (/['"]\/bin\/sh['"]|['"]sh['"]\s*,\s*\[?\s*['"]-c['"]/.test(code)) problems.push(`${rel}: sh -c`);
      if (/\b(popen|system)\b\s*[(,]/.test(code) && /koffi/.test(code))
        problems.push(`${rel}: libc system/popen`);
      // spawn/execFile with a string built by concatenation or a template as the program
      if (/\b(spawn|execFile|execFileSync|spawnSync)\s*\(\s*`/.test(code))
        problems.push(`${rel}: spawn of a template string`);
    }
    assert.deepEqual(problems, []);
  });

  it('nftables documents are built as data (JSON.stringify), never as rule text', () => {
    const dir = join(ROOT, 'src', 'firewall');
    const problems: string[] = [];
    for (const n of readdirSync(dir)) {
      const text = readFileSync(join(dir, n), 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/^\s*\/\/.*$/gm, '');
      if (/run_cmd_from_buffer\s*\(\s*`/.test(text)) problems.push(`${n}: rule text from a template`);
      if (/['"`]\s*add rule |['"`]\s*add element /.test(text)) problems.push(`${n}: nft command text`);
    }
    assert.deepEqual(problems, []);
  });
});

describe('security: the daemon API', {
  skip: skip ?? (haveDaemon() ? undefined : 'no daemon in this build'),
}, () => {
  let env: TortureEnv;
  before(() => {
    env = directEnv('tsa', 130, 2);
  });
  after(() => env?.destroy());

  it('the Unix socket is 0600 and root-owned; another user cannot connect', async () => {
    const d = await startReadyDaemon(env);
    try {
      const st = statSync(d.socket);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o600);
      assert.equal(st.uid, 0);
      chmodSync(env.dir, 0o755); // let "nobody" reach the socket itself
      const r = spawnSync(
        process.execPath,
        [
          '-e',
          `require('net').connect(${JSON.stringify(d.socket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(0)})`,
        ],
        { uid: 65534, gid: 65534, encoding: 'utf8' },
      );
      assert.equal(r.stdout.trim(), 'EACCES');
    } finally {
      chmodSync(env.dir, 0o700);
      await d.stop();
    }
  });

  it('TCP: no token, a wrong token of the same length, a malformed header: 401; the right token: 200', async () => {
    const token = 'torture-token-0123456789abcdef';
    const tokenFile = join(env.dir, 'token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const port = 20000 + (process.pid % 20000);
    const d = await startReadyDaemon(env, { tcp: `127.0.0.1:${port}`, tokenFile });
    const get = (auth?: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port, path: '/v1/vms', headers: auth ? { authorization: auth } : {} },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
    try {
      assert.equal(await get(), 401);
      assert.equal(await get(`Bearer ${'x'.repeat(token.length)}`), 401);
      assert.equal(await get(`Bearer ${token.slice(0, -1)}`), 401);
      assert.equal(await get(`Basic ${token}`), 401);
      assert.equal(await get(`Bearer ${token} extra`), 401);
      assert.equal(await get(`Bearer ${token}`), 200);
    } finally {
      await d.stop();
    }
    // The comparison is constant-time: timingSafeEqual over digests (lengths never leak either).
    assert.match(authorized.toString(), /timingSafeEqual/);
    assert.doesNotMatch(authorized.toString(), /===\s*token|token\s*===/);
    assert.equal(authorized(`Bearer ${token}`, token), true);
    assert.equal(authorized(`Bearer ${token}`, undefined), false);
    assert.equal(authorized(undefined, token), false);
  });
});

describe('security: hostile guests through their TAP fds', { skip }, () => {
  let env: TortureEnv;
  let m: NetworkManager;
  const fds: Record<string, number> = {};
  const info: Record<string, Awaited<ReturnType<NetworkManager['ensure']>>> = {};
  before(async () => {
    env = directEnv('tsg', 132, 2);
    (env.config.networks as Record<string, Record<string, unknown>>).br!.subnet6 = 'fd00:198:18:f4::/64';
    m = await openManager(env);
    for (const [id, network] of [
      ['a', 'br'],
      ['b', 'br'],
      ['r', 'rt'],
    ] as const) {
      await m.ensure(id, { network, vnetHdr: false });
      info[id] = await m.ensure(id, { tap: 'fd' });
      fds[id] = info[id]!.tapFds![0]!;
    }
  });
  after(async () => {
    for (const i of Object.values(info)) if (i.tapFds) await closeTapFds(i.tapFds);
    await m?.releaseMany(['a', 'b', 'r']);
    await m?.close();
    env?.destroy();
  });

  const spoofDrops = (net: string): number =>
    m.firewall.status().networks.find((n) => n.name === net)!.drops.spoof.packets;
  const ipOf = (id: string) => info[id]!.ipv4!.split('/')[0]!;
  const ip6Of = (id: string) => info[id]!.ipv6!.split('/')[0]!;
  /** A sends `frames` while B listens; returns what B got (hex), and the spoof counter's increase. */
  async function attack(
    frames: Buffer[],
    net = 'br',
    from = 'a',
    to = 'b',
  ): Promise<{ got: string[]; dropped: number }> {
    const before = spoofDrops(net);
    const [, got] = await Promise.all([playGuest(fds[from]!, frames, 700), playGuest(fds[to]!, [], 900)]);
    return { got: got.map((f) => f.toString('hex')), dropped: spoofDrops(net) - before };
  }

  it('control: a well-behaved ARP request from A reaches B (so silence below means dropped)', async () => {
    const f = arp(info.a!.mac, 'ff:ff:ff:ff:ff:ff', 1, info.a!.mac, ipOf('a'), ipOf('b'));
    const { got, dropped } = await attack([f]);
    assert.ok(got.includes(f.toString('hex')));
    assert.equal(dropped, 0);
  });

  it('ARP spoofing: claiming the gateway or B, or another sender MAC, is dropped and counted; the host keeps B right', async () => {
    const gw = info.a!.gateway4!;
    const frames = [
      arp(info.a!.mac, 'ff:ff:ff:ff:ff:ff', 2, info.a!.mac, gw, gw),
      arp(info.a!.mac, 'ff:ff:ff:ff:ff:ff', 2, info.a!.mac, ipOf('b'), ipOf('b')),
      arp(info.a!.mac, 'ff:ff:ff:ff:ff:ff', 1, info.b!.mac, ipOf('a'), gw),
      arp(info.b!.mac, 'ff:ff:ff:ff:ff:ff', 1, info.b!.mac, ipOf('b'), gw),
    ];
    const { got, dropped } = await attack(frames);
    for (const f of frames) assert.ok(!got.includes(f.toString('hex')), 'B never sees a spoofed ARP');
    assert.equal(dropped, frames.length);
    const neigh = env.t!.ip('neigh', 'show', ipOf('b'));
    assert.ok(!neigh.includes(info.a!.mac), `host neighbour entry for B is not A's MAC: ${neigh}`);
  });

  it('IPv6 router advertisements and DHCP/DHCPv6 server answers from a guest are dropped and counted', async () => {
    const frames = [
      routerAdvert(info.a!.mac, 'fe80::a', 'fd66::'),
      dhcpOffer(info.a!.mac, ipOf('a')),
      dhcp6Advertise(info.a!.mac, 'fe80::a'),
    ];
    const { got, dropped } = await attack(frames);
    for (const f of frames) assert.ok(!got.includes(f.toString('hex')));
    assert.equal(dropped, frames.length);
  });

  it("ND spoofing from another VM's address is dropped; ND target addresses are NOT pinned (documented gap)", async () => {
    const spoofedSource = neighbourAdvert(info.a!.mac, ip6Of('b'), ip6Of('b'), info.a!.mac);
    const r1 = await attack([spoofedSource]);
    assert.ok(!r1.got.includes(spoofedSource.toString('hex')));
    assert.equal(r1.dropped, 1);
    // From its own link-local address, A claims the gateway's IPv6 address: passes (not covered on nft 1.0.6).
    const targetSpoof = neighbourAdvert(info.a!.mac, 'fe80::a', info.a!.gateway6!, info.a!.mac);
    const r2 = await attack([targetSpoof]);
    assert.equal(r2.dropped, 0, 'if this fails, ND targets are now pinned: update docs/RELIABILITY.md');
    assert.ok(r2.got.includes(targetSpoof.toString('hex')));
  });

  it('routed topology: a spoofed source address, an RA and a DHCP answer are dropped and counted', async () => {
    const before = spoofDrops('rt');
    const gwMac = env.t!.ipJson<Array<{ address: string }>>('link', 'show', info.r!.tap)[0]!.address;
    const frames = [
      udp4(info.r!.mac, gwMac, '198.18.133.99', '198.18.133.1', 1000, 7, Buffer.from('spoof')),
      routerAdvert(info.r!.mac, 'fe80::a', 'fd66::'),
      dhcpOffer(info.r!.mac, ipOf('r')),
    ];
    await playGuest(fds.r!, frames, 600);
    assert.equal(spoofDrops('rt') - before, frames.length);
  });

  it('leaves the VMs whole', async () => {
    assert.deepEqual(await checkInvariants(m), []);
    execFileSync('true');
  });
});
