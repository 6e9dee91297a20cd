/**
 * cloud-init network configuration, version 2 (doc/rtd/reference/network-config-format-v2.rst: the subset of
 * Netplan that cloud-init also renders on non-Netplan systems), as an object and as YAML text. The YAML comes
 * from a small emitter for plain data (maps, lists, strings, integers, booleans) that double-quotes every
 * string, so no value can change the document's structure and no MAC reads as a base-60 integer. Pure.
 */
import { invalidArgument } from '../errors.js';
import { type GuestNetConfig, validateGuestNetConfig } from './types.js';

export interface CloudInitRoute {
  to: string;
  via: string;
}

export interface CloudInitEthernet {
  match: { macaddress: string };
  'set-name': string;
  addresses?: string[];
  routes?: CloudInitRoute[];
  nameservers?: { addresses: string[] };
  mtu: number;
}

export interface CloudInitNetworkConfigV2 {
  version: 2;
  ethernets: Record<string, CloudInitEthernet>;
}

export interface CloudInitOptions {
  /**
   * How a default route is written: `cidr` (default) `to: 0.0.0.0/0` and `to: ::/0`, which every cloud-init
   * renderer understands; or `default`, Netplan's `to: default`, fine where cloud-init passes v2 to Netplan.
   */
  defaultRoute?: 'cidr' | 'default';
  /**
   * Wrap the document in a top-level `network:` key, as /etc/cloud/cloud.cfg.d wants. Off by default: the
   * NoCloud `network-config` file has no such key.
   */
  topLevelKey?: boolean;
}

export interface CloudInitNetworkConfig {
  /** The document as data (without the `network:` wrapper, whatever the options). */
  config: CloudInitNetworkConfigV2;
  /** The document as YAML text, ending in a newline. */
  yaml: string;
}

/**
 * Render cloud-init network-config v2 for one interface: `ethernets.<guestIfname>` matched by MAC address and
 * renamed to guestIfname (`set-name`), static `addresses` (IPv4 and/or IPv6), default `routes` via the
 * gateways, `nameservers.addresses` and `mtu`. Keys with nothing to say are left out (no gateway → no routes,
 * no DNS → no nameservers). Throws ERR_INVALID_ARGUMENT for an invalid config.
 */
export function renderCloudInitNetworkConfig(
  cfg: GuestNetConfig,
  opts: CloudInitOptions = {},
): CloudInitNetworkConfig {
  const v = validateGuestNetConfig(cfg);
  const style = opts.defaultRoute ?? 'cidr';
  if (style !== 'cidr' && style !== 'default') {
    throw invalidArgument(`defaultRoute ${JSON.stringify(style)} must be 'cidr' or 'default'`);
  }
  const addresses = [v.ipv4?.cidr, v.ipv6?.cidr].filter((a): a is string => a !== undefined);
  const routes: CloudInitRoute[] = [];
  if (v.gateway4) routes.push({ to: style === 'cidr' ? '0.0.0.0/0' : 'default', via: v.gateway4 });
  if (v.gateway6) routes.push({ to: style === 'cidr' ? '::/0' : 'default', via: v.gateway6 });
  const eth: CloudInitEthernet = {
    match: { macaddress: v.mac },
    'set-name': v.guestIfname,
    ...(addresses.length > 0 ? { addresses } : {}),
    ...(routes.length > 0 ? { routes } : {}),
    ...(v.dns.length > 0 ? { nameservers: { addresses: [...v.dns] } } : {}),
    mtu: v.mtu,
  };
  const config: CloudInitNetworkConfigV2 = { version: 2, ethernets: { [v.guestIfname]: eth } };
  const doc = opts.topLevelKey ? { network: config } : config;
  return { config, yaml: toYaml(doc) };
}

// ---- a tiny YAML emitter for plain data ----

type YamlValue = string | number | boolean | YamlValue[] | { [k: string]: YamlValue };

/** A YAML double-quoted scalar: printable ASCII as is, `"` and `\` escaped, everything else as \u/\U escapes. */
export function yamlQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (cp >= 0x20 && cp <= 0x7e) out += ch;
    else if (cp <= 0xffff) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

const PLAIN_KEY_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;

function yamlKey(k: string): string {
  return PLAIN_KEY_RE.test(k) ? k : yamlQuote(k);
}

function yamlScalar(v: string | number | boolean): string {
  if (typeof v === 'string') return yamlQuote(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw invalidArgument(`YAML: cannot write the number ${v}`);
    return String(v);
  }
  return v ? 'true' : 'false';
}

function isScalar(v: YamlValue): v is string | number | boolean {
  return typeof v !== 'object';
}

function emit(v: YamlValue, indent: string, lines: string[]): void {
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isScalar(item)) lines.push(`${indent}- ${yamlScalar(item)}`);
      else if (Array.isArray(item) ? item.length === 0 : Object.keys(item).length === 0) {
        lines.push(`${indent}- ${Array.isArray(item) ? '[]' : '{}'}`);
      } else {
        // Emit the item one level deeper, then hang its first line on the dash.
        const sub: string[] = [];
        emit(item, `${indent}  `, sub);
        lines.push(`${indent}- ${sub[0]!.slice(indent.length + 2)}`, ...sub.slice(1));
      }
    }
    return;
  }
  if (isScalar(v)) throw invalidArgument('YAML: a document must be a map or a list');
  for (const [k, val] of Object.entries(v)) {
    if (val === undefined) continue;
    if (isScalar(val)) lines.push(`${indent}${yamlKey(k)}: ${yamlScalar(val)}`);
    else if (Array.isArray(val) ? val.length === 0 : Object.keys(val).length === 0) {
      lines.push(`${indent}${yamlKey(k)}: ${Array.isArray(val) ? '[]' : '{}'}`);
    } else {
      lines.push(`${indent}${yamlKey(k)}:`);
      emit(val, `${indent}  `, lines);
    }
  }
}

/** Plain data (maps, lists, strings, finite numbers, booleans) as block-style YAML, ending in a newline. */
export function toYaml(doc: object): string {
  const lines: string[] = [];
  emit(doc as YamlValue, '', lines);
  return `${lines.join('\n')}\n`;
}
