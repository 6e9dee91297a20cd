/**
 * libnftables (Debian `libnftables1`) through koffi, JSON in and JSON out. The only text tapnet ever
 * hands to libnftables is `JSON.stringify` of a document the firewall layer built as data; nothing here
 * parses or builds nft's own syntax.
 *
 * Namespaces: libnftables opens its NETLINK_NETFILTER socket inside `nft_ctx_new()` (nftables 0.9–1.1:
 * `nft_ctx_netlink_init()`), and every later command goes through that socket. So a context created while
 * the thread is inside a namespace keeps working on that namespace from anywhere: `NftContext.open({nsFd})`
 * switches in, creates the context, switches back (test/priv/firewall.test.ts proves it).
 *
 * libnftables calls exit() when that socket cannot be opened (`netlink_init_error`), so we open and close
 * one ourselves first, in the same namespace, and turn a failure into a TapnetError instead.
 */
import { createRequire } from 'node:module';
import { TapnetError } from '../errors.js';
import { AF_NETLINK, close, SOCK_CLOEXEC, SOCK_RAW, socket } from './libc.js';
import { withNetns } from './ns.js';

const require = createRequire(import.meta.url);

/** linux/netlink.h */
const NETLINK_NETFILTER = 12;
/** nftables/libnftables.h */
const NFT_CTX_DEFAULT = 0;
export const NFT_CTX_OUTPUT_HANDLE = 1 << 3;
export const NFT_CTX_OUTPUT_JSON = 1 << 4;

/** A JSON value as libnftables reads and writes it. */
export type NftJson = null | boolean | number | string | NftJson[] | { [key: string]: NftJson };
/** One command or one listed object: `{ add: {...} }`, `{ set: {...} }`, … */
export type NftObject = { [key: string]: NftJson };
/** A libnftables JSON document. */
export interface NftDocument {
  nftables: NftObject[];
}

// biome-ignore lint/suspicious/noExplicitAny: FFI boundary
type Fn = (...args: any[]) => any;

interface LibNftables {
  ctxNew: Fn;
  ctxFree: Fn;
  bufferOutput: Fn;
  bufferError: Fn;
  getOutputBuffer: Fn;
  getErrorBuffer: Fn;
  outputSetFlags: Fn;
  runCmdFromBuffer: Fn;
}

let cached: LibNftables | undefined;

/** Load libnftables.so.1 once. Throws ERR_UNSUPPORTED_PLATFORM when it is missing. */
function libnftables(): LibNftables {
  if (cached) return cached;
  if (process.platform !== 'linux') {
    throw new TapnetError('ERR_UNSUPPORTED_PLATFORM', `nftables needs Linux, this is ${process.platform}`);
  }
  let lib: ReturnType<typeof import('koffi').load>;
  try {
    const koffi: typeof import('koffi') = require('koffi');
    lib = koffi.load('libnftables.so.1');
  } catch (e) {
    throw new TapnetError(
      'ERR_UNSUPPORTED_PLATFORM',
      'libnftables.so.1 could not be loaded: install the libnftables1 package, or use the "none" firewall',
      { cause: e },
    );
  }
  cached = {
    ctxNew: lib.func('void *nft_ctx_new(uint32 flags)'),
    ctxFree: lib.func('void nft_ctx_free(void *ctx)'),
    bufferOutput: lib.func('int nft_ctx_buffer_output(void *ctx)'),
    bufferError: lib.func('int nft_ctx_buffer_error(void *ctx)'),
    getOutputBuffer: lib.func('const char *nft_ctx_get_output_buffer(void *ctx)'),
    getErrorBuffer: lib.func('const char *nft_ctx_get_error_buffer(void *ctx)'),
    outputSetFlags: lib.func('void nft_ctx_output_set_flags(void *ctx, unsigned int flags)'),
    runCmdFromBuffer: lib.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)'),
  };
  return cached;
}

/** True when libnftables can be loaded here. Never throws. */
export function nftablesAvailable(): boolean {
  try {
    libnftables();
    return true;
  } catch {
    return false;
  }
}

/** strerror texts nft prints, mapped back to errno names so callers can use isAlreadyGone() and friends. */
const STRERROR_NAMES: ReadonlyArray<[string, string]> = [
  ['No such file or directory', 'ENOENT'],
  ['File exists', 'EEXIST'],
  ['Device or resource busy', 'EBUSY'],
  ['Operation not permitted', 'EPERM'],
  ['Permission denied', 'EACCES'],
  ['Operation not supported', 'EOPNOTSUPP'],
  ['Invalid argument', 'EINVAL'],
  ['Cannot allocate memory', 'ENOMEM'],
  ['No buffer space available', 'ENOBUFS'],
  ['Numerical result out of range', 'ERANGE'],
  ['Message too long', 'EMSGSIZE'],
];

