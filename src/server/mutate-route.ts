/**
 * POST /mutate: decode, let the core decide, encode. Every answer to a decodable
 * review is a well-formed AdmissionReview carrying the request uid, also after an
 * internal error (then allowed or denied per the configured failurePolicy).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  allowed,
  decodeReview,
  denied,
  errored,
  evaluate,
  reviewOf,
  serviceAccountFor,
  type AdmissionRequest,
  type AdmissionResponse,
  type Evaluation,
} from '../core/admission.js';
import { isRewrite, type ContainerDecision, type IdentityInput, type Mode, type VerifyAnswers } from '../core/pod.js';
import type { AdmissionObserver, NamespaceInfo, NodePlatforms, ServiceAccountInfo, ServiceAccountLookup, Verifier } from '../ports.js';
import { parsePlatform, type Platform } from '../core/platforms.js';
import type { ConfigSource } from '../config/watch.js';
import type { Config } from '../config/schema.js';
import { infoLineWriter, type LineFields, type Logger } from '../logger.js';
import type { AdmissionMetrics, AdmissionResult } from '../ports.js';
import { parseTimeoutParam } from './json-body.js';
import { clip } from '../core/text.js';

export interface MutateDeps {
  readonly config: ConfigSource;
  readonly metrics: AdmissionMetrics;
  readonly log: Logger;
  /** Monotonic milliseconds. */
  readonly now: () => number;
  /** Per-namespace mode override and labels (namespace cache), when there is a cluster. */
  readonly namespaces?: NamespaceInfo | undefined;
  /** The platforms of the cluster's nodes (node cache), for `verification.platforms: nodes`. */
  readonly nodes?: NodePlatforms | undefined;
  readonly verifier?: Verifier | undefined;
  readonly observers?: readonly AdmissionObserver[] | undefined;
  /** ServiceAccount annotations for identity wiring (cache, then a bounded direct GET). */
  readonly serviceAccounts?: ServiceAccountLookup | undefined;
}

interface MutateQuery {
  timeout?: string;
}

export function mutateRoute(deps: MutateDeps) {
  const admissionLine = infoLineWriter(deps.log, 'admission');
  return async function plugin(app: FastifyInstance): Promise<void> {
    app.post<{ Querystring: MutateQuery }>('/mutate', async (req, reply) => handle(deps, admissionLine, req, reply));
  };
}

