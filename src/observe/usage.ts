/**
 * The usage export: cumulative bytes and packets per VM for billing-style consumers, that survive the
 * counter resets of re-created TAPs (reconcile, a daemon restart, a reboot, a re-created CNI namespace).
 * Semantics in docs/USAGE.md.
 *
 * Each VM has one file `<stateDir>/usage/<vmId>.json` holding the sum of its ended counter epochs
 * (`base`), the last raw counters seen of the current one (`last`) and that epoch's identity (boot,
 * namespace, ifindex). A sample reads the TAP: a new epoch, or any counter below the last one seen, is a
 * reset — `last` joins `base` — so totals only ever grow. Samplers in several processes (daemon, CLI)
 * take `usage/.lock` (flock) around read-kernel-then-write, so no sample is ever folded in twice or
 * lost to a race. Files are replaced atomically and fsynced after each pass.
 */
import { join } from 'node:path';
import { TapnetError, toTapnetError } from '../errors.js';
import type { NetworkManager } from '../manager/manager.js';
import type { VmRecord } from '../manager/types.js';
import { lockFile, unlockFile } from '../store/locks.js';
import { StateDir } from '../store/statedir.js';
import { validateVmId } from '../validate.js';
import { readTaps, type TapReading } from './vmstats.js';

/** Cumulative traffic in one direction. */
export interface UsageCounters {
  bytes: number;
  packets: number;
}

/** One VM's usage, as exported. */
export interface UsageEntry {
  vmId: string;
  network: string;
  mode: 'direct' | 'cni';
  /** active: the VM has a network; released: final totals, kept until collected. */
  state: 'active' | 'released';
  /** Received by the guest since tapnet first saw it (all TAP incarnations together). */
  guestRx: UsageCounters;
  /** Sent by the guest since tapnet first saw it. */
  guestTx: UsageCounters;
  /** Counter resets folded in (re-created TAPs, reboots). */
  resets: number;
  firstSeenAt: string;
  /** When the totals last grew (or the entry was created). */
  lastChangeAt: string;
  releasedAt?: string;
}

export interface UsageReport {
  /** When the counters were read. */
  sampledAt: string;
  /** Sorted by vmId. */
  vms: UsageEntry[];
  problems: { vmId?: string; code: string; message: string }[];
}

/** Raw counters of one epoch, from the guest's side. */
export interface RawUsage {
  rxBytes: number;
  rxPackets: number;
  txBytes: number;
  txPackets: number;
}

const KEYS = ['rxBytes', 'rxPackets', 'txBytes', 'txPackets'] as const;
const ZERO: RawUsage = { rxBytes: 0, rxPackets: 0, txBytes: 0, txPackets: 0 };

/** What one VM's usage file holds. */
export interface UsageRecord extends Omit<UsageEntry, 'guestRx' | 'guestTx'> {
  format: 'tapnet-usage';
  version: 1;
  /** Sum of the ended epochs' counters. */
  base: RawUsage;
  /** The last counters seen in the current epoch. */
  last: RawUsage;
  /** Identity of the current epoch (TapReading.epoch). */
  epoch: string;
}

/** One reading of a VM's TAP. */
export interface UsageObservation {
  vmId: string;
  network: string;
  mode: 'direct' | 'cni';
  raw: RawUsage;
  epoch: string;
}

const add = (a: RawUsage, b: RawUsage): RawUsage => ({
  rxBytes: a.rxBytes + b.rxBytes,
  rxPackets: a.rxPackets + b.rxPackets,
  txBytes: a.txBytes + b.txBytes,
  txPackets: a.txPackets + b.txPackets,
});
const same = (a: RawUsage, b: RawUsage) => KEYS.every((k) => a[k] === b[k]);

/** A TAP's counters from the guest's side: the guest receives what the TAP transmits. */
export function rawUsage(t: TapReading): RawUsage {
  const s = t.stats;
  return { rxBytes: s.txBytes, rxPackets: s.txPackets, txBytes: s.rxBytes, txPackets: s.rxPackets };
}

