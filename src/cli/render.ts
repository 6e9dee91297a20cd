/**
 * Human output of the CLI: tables of VMs, repairs, verify problems, doctor checks (✓/✗ with the
 * fix) and the effective configuration. JSON output never comes from here.
 */
import type { ConfigEntry } from '../config/load.js';
import type { NetworkInfo, ReconcileReport } from '../manager/types.js';
import type { DoctorReport } from '../observe/doctor.js';
import type { VerifyReport } from '../observe/verify.js';
import { table } from './output.js';

export function vmTable(list: NetworkInfo[]): string {
  return table(
    ['VM', 'NETWORK', 'TAP', 'IPV4', 'IPV6', 'MAC', 'BRIDGE'],
    list.map((i) => [i.vmId, i.network, i.tap, i.ipv4 ?? '-', i.ipv6 ?? '-', i.mac, i.bridge ?? i.topology]),
  );
}

/** 1234567 → 1.2 MB (SI units: how link counters are usually read). */
export function humanBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** A list a report from an older daemon may lack. */
const items = (r: ReconcileReport, k: keyof ReconcileReport): string[] =>
  ((r as unknown as Record<string, unknown>)[k] as string[] | undefined) ?? [];

export function reconcileTable(r: ReconcileReport): string {
  const n = (a: unknown[]) => String(a.length);
  return table(
    ['REPAIR', 'COUNT', 'ITEMS'],
    [
      ['orphan TAPs removed', n(r.orphanTaps), r.orphanTaps.join(' ')],
      ['incomplete records finished', n(r.incompleteRecords), r.incompleteRecords.join(' ')],
      ['vanished TAPs re-created', n(r.recreatedTaps), r.recreatedTaps.join(' ')],
      ['TAPs re-attached', n(items(r, 'reattachedTaps')), items(r, 'reattachedTaps').join(' ')],
      ['orphan leases freed', n(r.orphanLeases), r.orphanLeases.join(' ')],
      ['lost leases re-taken', n(items(r, 'reclaimedLeases')), items(r, 'reclaimedLeases').join(' ')],
      ['orphan firewall elements removed', n(r.orphanFirewallElements), r.orphanFirewallElements.join(' ')],
      ['orphan VM namespaces removed (CNI)', n(items(r, 'orphanNetns')), items(r, 'orphanNetns').join(' ')],
      ['corrupt records quarantined', n(r.corruptRecords), r.corruptRecords.join(' ')],
    ],
  );
}

export function verifyText(r: VerifyReport): string {
  if (r.ok)
    return `✓ ${r.vms} VM(s) on ${r.networks} network(s): the state, the kernel and the firewall agree`;
  const rows = r.problems.map((p) => [p.kind, p.vmId ?? '-', p.message, p.fix]);
  return `✗ ${r.problems.length} problem(s)\n${table(['KIND', 'VM', 'PROBLEM', 'FIX'], rows)}`;
}

const MARK = { ok: '✓', fail: '✗', warn: '!', info: '·' } as const;

export function doctorText(r: DoctorReport): string {
  const lines = r.checks.map((c) => {
    const fix = c.fix && c.status !== 'ok' && c.status !== 'info' ? `\n    fix: ${c.fix}` : '';
    return `${MARK[c.status]} ${c.id.padEnd(28)} ${c.message}${fix}`;
  });
  const { ok, warn, fail, info } = r.counts;
  lines.push('', `${fail ? '✗' : '✓'} ${ok} ok, ${fail} failed, ${warn} warning(s), ${info} note(s)`);
  return lines.join('\n');
}

export function configTable(entries: ConfigEntry[], file?: string): string {
  const rows = entries.map((e) => [
    e.key,
    e.value === undefined ? '-' : typeof e.value === 'string' ? e.value : JSON.stringify(e.value),
    e.source,
  ]);
  return `${file ? `# config file: ${file}\n` : '# no config file\n'}${table(['KEY', 'VALUE', 'SOURCE'], rows)}`;
}
