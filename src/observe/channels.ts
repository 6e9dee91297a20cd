/**
 * tapnet's diagnostics channels (node:diagnostics_channel). Core modules publish one message per
 * operation; whoever cares subscribes (src/observe/metrics.ts turns them into Prometheus metrics, the
 * daemon's logger could too). Publishing to a channel nobody listens to costs a property check, so
 * publishers guard with `hasSubscribers` before building the message.
 *
 * This module imports nothing from tapnet but types: any layer may publish.
 */
import { channel } from 'node:diagnostics_channel';
import type { ErrorCode } from '../errors.js';

/** How a VM's network was made: by tapnet itself, or through CNI plugins. */
export type NetworkMode = 'direct' | 'cni';

/** One NetworkManager.ensure() call, published when it returns or throws. */
export interface EnsureEvent {
  vmId: string;
  /** The network asked for (or the default one). */
  network: string;
  mode: NetworkMode;
  /** created: a new network; existing: the VM already had one (idempotent call); error: it threw. */
  outcome: 'created' | 'existing' | 'error';
  /** The error's code when outcome is 'error'. */
  code?: ErrorCode;
  durationMs: number;
}

/** One NetworkManager.release() call. */
export interface ReleaseEvent {
  vmId: string;
  /** The VM's network, when it had a record. */
  network?: string;
  mode?: NetworkMode;
  /** released: torn down; unknown: nothing to release (success); error: it threw. */
  outcome: 'released' | 'unknown' | 'error';
  code?: ErrorCode;
  durationMs: number;
}

/** One reconcile() pass: how many things of each kind it repaired. */
export interface ReconcileEvent {
  outcome: 'ok' | 'error';
  code?: ErrorCode;
  /** Repairs by kind (REPAIR_KINDS in manager/report.ts: orphanTaps, orphanLeases, reclaimedLeases, …). */
  repairs: Record<string, number>;
  /** Problems reconcile reported but could not repair. */
  errors: number;
  durationMs: number;
}

/** One CNI plugin execution (CNI mode). */
export interface CniExecEvent {
  /** Plugin type, e.g. `bridge`. */
  plugin: string;
  command: string;
  network?: string;
  outcome: 'ok' | 'error';
  code?: ErrorCode;
  durationMs: number;
}

/** A diagnostics channel that carries messages of type T. */
export interface TypedChannel<T> {
  readonly name: string | symbol;
  readonly hasSubscribers: boolean;
  publish(message: T): void;
  subscribe(onMessage: (message: T, name: string | symbol) => void): void;
  unsubscribe(onMessage: (message: T, name: string | symbol) => void): boolean;
}

function typed<T>(name: string): TypedChannel<T> {
  return channel(name) as unknown as TypedChannel<T>;
}

/** Channel names are part of tapnet's public interface (documented in docs/API.md). */
export const CHANNEL_NAMES = {
  ensure: 'tapnet:manager:ensure',
  release: 'tapnet:manager:release',
  reconcile: 'tapnet:manager:reconcile',
  cniExec: 'tapnet:cni:exec',
} as const;

/** The channels. `channels.ensure.publish({...})` from the manager; subscribe from anywhere. */
export const channels = {
  ensure: typed<EnsureEvent>(CHANNEL_NAMES.ensure),
  release: typed<ReleaseEvent>(CHANNEL_NAMES.release),
  reconcile: typed<ReconcileEvent>(CHANNEL_NAMES.reconcile),
  cniExec: typed<CniExecEvent>(CHANNEL_NAMES.cniExec),
};
