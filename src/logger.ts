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

/**
 * stdout, written in batches: a write per line would cost every admission a system call
 * (measured: the log line was the largest single cost of an admission). Lines are
 * buffered up to 8 KiB and written synchronously, on the event loop, when the buffer
 * fills and at least every 250 ms, so a quiet webhook's lines still appear at once and
 * no thread-pool write competes with admissions for the core. `flushLogger` empties the
 * buffer before exit.
 */
function stdoutDestination(): pino.DestinationStream {
  const dest = pino.destination({ dest: 1, sync: true, minLength: 8192 });
  setInterval(() => {
    try {
      dest.flush();
    } catch {
      // stdout gone (the pipe closed): nothing to do.
    }
  }, 250).unref();
  return dest;
}

/** Without a destination, logs go to stdout in batches (see stdoutDestination). */
export function createLogger(opts: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      name: 'mirrorgate',
      level: opts.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? stdoutDestination(),
  );
}

/** Write out buffered log lines (before process.exit). */
export function flushLogger(log: Logger): Promise<void> {
  return new Promise((resolve) => {
    try {
      log.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}
