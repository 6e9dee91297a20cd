/**
 * tc actions inside a classifier: `mirred` (redirect or mirror to another device, struct tc_mirred) and
 * `police` (rate limit with a token bucket, struct tc_police). Encode into an NlWriter; decode an action
 * list nest into typed objects. Pure.
 */
import { TapnetError } from '../errors.js';
import { validateInt } from '../validate.js';
import { AttrMap, type NlWriter, parseAttrs } from './attr.js';
import {
  TC_ACT_OK,
  TC_ACT_PIPE,
  TC_ACT_QUEUED,
  TC_ACT_RECLASSIFY,
  TC_ACT_REDIRECT,
  TC_ACT_REPEAT,
  TC_ACT_SHOT,
  TC_ACT_STOLEN,
  TC_ACT_TRAP,
  TC_ACT_UNSPEC,
  TC_MIRRED_LEN,
  TC_POLICE_LEN,
  TCA_ACT_INDEX,
  TCA_ACT_KIND,
  TCA_ACT_MAX_PRIO,
  TCA_ACT_OPTIONS,
  TCA_ACT_STATS,
  TCA_EGRESS_MIRROR,
  TCA_EGRESS_REDIR,
  TCA_INGRESS_MIRROR,
  TCA_INGRESS_REDIR,
  TCA_MIRRED_PARMS,
  TCA_POLICE_RATE,
  TCA_POLICE_RATE64,
  TCA_POLICE_RESULT,
  TCA_POLICE_TBF,
} from './tc-constants.js';
import {
  decodeTcStats,
  rateTable,
  readRateSpec,
  type TcStats,
  writeRateSpec,
  xmitSize,
  xmitTicks,
} from './tc-rate.js';

/** What happens to a packet after an action, by tc's names (`continue` is TC_ACT_UNSPEC). */
export type TcControl =
  | 'continue'
  | 'ok'
  | 'reclassify'
  | 'drop'
  | 'pipe'
  | 'stolen'
  | 'queued'
  | 'repeat'
  | 'redirect'
  | 'trap';

const CONTROL_CODES: Record<TcControl, number> = {
  continue: TC_ACT_UNSPEC,
  ok: TC_ACT_OK,
  reclassify: TC_ACT_RECLASSIFY,
  drop: TC_ACT_SHOT,
  pipe: TC_ACT_PIPE,
  stolen: TC_ACT_STOLEN,
  queued: TC_ACT_QUEUED,
  repeat: TC_ACT_REPEAT,
  redirect: TC_ACT_REDIRECT,
  trap: TC_ACT_TRAP,
};
const CONTROL_NAMES = new Map<number, TcControl>(
  Object.entries(CONTROL_CODES).map(([k, v]) => [v, k as TcControl]),
);

/** The TC_ACT_* code of a control verdict. */
export function controlCode(c: TcControl): number {
  const v = CONTROL_CODES[c];
  if (v === undefined)
    throw new TapnetError('ERR_INVALID_ARGUMENT', `unknown tc control action ${JSON.stringify(c)}`);
  return v;
}

/** The name of a TC_ACT_* code; other codes (goto chain, jump) stay numbers. */
export function controlName(code: number): TcControl | number {
  return CONTROL_NAMES.get(code) ?? code;
}

/** `action mirred egress|ingress redirect|mirror dev <ifindex>`. */
export interface MirredSpec {
  kind: 'mirred';
  mode: 'redirect' | 'mirror';
  direction: 'egress' | 'ingress';
  ifindex: number;
}

/** `action police rate <rateBps*8>bit burst <burstBytes> [mtu M] conform-exceed <exceed>/<conform>`. */
export interface PoliceSpec {
  kind: 'police';
  /** Bytes per second (tc's `rate 8mbit` is 1_000_000). */
  rateBps: number;
  /** Bucket size in bytes. */
  burstBytes: number;
  /** Largest packet that may conform; 0 lets the kernel derive it (255 << cell_log = 2040 bytes). */
  mtu?: number;
  /** Verdict for packets over the rate. Default `drop`. */
  exceed?: TcControl;
  /** Verdict for packets within the rate. Default `ok` (accept: the kernel's default). */
  conform?: TcControl;
}

