/**
 * Prometheus metrics on an owned registry (never the global one), with bounded label
 * values: registries beyond a cap are counted under `other`, so a cluster full of
 * one-off registries cannot blow up the series count.
 */
import { normaliseRegistryHost } from './core/reference.js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AdmissionMetrics, AdmissionResult } from './ports.js';

export const OPERATIONS = ['create', 'update', 'ephemeralcontainers', 'other'] as const;
export const RESULTS = ['allowed', 'patched', 'denied', 'error', 'invalid'] as const satisfies readonly AdmissionResult[];
export type { AdmissionResult };
export const REGISTRY_CHECK_RESULTS = ['present', 'absent', 'error'] as const;
export type RegistryCheckResult = (typeof REGISTRY_CHECK_RESULTS)[number];

/** Keeps at most `max` distinct values; the rest map to `other`. */
export class LabelLimiter {
  readonly #seen = new Set<string>();
  constructor(private readonly max: number) {}
  value(v: string): string {
    if (this.#seen.has(v)) return v;
    if (this.#seen.size >= this.max) return 'other';
    this.#seen.add(v);
    return v;
  }
}

export interface Metrics extends AdmissionMetrics {
  readonly registry: Registry;
  readonly admissionRequests: Counter<'operation' | 'result'>;
  readonly admissionDuration: Histogram;
  readonly imageRewrites: Counter<'source_registry' | 'target_registry' | 'mode'>;
  readonly policyViolations: Counter<'registry' | 'mode'>;
  readonly configReloads: Counter<'result'>;
  /** Manifest checks sent to registries (cached answers are not counted), by registry and result. */
  readonly registryChecks: Counter<'registry' | 'result'>;
  readonly registryCheckDuration: Histogram;
  /** Background re-checks of cached present answers, by registry and result (present, changed, absent, error). */
  readonly registryRefreshes: Counter<'registry' | 'result'>;
  /** Registry checks that failed on mirrorgate's own cloud credentials (exchange refused, or the registry refused them), by registry. */
  readonly registryCredentialFailures: Counter<'registry'>;
  /** Image copies into the mirror, by result (success, failure, dropped: the copy queue was full). */
  readonly copies: Counter<'result'>;
  /** Blob bytes uploaded by image copies (mounted and skipped blobs not counted). */
  readonly copyBytes: Counter;
  /** ServiceAccount lookups for identity wiring, by result (cache, direct, miss, error). */
  readonly serviceAccountLookups: Counter<'result'>;
  /** notAfter of the certificates in use, as Unix seconds, by certificate (serving, ca). Alert well before it. */
  readonly certificateExpiry: Gauge<'certificate'>;
  /** Requests refused before their body was read, by reason (budget: bodies in flight; deadline: not received in time). */
  readonly requestsRefused: Counter<'reason'>;
  /** Admission observers (report, copy queue, pull-secret replication) that threw; the answer was already fixed. */
  readonly observerFailures: Counter<'observer'>;
  /** Bounded registry label value. */
  registryLabel(registry: string): string;
}

/**
 * Counts of the admission path, kept as plain numbers by key and added to their
 * prom-client counter when it is collected (a scrape, or `get()`). prom-client hashes and
 * validates the label object on every inc(), a labelled child included, which cost an
 * admission more than all its counting. `labels` is worked out once per key. Bounded:
 * beyond `max` keys a count goes to prom-client directly.
 */
export class PendingCounts<L extends string> {
  readonly #byKey = new Map<string, { readonly labels: Partial<Record<L, string>>; n: number }>();
  constructor(private readonly max = 1000) {}

  inc(counter: Counter<L>, key: string, labels: () => Partial<Record<L, string>>): void {
    const e = this.#byKey.get(key);
    if (e !== undefined) {
      e.n++;
      return;
    }
    if (this.#byKey.size >= this.max) {
      counter.inc(labels());
      return;
    }
    this.#byKey.set(key, { labels: labels(), n: 1 });
  }

  /** Add what was counted since the last collect to `counter`. */
  flush(counter: Counter<L>): void {
    for (const e of this.#byKey.values()) {
      if (e.n === 0) continue;
      counter.inc(e.labels, e.n);
      e.n = 0;
    }
  }
}

export function createMetrics(opts: { defaultMetrics?: boolean; maxRegistries?: number } = {}): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const limiter = new LabelLimiter(opts.maxRegistries ?? 50);
  const admissionCounts = new PendingCounts<'operation' | 'result'>();
  const rewriteCounts = new PendingCounts<'source_registry' | 'target_registry' | 'mode'>();
  const violationCounts = new PendingCounts<'registry' | 'mode'>();
  const admissionRequests = new Counter({
    name: 'mirrorgate_admission_requests_total',
    help: 'Admission requests answered, by operation (create, update, ephemeralcontainers, other) and result (allowed, patched, denied, error, invalid).',
    labelNames: ['operation', 'result'] as const,
    registers: [registry],
    collect() {
      admissionCounts.flush(this);
    },
  });
  const admissionDuration = new Histogram({
    name: 'mirrorgate_admission_duration_seconds',
    help: 'Time from receiving an AdmissionReview to answering it, in seconds.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const imageRewrites = new Counter({
    name: 'mirrorgate_image_rewrites_total',
    help: 'Container images rewritten (mode=enforce) or that would be (mode=audit), by source and target registry.',
    labelNames: ['source_registry', 'target_registry', 'mode'] as const,
    registers: [registry],
    collect() {
      rewriteCounts.flush(this);
    },
  });
  const policyViolations = new Counter({
    name: 'mirrorgate_policy_violations_total',
    help: 'Container images not from an allowed registry (denied in enforce mode, reported in audit mode).',
    labelNames: ['registry', 'mode'] as const,
    registers: [registry],
    collect() {
      violationCounts.flush(this);
    },
  });
  const configReloads = new Counter({
    name: 'mirrorgate_config_reloads_total',
    help: 'Config file reloads, by result (success, failure: the last good config stays in force).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const registryChecks = new Counter({
    name: 'mirrorgate_registry_checks_total',
    help: 'Manifest checks sent to registries for verified rewrites (cached answers not counted), by registry and result (present, absent, error).',
    labelNames: ['registry', 'result'] as const,
    registers: [registry],
  });
  const registryCheckDuration = new Histogram({
    name: 'mirrorgate_registry_check_duration_seconds',
    help: 'Time a manifest check took at the registry (auth included), in seconds.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const registryRefreshes = new Counter({
    name: 'mirrorgate_registry_refreshes_total',
    help: 'Background re-checks of cached present answers, by registry and result (present: still there; changed: the tag now names another digest; absent: gone, admissions keep the original from now on; error: no answer, the cached answer stands until it expires).',
    labelNames: ['registry', 'result'] as const,
    registers: [registry],
  });
  const registryCredentialFailures = new Counter({
    name: 'mirrorgate_registry_credential_failures_total',
    help: 'Registry checks that failed on mirrorgate\'s own cloud credentials (google, aws, azure): the exchange was refused, or the registry refused what it gave; the log line names the step. By registry.',
    labelNames: ['registry'] as const,
    registers: [registry],
  });
  const copies = new Counter({
    name: 'mirrorgate_copies_total',
    help: 'Image copies into the mirror, by result (success, failure, dropped: the copy queue was full).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const copyBytes = new Counter({
    name: 'mirrorgate_copy_bytes_total',
    help: 'Blob bytes uploaded to mirrors by image copies, in bytes (mounted and already present blobs not counted).',
    registers: [registry],
  });
  for (const result of ['success', 'failure', 'dropped']) copies.inc({ result }, 0);
  const serviceAccountLookups = new Counter({
    name: 'mirrorgate_serviceaccount_lookups_total',
    help: 'ServiceAccount lookups for identity wiring, by result (cache: informer hit, direct: found by a GET after a miss, miss: does not exist, error: API failed or too slow).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const result of ['cache', 'direct', 'miss', 'error']) serviceAccountLookups.inc({ result }, 0);
  // Pre-set to zero so rate() and alerts work before the first event.
  for (const operation of OPERATIONS) for (const result of RESULTS) admissionRequests.inc({ operation, result }, 0);
  for (const result of ['success', 'failure']) configReloads.inc({ result }, 0);
  const certificateExpiry = new Gauge({
    name: 'mirrorgate_certificate_expiry_timestamp_seconds',
    help: 'Expiry (notAfter) of the certificates in use, in Unix seconds, by certificate (serving, ca).',
    labelNames: ['certificate'] as const,
    registers: [registry],
  });
  const requestsRefused = new Counter({
    name: 'mirrorgate_requests_refused_total',
    help: 'Webhook requests refused before they were answered, by reason (budget: too many request body bytes in flight, answered 503; deadline: the body did not arrive within the request timeout, connection closed).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  for (const reason of ['budget', 'deadline']) requestsRefused.inc({ reason }, 0);
  const observerFailures = new Counter({
    name: 'mirrorgate_observer_failures_total',
    help: 'Admission observers (report, copies, pull-secret replication) that threw after the answer was fixed, by observer.',
    labelNames: ['observer'] as const,
    registers: [registry],
  });
  return {
    registry,
    certificateExpiry,
    requestsRefused,
    observerFailures,
    admissionRequests,
    admissionDuration,
    imageRewrites,
    policyViolations,
    configReloads,
    registryChecks,
    registryCheckDuration,
    registryRefreshes,
    registryCredentialFailures,
    copies,
    copyBytes,
    serviceAccountLookups,
    registryLabel: (r) => limiter.value(r),
    countAdmission: (operation, result, seconds) => {
      admissionCounts.inc(admissionRequests, `${operation}\0${result}`, () => ({ operation, result }));
      admissionDuration.observe(seconds);
    },
    countInvalid: (operation) => admissionCounts.inc(admissionRequests, `${operation}\0invalid`, () => ({ operation, result: 'invalid' })),
    countObserverFailure: (observer) => observerFailures.inc({ observer }),
    countRefused: (reason) => requestsRefused.inc({ reason }),
    // Registries as rules, policy and the report compare them (DNS is case-insensitive,
    // index.docker.io is docker.io): DOCKER.IO/x and docker.io/y are one series. Keyed by
    // the names as written; the label values are worked out the first time.
    countRewrite: (source, target, mode) =>
      rewriteCounts.inc(imageRewrites, `${source}\0${target}\0${mode}`, () => ({
        source_registry: limiter.value(normaliseRegistryHost(source)),
        target_registry: limiter.value(normaliseRegistryHost(target)),
        mode,
      })),
    countViolation: (registry, mode) =>
      violationCounts.inc(policyViolations, `${registry}\0${mode}`, () => ({ registry: limiter.value(normaliseRegistryHost(registry)), mode })),
  };
}
