/**
 * The guest fixture that scripts/guest/build.mjs builds into `.cache/guest/`: an uncompressed Debian cloud
 * kernel (vmlinux, booted through PVH) and an uncompressed newc initramfs whose /init configures eth0 from
 * the kernel's `ip=` argument, serves `tapnet guest <name>` over HTTP on port 80 and prints ready markers.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TapnetError } from '../errors.js';

/** A built guest: absolute paths and what the builder recorded. */
export interface GuestFixture {
  dir: string;
  /** Uncompressed ELF kernel (PVH entry point). */
  kernel: string;
  /** Uncompressed newc cpio. */
  initrd: string;
  kernelRelease: string;
  /** Modules /init loads, in order. */
  modules: string[];
  /** Whether iperf3 (with its libraries) is in the initramfs. */
  iperf3: boolean;
  /** Printed on the console once eth0 is configured and httpd runs: `TAPNET-READY name=… ip=…`. */
  readyMarker: string;
  /** Printed once the modules are loaded, before the network is configured. */
  bootedMarker: string;
  /** The builder's input hash. */
  key: string;
}

/** The package root: the nearest directory above this module (dist/src/vm/ or src/vm/) with a package.json. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

/** Where the fixture lives: $TAPNET_GUEST_DIR, else `<package root>/.cache/guest`. */
export function defaultGuestDir(): string {
  const env = process.env.TAPNET_GUEST_DIR;
  if (env) return isAbsolute(env) ? env : resolve(env);
  return join(packageRoot(), '.cache', 'guest');
}

/** The command that builds the fixture, for error messages. */
export const GUEST_BUILD_COMMAND = 'node scripts/guest/build.mjs';

/**
 * Read the fixture's manifest.json and check its files exist. ERR_NOT_FOUND (with the command to build it)
 * when it was never built; ERR_CONFIG when the manifest is unreadable.
 */
export function loadGuestFixture(dir: string = defaultGuestDir()): GuestFixture {
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) {
    throw new TapnetError(
      'ERR_NOT_FOUND',
      `no guest fixture in ${dir}: build it with \`${GUEST_BUILD_COMMAND}\``,
      {
        details: { dir },
      },
    );
  }
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new TapnetError('ERR_CONFIG', `guest fixture manifest ${manifestPath} is unreadable`, { cause: e });
  }
  const str = (k: string): string => {
    const v = m[k];
    if (typeof v !== 'string' || v === '' || v.includes('/')) {
      throw new TapnetError(
        'ERR_CONFIG',
        `guest fixture manifest ${manifestPath}: ${k} is missing or invalid`,
      );
    }
    return v;
  };
  const kernel = join(dir, str('kernel'));
  const initrd = join(dir, str('initrd'));
  for (const f of [kernel, initrd]) {
    if (!existsSync(f)) {
      throw new TapnetError(
        'ERR_NOT_FOUND',
        `guest fixture file ${f} is missing: rebuild with \`${GUEST_BUILD_COMMAND}\``,
      );
    }
  }
  return {
    dir,
    kernel,
    initrd,
    kernelRelease: str('kernelRelease'),
    modules: Array.isArray(m.modules) ? m.modules.filter((x): x is string => typeof x === 'string') : [],
    iperf3: m.iperf3 === true,
    readyMarker: str('readyMarker'),
    bootedMarker: str('bootedMarker'),
    key: str('key'),
  };
}

/** The fixture, or the reason it cannot be used (for test skips). */
export function guestFixtureSkipReason(dir: string = defaultGuestDir()): string | undefined {
  try {
    loadGuestFixture(dir);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/**
 * Whether any user can read the fixture's kernel and initramfs (files readable by others, every directory
 * above them searchable by others): then QEMU can run as an unprivileged user (QemuVmOptions.runAs).
 */
export function guestFixtureWorldReadable(fixture: GuestFixture): boolean {
  for (const file of [fixture.kernel, fixture.initrd]) {
    if ((statSync(file).mode & 0o004) === 0) return false;
    for (let d = dirname(file); ; d = dirname(d)) {
      if ((statSync(d).mode & 0o001) === 0) return false;
      if (d === dirname(d)) break;
    }
  }
  return true;
}
