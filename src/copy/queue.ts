/**
 * A bounded background queue of image copies (copy on miss): bounded concurrency, one copy
 * per target image at a time, retries with backoff, and a bounded backlog that drops (and
 * counts) rather than grows. `enqueue` never blocks and never throws, because it is called
 * from the admission path.
 */
import { formatReference, type ImageReference } from '../core/reference.js';
import type { Metrics } from '../metrics.js';
import { CopyError, type CopyResult } from './copier.js';
import { messageOf } from '../errors.js';
import { systemClock, systemTimers, type TimerHandle, type Timers } from '../ports.js';
import { backoffMs, retryable, type RetryPolicy } from '../retry.js';

/**
 * The job layer's retries (src/retry.ts): a whole copy, tried again later when it failed
 * after the request layer (src/copy/copier.ts, `REQUEST_RETRY`) used up its tries. Long
 * waits, no jitter (the copies of one queue are already spread). Worst case per image:
 * 3 copies, waiting 5 + 10 = 15 s between them; with the request layer's 4 tries each,
 * a request (one blob's transfer, one manifest) is sent at most 4 × 3 = 12 times, and the
 * waits add up to at most 15 s + 3 × 3.5 s = 25.5 s (15 s + 3 × 90 s = 285 s when every
 * answer says `Retry-After` of 30 s or more), plus the requests' own time (each bounded by
 * the registry client's 30 s timeout).
 */
export const JOB_RETRY: RetryPolicy = { attempts: 3, baseMs: 5000, capMs: Number.POSITIVE_INFINITY, jitter: 0 };

/**
 * Whether a failed copy may succeed later: waiting does not bring back an image missing at
 * the source, nor fix credentials or digests. An `unreachable` registry (a TLS handshake or
 * connection the request layer does not retry at once, any unexpected error) may be back
 * by the next try.
 */
export function healsByWaiting(err: unknown): boolean {
  return !(err instanceof CopyError && !err.transient && err.reason !== 'unreachable');
}

/** Copies one image; the queue passes a signal that aborts on {@link CopyQueue.close}. */
export type CopyFn = (source: ImageReference, target: ImageReference, signal: AbortSignal) => Promise<CopyResult>;

/** What became of an enqueue call. */
export type EnqueueResult = 'queued' | 'duplicate' | 'recent' | 'dropped';

/** The outcome of one queued copy, after its last attempt. */
export interface CopyOutcome {
  source: ImageReference;
  target: ImageReference;
  ok: boolean;
  result?: CopyResult;
  error?: string;
  attempts: number;
}

/** The subset of a pino logger the queue uses. */
export interface QueueLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CopyQueueOptions {
  copy: CopyFn;
  metrics: Pick<Metrics, 'copies' | 'copyBytes'>;
  log?: QueueLog | undefined;
  /** Copies running at once (default 2). */
  concurrency?: number | undefined;
  /** Copies waiting to start; beyond it new ones are dropped (default 100). */
  maxQueued?: number | undefined;
  /** Attempts per copy (default: {@link JOB_RETRY}, 3); failures that cannot heal by waiting are not retried. */
  attempts?: number | undefined;
  /** First retry delay in ms, doubled each time (default: {@link JOB_RETRY}, 5000). */
  backoffMs?: number | undefined;
  /** After a copy finished, the same target is not copied again for this long (default 60000),
   *  so the pods admitted while the mirror answer is still cached as absent do not re-copy it. */
  cooldownMs?: number | undefined;
  /** Monotonic clock in ms (default: the system clock's). */
  now?: (() => number) | undefined;
  /** The retry timers (the system's, unref'd, by default); tests pass fake ones and advance them. */
  timers?: Timers | undefined;
  /** Called after each copy's last attempt (e.g. to feed the report). Must not throw. */
  onOutcome?: ((o: CopyOutcome) => void) | undefined;
}

interface Job {
  key: string;
  source: ImageReference;
  target: ImageReference;
  attempts: number;
}

/** Counts for tests and the report. */
export interface QueueStats {
  queued: number;
  running: number;
  retrying: number;
  succeeded: number;
  failed: number;
  dropped: number;
}

export class CopyQueue {
  readonly #o: Required<Omit<CopyQueueOptions, 'log' | 'onOutcome' | 'timers' | 'attempts' | 'backoffMs'>> & Pick<CopyQueueOptions, 'log' | 'onOutcome'> & { readonly retry: RetryPolicy };
  readonly #timers: Timers;
  readonly #waiting: Job[] = [];
  /** Keys queued, running or waiting to retry: one copy per target at a time. */
  readonly #active = new Set<string>();
  /** Key → time it finished, for the cooldown; bounded by pruning expired entries. */
  readonly #recent = new Map<string, number>();
  /** Retries waiting for their backoff. */
  readonly #retries = new Set<TimerHandle>();
  readonly #running = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  readonly #idleWaiters: (() => void)[] = [];
  #closed = false;
  readonly #stats: QueueStats = { queued: 0, running: 0, retrying: 0, succeeded: 0, failed: 0, dropped: 0 };

