/**
 * libcni's result cache, in its on-disk format and place, so tapnet and Go tools (cnitool, containerd,
 * CRI-O) can each delete what the other added: `<cacheDir>/results/<network>-<containerId>-<ifName>`,
 * a JSON object `{kind: "cniCacheV1", containerId, config (base64 of the conflist bytes), ifName,
 * networkName, netns, cniArgs, capabilityArgs, result}` (see cache-file.ts). Unlike libcni, files are
 * written atomically. Synchronous file I/O (one small file per call, cheaper than a thread-pool round
 * trip), except the temp file an ADD prepares while its plugins run.
 */
import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  type CachedInfo,
  CNI_CACHE_V1,
  decodeCacheFile,
  encodeCacheFile,
  PendingCacheEntry,
  writeAtomic,
} from './cache-file.js';
import { CNI_ERROR, CniError } from './errors.js';
import { goMarshal } from './json.js';
import { createResultFromJSON, resultToMap } from './result.js';
import type { CniResult, NetworkAttachment, RuntimeConf } from './types.js';
import { convertResult } from './version.js';

export {
  type CachedInfo,
  CNI_CACHE_V1,
  decodeCacheFile,
  encodeCacheFile,
  PendingCacheEntry,
} from './cache-file.js';

/** libcni's default cache directory. */
export const DEFAULT_CACHE_DIR = '/var/lib/cni';

