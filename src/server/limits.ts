/**
 * What a slow, stuck or greedy client may cost the webhook, enforced before the body
 * is read:
 *
 * - **A deadline to receive the request.** The API server says how long it waits
 *   (`?timeout=10s`); a request whose body has not fully arrived by then is of no use to
 *   anyone, so its connection is closed. Without the parameter the deadline is
 *   {@link DEFAULT_RECEIVE_MS}; never more than {@link MAX_RECEIVE_MS} (the API server's
 *   own maximum webhook timeout).
 * - **A budget of body bytes in flight.** Bodies being received at once may add up to
 *   {@link DEFAULT_BODY_BUDGET} bytes (by their Content-Length; a body without one is
 *   counted at the full body limit). Beyond it a request is refused at once with 503, so
 *   the API server applies its failurePolicy now instead of waiting for a timeout, and
 *   memory stays bounded whatever the clients do.
 * - **While draining**, every answer carries `Connection: close`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseTimeoutParam } from './json-body.js';
import { setTimerOn, systemTimers, type SetTimer } from '../ports.js';

/** Deadline to receive a request that names no `?timeout=` (the API server's default). */
export const DEFAULT_RECEIVE_MS = 10_000;
/** The API server never waits longer than 30 s for a webhook. */
export const MAX_RECEIVE_MS = 30_000;
/** Deadline for a request's headers (the API server sends them at once). */
export const HEADERS_TIMEOUT_MS = 10_000;
/** Request body bytes in flight at once. */
export const DEFAULT_BODY_BUDGET = 16 * 1024 * 1024;

export interface LimitsOptions {
  readonly bodyLimit: number;
  readonly bodyBudget?: number | undefined;
  /** True while the server drains (answers carry `Connection: close`). */
  readonly draining?: (() => boolean) | undefined;
  /** Starts a request's receive deadline (the system timers, unref'd, by default). */
  readonly setTimer?: SetTimer | undefined;
  readonly onRefused?: ((why: 'budget' | 'deadline') => void) | undefined;
}

/** How long to wait for the whole request: its own ?timeout=, bounded. */
export function receiveDeadlineMs(timeout: unknown): number {
  const ms = parseTimeoutParam(timeout);
  if (ms === undefined || ms <= 0) return DEFAULT_RECEIVE_MS;
  return Math.min(ms, MAX_RECEIVE_MS);
}

/** Bytes of request bodies in flight, and what was refused. */
export interface BodyBudget {
  readonly inFlight: () => number;
}

/** What the hooks keep per request, on the request itself (no side table per request). */
interface Receiving {
  /** The body is in: the receive deadline no longer applies. */
  received: boolean;
  released: boolean;
  readonly reserve: number;
  timer: { clear(): void } | undefined;
}

const RECEIVING = Symbol('mirrorgate.receiving');
type WithReceiving = FastifyRequest & { [RECEIVING]?: Receiving };

export function installLimits(app: FastifyInstance, opts: LimitsOptions): BodyBudget {
  const budget = opts.bodyBudget ?? DEFAULT_BODY_BUDGET;
  const setTimer = opts.setTimer ?? setTimerOn(systemTimers);
  let inFlight = 0;

  // Runs for every request: one object and one timer per POST, no closures per request.
  const release = (r: Receiving): void => {
    if (r.released) return;
    r.released = true;
    inFlight -= r.reserve;
    r.timer?.clear();
  };

  app.addHook('onRequest', (req: FastifyRequest<{ Querystring: { timeout?: string } }>, reply: FastifyReply, done: (err?: Error) => void) => {
    if (req.method !== 'POST') return done();
    const length = Number(req.headers['content-length']);
    const reserve = Number.isFinite(length) && length >= 0 ? Math.min(length, opts.bodyLimit + 1) : opts.bodyLimit;
    if (inFlight > 0 && inFlight + reserve > budget) {
      opts.onRefused?.('budget');
      req.log.warn({ inFlight, budget, contentLength: reserve }, 'request refused: request bodies in flight are at their budget');
      void reply
        .code(503)
        .header('connection', 'close')
        .header('retry-after', '1')
        .send({ error: 'Service Unavailable', message: `busy: ${inFlight} bytes of request bodies in flight (budget ${budget}); retry` });
      return;
    }
    inFlight += reserve;
    const r: Receiving = { received: false, released: false, reserve, timer: undefined };
    (req as WithReceiving)[RECEIVING] = r;
    const deadline = receiveDeadlineMs(req.query.timeout);
    r.timer = setTimer(() => {
      if (r.received) return;
      opts.onRefused?.('deadline');
      req.log.warn({ deadlineMs: deadline, url: req.url }, 'request not received in time; closing its connection');
      release(r);
      req.raw.destroy();
      req.socket.destroy();
    }, deadline);
    // The response closes when it is sent and when the connection ends first (a body that
    // never completes): either way the bytes go back to the budget.
    reply.raw.once('close', () => release(r));
    done();
  });

  // The body is in: the receive deadline no longer applies, the bytes are held until answered.
  app.addHook('preValidation', (req, _reply, done) => {
    const r = (req as WithReceiving)[RECEIVING];
    if (r !== undefined) {
      r.received = true;
      r.timer?.clear();
      r.timer = undefined;
    }
    done();
  });

  app.addHook('onSend', (_req, reply, payload, done) => {
    if (opts.draining?.()) reply.header('connection', 'close');
    done(null, payload);
  });

  return { inFlight: () => inFlight };
}