/**
 * Fold one observation into a VM's record (pure). A different epoch, or any counter below the last one
 * seen, is a reset: the last counters join the base. Returns undefined when nothing changed.
 */
export function advanceUsage(
  prev: UsageRecord | undefined,
  o: UsageObservation,
  now: string,
): UsageRecord | undefined {
  if (!prev) {
    return {
      format: 'tapnet-usage',
      version: 1,
      vmId: o.vmId,
      network: o.network,
      mode: o.mode,
      state: 'active',
      resets: 0,
      firstSeenAt: now,
      lastChangeAt: now,
      base: { ...ZERO },
      last: { ...o.raw },
      epoch: o.epoch,
    };
  }
  const reset = prev.epoch !== o.epoch || KEYS.some((k) => o.raw[k] < prev.last[k]);
  const base = reset ? add(prev.base, prev.last) : prev.base;
  const grew = !same(add(base, o.raw), add(prev.base, prev.last));
  const unchanged =
    !reset && !grew && prev.state === 'active' && prev.network === o.network && prev.mode === o.mode;
  if (unchanged) return undefined;
  const { releasedAt: _r, ...rest } = prev;
  return {
    ...rest,
    network: o.network,
    mode: o.mode,
    state: 'active',
    resets: prev.resets + (reset ? 1 : 0),
    lastChangeAt: grew ? now : prev.lastChangeAt,
    base,
    last: { ...o.raw },
    epoch: o.epoch,
  };
}

/** The record of a VM that no longer has a network: final totals (pure; undefined when already so). */
export function releaseUsage(prev: UsageRecord, now: string): UsageRecord | undefined {
  return prev.state === 'released' ? undefined : { ...prev, state: 'released', releasedAt: now };
}

/** The exported view of a record. */
export function usageEntry(r: UsageRecord): UsageEntry {
  const t = add(r.base, r.last);
  return {
    vmId: r.vmId,
    network: r.network,
    mode: r.mode,
    state: r.state,
    guestRx: { bytes: t.rxBytes, packets: t.rxPackets },
    guestTx: { bytes: t.txBytes, packets: t.txPackets },
    resets: r.resets,
    firstSeenAt: r.firstSeenAt,
    lastChangeAt: r.lastChangeAt,
    ...(r.releasedAt ? { releasedAt: r.releasedAt } : {}),
  };
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isTime = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));
const isRaw = (v: unknown): v is RawUsage =>
  typeof v === 'object' && v !== null && KEYS.every((k) => isCount((v as Record<string, unknown>)[k]));

