/**
 * The ports: the narrow interfaces between the admission path and the adapters. Every
 * adapter implements one of these (the registry verifier, the report and copy observers,
 * the Kubernetes caches, the Secret reader), every test fakes one of these, and no adapter
 * imports another to learn a shape. Types only, plus the system clock and timers.
 *
 * Layers: core (pure) <- ports <- adapters (server, verify, copy, kube, report) <- serve.
 */
import type { AdmissionRequest, Evaluation } from './core/admission.js';
import type { ServiceAccountInfo } from './core/identity/wiring.js';
import type { Mode, VerifyAnswers } from './core/pod.js';
import type { Platform } from './core/platforms.js';

export type { ServiceAccountInfo };

/** How an admission ended, as the admission metric labels it. */
export type AdmissionResult = 'allowed' | 'patched' | 'denied' | 'error' | 'invalid';

/**
 * What the admission route counts. Narrow methods only: the route never sees the metrics
 * library's counters, so label sets stay bounded and cached in one place (metrics.ts).
 */
export interface AdmissionMetrics {
  /** One answered admission and its duration. */
  countAdmission(operation: string, result: AdmissionResult, seconds: number): void;
  /** A review that could not be read (no duration: it never reached a decision). */
  countInvalid(operation: string): void;
  countRewrite(sourceRegistry: string, targetRegistry: string, mode: string): void;
  countViolation(registry: string, mode: string): void;
  /** An observer threw after the answer was fixed. */
  countObserverFailure(observer: string): void;
  /** A request refused before it was read: over the body budget or past its deadline. */
  countRefused(reason: 'budget' | 'deadline'): void;
}

/** Answers registry checks for verified rules (the verification module implements it). */
export interface Verifier {
  /** Resolve within `budgetMs`; never rejects. */
  verify(targets: readonly string[], budgetMs: number, opts?: { platforms?: readonly string[] | undefined }): Promise<VerifyAnswers>;
}

/** One decided admission, as its observers see it. */
export interface AdmissionEvent {
  readonly request: AdmissionRequest;
  readonly evaluation: Evaluation;
  readonly mode: Mode;
}

/**
 * Receives every decided admission (the report, background copies, pull-secret
 * replication) after its answer was sent. Each runs on its own: one that throws is logged
 * and counted (`mirrorgate_observer_failures_total{observer}`), never changes the answer,
 * and does not keep the others from running.
 */
export interface AdmissionObserver {
  /** Label in logs and metrics. */
  readonly name?: string;
  observe(event: AdmissionEvent): void;
}

/** ServiceAccount annotations for identity wiring: the cache, then a bounded direct GET. */
export interface ServiceAccountLookup {
  /** undefined: unknown (not in the cache and the direct lookup failed or timed out). */
  get(namespace: string, name: string): Promise<ServiceAccountInfo | undefined>;
}

/** What the namespace cache knows of a namespace; undefined when it does not know. */
export interface NamespaceInfo {
  /** The namespace's mode override (its `mirrorgate.io/mode` label). */
  mode(namespace: string): Mode | undefined;
  /** Its labels (rule scoping by namespaceSelector). */
  labels(namespace: string): Readonly<Record<string, string>> | undefined;
}

/** The platforms of the cluster's nodes (node cache), for `verification.platforms: nodes`. */
export interface NodePlatforms {
  platforms(): readonly Platform[];
}

/**
 * Reads a `kubernetes.io/dockerconfigjson` Secret of the webhook's own namespace: the
 * decoded `.dockerconfigjson` payload, or `undefined` when the Secret does not exist.
 * Implemented by the Kubernetes adapter; absent with `--no-kube`.
 */
export interface SecretReader {
  readDockerConfig(name: string): Promise<string | undefined>;
}

/** Time as the adapters read it. */
export interface Clock {
  /** Monotonic milliseconds (durations, deadlines, cache ages). */
  now(): number;
  /** Wall-clock time (timestamps in reports and certificates). */
  wall(): Date;
}

/** A pending timer: cancel it (idempotent). */
export interface TimerHandle {
  cancel(): void;
}

/** Timers as the adapters start them; tests pass a fake and advance it. */
export interface Timers {
  /** Run `fn` once after `ms`; the timer never keeps the process alive. */
  after(ms: number, fn: () => void): TimerHandle;
  /** Run `fn` every `ms`; the timer never keeps the process alive. */
  every(ms: number, fn: () => void): TimerHandle;
  /** A random number in [0, 1) (jitter). */
  random(): number;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wall: () => new Date(),
};

export const systemTimers: Timers = {
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
  every(ms, fn) {
    const t = setInterval(fn, ms);
    t.unref();
    return { cancel: () => clearInterval(t) };
  },
  random: () => Math.random(),
};

/** A one-shot timer in the shape older options take (`setTimer(fn, ms)`, cleared by `clear()`). */
export type SetTimer = (fn: () => void, ms: number) => { clear(): void };

/** `setTimer` over the given timers (the system's by default): unref'd like every timer here. */
export function setTimerOn(timers: Timers = systemTimers): SetTimer {
  return (fn, ms) => {
    const handle = timers.after(ms, fn);
    return { clear: () => handle.cancel() };
  };
}

/** Resolves after `ms` on the given timers (never keeps the process alive); early when `signal` aborts. */
export function sleepOn(timers: Timers, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      handle.cancel();
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const handle = timers.after(ms, done);
    signal?.addEventListener('abort', done, { once: true });
  });
}
