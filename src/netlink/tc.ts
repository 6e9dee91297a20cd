/**
 * rtnetlink traffic control (struct tcmsg + TCA_* attributes): qdiscs (`ingress`, `clsact`, `tbf`) and
 * filters (`u32`, `matchall`) with their actions (see tc-action.ts). Encode requests, decode dumps. Pure.
 *
 * Filters on the ingress hook use parent `ffff:fff2` (TC_H_PARENT_INGRESS), which the kernel accepts on
 * both an `ingress` and a `clsact` qdisc, so we never need to know which one a device has.
 *
 * This module is the entry point; the codec lives in tc-msg.ts (tcmsg, handles), tc-qdisc.ts, tc-filter.ts,
 * tc-action.ts (mirred, police), tc-rate.ts (rates, ticks, stats) and tc-constants.ts.
 */
export * from './tc-action.js';
export * from './tc-filter.js';
export { formatHandle, readTcmsg, type TcMsg, tcHandle } from './tc-msg.js';
export * from './tc-qdisc.js';
export type { RateSpec, TcStats } from './tc-rate.js';
export { decodeTcStats, rateTable, TICKS_PER_USEC, xmitSize, xmitTicks } from './tc-rate.js';
