/** The kinds of repair a reconcile report lists, counted one way everywhere (metrics, logs, CLI, tests). */
import type { ReconcileReport } from './types.js';

export const REPAIR_KINDS = [
  'orphanTaps',
  'incompleteRecords',
  'recreatedTaps',
  'reattachedTaps',
  'orphanLeases',
  'reclaimedLeases',
  'orphanFirewallElements',
  'orphanNetns',
] as const satisfies readonly (keyof ReconcileReport)[];

export type RepairKind = (typeof REPAIR_KINDS)[number];

/** A report with nothing in it. */
export function emptyReport(): ReconcileReport {
  return {
    orphanTaps: [],
    incompleteRecords: [],
    recreatedTaps: [],
    reattachedTaps: [],
    orphanLeases: [],
    reclaimedLeases: [],
    orphanFirewallElements: [],
    orphanNetns: [],
    corruptRecords: [],
    errors: [],
  };
}

/** Repairs by kind. Fields a report lacks (one from an older daemon) count as none. */
export function repairsByKind(r: ReconcileReport): Record<RepairKind, number> {
  const out = {} as Record<RepairKind, number>;
  for (const k of REPAIR_KINDS) out[k] = (r[k] as string[] | undefined)?.length ?? 0;
  return out;
}

/** Every repair in a report, as one number. */
export function repairCount(r: ReconcileReport): number {
  return Object.values(repairsByKind(r)).reduce((a, b) => a + b, 0);
}
