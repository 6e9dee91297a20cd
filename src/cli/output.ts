/**
 * CLI output: JSON for machines, aligned tables for humans, one-line errors, and exit codes by error code.
 */
import { type ErrorCode, TapnetError, toTapnetError } from '../errors.js';

/** Exit codes: stable, documented in `tapnet --help` and docs/CLI.md. */
export const EXIT_CODES: Partial<Record<ErrorCode, number>> & { ok: number; failure: number } = {
  ok: 0,
  failure: 1,
  ERR_INVALID_ARGUMENT: 2,
  ERR_CONFIG: 2,
  ERR_NOT_FOUND: 3,
  ERR_NETNS_NOT_FOUND: 3,
  ERR_LINK_NOT_FOUND: 3,
  ERR_CONFLICT: 4,
  ERR_IPAM_CONFLICT: 4,
  ERR_IPAM_EXHAUSTED: 5,
  ERR_CAPACITY: 5,
  ERR_PERMISSION_DENIED: 6,
  ERR_UNSUPPORTED_PLATFORM: 7,
  ERR_TEARDOWN: 8,
  ERR_IPAM_LEAK: 8,
  ERR_TIMEOUT: 9,
  ERR_ABORTED: 9,
  ERR_UNAVAILABLE: 9,
};

export function exitCodeFor(e: TapnetError): number {
  return EXIT_CODES[e.code] ?? EXIT_CODES.failure;
}

/** Print an error as one line on stderr (or JSON with --json) and return the exit code. */
export function reportError(e: unknown, json: boolean): number {
  const t = e instanceof TapnetError ? e : toTapnetError(e);
  if (json) process.stderr.write(`${JSON.stringify({ error: t.toJSON() })}\n`);
  else process.stderr.write(`tapnet: ${t.code}: ${t.message.replaceAll('\n', ' ')}\n`);
  return exitCodeFor(t);
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** An aligned text table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => (c ?? '').padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