export type TcActionSpec = MirredSpec | PoliceSpec;

interface ActionCommon {
  /** Position in the filter's action list (1-based). */
  order: number;
  /** The kernel's index of the action instance. */
  index: number;
  stats?: TcStats;
}

export interface MirredAction extends ActionCommon {
  kind: 'mirred';
  mode: 'redirect' | 'mirror';
  direction: 'egress' | 'ingress';
  ifindex: number;
  control: TcControl | number;
}

export interface PoliceAction extends ActionCommon {
  kind: 'police';
  rateBps: number;
  /** Bucket size in bytes, computed from the kernel's tick value exactly as `tc` prints it. */
  burstBytes: number;
  /** The bucket as the kernel holds it, in 64 ns ticks. */
  burstTicks: number;
  mtu: number;
  exceed: TcControl | number;
  conform: TcControl | number;
}

/** Any other action: kind and index only. */
export interface OtherAction extends ActionCommon {
  kind: string;
}

export type TcAction = MirredAction | PoliceAction | OtherAction;

const MIRRED_EACTIONS = {
  'egress/redirect': TCA_EGRESS_REDIR,
  'egress/mirror': TCA_EGRESS_MIRROR,
  'ingress/redirect': TCA_INGRESS_REDIR,
  'ingress/mirror': TCA_INGRESS_MIRROR,
} as const;

const MAX_RATE = Number.MAX_SAFE_INTEGER;

function writeMirred(w: NlWriter, a: MirredSpec): void {
  const key = `${a.direction}/${a.mode}` as keyof typeof MIRRED_EACTIONS;
  const eaction = MIRRED_EACTIONS[key];
  if (eaction === undefined)
    throw new TapnetError('ERR_INVALID_ARGUMENT', `bad mirred mode ${JSON.stringify(key)}`);
  validateInt(a.ifindex, 'mirred target ifindex', 1, 0x7fffffff);
  const p = Buffer.alloc(TC_MIRRED_LEN);
  // tc_gen: index 0 (new), capab 0, action, refcnt 0, bindcnt 0; then eaction, ifindex.
  p.writeInt32LE(a.mode === 'redirect' ? TC_ACT_STOLEN : TC_ACT_PIPE, 8);
  p.writeInt32LE(eaction, 20);
  p.writeUInt32LE(a.ifindex, 24);
  w.nest(TCA_ACT_OPTIONS, () => w.attr(TCA_MIRRED_PARMS, p));
}

function writePolice(w: NlWriter, a: PoliceSpec): void {
  validateInt(a.rateBps, 'police rate (bytes/s)', 1, MAX_RATE);
  validateInt(a.burstBytes, 'police burst (bytes)', 1, 0xffffffff);
  const mtu = validateInt(a.mtu ?? 0, 'police mtu', 0, 0xffffffff);
  const burstTicks = xmitTicks(a.rateBps, a.burstBytes);
  if (burstTicks === 0 || burstTicks >= 0xffffffff) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `police burst of ${a.burstBytes} bytes at ${a.rateBps} bytes/s is outside what the kernel can hold`,
      { details: { rateBps: a.rateBps, burstBytes: a.burstBytes } },
    );
  }
  const { table, spec } = rateTable(a.rateBps);
  const p = Buffer.alloc(TC_POLICE_LEN);
  p.writeInt32LE(controlCode(a.exceed ?? 'drop'), 4);
  p.writeUInt32LE(burstTicks, 12);
  p.writeUInt32LE(mtu, 16);
  writeRateSpec(p, 20, spec);
  w.nest(TCA_ACT_OPTIONS, () => {
    w.attr(TCA_POLICE_TBF, p);
    w.attr(TCA_POLICE_RATE, table);
    if (a.rateBps >= 2 ** 32) w.attrU64(TCA_POLICE_RATE64, a.rateBps);
    if (a.conform !== undefined && a.conform !== 'ok')
      w.attrU32(TCA_POLICE_RESULT, controlCode(a.conform) >>> 0);
  });
}

