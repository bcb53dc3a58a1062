/** pino logger: JSON lines, fixed messages, secrets redacted. */
import { pino, type Logger } from 'pino';

export type { Logger };

/** Fields that may carry credentials anywhere in a logged object. */
const REDACT = [
  'req.headers.authorization',
  'headers.authorization',
  '*.password',
  '*.token',
  '*.auth',
  'password',
  'token',
];

export function createLogger(opts: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      name: 'mirrorgate',
      level: opts.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination,
  );
}