async function handle(deps: MutateDeps, admissionLine: (fields: LineFields) => void, req: FastifyRequest<{ Querystring: MutateQuery }>, reply: FastifyReply): Promise<FastifyReply> {
  const started = deps.now();
  const decoded = decodeReview(req.body);
  if (!decoded.ok) {
    deps.metrics.countInvalid('other');
    deps.log.warn({ uid: decoded.uid, error: decoded.error }, 'malformed admission review');
    // With a readable uid the API server gets an answer it can match: allowed false, 400.
    if (decoded.uid !== undefined) await reply.code(200).send(reviewOf(errored(decoded.uid, 400, `mirrorgate: ${decoded.error}`)));
    else await reply.code(400).send({ error: 'Bad Request', message: decoded.error });
    return reply;
  }
  const request = decoded.request;
  // Not a child logger: creating one per request costs more than the line itself.
  const ids = { uid: request.uid, namespace: clip(request.namespace, MAX_NAME_LOGGED), operation: clip(request.operation, MAX_NAME_LOGGED), subResource: request.subResource ? clip(request.subResource, MAX_NAME_LOGGED) : undefined };
  const log: RequestLog = {
    warn: (o: object, msg: string) => deps.log.warn({ ...ids, ...o }, msg),
    error: (o: object, msg: string) => deps.log.error({ ...ids, ...o }, msg),
  };
  let evaluation: Evaluation | undefined;
  let mode: Mode = 'enforce';
  let response: AdmissionResponse;
  let result: AdmissionResult;
  let label = 'other';
  try {
    const config = deps.config.current();
    mode = config.mode === 'audit' ? 'audit' : (deps.namespaces?.mode(request.namespace) ?? config.mode);
    const identity = await identityInput(deps, request, config);
    const context = { namespaceLabels: deps.namespaces?.labels(request.namespace), platforms: availablePlatforms(deps, config) };
    evaluation = evaluate(request, config.settings, mode, undefined, identity, context);
    label = evaluation.label;
    if (evaluation.error !== undefined) {
      deps.metrics.countInvalid(label);
      log.warn({ error: evaluation.error }, 'malformed admission review');
      await reply.code(200).send(reviewOf(errored(request.uid, 400, `mirrorgate: ${evaluation.error}`)));
      return reply;
    }
    const toVerify = evaluation.plan?.toVerify ?? [];
    if (toVerify.length > 0) {
      // Without a verifier (no registry access configured) nothing can be confirmed:
      // keep the originals, which is what an unreachable mirror means too.
      const answers: VerifyAnswers = deps.verifier
        ? await deps.verifier.verify(toVerify, requestBudgetMs(req.query.timeout), { platforms: evaluation.plan?.platforms })
        : { outcomes: new Map(toVerify.map((t) => [t, 'unreachable'] as const)), onUnreachable: 'original' };
      evaluation = evaluate(request, config.settings, mode, answers, identity, context);
    }
    response = evaluation.response;
    result = !response.allowed ? 'denied' : response.patch !== undefined ? 'patched' : 'allowed';
  } catch (err) {
    // Never let an internal error become a 500: the API server would apply its own
    // failurePolicy, but we answer ours, with the uid, and say why in the log.
    result = 'error';
    const failurePolicy = safeFailurePolicy(deps);
    log.error({ err }, 'internal error during admission');
    response =
      failurePolicy === 'Fail'
        ? denied(request.uid, 'mirrorgate: internal error; denied by failurePolicy Fail (see the webhook log)', { code: 500 })
        : allowed(request.uid, { warnings: ['mirrorgate: internal error; admitted unchanged by failurePolicy Ignore'] });
  }
  // The answer is fixed: send it first. What only records it (metrics, the log line, the
  // report and the other observers) runs after the bytes are handed to the socket, in the
  // same turn, so it delays no answer and is done before the next request is read.
  void reply.code(200).send(reviewOf(response));
  afterAnswer(deps, admissionLine, log, ids, request, evaluation, mode, label, result, started);
  return reply;
}

/**
 * Everything an answered admission leaves behind. dryRun requests leave no trace
 * (sideEffects: NoneOnDryRun): no rewrite metrics, no report entry, no background copy.
 * Side effects run each on its own: a failing one is logged and counted, never reaches
 * the answer (already sent).
 */
function afterAnswer(
  deps: MutateDeps,
  admissionLine: (fields: LineFields) => void,
  log: RequestLog,
  ids: { uid: string; namespace: string; operation: string; subResource: string | undefined },
  request: AdmissionRequest,
  evaluation: Evaluation | undefined,
  mode: Mode,
  label: string,
  result: AdmissionResult,
  started: number,
): void {
  const seconds = (deps.now() - started) / 1000;
  if (result !== 'error' && evaluation !== undefined && !request.dryRun) notify(deps, log, request, evaluation, mode);
  try {
    deps.metrics.countAdmission(label, result, seconds);
  } catch (err) {
    observerFailed(deps, log, 'metrics', err);
  }
  // One line per admission: what was decided and how long it took. Written by the fast
  // line writer: pino's generic path was the largest single cost of an admission.
  admissionLine({
    uid: ids.uid,
    namespace: ids.namespace,
    operation: ids.operation,
    subResource: ids.subResource,
    kind: clip(request.kind.kind, MAX_NAME_LOGGED),
    name: request.name ? clip(request.name, MAX_NAME_LOGGED) : undefined,
    mode,
    dryRun: request.dryRun || undefined,
    decision: result,
    rewrites: evaluation?.plan === undefined ? undefined : rewriteCount(evaluation.plan.decisions),
    reason: clipOptional(evaluation?.reason ?? evaluation?.plan?.denial, MAX_REASON_LOGGED),
    durationMs: Math.round(seconds * 1e6) / 1e3,
  });
}

interface RequestLog {
  warn(o: object, msg: string): void;
  error(o: object, msg: string): void;
}

