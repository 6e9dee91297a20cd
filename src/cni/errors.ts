/**
 * The CNI specification's error (`{cniVersion, code, msg, details}`) as a TapnetError: code ERR_CNI,
 * with the spec's numeric code kept in `cniCode` and `details.cniCode`. Also: how libcni turns a failed
 * plugin's stdout/stderr into that error, and the reverse, for plugins printing their errors. Pure.
 */
import { TapnetError, type TapnetErrorOptions } from '../errors.js';

/** The spec's well-known error codes (0–99 reserved; 100+ are plugin-specific). */
export const CNI_ERROR = {
  /** libcni's zero value: a failure that carried no code (e.g. a plugin crashed without JSON). */
  UNKNOWN: 0,
  INCOMPATIBLE_CNI_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENVIRONMENT_VARIABLES: 4,
  IO_FAILURE: 5,
  DECODING_FAILURE: 6,
  INVALID_NETWORK_CONFIG: 7,
  INVALID_NETNS: 8,
  TRY_AGAIN_LATER: 11,
  /** STATUS: the plugin cannot service ADD requests. */
  PLUGIN_NOT_AVAILABLE: 50,
  /** STATUS: not available, and existing containers may have limited connectivity. */
  LIMITED_CONNECTIVITY: 51,
  INTERNAL: 999,
} as const;

/** What each well-known code means (SPEC.md, "Error"). */
export const CNI_ERROR_MEANINGS: Readonly<Record<number, string>> = {
  0: 'unknown error',
  1: 'incompatible CNI version',
  2: 'unsupported field in network configuration',
  3: 'container unknown or does not exist',
  4: 'invalid necessary environment variables',
  5: 'I/O failure',
  6: 'failed to decode content',
  7: 'invalid network config',
  8: 'invalid network namespace',
  11: 'try again later',
  50: 'the plugin is not available',
  51: 'the plugin is not available, and existing containers may have limited connectivity',
  999: 'internal error',
};

/** A CNI error: a TapnetError with code ERR_CNI carrying the spec's code, msg and details. */
export class CniError extends TapnetError {
  /** The spec's numeric code (1–11, 50/51, ≥100 plugin-specific, 0 when none was given). */
  readonly cniCode: number;
  /** The spec's short `msg`. */
  readonly cniMsg: string;
  /** The spec's longer `details` (may be empty). */
  readonly cniDetails: string;

  constructor(cniCode: number, msg: string, cniDetails = '', options: TapnetErrorOptions = {}) {
    // Same text as libcni's types.Error.Error(): "msg; details".
    super('ERR_CNI', cniDetails ? `${msg}; ${cniDetails}` : msg, {
      ...options,
      details: { ...options.details, cniCode, cniMsg: msg, ...(cniDetails ? { cniDetails } : {}) },
    });
    this.cniCode = cniCode;
    this.cniMsg = msg;
    this.cniDetails = cniDetails;
  }

  /** The spec's error object, as a plugin prints it on stdout. */
  toCniJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return {
      cniVersion,
      code: this.cniCode,
      msg: this.cniMsg,
      ...(this.cniDetails ? { details: this.cniDetails } : {}),
    };
  }
}

/** True when `e` is a CniError, and (if given) carries one of `cniCodes`. */
export function isCniError(e: unknown, ...cniCodes: number[]): e is CniError {
  return e instanceof CniError && (cniCodes.length === 0 || cniCodes.includes(e.cniCode));
}

/** A CniError whose message is prefixed (libcni's `fmt.Errorf("…: %w", err)`), keeping code and cause. */
export function wrapCniError(prefix: string, e: CniError, details: Record<string, unknown> = {}): CniError {
  const w = new CniError(e.cniCode, `${prefix}: ${e.cniMsg}`, e.cniDetails, {
    cause: e,
    details: { ...e.details, ...details },
  });
  return w;
}

/** Go's %q of a string, near enough for messages. */
function quote(s: string): string {
  return JSON.stringify(s);
}

/** How Go's os/exec describes a finished process: "exit status 1", "signal: killed". */
export function describeExit(exitCode: number | null, signal: string | null): string {
  if (signal) return `signal: ${signal === 'SIGKILL' ? 'killed' : signal}`;
  return `exit status ${exitCode ?? -1}`;
}

/**
 * The error libcni reports when a plugin exits non-zero (RawExec.pluginErr): the error JSON the plugin
 * printed on stdout; or, with nothing on stdout, its stderr; or only the exit status.
 */
export function pluginErrorFrom(
  stdout: Buffer,
  stderr: Buffer,
  exitDesc: string,
  details: Record<string, unknown> = {},
): CniError {
  const extra = {
    ...details,
    exit: exitDesc,
    ...(stderr.length ? { stderr: truncate(stderr.toString('utf8')) } : {}),
  };
  if (stdout.length === 0) {
    if (stderr.length === 0)
      return new CniError(0, `netplugin failed with no error message: ${exitDesc}`, '', { details: extra });
    return new CniError(0, `netplugin failed: ${quote(stderr.toString('utf8'))}: ${exitDesc}`, '', {
      details: extra,
    });
  }
  const text = stdout.toString('utf8');
  try {
    const parsed = parseSpecError(text);
    return new CniError(parsed.code, parsed.msg, parsed.details, { details: extra });
  } catch (e) {
    return new CniError(
      0,
      `netplugin failed but error parsing its diagnostic message ${quote(text)}: ${(e as Error).message}`,
      '',
      { details: { ...extra, stdout: truncate(text) } },
    );
  }
}

function truncate(s: string, max = 4096): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}

/** Parse the spec's error object as Go decodes types.Error: code uint, msg and details strings. */
export function parseSpecError(text: string): { code: number; msg: string; details: string } {
  const v: unknown = JSON.parse(text);
  const out = { code: 0, msg: '', details: '' };
  if (v === null) return out;
  if (typeof v !== 'object' || Array.isArray(v))
    throw new SyntaxError('json: cannot unmarshal into Go value of type types.Error');
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    const key = k.toLowerCase();
    if (x === null) continue;
    if (key === 'code') {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) {
        throw new SyntaxError(
          `json: cannot unmarshal ${JSON.stringify(x)} into Go struct field Error.code of type uint`,
        );
      }
      out.code = x;
    } else if (key === 'msg' || key === 'details') {
      if (typeof x !== 'string') {
        throw new SyntaxError(
          `json: cannot unmarshal ${typeof x} into Go struct field Error.${key} of type string`,
        );
      }
      out[key] = x;
    }
  }
  return out;
}

/**
 * The spec's error object for any thrown value, for plugins printing their failure: a CniError keeps
 * its code; other TapnetErrors map onto the nearest well-known code; anything else is 999 (internal).
 */
export function toCniErrorJSON(
  e: unknown,
  cniVersion: string,
): { cniVersion: string; code: number; msg: string; details?: string } {
  if (e instanceof CniError) return e.toCniJSON(cniVersion);
  if (e instanceof TapnetError) {
    const code =
      e.code === 'ERR_INVALID_ARGUMENT' || e.code === 'ERR_CONFIG'
        ? CNI_ERROR.INVALID_NETWORK_CONFIG
        : e.code === 'ERR_NETNS_NOT_FOUND'
          ? CNI_ERROR.INVALID_NETNS
          : e.code === 'ERR_TIMEOUT'
            ? CNI_ERROR.TRY_AGAIN_LATER
            : CNI_ERROR.INTERNAL;
    return { cniVersion, code, msg: e.message, details: e.code };
  }
  return { cniVersion, code: CNI_ERROR.INTERNAL, msg: e instanceof Error ? e.message : String(e) };
}
