/**
 * Fault points for crash and rollback tests. The manager calls `faultPoint('ensure:after-tap')` at the
 * moments where a crash or a failure matters (between two steps of ensure, release, reconcile); a test
 * arms some of them through the environment variable TAPNET_FAULTS, read once when this module loads:
 *
 *   TAPNET_FAULTS=<point>:<action>[@<n>][,<point>:<action>[@<n>]…]
 *     action  kill   SIGKILL this process (a crash: nothing runs after it, no finally, no exit handler)
 *             throw  throw ERR_INTERNAL with details.faultPoint (a failure the caller must roll back)
 *     n       fire on the n-th time the point is reached (default 1); once only
 *   e.g. TAPNET_FAULTS=ensure:after-tap:kill   TAPNET_FAULTS=release:after-firewall:throw@3
 *
 * Unset (production), every call is one lookup in an empty Map. FAULT_POINTS lists every point in use.
 */
import { TapnetError } from '../errors.js';

/** Every fault point the manager reaches, in the order of the operation. */
export const FAULT_POINTS = [
  // ensure, direct mode (manager.ts create)
  'ensure:locked',
  'ensure:after-leases',
  'ensure:after-tap',
  'ensure:after-firewall',
  'ensure:after-record',
  // ensure, CNI mode (cni-mode.ts cniAdd, manager.ts createCni)
  'cni-add:after-netns',
  'cni-add:after-add',
  'ensure:cni-before-record',
  // repair of a ready VM's vanished TAP (manager.ts repairTap)
  'repair:after-tap',
  // release (manager.ts finishRelease, cni-mode.ts cniDel)
  'release:marked',
  'release:after-firewall',
  'release:after-tap',
  'release:after-leases',
  'cni-del:after-del',
  'release:after-record',
  // reconcile (reconcile.ts)
  'reconcile:after-networks',
  'reconcile:record',
  'reconcile:orphans',
  'reconcile:before-leases',
] as const;

export type FaultPoint = (typeof FAULT_POINTS)[number];
export type FaultAction = 'kill' | 'throw';

interface Armed {
  action: FaultAction;
  /** Fire when the hit count reaches this. */
  at: number;
  hits: number;
}

/** Parse a TAPNET_FAULTS value. Unknown points or actions throw ERR_INVALID_ARGUMENT (a test's typo). */
export function parseFaults(spec: string | undefined): Map<string, Armed> {
  const out = new Map<string, Armed>();
  if (!spec) return out;
  const known = new Set<string>(FAULT_POINTS);
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    if (!item) continue;
    const m = /^(.+):(kill|throw)(?:@(\d{1,9}))?$/.exec(item);
    if (!m || !known.has(m[1]!) || (m[3] !== undefined && Number(m[3]) < 1)) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `TAPNET_FAULTS: ${JSON.stringify(item)} is not <point>:<kill|throw>[@n]`,
        {
          details: { value: item, points: [...FAULT_POINTS] },
        },
      );
    }
    out.set(m[1]!, { action: m[2] as FaultAction, at: m[3] ? Number(m[3]) : 1, hits: 0 });
  }
  return out;
}

let armed = parseFaults(process.env.TAPNET_FAULTS);

/**
 * Re-arm the fault points of this process from a TAPNET_FAULTS-style spec (undefined or '': disarm all).
 * For in-process tests of rollback (`throw`); child processes use the environment variable.
 */
export function armFaults(spec: string | undefined): void {
  armed = parseFaults(spec);
}

/** Reached a fault point: does nothing unless TAPNET_FAULTS arms it (then SIGKILL, or throw ERR_INTERNAL). */
export function faultPoint(point: FaultPoint): void {
  const f = armed.get(point);
  if (f === undefined || ++f.hits !== f.at) return;
  if (f.action === 'kill') {
    process.kill(process.pid, 'SIGKILL');
    // SIGKILL to ourselves is delivered before kill(2) returns; never go on in case it was not.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  }
  throw new TapnetError('ERR_INTERNAL', `fault injected at ${point}`, { details: { faultPoint: point } });
}