/** Kubernetes names are at most 253 characters; a review sent directly can carry any. */
const MAX_NAME_LOGGED = 253;
/** A denial lists at most 8 problems; its log copy is cut beyond this. */
const MAX_REASON_LOGGED = 4096;

function clipOptional(text: string | undefined, max: number): string | undefined {
  return text === undefined ? undefined : clip(text, max);
}

/** Look up the pod's ServiceAccount when identity wiring can apply; never throws. */
async function identityInput(deps: MutateDeps, request: AdmissionRequest, config: Config): Promise<IdentityInput | undefined> {
  const { settings, lookup } = config.identity;
  if (deps.serviceAccounts === undefined) return undefined;
  if (settings.aws === undefined && settings.gcp === undefined && settings.azure === undefined) return undefined;
  const target = serviceAccountFor(request);
  if (target === undefined) return undefined;
  let sa: ServiceAccountInfo | undefined;
  try {
    sa = await deps.serviceAccounts.get(target.namespace, target.name);
  } catch {
    sa = undefined; // the cache logs and counts its own failures
  }
  return {
    settings,
    lookup: sa === undefined ? 'unknown' : 'found',
    serviceAccount: sa ?? { ...target, annotations: {} },
    onUnknown: lookup.onUnknown,
    onInvalid: lookup.onInvalid,
  };
}

/** Platforms the mirror's images must hold: configured, the nodes', or none. */
function availablePlatforms(deps: MutateDeps, config: Config): readonly Platform[] | undefined {
  const p = config.verification.platforms;
  if (p === 'off') return undefined;
  if (p === 'nodes') return deps.nodes?.platforms();
  return p.flatMap((text) => parsePlatform(text) ?? []);
}

/** The budget for registry checks: never beyond the API server's own deadline. */
function requestBudgetMs(timeout: string | undefined): number {
  const ms = parseTimeoutParam(timeout);
  // Leave room for the answer to travel back before the API server gives up.
  return ms === undefined ? Number.POSITIVE_INFINITY : Math.max(0, ms - 250);
}

function safeFailurePolicy(deps: MutateDeps): 'Ignore' | 'Fail' {
  try {
    return deps.config.current().failurePolicy;
  } catch {
    return 'Fail';
  }
}

function notify(deps: MutateDeps, log: { error(o: object, msg: string): void }, request: AdmissionRequest, evaluation: Evaluation, mode: Mode): void {
  try {
    record(deps, evaluation, mode);
  } catch (err) {
    observerFailed(deps, log, 'metrics', err);
  }
  const observers = deps.observers;
  if (observers === undefined) return;
  for (let i = 0; i < observers.length; i++) {
    const o = observers[i] as AdmissionObserver;
    try {
      o.observe({ request, evaluation, mode });
    } catch (err) {
      observerFailed(deps, log, o.name ?? `observer-${i}`, err);
    }
  }
}

function observerFailed(deps: MutateDeps, log: { error(o: object, msg: string): void }, observer: string, err: unknown): void {
  try {
    deps.metrics.countObserverFailure(observer);
    log.error({ observer, err }, 'admission observer failed; the answer stands');
  } catch {
    // Counting a failure must not fail the admission either.
  }
}

function record(deps: MutateDeps, evaluation: Evaluation, mode: Mode): void {
  const plan = evaluation.plan;
  if (plan === undefined) return;
  // A denied pod rewrote nothing: only its violations count.
  const denied = !evaluation.response.allowed;
  for (const d of plan.decisions) {
    if (!denied && isRewrite(d) && d.sourceRegistry !== undefined && d.rule !== undefined) {
      // The target that served (with several targets, not necessarily the first).
      deps.metrics.countRewrite(d.sourceRegistry, d.targetRef?.registry ?? d.rule.to.host, mode);
    }
    if (d.violation !== undefined) deps.metrics.countViolation(d.violationRegistry ?? 'invalid', mode);
  }
}

function rewriteCount(decisions: readonly ContainerDecision[]): number {
  let n = 0;
  for (const d of decisions) if (isRewrite(d)) n++;
  return n;
}