  constructor(opts: CopyQueueOptions) {
    this.#o = {
      copy: opts.copy,
      metrics: opts.metrics,
      log: opts.log,
      onOutcome: opts.onOutcome,
      concurrency: Math.max(1, opts.concurrency ?? 2),
      maxQueued: Math.max(0, opts.maxQueued ?? 100),
      retry: { ...JOB_RETRY, attempts: Math.max(1, opts.attempts ?? JOB_RETRY.attempts), baseMs: opts.backoffMs ?? JOB_RETRY.baseMs },
      cooldownMs: opts.cooldownMs ?? 60_000,
      now: opts.now ?? (() => systemClock.now()),
    };
    this.#timers = opts.timers ?? systemTimers;
  }

  /**
   * Ask for `source` to be copied to `target` in the background. Returns at once:
   * `queued`; `duplicate` when that target is already queued, copying or waiting to retry;
   * `recent` when it finished within the cooldown; `dropped` (counted in
   * `mirrorgate_copies_total{result="dropped"}`) when the backlog is full or the queue closed.
   */
  enqueue(source: ImageReference, target: ImageReference): EnqueueResult {
    const key = formatReference(target);
    if (this.#active.has(key)) return 'duplicate';
    const finishedAt = this.#recent.get(key);
    if (finishedAt !== undefined) {
      if (this.#o.now() - finishedAt < this.#o.cooldownMs) return 'recent';
      this.#recent.delete(key);
    }
    if (this.#closed || this.#waiting.length >= this.#o.maxQueued) {
      this.#stats.dropped++;
      this.#o.metrics.copies.inc({ result: 'dropped' });
      this.#o.log?.warn({ source: formatReference(source), target: key, queued: this.#waiting.length }, 'copy queue full; copy dropped');
      return 'dropped';
    }
    this.#active.add(key);
    this.#waiting.push({ key, source, target, attempts: 0 });
    this.#pump();
    return 'queued';
  }

  /** Current counts. */
  stats(): QueueStats {
    return { ...this.#stats, queued: this.#waiting.length, running: this.#running.size, retrying: this.#retries.size };
  }

  /** Resolves when nothing is queued, running or waiting to retry. */
  idle(): Promise<void> {
    if (this.#active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stop: drop the backlog and pending retries, abort running copies and wait for them. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#retries) t.cancel();
    this.#retries.clear();
    for (const job of this.#waiting.splice(0)) this.#active.delete(job.key);
    this.#abort.abort();
    await Promise.allSettled([...this.#running]);
    this.#active.clear();
    this.#settleIdle();
  }

  #pump(): void {
    while (!this.#closed && this.#running.size < this.#o.concurrency && this.#waiting.length > 0) {
      const job = this.#waiting.shift() as Job;
      const run: Promise<void> = this.#run(job).finally(() => {
        this.#running.delete(run);
        this.#pump();
        this.#settleIdle();
      });
      this.#running.add(run);
    }
  }

  async #run(job: Job): Promise<void> {
    job.attempts++;
    const source = formatReference(job.source);
    try {
      const result = await this.#o.copy(job.source, job.target, this.#abort.signal);
      this.#stats.succeeded++;
      this.#o.metrics.copies.inc({ result: 'success' });
      this.#o.metrics.copyBytes.inc(result.bytesSent);
      this.#o.log?.info(
        { source, target: job.key, digest: result.digest, bytesSent: result.bytesSent, blobsSkipped: result.blobsSkipped, blobsMounted: result.blobsMounted },
        'image copied to the mirror',
      );
      this.#finish(job, { source: job.source, target: job.target, ok: true, result, attempts: job.attempts });
    } catch (err) {
      const reason = messageOf(err);
      if (retryable(this.#o.retry, job.attempts, { transient: healsByWaiting(err), aborted: this.#closed })) {
        const delay = backoffMs(this.#o.retry, job.attempts, () => this.#timers.random());
        this.#o.log?.warn({ source, target: job.key, attempt: job.attempts, retryInMs: delay, reason }, 'image copy failed; will retry');
        const timer = this.#timers.after(delay, () => {
          this.#retries.delete(timer);
          if (this.#closed) return;
          // A retry is the same job: it goes first and does not count against the backlog bound.
          this.#waiting.unshift(job);
          this.#pump();
        });
        // A pending retry is work in flight; close() cancels it on shutdown.
        this.#retries.add(timer);
        return;
      }
      this.#stats.failed++;
      this.#o.metrics.copies.inc({ result: 'failure' });
      this.#o.log?.warn({ source, target: job.key, attempts: job.attempts, reason }, 'image copy failed');
      this.#finish(job, { source: job.source, target: job.target, ok: false, error: reason, attempts: job.attempts });
    }
  }

  #finish(job: Job, outcome: CopyOutcome): void {
    this.#active.delete(job.key);
    const now = this.#o.now();
    for (const [k, at] of this.#recent) if (now - at >= this.#o.cooldownMs) this.#recent.delete(k);
    this.#recent.set(job.key, now);
    try {
      this.#o.onOutcome?.(outcome);
    } catch {
      // A broken listener must not stop the queue.
    }
  }

  #settleIdle(): void {
    if (this.#active.size > 0) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }
}
