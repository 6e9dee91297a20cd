/**
 * The result cache's file format and how files are written: libcni's cachedInfo encoded byte-for-byte as
 * Go encodes it, decoded as Go decodes it, and written atomically (temp file + rename), optionally into a
 * temp file created ahead of time while plugins run. Synchronous writes; no fsync (as libcni).
 */
import { closeSync, mkdirSync, open, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CNI_ERROR, CniError } from './errors.js';
import { goMarshal, goStruct } from './json.js';
import { goFields, goString } from './result.js';

/** The `kind` of a version-1 cache file. */
export const CNI_CACHE_V1 = 'cniCacheV1';

/** The contents of a cache file (libcni's cachedInfo). */
export interface CachedInfo {
  kind: string;
  containerId: string;
  /** The network configuration (list) bytes, as given to ADD. */
  config: Buffer;
  ifName: string;
  networkName: string;
  netns?: string;
  cniArgs?: Array<[string, string]>;
  capabilityArgs?: Record<string, unknown>;
  /** The final ADD result, as a JSON map. */
  result?: Record<string, unknown>;
}

/** A cache file's bytes, exactly as Go's json.Marshal(&cachedInfo) writes them. */
export function encodeCacheFile(info: CachedInfo): string {
  const nonEmptyMap = (m: Record<string, unknown> | undefined) =>
    m && Object.keys(m).length > 0 ? m : undefined;
  return goMarshal(
    goStruct(
      ['kind', info.kind],
      ['containerId', info.containerId],
      ['config', new Uint8Array(info.config.buffer, info.config.byteOffset, info.config.byteLength)],
      ['ifName', info.ifName],
      ['networkName', info.networkName],
      ['netns', info.netns || undefined],
      ['cniArgs', info.cniArgs?.length ? info.cniArgs : undefined],
      ['capabilityArgs', nonEmptyMap(info.capabilityArgs)],
      ['result', nonEmptyMap(info.result)],
    ),
  );
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function fail(msg: string): never {
  throw new CniError(CNI_ERROR.DECODING_FAILURE, msg);
}

/** Decode a cache file as Go decodes cachedInfo (throws on JSON or type errors; `kind` not checked). */
export function decodeCacheFile(text: string): CachedInfo {
  const f = goFields(
    JSON.parse(text),
    [
      'kind',
      'containerId',
      'config',
      'ifName',
      'networkName',
      'netns',
      'cniArgs',
      'capabilityArgs',
      'result',
    ],
    'cachedInfo',
  );
  const config = f.get('config');
  if (
    config !== undefined &&
    (typeof config !== 'string' || !BASE64_RE.test(config.replace(/[\r\n]/g, '')))
  ) {
    fail('illegal base64 data in cached config');
  }
  const out: CachedInfo = {
    kind: goString(f.get('kind'), 'kind') ?? '',
    containerId: goString(f.get('containerId'), 'containerId') ?? '',
    config: Buffer.from(((config as string | undefined) ?? '').replace(/[\r\n]/g, ''), 'base64'),
    ifName: goString(f.get('ifName'), 'ifName') ?? '',
    networkName: goString(f.get('networkName'), 'networkName') ?? '',
  };
  const netns = goString(f.get('netns'), 'netns');
  if (netns) out.netns = netns;
  const args = f.get('cniArgs');
  if (args !== undefined) {
    if (!Array.isArray(args)) fail('cniArgs is not an array');
    out.cniArgs = args.map((p) => {
      if (p === null) return ['', ''];
      if (!Array.isArray(p) || p.some((s) => s !== null && typeof s !== 'string'))
        fail('cniArgs holds a non-pair');
      return [(p[0] as string | null) ?? '', (p[1] as string | null) ?? ''];
    });
  }
  for (const k of ['capabilityArgs', 'result'] as const) {
    const v = f.get(k);
    if (v === undefined) continue;
    if (typeof v !== 'object' || Array.isArray(v)) fail(`${k} is not an object`);
    out[k] = v as Record<string, unknown>;
  }
  return out;
}

const tempName = (file: string): string =>
  join(dirname(file), `.${Math.random().toString(36).slice(2)}.${process.pid}.tmp`);

/** Temp file + rename; `prepared` is an already-created empty temp file (fd open for writing). */
export function writeAtomic(
  file: string,
  bytes: string,
  prepared: { fd: number; tmp: string } | undefined,
  netName: string,
): void {
  let tmp = prepared?.tmp ?? tempName(file);
  let fd = prepared?.fd;
  try {
    if (fd === undefined) {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      tmp = tempName(file);
      fd = openSync(tmp, 'wx', 0o600);
    }
    const buf = Buffer.from(bytes);
    for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) closeQuietly(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // never written
    }
    throw new CniError(
      CNI_ERROR.IO_FAILURE,
      `failed to set network "${netName}" cached result: ${(e as Error).message}`,
      '',
      {
        cause: e,
        errno: (e as NodeJS.ErrnoException).code,
        details: { file },
      },
    );
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/** A cache entry whose temp file is being created while plugins run (see ResultCache.prepare). */
export class PendingCacheEntry {
  private readonly ready: Promise<{ fd: number; tmp: string } | undefined>;
  private taken = false;

  constructor(readonly file: string) {
    const tmp = tempName(file);
    this.ready = mkdir(dirname(file), { recursive: true, mode: 0o700 })
      .then(
        () =>
          new Promise<{ fd: number; tmp: string }>((resolve, reject) =>
            open(tmp, 'wx', 0o600, (err, fd) => (err ? reject(err) : resolve({ fd, tmp }))),
          ),
      )
      .catch(() => undefined); // commit() then writes synchronously and reports the real error
  }

  /** The prepared temp file, once (undefined when it could not be made). */
  async take(): Promise<{ fd: number; tmp: string } | undefined> {
    if (this.taken) return undefined;
    this.taken = true;
    return this.ready;
  }

  /** Remove the temp file (the ADD failed); resolves once it is gone, so nothing outlives the call. */
  async discard(): Promise<void> {
    if (this.taken) return;
    this.taken = true;
    const r = await this.ready;
    if (!r) return;
    closeQuietly(r.fd);
    try {
      unlinkSync(r.tmp);
    } catch {
      // gone
    }
  }
}
