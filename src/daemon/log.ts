/**
 * The daemon's structured log: pino, one JSON line per operation on stdout (journald keeps it), with
 * the level from `log.level` (changed live on SIGHUP).
 */
import { type Logger, pino } from 'pino';
import type { LogLevel } from '../config/schema.js';

export type { Logger };

/** A logger writing JSON lines to `fd` (default stdout). */
export function createLogger(level: LogLevel, fd = 1): Logger {
  return pino(
    {
      name: 'tapnet',
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd, sync: true }),
  );
}

/** A logger that writes nothing (library use, tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
