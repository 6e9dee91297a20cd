/**
 * libcni's result cache, in its on-disk format and place, so tapnet and Go tools (cnitool, containerd,
 * CRI-O) can each delete what the other added: `<cacheDir>/results/<network>-<containerId>-<ifName>`,
 * a JSON object `{kind: "cniCacheV1", containerId, config (base64 of the conflist bytes), ifName,
 * networkName, netns, cniArgs, capabilityArgs, result}` encoded byte-for-byte as Go encodes it.
 * Unlike libcni, files are written atomically (temp file + rename). Synchronous file I/O (one small
 * file per call, cheaper than a thread-pool round trip).
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CNI_ERROR, CniError } from './errors.js';
import { goMarshal, goStruct } from './json.js';
import { createResultFromJSON, goFields, goString, resultToMap } from './result.js';
import type { CniResult, NetworkAttachment, RuntimeConf } from './types.js';
import { convertResult } from './version.js';

/** libcni's default cache directory. */
export const DEFAULT_CACHE_DIR = '/var/lib/cni';

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

  /** Record an ADD: the final result, the config bytes and the attachment parameters (atomic). */
  add(result: CniResult | undefined, config: Buffer, netName: string, rt: RuntimeConf): void {
    const file = this.filePath(netName, rt.containerId, rt.ifName);
    const info: CachedInfo = {
      kind: CNI_CACHE_V1,
      containerId: rt.containerId,
      config,
      ifName: rt.ifName,
      networkName: netName,
      netns: rt.netns,
      ...(rt.args ? { cniArgs: rt.args } : {}),
      ...(rt.capabilityArgs ? { capabilityArgs: rt.capabilityArgs } : {}),
      ...(result ? { result: resultToMap(result) } : {}),
    };
    const bytes = encodeCacheFile(info);
    const tmp = join(dirname(file), `.${Math.random().toString(36).slice(2)}.${process.pid}.tmp`);
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      writeFileSync(tmp, bytes, { mode: 0o600 });
      renameSync(tmp, file);
    } catch (e) {
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
