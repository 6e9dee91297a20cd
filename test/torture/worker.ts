/**
 * Torture worker (a library user): opens a NetworkManager over the WorkerSpec given as JSON in argv[2]
 * (harness.ts), prints `ready`, then ensures and releases random VMs of the spec's ids until it is killed
 * or reaches maxOps/maxMs (then prints `done {ops, errors}` and exits 0). Errors a worker may meet when
 * others hammer the same ids (ERR_CONFLICT, ERR_TEARDOWN, …) are counted; anything else — a non-tapnet
 * error, ERR_INTERNAL not injected — is printed as `unexpected {...}` for the parent to fail on.
 * Runs only with TORTURE_WORKER=1 (node --test may load every file of this directory).
 */
import { isTapnetError, toTapnetError } from '../../src/errors.js';
import { NetworkManager } from '../../src/manager/manager.js';
import { closeTapFds } from '../../src/net/tap.js';
import type { WorkerSpec } from './harness.js';

/** Codes a worker may legitimately get while other processes work on the same VMs and addresses. */
const EXPECTED = new Set([
  'ERR_CONFLICT',
  'ERR_TEARDOWN',
  'ERR_IPAM_EXHAUSTED',
  'ERR_IPAM_CONFLICT',
  'ERR_LINK_NOT_FOUND',
]);

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]!) as WorkerSpec;
  const m = await NetworkManager.open({ ...spec.config, storeBackend: spec.backend });
  if (spec.reconcileFirst) await m.reconcile();
  process.stdout.write('ready\n');
  const held = new Map<string, number[]>();
  const errors: Record<string, number> = {};
  const t0 = Date.now();
  const releaseRatio = spec.releaseRatio ?? 0.4;
  const fdRatio = spec.fdRatio ?? 0.2;
  let ops = 0;
  const op = async (vm: { id: string; network: string }, release: boolean): Promise<void> => {
    try {
      if (release) {
        await m.release(vm.id);
        const fds = held.get(vm.id);
        held.delete(vm.id);
        if (fds) await closeTapFds(fds);
      } else {
        const fd = Math.random() < fdRatio && !held.has(vm.id);
        const info = await m.ensure(vm.id, { network: vm.network, ...(fd ? { tap: 'fd' as const } : {}) });
        if (info.tapFds?.length) {
          if (held.has(vm.id)) await closeTapFds(info.tapFds);
          else held.set(vm.id, info.tapFds);
        }
      }
    } catch (e) {
      const t = toTapnetError(e);
      errors[t.code] = (errors[t.code] ?? 0) + 1;
      const injected = isTapnetError(e) && e.details.faultPoint !== undefined;
      // Known bug (docs/RELIABILITY.md #9): an ensure reusing a namespace a crash left fails once.
      const known = t.code === 'ERR_CNI' && /already exists/.test(t.message);
      if (known) errors.knownCniLeftover = (errors.knownCniLeftover ?? 0) + 1;
      if (!isTapnetError(e) || (!EXPECTED.has(t.code) && !injected && !known)) {
        process.stdout.write(
          `unexpected ${JSON.stringify({ vmId: vm.id, release, error: t.toJSON(), stack: (e as Error).stack })}\n`,
        );
      }
    }
    ops++;
  };
  if (spec.touchAll) for (const vm of spec.ids) await op(vm, false);
  for (;;) {
    if (spec.maxOps !== undefined && ops >= spec.maxOps) break;
    if (spec.maxMs !== undefined && Date.now() - t0 >= spec.maxMs) break;
    const vm = spec.ids[Math.floor(Math.random() * spec.ids.length)]!;
    await op(vm, Math.random() < releaseRatio);
  }
  for (const fds of held.values()) await closeTapFds(fds);
  await m.close();
  process.stdout.write(`done ${JSON.stringify({ ops, errors })}\n`);
  process.stdout.write('', () => process.exit(0));
}

if (process.env.TORTURE_WORKER === '1') {
  main().catch((e) => {
    process.stdout.write(
      `unexpected ${JSON.stringify({ fatal: toTapnetError(e).toJSON(), stack: (e as Error).stack })}\n`,
    );
    process.stdout.write('', () => process.exit(1));
  });
}
