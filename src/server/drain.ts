/**
 * The shutdown drain, as one ordered procedure with a hard deadline:
 *
 * 1. keep serving for `delayMs` while the endpoints stop sending traffic here (every
 *    answer meanwhile says `Connection: close`, so clients reconnect elsewhere instead of
 *    reusing a connection that is about to go);
 * 2. write the report, bounded by `flushTimeoutMs`, before and independently of the
 *    connection drain: a stuck client can never cost this replica's counts;
 * 3. stop accepting and wait for the requests in flight, at most `drainTimeoutMs`; at the
 *    deadline every connection still open is cut (a stuck client holds nothing);
 * 4. write the report again with the last admissions (bounded the same way);
 * 5. release everything else.
 *
 * The whole is bounded by delay + drain + 1 s + 3 × flush (the last for `after`), which
 * the defaults (5 s + 15 s + 1 s + 3 × 2 s = 27 s) keep inside the Deployment's
 * `terminationGracePeriodSeconds` of 30. Timers are
 * injected, so the order and the deadlines are tested with a fake clock.
 */
import { messageOf } from '../errors.js';

export interface DrainSteps {
  /** Stop accepting and resolve once the requests in flight are answered. */
  close(): Promise<void>;
  /** Cut every connection still open (called at the deadline only). */
  cutAll(): void;
  /** Persist the report (`final`: the last write, after the drain); absent without a cluster. */
  flush?: ((final: boolean) => Promise<void>) | undefined;
  /** Release caches, clients and timers after the drain. */
  after?: (() => Promise<void>) | undefined;
}

export interface DrainOptions {
  readonly delayMs: number;
  readonly drainTimeoutMs: number;
  readonly flushTimeoutMs: number;
  /** Resolves after `ms` (injected: a fake clock in tests). */
  readonly sleep: (ms: number) => Promise<void>;
  readonly log: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
}

export interface DrainOutcome {
  /** Connections were still open at the deadline and were cut. */
  readonly cut: boolean;
  /** Report writes that failed or did not finish in time. */
  readonly flushFailures: number;
}

const TIMED_OUT = Symbol('timed out');

async function within<T>(work: Promise<T>, ms: number, sleep: (ms: number) => Promise<void>): Promise<T | typeof TIMED_OUT> {
  return Promise.race([work, sleep(ms).then((): typeof TIMED_OUT => TIMED_OUT)]);
}

export async function drain(steps: DrainSteps, opts: DrainOptions): Promise<DrainOutcome> {
  const { sleep, log } = opts;
  let flushFailures = 0;
  const flush = async (when: string, final: boolean): Promise<void> => {
    if (steps.flush === undefined) return;
    try {
      const r = await within(steps.flush(final), opts.flushTimeoutMs, sleep);
      if (r === TIMED_OUT) {
        flushFailures++;
        log.warn({ when, timeoutMs: opts.flushTimeoutMs }, 'shutdown: report write did not finish in time');
      }
    } catch (err) {
      flushFailures++;
      log.warn({ when, error: messageOf(err) }, 'shutdown: report write failed');
    }
  };

  if (opts.delayMs > 0) await sleep(opts.delayMs);
  await flush('before the drain', false);
  const closing = steps.close().catch((err: unknown) => {
    log.warn({ error: messageOf(err) }, 'shutdown: closing the server failed');
  });
  let cut = false;
  if ((await within(closing, opts.drainTimeoutMs, sleep)) === TIMED_OUT) {
    cut = true;
    log.warn({ drainTimeoutMs: opts.drainTimeoutMs }, 'shutdown: requests still open at the drain deadline; cutting their connections');
    steps.cutAll();
    // Cut connections end their requests at once; never wait for them beyond a second.
    await within(closing, 1000, sleep);
  }
  await flush('after the drain', true);
  if (steps.after) {
    const r = await within(steps.after().then(() => undefined), opts.flushTimeoutMs, sleep).catch((err: unknown) => {
      log.warn({ error: messageOf(err) }, 'shutdown: releasing resources failed');
    });
    if (r === TIMED_OUT) log.warn({ timeoutMs: opts.flushTimeoutMs }, 'shutdown: releasing resources did not finish in time; exiting anyway');
  }
  return { cut, flushFailures };
}
