/**
 * What a benchmark suite is, and the one list of modules that provide them. A suite module exports
 * `suite` (one BenchSuite) or `suites` (several); run.ts loads the modules named in SUITE_MODULES, in
 * that order. No registration by import side effects: adding a suite means adding its module here.
 */
import { existsSync } from 'node:fs';
import { TapnetError } from '../../src/errors.js';
import type { BenchRecord } from './stats.js';

/** How big a run is. */
export interface BenchOptions {
  /** Multiplier of each suite's default item counts (1 = the documented figures). */
  scale: number;
  /** A short smoke run: small counts, few rounds; the numbers are indicative only. */
  quick: boolean;
}

/** One named group of measurements, run on its own or with the others by `npm run bench`. */
export interface BenchSuite {
  name: string;
  description: string;
  run(opts: BenchOptions): Promise<BenchRecord[]>;
}

/**
 * The modules (relative to dist/bench/, without `.js`) that export suites, in run order. A module that
 * has not been written yet is skipped; one that exists but fails to load is an error.
 */
export const SUITE_MODULES: readonly string[] = [
  'tap',
  'ensure',
  'peers',
  'vm',
  'api',
  'cni',
  'cluster',
  'policy',
];

function isSuite(v: unknown): v is BenchSuite {
  const s = v as Partial<BenchSuite> | undefined;
  return typeof s?.name === 'string' && typeof s.description === 'string' && typeof s.run === 'function';
}

/** Load every suite of SUITE_MODULES. Throws ERR_CONFIG on a module without suites or a duplicate name. */
export async function loadSuites(modules: readonly string[] = SUITE_MODULES): Promise<BenchSuite[]> {
  const out: BenchSuite[] = [];
  for (const name of modules) {
    const url = new URL(`../${name}.js`, import.meta.url);
    if (!existsSync(url)) continue;
    const mod = (await import(url.href)) as { suite?: unknown; suites?: unknown };
    const found = [...(Array.isArray(mod.suites) ? mod.suites : []), ...(mod.suite ? [mod.suite] : [])];
    if (found.length === 0 || !found.every(isSuite)) {
      throw new TapnetError('ERR_CONFIG', `bench module ${name} exports no valid \`suite\` or \`suites\``);
    }
    for (const s of found) {
      if (out.some((o) => o.name === s.name)) {
        throw new TapnetError('ERR_CONFIG', `two bench suites are named ${JSON.stringify(s.name)}`);
      }
      out.push(s);
    }
  }
  return out;
}

/** The suites to run for the names given on the command line (all when none). Unknown name: ERR_CONFIG. */
export function selectSuites(all: readonly BenchSuite[], names: readonly string[]): BenchSuite[] {
  if (names.length === 0) return [...all];
  return names.map((n) => {
    const s = all.find((x) => x.name === n);
    if (!s) {
      throw new TapnetError(
        'ERR_CONFIG',
        `no bench suite named ${JSON.stringify(n)}; known: ${all.map((x) => x.name).join(', ') || 'none'}`,
      );
    }
    return s;
  });
}
