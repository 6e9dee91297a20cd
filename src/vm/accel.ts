/**
 * Which accelerator QEMU should use: KVM only where a real KVM boots a guest. Decided by trying, never by
 * the existence of /dev/kvm: some hosts have a /dev/kvm that cannot run a stock kernel (e.g. PVM, where
 * QEMU starts and the guest never comes up). The probe boots the guest fixture with `-accel kvm` and waits
 * for its boot marker; the answer is cached per host boot (keyed by /proc/sys/kernel/random/boot_id).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TapnetError } from '../errors.js';
import type { GuestFixture } from './fixture.js';
import { type QemuAccel, qemuArgv } from './qemu-args.js';
import { SerialConsole } from './serial.js';

/** The probe's verdict. */
export interface AccelProbe {
  accel: QemuAccel;
  /** Why KVM is (not) used. */
  reason: string;
  /** True when the verdict came from the cache. */
  cached: boolean;
}

/** A KVM guest that does not print its boot marker within this time does not count (TCG needs ≈ 2 s). */
export const KVM_PROBE_TIMEOUT_MS = 4000;

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

let memo: AccelProbe | undefined;
let inflight: Promise<AccelProbe> | undefined;

/**
 * Boot the fixture once under KVM (no network) and report whether it came up within `timeoutMs`. The
 * result is remembered in the process and in `<fixture dir>/accel.json` for this host boot.
 */
export function probeAccel(
  fixture: GuestFixture,
  opts: { qemu?: string; timeoutMs?: number; fresh?: boolean } = {},
): Promise<AccelProbe> {
  if (memo && !opts.fresh) return Promise.resolve({ ...memo, cached: true });
  // Parallel VM starts share one probe.
  inflight ??= probe(fixture, opts).finally(() => {
    inflight = undefined;
  });
  return inflight;
}

async function probe(
  fixture: GuestFixture,
  opts: { qemu?: string; timeoutMs?: number; fresh?: boolean },
): Promise<AccelProbe> {
  const cacheFile = join(fixture.dir, 'accel.json');
  const id = bootId();
  if (!opts.fresh && existsSync(cacheFile)) {
    try {
      const c = JSON.parse(readFileSync(cacheFile, 'utf8')) as {
        bootId?: string;
        key?: string;
        accel?: string;
        reason?: string;
      };
      if (c.bootId === id && c.key === fixture.key && (c.accel === 'kvm' || c.accel === 'tcg')) {
        memo = { accel: c.accel, reason: String(c.reason ?? ''), cached: false };
        return { ...memo, cached: true };
      }
    } catch {
      // unreadable cache: probe again
    }
  }
  const verdict = existsSync('/dev/kvm')
    ? await tryKvm(fixture, opts.qemu ?? 'qemu-system-x86_64', opts.timeoutMs ?? KVM_PROBE_TIMEOUT_MS)
    : { accel: 'tcg' as const, reason: 'no /dev/kvm' };
  memo = { ...verdict, cached: false };
  try {
    const tmp = `${cacheFile}.tmp-${process.pid}`;
    writeFileSync(
      tmp,
      `${JSON.stringify({ bootId: id, key: fixture.key, ...verdict, checkedAt: new Date().toISOString() })}\n`,
    );
    renameSync(tmp, cacheFile);
  } catch {
    // a read-only fixture dir: the in-process memo still holds
  }
  return memo;
}

async function tryKvm(
  fixture: GuestFixture,
  qemu: string,
  timeoutMs: number,
): Promise<{ accel: QemuAccel; reason: string }> {
  const argv = qemuArgv({
    name: 'kvm-probe',
    kernel: fixture.kernel,
    initrd: fixture.initrd,
    machine: 'microvm',
    accel: 'kvm',
    memoryMiB: 128,
  });
  const child = spawn(qemu, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr += d;
  });
  const serial = new SerialConsole(child.stdout!, child.stdin!);
  const exited = new Promise<void>((resolve) => {
    child.on('error', (e) => {
      stderr += String(e);
      resolve();
    });
    child.on('exit', () => resolve());
  });
  void exited.then(() => serial.close(new TapnetError('ERR_VMM', 'QEMU exited')));
  const t0 = performance.now();
  try {
    await serial.waitForLine(new RegExp(fixture.bootedMarker), timeoutMs);
    return { accel: 'kvm', reason: `a KVM guest booted in ${Math.round(performance.now() - t0)} ms` };
  } catch (e) {
    const why = stderr.trim().split('\n').pop() || (e instanceof Error ? e.message : String(e));
    return { accel: 'tcg', reason: `KVM did not boot a guest within ${timeoutMs} ms: ${why}` };
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

/** `auto` → the probe's answer; `tcg`/`kvm` as given (an explicit choice beats autodetection). */
export async function resolveAccel(
  accel: QemuAccel | 'auto',
  fixture: GuestFixture,
  qemu?: string,
): Promise<QemuAccel> {
  if (accel !== 'auto') return accel;
  return (await probeAccel(fixture, qemu ? { qemu } : {})).accel;
}
