import t from 'tap';
import { REQUEST_RETRY } from '../src/copy/copier.js';
import { healsByWaiting, JOB_RETRY } from '../src/copy/queue.js';
import { CopyError } from '../src/copy/copier.js';
import { backoffMs, maxTotalWaitMs, maxTries, retryable, type RetryPolicy } from '../src/retry.js';

const P: RetryPolicy = { attempts: 4, baseMs: 500, capMs: 3000, jitter: 0.5 };

t.test('backoffMs: doubling, jitter, cap, Retry-After', async (t) => {
  const cases: { name: string; policy: RetryPolicy; attempt: number; random: number; retryAfterMs?: number; want: number }[] = [
    { name: 'first wait, random at the bottom: half the base', policy: P, attempt: 1, random: 0, want: 250 },
    { name: 'first wait, random in the middle', policy: P, attempt: 1, random: 0.5, want: 375 },
    { name: 'first wait, random at the top: the base', policy: P, attempt: 1, random: 1, want: 500 },
    { name: 'doubled after the second failure', policy: P, attempt: 2, random: 1, want: 1000 },
    { name: 'and again', policy: P, attempt: 3, random: 1, want: 2000 },
    { name: 'capped', policy: P, attempt: 4, random: 1, want: 3000 },
    { name: 'capped before the jitter would bring it under', policy: P, attempt: 5, random: 0, want: 3000 },
    { name: 'Retry-After wins over the backoff', policy: P, attempt: 1, random: 1, retryAfterMs: 2000, want: 2000 },
    { name: 'Retry-After is not jittered', policy: P, attempt: 3, random: 0, retryAfterMs: 100, want: 100 },
    { name: 'Retry-After is capped', policy: P, attempt: 1, random: 1, retryAfterMs: 60_000, want: 3000 },
    { name: 'a Retry-After in the past waits nothing', policy: P, attempt: 1, random: 1, retryAfterMs: -5, want: 0 },
    { name: 'no jitter: exact', policy: { ...P, jitter: 0 }, attempt: 2, random: 0, want: 1000 },
    { name: 'full jitter: anywhere down to 0', policy: { ...P, jitter: 1 }, attempt: 2, random: 0, want: 0 },
    { name: 'no cap', policy: { ...P, capMs: Number.POSITIVE_INFINITY, jitter: 0 }, attempt: 10, random: 0, want: 500 * 2 ** 9 },
    { name: 'the request layer: 500 ms, half jittered', policy: REQUEST_RETRY, attempt: 1, random: 0.5, want: 375 },
    { name: 'the request layer: Retry-After capped at 30 s', policy: REQUEST_RETRY, attempt: 1, random: 0.5, retryAfterMs: 120_000, want: 30_000 },
    { name: 'the job layer: 5 s', policy: JOB_RETRY, attempt: 1, random: 0.9, want: 5000 },
    { name: 'the job layer: then 10 s', policy: JOB_RETRY, attempt: 2, random: 0.1, want: 10_000 },
  ];
  for (const c of cases) t.equal(backoffMs(c.policy, c.attempt, () => c.random, c.retryAfterMs), c.want, c.name);
});

t.test('retryable: transient failures while attempts are left, unless given up', async (t) => {
  const cases: { name: string; attempt: number; transient: boolean; aborted?: boolean; want: boolean }[] = [
    { name: 'transient, first failure', attempt: 1, transient: true, want: true },
    { name: 'transient, the last try but one', attempt: 3, transient: true, want: true },
    { name: 'transient, the last try failed', attempt: 4, transient: true, want: false },
    { name: 'not transient: never', attempt: 1, transient: false, want: false },
    { name: 'aborted: never', attempt: 1, transient: true, aborted: true, want: false },
    { name: 'not aborted', attempt: 1, transient: true, aborted: false, want: true },
  ];
  for (const c of cases) t.equal(retryable(P, c.attempt, { transient: c.transient, aborted: c.aborted }), c.want, c.name);
  t.equal(retryable({ ...P, attempts: 0 }, 1, { transient: true }), false, 'attempts below 1 mean one try');
});

t.test('what the job layer retries: what may heal by waiting', async (t) => {
  const cases: { name: string; err: unknown; want: boolean }[] = [
    { name: 'a 5xx the request layer gave up on', err: new CopyError('registry', 'HTTP 503', { status: 503, transient: true }), want: true },
    { name: 'a reset connection', err: new CopyError('unreachable', 'ECONNRESET', { transient: true }), want: true },
    { name: 'an unreachable registry (TLS, say)', err: new CopyError('unreachable', 'tls'), want: true },
    { name: 'any unexpected error', err: new Error('boom'), want: true },
    { name: 'missing at the source', err: new CopyError('not-found', 'manifest unknown'), want: false },
    { name: 'refused credentials', err: new CopyError('unauthorized', 'HTTP 401', { status: 401 }), want: false },
    { name: 'a digest mismatch', err: new CopyError('digest-mismatch', 'digest'), want: false },
    { name: 'an unexpected 4xx', err: new CopyError('registry', 'HTTP 400', { status: 400 }), want: false },
  ];
  for (const c of cases) t.equal(healsByWaiting(c.err), c.want, c.name);
});

t.test('the documented worst cases', async (t) => {
  t.equal(maxTries(REQUEST_RETRY, JOB_RETRY), 12, 'a request is sent at most 4 × 3 times per image');
  t.equal(maxTotalWaitMs(REQUEST_RETRY), 3500, 'a request waits at most 0.5 + 1 + 2 s');
  t.equal(maxTotalWaitMs(REQUEST_RETRY, true), 90_000, 'or 3 × 30 s with Retry-After');
  t.equal(maxTotalWaitMs(JOB_RETRY), 15_000, 'a copy waits 5 + 10 s between its tries');
  t.equal(maxTotalWaitMs(JOB_RETRY) + JOB_RETRY.attempts * maxTotalWaitMs(REQUEST_RETRY), 25_500, 'in all, per request of an image');
  t.equal(maxTotalWaitMs(JOB_RETRY) + JOB_RETRY.attempts * maxTotalWaitMs(REQUEST_RETRY, true), 285_000, 'in all with Retry-After');
  t.equal(maxTotalWaitMs({ ...P, attempts: 1 }), 0, 'one try waits nothing');
});
