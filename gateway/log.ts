/** The process logger: pino, JSON lines on stdout. */
import { pino, type Logger } from 'pino';
import type { Config } from '../config/schema.ts';

export function createLogger(level: Config['log']['level'], destination?: NodeJS.WritableStream): Logger {
  return pino({ level, base: { service: 'tributary' } }, destination ?? process.stdout);
}