/** Parse a usage file; undefined when it is not one (it is then quarantined). */
export function parseUsageRecord(text: string, vmId: string): UsageRecord | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const ok =
    typeof v === 'object' &&
    v !== null &&
    v.format === 'tapnet-usage' &&
    v.version === 1 &&
    v.vmId === vmId &&
    typeof v.network === 'string' &&
    (v.mode === 'direct' || v.mode === 'cni') &&
    (v.state === 'active' || v.state === 'released') &&
    isCount(v.resets) &&
    isTime(v.firstSeenAt) &&
    isTime(v.lastChangeAt) &&
    (v.releasedAt === undefined || isTime(v.releasedAt)) &&
    isRaw(v.base) &&
    isRaw(v.last) &&
    typeof v.epoch === 'string';
  return ok ? (v as unknown as UsageRecord) : undefined;
}

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`: an ISO 8601 time (`2024-05-01`, `2024-05-01T12:00:00Z`) or a duration back from now
 * (`90s`, `15m`, `2h`, `7d`). ERR_INVALID_ARGUMENT otherwise.
 */
export function parseSince(text: unknown, now = Date.now()): Date {
  if (typeof text === 'string') {
    const d = /^(\d{1,9})([smhd])$/.exec(text);
    if (d) return new Date(now - Number(d[1]) * UNITS[d[2]!]!);
    if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) {
      const t = Date.parse(text);
      if (!Number.isNaN(t)) return new Date(t);
    }
  }
  throw new TapnetError(
    'ERR_INVALID_ARGUMENT',
    `since must be an ISO 8601 time (2024-05-01T12:00:00Z) or a duration like 15m, 2h, 7d, not ${JSON.stringify(text)}`,
    { details: { value: text } },
  );
}

/** Entries whose totals grew, or that were released, at or after `since`. */
export function usageSince(vms: readonly UsageEntry[], since: Date): UsageEntry[] {
  const t = since.getTime();
  return vms.filter(
    (e) => Date.parse(e.lastChangeAt) >= t || (e.releasedAt !== undefined && Date.parse(e.releasedAt) >= t),
  );
}

type Problems = UsageReport['problems'];

/** Samples of a few VMs that run as one pass. */
interface Batch {
  m: NetworkManager;
  ids: Set<string>;
  run: Promise<UsageReport>;
}

/** The usage files of one state directory. One per process and state directory is enough. */
export class UsageLedger {
  private readonly sd: StateDir;
  /** `<stateDir>/usage`. */
  readonly dir: string;
  private queue: Promise<unknown> = Promise.resolve();
  /** Passes of a few VMs whose files could not be written after their callers went on. */
  writeFailures = 0;
  /** The samples of a few VMs waiting to run together, by `final` (see sample()). */
  private readonly batches = new Map<boolean, Batch>();
  /** VMs whose entry this process saw released, with when (final until re-ensured or collected). */
  private readonly released = new Map<string, number>();
  /** Final entries forgotten because nobody collected them within the retention (see refresh()). */
  expired = 0;

  /** `read` reads the TAPs (tests substitute a fake; it must be synchronous, like readTaps). */
  constructor(
    stateDir: string,
    private readonly read: typeof readTaps = readTaps,
  ) {
    this.sd = new StateDir(stateDir);
    this.dir = this.sd.path('usage');
  }

  private file(vmId: string): string {
    return this.sd.path('usage', `${vmId}.json`);
  }

  /** One holder at a time: in this process (queue), then across processes (flock on usage/.lock). */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      this.sd.ensureDir(this.dir);
      const lock = join(this.dir, '.lock');
      const fd = await lockFile(lock, { timeoutMs: 30_000, what: 'the usage ledger' });
      try {
        return await fn();
      } finally {
        unlockFile(lock, fd);
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private load(vmId: string, problems: Problems): UsageRecord | undefined {
    const f = this.file(vmId);
    const text = this.sd.readText(f);
    if (text === undefined) return undefined;
    const r = parseUsageRecord(text, vmId);
    if (!r) {
      const moved = this.sd.quarantine(f);
      problems.push({
        vmId,
        code: 'ERR_STORE_CORRUPT',
        message: `usage file of VM ${vmId} is unreadable: moved to ${moved}`,
      });
    }
    return r;
  }

  private save(r: UsageRecord): void {
    this.sd.writeAtomic(this.file(r.vmId), `${JSON.stringify(r)}\n`);
  }

  /** VM ids with a usage file. */
  private ids(): string[] {
    return this.sd
      .list(this.dir)
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .sort();
  }

  /**
   * Read the TAPs of `vmIds` (every VM with a record when undefined), fold the counters in and persist
   * them; VMs with a usage file but no record any more get their final totals (state released).
   * `final`: the VMs are about to be released (the daemon's last reading before a release): their entries
   * are marked released at once (a failed release turns them active again at the next sample).
   * Returns the entries of `vmIds` (or all).
   */
  async sample(
    m: NetworkManager,
    opts: { vmIds?: readonly string[]; final?: boolean } = {},
  ): Promise<UsageReport> {
    const ids = opts.vmIds?.map((v) => validateVmId(v));
    if (!ids) return this.locked(() => this.pass(m, { report: true, sync: true }));
    // Concurrent samples of a few VMs (one per release, through the daemon) share one pass: one lock,
    // one TAP reading and one sync for the whole group instead of one each, in a row.
    const final = opts.final === true;
    let b = this.batches.get(final);
    if (!b || b.m !== m) {
      const group = { m, ids: new Set<string>() } as Batch;
      // The callers (releases) go on as soon as the counters are read and folded in; the files are
      // written after that, still under the lock, so every later pass (any process) reads them.
      let folded!: (r: UsageReport) => void;
      let failed!: (e: unknown) => void;
      group.run = new Promise<UsageReport>((resolve, reject) => {
        folded = resolve;
        failed = reject;
      });
      this.locked(() => {
        if (this.batches.get(final) === group) this.batches.delete(final);
        return this.pass(m, { ids: [...group.ids], report: true, sync: false, final, folded });
      }).then(folded, (e: unknown) => {
        this.writeFailures++;
        failed(e);
      });
      this.batches.set(final, group);
      b = group;
    }
    for (const id of ids) b.ids.add(id);
    const r = await b.run;
    const want = new Set(ids);
    return {
      ...r,
      vms: r.vms.filter((v) => want.has(v.vmId)),
      problems: r.problems.filter((p) => p.vmId === undefined || want.has(p.vmId)),
    };
  }

  /**
   * Sample every VM for the ledger's sake (the daemon's periodic pass): like sample(), but without a
   * report, so the final totals of released VMs, which no sample changes, are not read again.
   * `retentionMs` (> 0): forget final totals released longer ago than that and never collected.
   */
  async refresh(m: NetworkManager, opts: { retentionMs?: number } = {}): Promise<{ problems: Problems }> {
    const r = await this.locked(() =>
      this.pass(m, {
        report: false,
        sync: true,
        ...(opts.retentionMs !== undefined ? { retentionMs: opts.retentionMs } : {}),
      }),
    );
    return { problems: r.problems };
  }

  /**
   * One pass, under the lock: `ids` (every VM when undefined); `report`: return every entry; `sync`: fsync
   * what it wrote; `final`: these VMs are being released (their entries end released). The samples of a few VMs (a release's last reading) are written on the thread pool and
   * not fsynced, like the VM records: a machine crash within the kernel's writeback delay (seconds) may
   * lose the last reading of VMs released just before it, never a file half-written.
   */
  private async pass(
    m: NetworkManager,
    opts: {
      ids?: string[];
      report: boolean;
      sync: boolean;
      final?: boolean;
      retentionMs?: number;
      /** Told the report once everything is folded in, before the files are written. */
      folded?: (r: UsageReport) => void;
    },
  ): Promise<UsageReport> {
    const { ids, report, sync } = opts;
    {
      // A batch (releases waiting on it) writes on the thread pool, so the event loop keeps serving.
      const writes: Promise<void>[] = [];
      const save = (r: UsageRecord): void => {
        if (sync) this.save(r);
        else writes.push(this.sd.writeAtomicAsync(this.file(r.vmId), `${JSON.stringify(r)}\n`));
      };
      const problems: Problems = [];
      const records: VmRecord[] = [];
      if (ids) {
        // Together: on a busy event loop each await is a turn behind everything else that is waiting.
        for (const r of await Promise.all([...new Set(ids)].map((id) => m.store.records.get(id))))
          if (r) records.push(r);
      } else records.push(...(await m.store.records.list()).records);
      // From here on, synchronous: the counters read are written before anyone else can read them.
      const now = new Date().toISOString();
      const taps = this.read(m, records);
      const out = new Map<string, UsageRecord>();
      for (const r of records) {
        const t = taps.get(r.vmId)!;
        if (t instanceof TapnetError) {
          if (t.code !== 'ERR_LINK_NOT_FOUND' && t.code !== 'ERR_NETNS_NOT_FOUND')
            problems.push({ vmId: r.vmId, code: t.code, message: t.message });
          const prev = this.load(r.vmId, problems);
          if (prev) out.set(r.vmId, prev);
          continue;
        }
        const prev = this.load(r.vmId, problems);
        const o: UsageObservation = {
          vmId: r.vmId,
          network: r.network,
          mode: r.mode === 'cni' ? 'cni' : 'direct',
          raw: rawUsage(t),
          epoch: t.epoch,
        };
        let entry = advanceUsage(prev, o, now);
        // The last reading of a VM being released is its final one: mark it so now, in the same write,
        // so that full passes do not read and rewrite every file of every VM released since.
        const released = opts.final ? releaseUsage(entry ?? prev!, now) : undefined;
        if (released) entry = released;
        if (entry) save(entry);
        if (opts.final) this.released.set(r.vmId, Date.parse(now));
        else this.released.delete(r.vmId);
        out.set(r.vmId, entry ?? prev!);
      }
      const known = new Set(records.map((r) => r.vmId));
      const expireBefore =
        opts.retentionMs !== undefined && opts.retentionMs > 0
          ? Date.parse(now) - opts.retentionMs
          : undefined;
      for (const id of ids ?? this.ids()) {
        if (known.has(id)) continue;
        let at = this.released.get(id);
        if (at === undefined || report) {
          const prev = this.load(id, problems);
          if (!prev) continue;
          const next = releaseUsage(prev, now);
          if (next) save(next);
          const entry = next ?? prev;
          if (entry.state === 'released') this.released.set(id, (at = Date.parse(entry.releasedAt ?? now)));
          out.set(id, entry);
        }
        // Final totals nobody collected within the retention: forgotten, or they would pile up forever.
        if (expireBefore !== undefined && at !== undefined && at < expireBefore) {
          this.sd.remove(this.file(id));
          this.released.delete(id);
          out.delete(id);
          this.expired++;
        }
      }
      const vms = [...out.values()].map(usageEntry).sort((a, b) => a.vmId.localeCompare(b.vmId));
      const result = { sampledAt: now, vms, problems };
      opts.folded?.(result);
      await Promise.all(writes);
      if (sync) await this.sd.sync();
      return result;
    }
  }

  /** Sample every VM, then the entries (only those changed or released since `since`, when given). */
  async usage(m: NetworkManager, opts: { since?: Date } = {}): Promise<UsageReport> {
    const r = await this.sample(m);
    return opts.since ? { ...r, vms: usageSince(r.vms, opts.since) } : r;
  }

  /**
   * Hand over a released VM's final totals and forget them (after the consumer stored them). A VM that
   * still has a network: ERR_CONFLICT (its totals keep growing); no usage: ERR_NOT_FOUND.
   */
  async collect(m: NetworkManager, vmId: string): Promise<UsageEntry> {
    validateVmId(vmId);
    return this.locked(async () => {
      const problems: Problems = [];
      let r = this.load(vmId, problems);
      if (!r) {
        const why = problems[0]?.message ?? 'nothing recorded';
        throw new TapnetError('ERR_NOT_FOUND', `no usage of VM ${vmId} (${why})`, { details: { vmId } });
      }
      if (r.state === 'active') {
        if (await m.store.records.get(vmId)) {
          throw new TapnetError(
            'ERR_CONFLICT',
            `VM ${vmId} still has a network: its usage keeps growing; collect it after release`,
            { details: { vmId } },
          );
        }
        r = releaseUsage(r, new Date().toISOString())!;
      }
      try {
        this.sd.remove(this.file(vmId));
        this.released.delete(vmId);
      } catch (e) {
        throw toTapnetError(e);
      }
      await this.sd.sync();
      return usageEntry(r);
    });
  }
}
