/**
 * The statistics and usage routes over HTTP, with a fake service: GET /v1/stats (with ?vm=), GET
 * /v1/usage (with ?since=), DELETE /v1/usage/{vmId}, their errors, and DaemonClient's methods for them;
 * a service without them answers ERR_NOT_FOUND.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { DaemonClient } from '../../src/daemon/client.js';
import { Daemon } from '../../src/daemon/server.js';
import type { TapnetApi } from '../../src/daemon/service.js';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import { parseSince, type UsageEntry, type UsageReport, usageSince } from '../../src/observe/usage.js';
import type { StatsReport } from '../../src/observe/vmstats.js';
import { captureLogger, FakeApi } from './api-fake.js';

class StatsFakeApi extends FakeApi {
  readonly usageEntries = new Map<string, UsageEntry>();

  async statsAll(vmIds?: string[]): Promise<StatsReport> {
    const ids = vmIds ?? [...this.vms.keys()];
    const report: StatsReport = {
      collectedAt: new Date(0).toISOString(),
      vms: [],
      networks: [],
      unregisteredDrops: null,
      problems: [],
    };
    for (const id of ids) {
      if (this.vms.has(id)) report.vms.push(await this.stats(id));
      else report.problems.push({ vmId: id, code: 'ERR_NOT_FOUND', message: `VM ${id} has no network` });
    }
    return report;
  }

  async usage(opts: { since?: string } = {}): Promise<UsageReport> {
    const vms = [...this.usageEntries.values()];
    return {
      sampledAt: new Date(0).toISOString(),
      vms: opts.since ? usageSince(vms, parseSince(opts.since)) : vms,
      problems: [],
    };
  }

  async collectUsage(vmId: string): Promise<UsageEntry> {
    const e = this.usageEntries.get(vmId);
    if (!e) throw new TapnetError('ERR_NOT_FOUND', `no usage of VM ${vmId}`);
    if (e.state === 'active') throw new TapnetError('ERR_CONFLICT', `VM ${vmId} still has a network`);
    this.usageEntries.delete(vmId);
    return e;
  }
}

const entry = (vmId: string, state: 'active' | 'released', lastChangeAt: string): UsageEntry => ({
  vmId,
  network: 'vms',
  mode: 'direct',
  state,
  guestRx: { bytes: 10, packets: 1 },
  guestTx: { bytes: 20, packets: 2 },
  resets: 0,
  firstSeenAt: lastChangeAt,
  lastChangeAt,
  ...(state === 'released' ? { releasedAt: lastChangeAt } : {}),
});

async function start(api: TapnetApi) {
  const dir = mkdtempSync(join(tmpdir(), 'tapnet-usage-api-'));
  const socket = join(dir, 'api.sock');
  writeFileSync(join(dir, 'config.yaml'), `stateDir: ${join(dir, 'state')}\n`);
  const loaded = loadConfig({
    configFile: join(dir, 'config.yaml'),
    env: { TAPNET_SOCKET: socket },
    defaultFiles: [],
  });
  const daemon = await Daemon.start({
    loaded,
    logger: captureLogger().logger,
    openService: async () => ({ api }),
  });
  await daemon.ready;
  const client = new DaemonClient({ socket });
  return {
    client,
    async stop() {
      await client.close();
      await daemon.shutdown('test');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('stats and usage over the API', () => {
  let d: Awaited<ReturnType<typeof start>>;
  let api: StatsFakeApi;
  before(async () => {
    api = new StatsFakeApi();
    d = await start(api);
  });
  after(async () => d?.stop());

  it('GET /v1/stats: every VM, or those named; unknown ones in problems; bad ids refused', async () => {
    await d.client.ensure('vm1');
    await d.client.ensure('vm2');
    const all = await d.client.statsAll();
    assert.deepEqual(
      all.vms.map((v) => v.vmId),
      ['vm1', 'vm2'],
    );
    const some = await d.client.statsAll(['vm2', 'ghost']);
    assert.deepEqual(
      some.vms.map((v) => v.vmId),
      ['vm2'],
    );
    assert.deepEqual(
      some.problems.map((p) => [p.vmId, p.code]),
      [['ghost', 'ERR_NOT_FOUND']],
    );
    await assert.rejects(
      d.client.request('GET', '/v1/stats?vm=..%2Fetc'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT') && e.details.httpStatus === 400,
    );
  });

  it('GET /v1/usage with since; DELETE /v1/usage/{vmId}: 200 with the totals, 409 when active, 404 after', async () => {
    api.usageEntries.set('old', entry('old', 'released', '2020-01-01T00:00:00.000Z'));
    api.usageEntries.set('vm1', entry('vm1', 'active', new Date().toISOString()));
    assert.deepEqual(
      (await d.client.usage()).vms.map((v) => v.vmId),
      ['old', 'vm1'],
    );
    assert.deepEqual(
      (await d.client.usage({ since: '1h' })).vms.map((v) => v.vmId),
      ['vm1'],
    );
    await assert.rejects(d.client.usage({ since: 'last tuesday' }), (e) =>
      isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    await assert.rejects(
      d.client.collectUsage('vm1'),
      (e) => isTapnetError(e, 'ERR_CONFLICT') && e.details.httpStatus === 409,
    );
    const got = await d.client.collectUsage('old');
    assert.equal(got.guestTx.bytes, 20);
    await assert.rejects(
      d.client.collectUsage('old'),
      (e) => isTapnetError(e, 'ERR_NOT_FOUND') && e.details.httpStatus === 404,
    );
  });
});

describe('a service without stats and usage', () => {
  it('answers ERR_NOT_FOUND for them (embedders’ services need not offer everything)', async () => {
    const d = await start(new FakeApi());
    try {
      for (const call of [
        () => d.client.statsAll(),
        () => d.client.usage(),
        () => d.client.collectUsage('vm1'),
      ]) {
        await assert.rejects(
          call(),
          (e) => isTapnetError(e, 'ERR_NOT_FOUND') && /does not offer/.test(e.message),
        );
      }
    } finally {
      await d.stop();
    }
  });
});