/** The errno name an nft error text carries, if one we know. */
export function errnoFromNftError(text: string): string | undefined {
  for (const [msg, name] of STRERROR_NAMES) if (text.includes(msg)) return name;
  return undefined;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Refuse values that libnftables' JSON reader (jansson) would reject: NUL characters, lone UTF-16
 * surrogates, integers beyond 64 bits. jansson failing to parse makes libnftables retry the buffer as nft
 * syntax, and we never want our bytes read as nft syntax, even to fail.
 */
function checkJson(v: unknown, path: string): void {
  if (typeof v === 'string') {
    if (v.includes('\0') || LONE_SURROGATE.test(v)) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `nftables document: string at ${path} has NUL or a lone surrogate`,
      );
    }
  } else if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `nftables document: number at ${path} is not a safe integer`,
      );
    }
  } else if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) checkJson(v[i], `${path}[${i}]`);
  } else if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) {
      checkJson(k, path);
      checkJson((v as Record<string, unknown>)[k], `${path}.${k}`);
    }
  } else if (v !== null && typeof v !== 'boolean') {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `nftables document: ${typeof v} at ${path} is not JSON`);
  }
}

/**
 * Check a document before it goes to libnftables: `{"nftables": [...]}` of plain JSON values only, no NUL,
 * no lone surrogate, no integer beyond 2^53. Throws ERR_INVALID_ARGUMENT.
 */
export function validateNftDocument(doc: NftDocument): void {
  if (!doc || typeof doc !== 'object' || !Array.isArray(doc.nftables)) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'nftables document must be {"nftables": [...]}');
  }
  checkJson(doc, 'nftables');
}

/** Parse libnftables' JSON output: one document per list command, one per line. Metainfo is dropped. */
export function parseNftOutput(text: string): NftDocument {
  const out: NftObject[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch (e) {
      throw new TapnetError('ERR_FIREWALL', 'libnftables printed output that is not JSON', {
        cause: e,
        details: { output: line.slice(0, 200) },
      });
    }
    const items = (doc as { nftables?: unknown }).nftables;
    if (!Array.isArray(items)) continue;
    for (const item of items) {
      if (item && typeof item === 'object' && !('metainfo' in item)) out.push(item as NftObject);
    }
  }
  return { nftables: out };
}

export interface NftContextOptions {
  /** Bind the context to the network namespace behind this fd (default: the calling thread's). */
  nsFd?: number;
}

/**
 * One libnftables context: one netfilter netlink socket in one network namespace, plus nft's cache.
 * Synchronous: each run() is one call into libnftables on the calling thread. Close it when done.
 */
export class NftContext {
  private ctx: bigint | null;

  private constructor(ctx: bigint) {
    this.ctx = ctx;
  }

  /** Create a context whose socket lives in `nsFd`'s namespace (`nft` run under `ip netns exec`). */
  static open(opts: NftContextOptions = {}): NftContext {
    const lib = libnftables();
    const ctx = withNetns(opts.nsFd, () => {
      // Probe first: libnftables exit()s the process when it cannot open its socket.
      close(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
      return lib.ctxNew(NFT_CTX_DEFAULT) as bigint | null;
    });
    if (!ctx) throw new TapnetError('ERR_FIREWALL', 'nft_ctx_new() failed');
    const self = new NftContext(ctx);
    try {
      if (lib.bufferOutput(ctx) !== 0 || lib.bufferError(ctx) !== 0) {
        throw new TapnetError('ERR_FIREWALL', 'libnftables could not buffer its output');
      }
      lib.outputSetFlags(ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE);
    } catch (e) {
      self.close();
      throw e;
    }
    return self;
  }

  /** True until close(). */
  get open(): boolean {
    return this.ctx !== null;
  }

  /**
   * Run one JSON document (`nft -j -f -`): all its commands form one atomic transaction. Returns what nft
   * printed (list commands), parsed and merged. Throws ERR_FIREWALL with nft's error text on failure.
   */
  run(doc: NftDocument): NftDocument {
    const ctx = this.ctx;
    if (ctx === null) throw new TapnetError('ERR_INTERNAL', 'NftContext used after close()');
    validateNftDocument(doc);
    const text = JSON.stringify(doc);
    const lib = libnftables();
    let rc: number;
    let output: string;
    let errors: string;
    // A signal without SA_RESTART (e.g. a profiler's SIGPROF) can interrupt libnftables' netlink I/O
    // before anything was committed: run the same batch again.
    for (let attempt = 0; ; attempt++) {
      rc = lib.runCmdFromBuffer(ctx, text) as number;
      output = (lib.getOutputBuffer(ctx) as string | null) ?? '';
      errors = ((lib.getErrorBuffer(ctx) as string | null) ?? '').trim();
      if (rc === 0 || attempt >= 3 || !/Interrupted system call/.test(errors)) break;
    }
    if (rc !== 0) {
      const lines = errors.split('\n').map((l) => l.replace(/^internal:\d+:\d+-\d+: /, '').trim());
      const first = lines.find((l) => l.startsWith('Error')) ?? lines[0] ?? '';
      const errno = errnoFromNftError(errors);
      throw new TapnetError('ERR_FIREWALL', `nftables rejected the batch: ${first || `rc ${rc}`}`, {
        ...(errno ? { errno } : {}),
        syscall: 'nft_run_cmd_from_buffer',
        details: { error: errors, commands: doc.nftables.length },
      });
    }
    return parseNftOutput(output);
  }

  /** Free the context and close its socket. Idempotent. */
  close(): void {
    if (this.ctx === null) return;
    const ctx = this.ctx;
    this.ctx = null;
    libnftables().ctxFree(ctx);
  }
}