/** A path component libcni would build a file name from: non-empty, and never a path. */
function component(v: string, what: string): string {
  if (typeof v !== 'string' || v === '' || v.includes('/') || v.includes('\0') || v === '.' || v === '..') {
    throw new CniError(
      CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES,
      `cache file path requires a valid ${what}, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** The result cache in one directory (libcni's CNIConfig cacheDir). */
export class ResultCache {
  constructor(readonly dir: string = DEFAULT_CACHE_DIR) {}

  /** `<dir>/results/<network>-<containerId>-<ifName>`. */
  filePath(netName: string, containerId: string, ifName: string): string {
    const name = `${component(netName, 'network name')}-${component(containerId, 'container ID')}-${component(ifName, 'interface name')}`;
    return join(this.dir, 'results', name);
  }

  /** The bytes of the cache entry for an ADD: the final result, the config and the attachment parameters. */
  private entry(result: CniResult | undefined, config: Buffer, netName: string, rt: RuntimeConf): string {
    return encodeCacheFile({
      kind: CNI_CACHE_V1,
      containerId: rt.containerId,
      config,
      ifName: rt.ifName,
      networkName: netName,
      netns: rt.netns,
      ...(rt.args ? { cniArgs: rt.args } : {}),
      ...(rt.capabilityArgs ? { capabilityArgs: rt.capabilityArgs } : {}),
      ...(result ? { result: resultToMap(result) } : {}),
    });
  }

  /** Record an ADD (atomic: temp file + rename). */
  add(result: CniResult | undefined, config: Buffer, netName: string, rt: RuntimeConf): void {
    const file = this.filePath(netName, rt.containerId, rt.ifName);
    writeAtomic(file, this.entry(result, config, netName, rt), undefined, netName);
  }

  /**
   * Start an ADD's cache entry before its plugins run: the directory and the temp file are created off
   * the event loop meanwhile (creating an inode costs 0.1–1 ms on a journalled disk), so that commit()
   * only writes and renames. Call commit() after success or discard() after failure.
   */
  prepare(netName: string, rt: Pick<RuntimeConf, 'containerId' | 'ifName'>): PendingCacheEntry {
    return new PendingCacheEntry(this.filePath(netName, rt.containerId, rt.ifName));
  }

  /** Write a prepared entry: the same bytes and the same atomicity as add(). */
  async commit(
    pending: PendingCacheEntry,
    result: CniResult | undefined,
    config: Buffer,
    netName: string,
    rt: RuntimeConf,
  ): Promise<void> {
    if (pending.file !== this.filePath(netName, rt.containerId, rt.ifName))
      throw new TypeError('cache entry prepared for another attachment');
    const bytes = this.entry(result, config, netName, rt);
    writeAtomic(pending.file, bytes, await pending.take(), netName);
  }

  /** Forget an attachment. Already gone is fine. */
  del(netName: string, rt: Pick<RuntimeConf, 'containerId' | 'ifName'>): void {
    let file: string;
    try {
      file = this.filePath(netName, rt.containerId, rt.ifName);
    } catch {
      return;
    }
    try {
      unlinkSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new CniError(
          CNI_ERROR.IO_FAILURE,
          `failed to remove cached result ${file}: ${(e as Error).message}`,
          '',
          {
            cause: e,
            details: { file },
          },
        );
      }
    }
  }

  private read(netName: string, rt: Pick<RuntimeConf, 'containerId' | 'ifName'>): string | undefined {
    const file = this.filePath(netName, rt.containerId, rt.ifName);
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined; // libcni ignores read errors: the result may simply not exist
    }
  }

  /**
   * The cached result of the last ADD, converted to `cniVersion` (libcni's getCachedResult), or
   * undefined when there is none. Files older than cniCacheV1 (a bare result) are read too.
   */
  getResult(
    netName: string,
    cniVersion: string,
    rt: Pick<RuntimeConf, 'containerId' | 'ifName'>,
  ): CniResult | undefined {
    const text = this.read(netName, rt);
    if (text === undefined) return undefined;
    let info: CachedInfo | undefined;
    try {
      info = decodeCacheFile(text);
    } catch {
      info = undefined;
    }
    const result =
      info?.kind === CNI_CACHE_V1
        ? createResultFromJSON(goMarshal(info.result ?? null))
        : createResultFromJSON(text);
    try {
      return convertResult(result, cniVersion);
    } catch (e) {
      throw new CniError(
        (e as CniError).cniCode ?? CNI_ERROR.INCOMPATIBLE_CNI_VERSION,
        `failed to convert cached result to config version "${cniVersion}": ${(e as Error).message}`,
        '',
        { cause: e },
      );
    }
  }

  /**
   * The cached config bytes and the attachment parameters recorded with them (CNI_ARGS, capability
   * arguments) over `rt` (libcni's getCachedConfig), or undefined when nothing is cached.
   */
  getConfig(netName: string, rt: RuntimeConf): { config: Buffer; rt: RuntimeConf } | undefined {
    const text = this.read(netName, rt);
    if (text === undefined) return undefined;
    let info: CachedInfo;
    try {
      info = decodeCacheFile(text);
    } catch (e) {
      throw new CniError(
        CNI_ERROR.DECODING_FAILURE,
        `failed to unmarshal cached network "${netName}" config: ${(e as Error).message}`,
      );
    }
    if (info.kind !== CNI_CACHE_V1) {
      throw new CniError(
        CNI_ERROR.DECODING_FAILURE,
        `read cached network "${netName}" config has wrong kind: ${info.kind}`,
      );
    }
    const out: RuntimeConf = { ...rt };
    if (info.cniArgs) out.args = info.cniArgs;
    if (info.capabilityArgs) out.capabilityArgs = info.capabilityArgs;
    else delete out.capabilityArgs;
    return { config: info.config, rt: out };
  }

  /** Every cached attachment (of one container, if given), in file name order (GetCachedAttachments). */
  attachments(containerId?: string): NetworkAttachment[] {
    const dir = join(this.dir, 'results');
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new CniError(CNI_ERROR.IO_FAILURE, `cannot list ${dir}: ${(e as Error).message}`, '', {
        cause: e,
      });
    }
    names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const out: NetworkAttachment[] = [];
    for (const name of names) {
      if (name.startsWith('.')) continue; // our temp files
      if (containerId) {
        const part = `-${containerId}-`;
        const pos = name.indexOf(part);
        if (pos <= 0 || pos + part.length >= name.length) continue;
      }
      let info: CachedInfo;
      try {
        info = decodeCacheFile(readFileSync(join(dir, name), 'utf8'));
      } catch {
        continue;
      }
      if (info.kind !== CNI_CACHE_V1) continue;
      if (containerId && info.containerId !== containerId) continue;
      if (!info.ifName || !info.networkName) continue;
      out.push({
        containerId: info.containerId,
        network: info.networkName,
        ifName: info.ifName,
        config: info.config,
        netns: info.netns ?? '',
        ...(info.cniArgs ? { cniArgs: info.cniArgs } : {}),
        ...(info.capabilityArgs ? { capabilityArgs: info.capabilityArgs } : {}),
      });
    }
    return out;
  }
}
