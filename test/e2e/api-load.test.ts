/**
 * Load through the API: 16 concurrent clients, each with its own keep-alive connection, doing
 * ensure + release pairs against `tapnet serve` for a bounded time (API_LOAD_SECONDS, default 8 s; the
 * 2-minute run is `npm run bench -- api`). Zero errors, zero leaks: no VM, TAP, lease or firewall element
 * is left, and verify agrees. Throughput and latency are printed as test diagnostics.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import { type DaemonHarness, startDaemon } from './api-harness.js';

const skip = privSkipReason();
const CLIENTS = 16;
const SECONDS = Number(process.env.API_LOAD_SECONDS ?? 8);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

describe('API under load', { skip }, () => {
  let t: TestNetns;
  let d: DaemonHarness;
  before(async () => {
    t = makeTestNetns('apiload');
    d = await startDaemon(t, {
      tag: 'apiload',
      config: {
        defaultNetwork: 'load',
        networks: { load: { bridge: 'tnload0', subnet4: '198.18.64.0/22' } },
        log: { level: 'warn' },
      },
    });
  });
  after(async () => {
    await d?.stop();
    d?.cleanup();
    t?.destroy();
  });

  it(`${CLIENTS} clients × ensure/release for ${SECONDS} s: zero errors, zero leaks`, async (ctx) => {
    const errors: string[] = [];
    const pairs: number[] = [];
    const end = Date.now() + SECONDS * 1000;
    const one = (agent: http.Agent, method: string, path: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = http.request({ socketPath: d.socket, method, path, agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        try {
          for (let i = 0; Date.now() < end; i++) {
            const id = `load-${c}-${i}`;
            const s = performance.now();
            try {
              const a = await one(agent, 'PUT', `/v1/vms/${id}`);
              const b = await one(agent, 'DELETE', `/v1/vms/${id}`);
              if (a !== 200 || b !== 204) errors.push(`${id}: PUT ${a}, DELETE ${b}`);
            } catch (e) {
              errors.push(`${id}: ${(e as Error).message}`);
            }
            pairs.push(performance.now() - s);
          }
        } finally {
          agent.destroy();
        }
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    const sorted = [...pairs].sort((a, b) => a - b);
    const line = `${pairs.length} pairs in ${wall.toFixed(1)} s: ${(pairs.length / wall).toFixed(0)} ensure+release pairs/s; pair latency p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms`;
    ctx.diagnostic(line);
    process.stderr.write(`# api-load: ${line}\n`);
    assert.deepEqual(errors.slice(0, 5), [], `${errors.length} errors`);
    assert.ok(pairs.length > CLIENTS, 'every client completed pairs');

    // Zero leaks.
    assert.deepEqual((await d.call('GET', '/v1/vms')).json, []);
    // Released TAPs are deleted in the background, batched: wait (briefly) for the last batch.
    let taps = t.ipJson<unknown[]>('link', 'show', 'type', 'tun').length;
    for (const until = Date.now() + 5_000; taps > 0 && Date.now() < until; ) {
      await new Promise((r) => setTimeout(r, 50));
      taps = t.ipJson<unknown[]>('link', 'show', 'type', 'tun').length;
    }
    assert.equal(taps, 0, 'no TAP left');
    const v = (await d.call('GET', '/v1/verify')).json;
    assert.deepEqual(v.problems, [], 'verify: no orphan lease, TAP or firewall element');
    const metrics = (await d.call('GET', '/metrics')).text;
    assert.match(metrics, /tapnet_ipam_pool_used\{network="load",subnet="198\.18\.64\.0\/22"\} 0/);
    assert.match(metrics, /tapnet_active_vms 0/);
    assert.doesNotMatch(metrics, /tapnet_ensure_total\{[^}]*outcome="error"/);
  });
});