/**
 * Write an action list (the payload of TCA_U32_ACT / TCA_MATCHALL_ACT): one nest per action, numbered from
 * 1, as `tc` builds it (the outer nests without NLA_F_NESTED, the options nest with it).
 */
export function writeActions(w: NlWriter, type: number, actions: TcActionSpec[]): void {
  if (actions.length === 0 || actions.length > TCA_ACT_MAX_PRIO) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `a filter takes 1 to ${TCA_ACT_MAX_PRIO} actions, got ${actions.length}`,
    );
  }
  w.nest(
    type,
    () => {
      actions.forEach((a, i) => {
        w.nest(
          i + 1,
          () => {
            w.attrStr(TCA_ACT_KIND, a.kind);
            if (a.kind === 'mirred') writeMirred(w, a);
            else if (a.kind === 'police') writePolice(w, a);
            else
              throw new TapnetError(
                'ERR_INVALID_ARGUMENT',
                `unsupported tc action ${JSON.stringify((a as { kind: unknown }).kind)}`,
              );
          },
          false,
        );
      });
    },
    false,
  );
}

function decodeError(message: string): TapnetError {
  return new TapnetError('ERR_NETLINK_DECODE', message);
}

function decodeMirred(opts: AttrMap, common: ActionCommon): MirredAction {
  const p = opts.raw(TCA_MIRRED_PARMS);
  if (!p || p.length < TC_MIRRED_LEN) throw decodeError('mirred action without a complete TCA_MIRRED_PARMS');
  const eaction = p.readInt32LE(20);
  const entry = Object.entries(MIRRED_EACTIONS).find(([, v]) => v === eaction);
  if (!entry) throw decodeError(`mirred action with unknown eaction ${eaction}`);
  const [direction, mode] = entry[0].split('/') as ['egress' | 'ingress', 'redirect' | 'mirror'];
  return {
    ...common,
    index: p.readUInt32LE(0),
    kind: 'mirred',
    mode,
    direction,
    ifindex: p.readUInt32LE(24),
    control: controlName(p.readInt32LE(8)),
  };
}

function decodePolice(opts: AttrMap, common: ActionCommon): PoliceAction {
  const p = opts.raw(TCA_POLICE_TBF);
  if (!p || p.length < TC_POLICE_LEN) throw decodeError('police action without a complete TCA_POLICE_TBF');
  const rate = readRateSpec(p, 20);
  const rateBps = Number(opts.u64(TCA_POLICE_RATE64) ?? BigInt(rate.rate));
  const burstTicks = p.readUInt32LE(12);
  const result = opts.u32(TCA_POLICE_RESULT);
  return {
    ...common,
    index: p.readUInt32LE(0),
    kind: 'police',
    rateBps,
    burstBytes: xmitSize(rateBps, burstTicks),
    burstTicks,
    mtu: p.readUInt32LE(16),
    exceed: controlName(p.readInt32LE(4)),
    conform: controlName(result === undefined ? TC_ACT_OK : result | 0),
  };
}

/** Decode an action list nest (TCA_U32_ACT, TCA_MATCHALL_ACT, …) into actions in order. */
export function decodeActions(b: Buffer): TcAction[] {
  const out: TcAction[] = [];
  for (const item of parseAttrs(b)) {
    const a = AttrMap.parse(item.data);
    const kind = a.str(TCA_ACT_KIND);
    if (kind === undefined) throw decodeError(`action ${item.type} without TCA_ACT_KIND`);
    const statsRaw = a.raw(TCA_ACT_STATS);
    const common: ActionCommon = { order: item.type, index: a.u32(TCA_ACT_INDEX) ?? 0 };
    if (statsRaw) common.stats = decodeTcStats(statsRaw);
    const opts = a.nested(TCA_ACT_OPTIONS);
    if (kind === 'mirred' && opts) out.push(decodeMirred(opts, common));
    else if (kind === 'police' && opts) out.push(decodePolice(opts, common));
    else out.push({ ...common, kind });
  }
  return out;
}
