/**
 * One retry policy per layer, and the one backoff they all compute with. Pure: no I/O,
 * no timers; the caller waits (on its injected timers) and supplies the random source.
 *
 * Image copies retry at two layers, each declaring its policy once:
 * - a registry request (src/copy/copier.ts, `REQUEST_RETRY`): short waits, for what heals
 *   in seconds (429, 5xx, a reset connection, a timeout), honouring `Retry-After`;
 * - a whole copy job (src/copy/queue.ts, `JOB_RETRY`): long waits, only for a copy that
 *   failed after the request layer gave up, never for a failure waiting cannot heal.
 *
 * The layers multiply: a request is tried at most `request.attempts × job.attempts` times
 * for one image ({@link maxTries}), and waits at most {@link maxTotalWaitMs} of each.
 */

export interface RetryPolicy {
  /** Tries in all, the first included (at least 1). */
  readonly attempts: number;
  /** Wait after the first failure, before jitter; doubled after each further one. */
  readonly baseMs: number;
  /** The longest single wait, also the cap on a `Retry-After` (Infinity: none). */
  readonly capMs: number;
  /**
   * The fraction of each wait that is random, 0 to 1: the wait is scaled by
   * `1 - jitter + jitter × random()`, so 0.5 waits between half and all of the backoff.
   */
  readonly jitter: number;
}

/**
 * The wait after failed attempt `attempt` (1 for the first): `baseMs × 2^(attempt-1)`,
 * jittered, at most `capMs`; the server's `retryAfterMs` instead when it gave one (capped
 * too). `random` returns [0, 1).
 */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(policy.capMs, Math.max(0, retryAfterMs));
  const exponential = policy.baseMs * 2 ** Math.max(0, attempt - 1);
  return Math.min(policy.capMs, exponential * (1 - policy.jitter + policy.jitter * random()));
}

/**
 * Whether failed attempt `attempt` (1 for the first) is tried again: only a failure the
 * layer judges `transient` (it may heal by waiting), while attempts are left and nobody
 * gave up on the work (`aborted`).
 */
export function retryable(policy: RetryPolicy, attempt: number, failure: { readonly transient: boolean; readonly aborted?: boolean | undefined }): boolean {
  return failure.transient && failure.aborted !== true && attempt < Math.max(1, policy.attempts);
}

/** Tries of one request in all when `outer` retries the work that holds `inner`'s retries. */
export function maxTries(inner: RetryPolicy, outer: RetryPolicy): number {
  return Math.max(1, inner.attempts) * Math.max(1, outer.attempts);
}

/**
 * The most a policy waits in all, between its first try and its last: every backoff at its
 * top (random → 1), or every wait at `capMs` when the server sends a `Retry-After` each time.
 */
export function maxTotalWaitMs(policy: RetryPolicy, withRetryAfter = false): number {
  let total = 0;
  for (let attempt = 1; attempt < Math.max(1, policy.attempts); attempt++) total += withRetryAfter ? policy.capMs : backoffMs(policy, attempt, () => 1);
  return total;
}
