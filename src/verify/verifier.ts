/**
 * The mirror check of verified rewrites ("Mirror verification" in the README): does the
 * target registry hold the rewritten reference? It sits on the admission path, so:
 * - all references of one admission are asked in parallel and waited for under one
 *   deadline, `min(verification.timeoutMs, budget from ?timeout=)`; what has not answered
 *   by then is 'unreachable' (then `onUnreachable` decides);
 * - answers are cached (present long, absent short; errors not at all), in a bounded LRU;
 * - concurrent checks of one reference share one registry request (singleflight), and a
 *   request outlives the admission that started it, so a late answer serves the next one;
 * - a registry that keeps failing is not asked for a while (a circuit breaker with growing
 *   pauses), so admissions do not each wait the whole budget for it;
 * - present answers that admissions keep using are re-checked in the background before
 *   they are `refreshSeconds` old (a deletion in the mirror is seen within it, at no cost
 *   to admissions); answers nobody used since their last check are dropped instead. At
 *   most {@link MAX_REFRESHES_PER_REGISTRY} refreshes are in flight per registry.
 */
import type { OnUnreachable, VerifyAnswers, VerifyOutcome } from '../core/pod.js';
import { missingPlatforms, parsePlatform, type Platform } from '../core/platforms.js';
import { parseReference, registrySettingsKey, type ImageReference } from '../core/reference.js';
import type { VerificationSettings } from '../config/schema.js';
import type { Metrics, RegistryCheckResult } from '../metrics.js';
import { REGISTRY_CHECK_RESULTS } from '../metrics.js';
import type { ManifestCheck, RegistryEndpoint } from '../registry/client.js';
import { systemTimers, type TimerHandle, type Timers, type Verifier } from '../ports.js';
import { endpointFor, type EndpointTable } from './endpoints.js';
import { messageOf } from '../errors.js';

/** What the verifier needs of the registry client. */
export interface ManifestChecker {
  checkManifest(endpoint: RegistryEndpoint, repository: string, reference: string, opts?: { signal?: AbortSignal }): Promise<ManifestCheck>;
  /** A GET that also learns the manifest's platforms (platform-aware checks). */
  inspectManifest?(endpoint: RegistryEndpoint, repository: string, reference: string, opts?: { signal?: AbortSignal }): Promise<ManifestCheck>;
}

/** What one admission asks besides the targets. */
export interface VerifyOptions {
  /** Platforms (`os/arch[/variant]`) the pod can run on; empty or absent: any manifest counts. */
  readonly platforms?: readonly string[] | undefined;
}

/** The subset of a pino logger used here. */
export interface VerifierLog {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CircuitOptions {
  /** Consecutive errors from one registry that suspend its checks (default 3). */
  readonly failures?: number;
  /** First pause in ms (default 1000); doubled after each failed probe. */
  readonly openMs?: number;
  /** Longest pause in ms (default 30000). */
  readonly maxOpenMs?: number;
}

export interface RegistryVerifierOptions {
  readonly client: ManifestChecker;
  readonly metrics: Pick<Metrics, 'registryChecks' | 'registryCheckDuration' | 'registryRefreshes' | 'registryCredentialFailures' | 'registryLabel'>;
  readonly log: VerifierLog;
  /** Monotonic milliseconds: cache expiry, circuit pauses, check durations. */
  readonly now: () => number;
  /** Deadlines of checks and of an admission's wait, and the background refresh (default: the system's). */
  readonly timers?: Timers | undefined;
  readonly settings: VerificationSettings;
  readonly endpoints?: EndpointTable | undefined;
  /** Registries whose check counters are pre-set to zero (besides those in `endpoints`). */
  readonly registries?: readonly string[] | undefined;
  /** Cached answers kept at most (default {@link DEFAULT_MAX_CACHE_ENTRIES}); least recently used go first. */
  readonly maxCacheEntries?: number | undefined;
  readonly circuit?: CircuitOptions | undefined;
}

/** About 2 MB of memory at most: a cluster rarely runs more distinct images than this. */
export const DEFAULT_MAX_CACHE_ENTRIES = 10_000;

interface CacheEntry {
  readonly outcome: 'present' | 'absent';
  readonly expiresAt: number;
  /** When the registry gave this answer. */
  readonly checkedAt: number;
  /** Last time an admission was answered from it (refreshes only what is in use). */
  usedAt: number;
  readonly registry: string;
  /** The manifest digest the registry answered (present answers). */
  readonly digest: string | undefined;
  /** The platforms the manifest holds; undefined when only a HEAD was made. */
  readonly platforms: readonly Platform[] | undefined;
}

/** A registry's answer about one target, before any platform set is applied. */
interface Fact {
  readonly outcome: VerifyOutcome;
  readonly digest?: string | undefined;
  readonly platforms?: readonly Platform[] | undefined;
  /** An error caused by mirrorgate's own cloud credentials (refused exchange or token). */
  readonly credentialsRefused?: boolean | undefined;
}

interface Circuit {
  /** Consecutive errors. */
  failures: number;
  /** Checks are skipped until then. */
  openUntil: number;
  /** How many times it opened in a row (the pause doubles each time). */
  opens: number;
  /** A single check is let through after a pause; others keep skipping until it answers. */
  probing: boolean;
}

/**
 * Answers `Verifier.verify` from a cache and the registries. One instance per process;
 * {@link RegistryVerifier.configure} swaps settings and endpoints on config reload.
 */
/**
 * New registry requests one admission may start; the rest count as unreachable. Each target
 * of each distinct image is one: 16 images under rules with two targets, or 32 with one.
 */
export const MAX_CHECKS_PER_ADMISSION = 32;
/** Registry requests in flight at once to one registry; beyond it, unreachable at once. */
export const MAX_IN_FLIGHT_PER_REGISTRY = 32;
/** Background refreshes in flight at once to one registry: a quarter of its cap, so admissions keep the rest. */
export const MAX_REFRESHES_PER_REGISTRY = MAX_IN_FLIGHT_PER_REGISTRY / 4;

/** What a refresh found: still there, there with another digest (the tag moved), gone, or not asked. */
export type RefreshResult = 'present' | 'changed' | 'absent' | 'error';
export const REFRESH_RESULTS: readonly RefreshResult[] = ['present', 'changed', 'absent', 'error'];

export class RegistryVerifier implements Verifier {
  readonly #client: ManifestChecker;
  readonly #metrics: RegistryVerifierOptions['metrics'];
  readonly #log: VerifierLog;
  readonly #now: () => number;
  readonly #maxEntries: number;
  readonly #failures: number;
  readonly #openMs: number;
  readonly #maxOpenMs: number;
  #settings: VerificationSettings;
  #endpoints: EndpointTable;
  /** Map order is recency order: a hit moves the entry to the end, eviction takes the first. */
  readonly #cache = new Map<string, CacheEntry>();
  readonly #flights = new Map<string, Promise<Fact>>();
  /** Registry requests in flight, by registry host. */
  readonly #perRegistry = new Map<string, number>();
  readonly #circuits = new Map<string, Circuit>();
  readonly #timers: Timers;
  #refreshTimer: TimerHandle | undefined;
  /** Targets waiting for a refresh slot, by registry, in the order they fell due. */
  readonly #refreshQueue = new Map<string, string[]>();
  /** Targets queued or being refreshed (a tick never queues one twice). */
  readonly #refreshQueued = new Set<string>();
  /** Refreshes in flight, by registry. */
  readonly #refreshing = new Map<string, number>();
  #settledWaiters: (() => void)[] = [];
  #closed = false;

  constructor(opts: RegistryVerifierOptions) {
    this.#client = opts.client;
    this.#metrics = opts.metrics;
    this.#log = opts.log;
    this.#now = opts.now;
    this.#timers = opts.timers ?? systemTimers;
    this.#maxEntries = Math.max(1, opts.maxCacheEntries ?? DEFAULT_MAX_CACHE_ENTRIES);
    this.#failures = Math.max(1, opts.circuit?.failures ?? 3);
    this.#openMs = opts.circuit?.openMs ?? 1000;
    this.#maxOpenMs = opts.circuit?.maxOpenMs ?? 30_000;
    this.#settings = opts.settings;
    this.#endpoints = opts.endpoints ?? new Map();
    this.#presetCounters([...this.#endpoints.keys(), ...(opts.registries ?? [])]);
  }

  /** Stop the background refresh (the cache still answers until entries expire). */
  close(): void {
    this.#closed = true;
    this.#refreshTimer?.cancel();
    this.#refreshTimer = undefined;
    this.#refreshQueue.clear();
    this.#refreshQueued.clear();
    this.#notifySettled();
  }

  /** Resolves once no refresh is queued or in flight (tests wait for it after moving the clock). */
  refreshesSettled(): Promise<void> {
    if (this.#refreshQueued.size === 0 && this.#refreshing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#settledWaiters.push(resolve));
  }

  /** Milliseconds after which a present answer is re-checked (0: never). */
  #refreshMs(settings: VerificationSettings): number {
    if (settings.refreshSeconds <= 0 || settings.cacheSeconds.present <= 0) return 0;
    return Math.min(settings.refreshSeconds, settings.cacheSeconds.present) * 1000;
  }

  /**
   * Arm the refresh tick when there is something to refresh. It runs every quarter of the
   * refresh period and takes the present answers at least half a period old: each answer
   * in use is re-checked when between 1/2 and 3/4 of `refreshSeconds` old, so a deletion
   * is seen within `refreshSeconds` (plus the check's own time) while the mirror answers.
   */
  #armRefresh(): void {
    if (this.#closed || this.#refreshTimer !== undefined) return;
    const period = this.#refreshMs(this.#settings);
    if (period === 0) return;
    this.#refreshTimer = this.#timers.after(Math.max(1, Math.floor(period / 4)), () => {
      this.#refreshTimer = undefined;
      this.#refreshTick();
    });
  }

  #refreshTick(): void {
    const settings = this.#settings;
    const period = this.#refreshMs(settings);
    if (period === 0 || this.#closed) return;
    const now = this.#now();
    let present = 0;
    for (const [target, entry] of [...this.#cache]) {
      if (entry.outcome !== 'present') continue;
      if (entry.expiresAt <= now) {
        this.#cache.delete(target);
        continue;
      }
      present++;
      if (now - entry.checkedAt < period / 2 || this.#refreshQueued.has(target)) continue;
      if (entry.usedAt <= entry.checkedAt) {
        // Nobody asked since the last check: not worth a request; the next admission asks again.
        this.#cache.delete(target);
        present--;
        continue;
      }
      this.#refreshQueued.add(target);
      const queue = this.#refreshQueue.get(entry.registry);
      if (queue === undefined) this.#refreshQueue.set(entry.registry, [target]);
      else queue.push(target);
    }
    for (const registry of [...this.#refreshQueue.keys()]) this.#drainRefreshes(registry);
    if (present > 0) this.#armRefresh();
    this.#notifySettled();
  }

  /** Start queued refreshes of one registry up to its share of the in-flight cap. */
  #drainRefreshes(registry: string): void {
    const queue = this.#refreshQueue.get(registry);
    while (queue !== undefined && queue.length > 0 && (this.#refreshing.get(registry) ?? 0) < MAX_REFRESHES_PER_REGISTRY) {
      const target = queue.shift() as string;
      const before = this.#cache.get(target);
      if (before === undefined || before.outcome !== 'present') {
        this.#refreshQueued.delete(target);
        continue;
      }
      this.#refreshing.set(registry, (this.#refreshing.get(registry) ?? 0) + 1);
      void this.#refresh(target, before).finally(() => {
        this.#refreshQueued.delete(target);
        const n = (this.#refreshing.get(registry) ?? 1) - 1;
        if (n <= 0) this.#refreshing.delete(registry);
        else this.#refreshing.set(registry, n);
        this.#drainRefreshes(registry);
        this.#notifySettled();
      });
    }
    if (queue !== undefined && queue.length === 0) this.#refreshQueue.delete(registry);
  }

  /** Re-check one present answer; the cache holds the new answer afterwards (an error keeps the old one until it expires). */
  async #refresh(target: string, before: CacheEntry): Promise<void> {
    // An answer that carries platforms is refreshed with a GET, so it keeps answering platform sets.
    const fact = await this.#check(target, this.#settings, before.platforms !== undefined);
    const after = this.#cache.get(target);
    let result: RefreshResult;
    if (fact.outcome === 'absent') result = 'absent';
    else if (fact.outcome === 'unreachable' || after === undefined || after.checkedAt === before.checkedAt) result = 'error';
    else if (fact.digest !== undefined && before.digest !== undefined && fact.digest !== before.digest) result = 'changed';
    else result = 'present';
    this.#metrics.registryRefreshes.inc({ registry: this.#metrics.registryLabel(before.registry), result });
    if (result === 'absent') {
      this.#log.warn({ target, registry: before.registry, digest: before.digest }, 'mirror no longer holds a cached image (background refresh); admissions keep the original from now on');
    } else if (result === 'changed') {
      this.#log.info({ target, registry: before.registry, was: before.digest, now: fact.digest }, 'tag moved in the mirror (background refresh); the new digest answers from now on');
    } else if (result === 'error') {
      this.#log.debug({ target, registry: before.registry }, 'background refresh got no answer; the cached answer stands until it expires');
    }
  }

  #notifySettled(): void {
    if (this.#refreshQueued.size > 0 || this.#refreshing.size > 0) return;
    const waiters = this.#settledWaiters;
    this.#settledWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * New settings and endpoints (config reload). Cached answers and circuit state of a
   * registry whose endpoint changed (address, trust, credentials) are dropped: they may
   * have been answers to the old settings.
   */
  configure(settings: VerificationSettings, endpoints: EndpointTable, registries: readonly string[] = []): void {
    const changed = new Set<string>();
    for (const host of new Set([...this.#endpoints.keys(), ...endpoints.keys()])) {
      if (!sameEndpoint(this.#endpoints.get(host), endpoints.get(host))) changed.add(host);
    }
    this.#settings = settings;
    this.#endpoints = endpoints;
    if (changed.size > 0) {
      // Images write hosts in any case and Docker Hub under any name; endpoints are keyed by
      // registrySettingsKey, so compare on that.
      for (const [key, entry] of this.#cache) if (changed.has(registrySettingsKey(entry.registry))) this.#cache.delete(key);
      for (const host of [...this.#circuits.keys()]) if (changed.has(registrySettingsKey(host))) this.#circuits.delete(host);
    }
    this.#presetCounters([...endpoints.keys(), ...registries]);
    this.#armRefresh();
  }

  /**
   * Forget what is cached about a target, e.g. after mirrorgate copied it into the
   * mirror: the next admission asks again instead of waiting out a cached "absent".
   */
  forget(target: string): void {
    this.#cache.delete(target);
  }

  /** Number of cached answers (for tests and debugging). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  /**
   * Check every target (rewritten references) within `min(timeoutMs, budgetMs)`. Cached
   * answers come back at once; the rest are asked in parallel; what has no answer by the
   * deadline is 'unreachable'. Never rejects.
   */
  async verify(targets: readonly string[], budgetMs: number, opts: VerifyOptions = {}): Promise<VerifyAnswers> {
    const settings = this.#settings;
    const want = (opts.platforms ?? []).flatMap((p) => parsePlatform(p) ?? []);
    // Platforms can only be learnt with a GET; a client without one answers as before.
    const inspect = want.length > 0 && this.#client.inspectManifest !== undefined;
    const facts = new Map<string, Fact>();
    const pending: Promise<void>[] = [];
    let started = 0;
    let overCap = 0;
    for (const target of new Set(targets)) {
      const cached = this.#cached(target, inspect);
      if (cached !== undefined) {
        facts.set(target, cached);
        continue;
      }
      // One pod must not turn the webhook into an amplifier against the mirror: at most
      // MAX_CHECKS_PER_ADMISSION new registry requests per admission (joining a check
      // already in flight is free); the rest count as unreachable.
      if (!this.#flights.has(inspect ? `${target}\0platforms` : target)) {
        if (started >= MAX_CHECKS_PER_ADMISSION) {
          overCap++;
          facts.set(target, { outcome: 'unreachable' });
          continue;
        }
        started++;
      }
      pending.push(this.#check(target, settings, inspect).then((f) => void facts.set(target, f)));
    }
    if (overCap > 0) {
      this.#log.warn({ asked: targets.length, cap: MAX_CHECKS_PER_ADMISSION, notChecked: overCap }, 'registry checks over the per-admission cap; the rest count as unreachable');
    }
    if (pending.length > 0) {
      const deadlineMs = Math.max(0, Math.min(settings.timeoutMs, budgetMs));
      let timer: TimerHandle | undefined;
      const expired = new Promise<void>((resolve) => {
        timer = this.#timers.after(deadlineMs, resolve);
      });
      await Promise.race([Promise.all(pending), expired]);
      timer?.cancel();
    }
    // In the order asked, whatever order the registries answered in (stable logs and tests).
    const ordered = new Map<string, VerifyOutcome>();
    const missing = new Map<string, string>();
    const digests = new Map<string, string>();
    const credentialsRefused = new Set<string>();
    for (const target of targets) {
      const fact = facts.get(target);
      let outcome = fact?.outcome;
      if (outcome === undefined) {
        outcome = 'unreachable';
        this.#log.debug({ target }, 'registry check over budget');
      }
      if (outcome === 'present' && inspect && fact?.platforms !== undefined) {
        // An index counts only with every platform the pod can run on; an image only for its own.
        const lacks = missingPlatforms(fact.platforms, want);
        if (lacks.length > 0) {
          outcome = 'absent';
          missing.set(target, lacks.join(', '));
        }
      }
      if (outcome === 'present' && fact?.digest !== undefined) digests.set(target, fact.digest);
      if (outcome === 'unreachable' && fact?.credentialsRefused === true) credentialsRefused.add(target);
      ordered.set(target, outcome);
    }
    return { outcomes: ordered, onUnreachable: settings.onUnreachable, missing, digests, credentialsRefused };
  }

  /** The fallback the current settings name (for answers given without asking). */
  get onUnreachable(): OnUnreachable {
    return this.#settings.onUnreachable;
  }

  /** The cached answer; a present one without platforms does not do when they are needed. */
  #cached(target: string, inspect: boolean): Fact | undefined {
    const entry = this.#cache.get(target);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#cache.delete(target);
      return undefined;
    }
    if (inspect && entry.outcome === 'present' && entry.platforms === undefined) return undefined;
    this.#cache.delete(target);
    this.#cache.set(target, entry);
    entry.usedAt = this.#now();
    return entry;
  }

  #remember(target: string, registry: string, fact: Fact & { outcome: 'present' | 'absent' }, settings: VerificationSettings): void {
    const seconds = fact.outcome === 'present' ? settings.cacheSeconds.present : settings.cacheSeconds.absent;
    if (seconds <= 0) {
      // Not kept, but it is the newest answer: an older one must not outlive it.
      this.#cache.delete(target);
      return;
    }
    const previous = this.#cache.get(target);
    // A HEAD answer does not erase platforms a GET learnt about the same digest.
    const platforms = fact.platforms ?? (previous?.digest !== undefined && previous.digest === fact.digest ? previous.platforms : undefined);
    this.#cache.delete(target);
    const now = this.#now();
    this.#cache.set(target, { outcome: fact.outcome, registry, expiresAt: now + seconds * 1000, checkedAt: now, usedAt: now, digest: fact.digest, platforms });
    while (this.#cache.size > this.#maxEntries) {
      const oldest = this.#cache.keys().next();
      if (oldest.done === true) break;
      this.#cache.delete(oldest.value);
    }
    if (fact.outcome === 'present') this.#armRefresh();
  }

  /** One shared registry request per target (and kind); resolves (never rejects) when the registry answered or gave up. */
  #check(target: string, settings: VerificationSettings, inspect: boolean): Promise<Fact> {
    const key = inspect ? `${target}\0platforms` : target;
    const flying = this.#flights.get(key);
    if (flying) return flying;
    const parsed = parseReference(target);
    if (!parsed.ok) {
      // Targets come from rules and always parse; if one did not, no registry could answer.
      this.#log.warn({ target, reason: parsed.reason }, 'registry check skipped: target does not parse');
      return Promise.resolve({ outcome: 'unreachable' });
    }
    const ref = parsed.ref;
    if (!this.#admit(ref.registry)) return Promise.resolve({ outcome: 'unreachable' });
    const inFlight = this.#perRegistry.get(ref.registry) ?? 0;
    if (inFlight >= MAX_IN_FLIGHT_PER_REGISTRY) {
      this.#log.debug({ target, registry: ref.registry, cap: MAX_IN_FLIGHT_PER_REGISTRY }, 'registry checks in flight at the per-registry cap; counted as unreachable');
      return Promise.resolve({ outcome: 'unreachable' });
    }
    this.#perRegistry.set(ref.registry, inFlight + 1);
    const flight = this.#ask(target, ref, settings, inspect).finally(() => {
      this.#flights.delete(key);
      const n = (this.#perRegistry.get(ref.registry) ?? 1) - 1;
      if (n <= 0) this.#perRegistry.delete(ref.registry);
      else this.#perRegistry.set(ref.registry, n);
    });
    this.#flights.set(key, flight);
    return flight;
  }

  async #ask(target: string, ref: ImageReference, settings: VerificationSettings, inspect: boolean): Promise<Fact> {
    const registry = ref.registry;
    // What the runtime pulls: by digest when there is one, else the tag (`latest` when none).
    const reference = ref.digest ?? ref.tag ?? 'latest';
    // The request's own limit: the longest any admission waits. It is not tied to the
    // admission that started it, so a shorter ?timeout= does not cut it for the others.
    const controller = new AbortController();
    const timer = this.#timers.after(settings.timeoutMs, () => controller.abort());
    const started = this.#now();
    let check: ManifestCheck;
    try {
      const endpoint = endpointFor(this.#endpoints, registry);
      const opts = { signal: controller.signal };
      check =
        inspect && this.#client.inspectManifest
          ? await this.#client.inspectManifest(endpoint, ref.repository, reference, opts)
          : await this.#client.checkManifest(endpoint, ref.repository, reference, opts);
    } catch (err) {
      // The client never throws; be safe anyway, an admission must not fail on it.
      check = { result: 'error', reason: messageOf(err) };
    } finally {
      timer.cancel();
    }
    const result: RegistryCheckResult = check.result;
    const label = this.#metrics.registryLabel(registry);
    this.#metrics.registryChecks.inc({ registry: label, result });
    this.#metrics.registryCheckDuration.observe(Math.max(0, this.#now() - started) / 1000);
    if (check.result === 'error') {
      this.#failed(registry, check.reason);
      if (check.credentialsRefused === true) {
        this.#metrics.registryCredentialFailures.inc({ registry: label });
        return { outcome: 'unreachable', credentialsRefused: true };
      }
      return { outcome: 'unreachable' };
    }
    this.#succeeded(registry);
    const fact =
      check.result === 'present'
        ? {
            outcome: 'present' as const,
            digest: check.digest,
            platforms: check.platforms === undefined ? undefined : check.platforms.flatMap((p) => parsePlatform(p) ?? []),
          }
        : { outcome: 'absent' as const };
    this.#remember(target, registry, fact, settings);
    this.#log.debug({ target, result: check.result }, 'registry check');
    return fact;
  }

  /** May this registry be asked now? False while its circuit is open. */
  #admit(registry: string): boolean {
    const c = this.#circuits.get(registry);
    if (c === undefined || c.failures < this.#failures) return true;
    if (c.openUntil > this.#now() || c.probing) return false;
    c.probing = true;
    return true;
  }

  #succeeded(registry: string): void {
    const c = this.#circuits.get(registry);
    if (c === undefined) return;
    this.#circuits.delete(registry);
    if (c.failures >= this.#failures) this.#log.info({ registry }, 'registry answers again; checks resumed');
  }

  #failed(registry: string, reason: string): void {
    let c = this.#circuits.get(registry);
    if (c === undefined) {
      c = { failures: 0, openUntil: 0, opens: 0, probing: false };
      this.#circuits.set(registry, c);
    }
    c.failures++;
    c.probing = false;
    if (c.failures < this.#failures) return;
    const pauseMs = Math.min(this.#maxOpenMs, this.#openMs * 2 ** Math.min(c.opens, 30));
    c.opens++;
    c.openUntil = this.#now() + pauseMs;
    this.#log.warn({ registry, failures: c.failures, pauseMs, reason }, 'registry keeps failing; checks paused, answering unreachable');
  }

  #presetCounters(registries: readonly string[]): void {
    for (const r of new Set(registries)) {
      const registry = this.#metrics.registryLabel(r);
      for (const result of REGISTRY_CHECK_RESULTS) this.#metrics.registryChecks.inc({ registry, result }, 0);
      for (const result of REFRESH_RESULTS) this.#metrics.registryRefreshes.inc({ registry, result }, 0);
      this.#metrics.registryCredentialFailures.inc({ registry }, 0);
    }
  }
}

function sameEndpoint(a: RegistryEndpoint | undefined, b: RegistryEndpoint | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.host === b.host &&
    (a.insecure ?? false) === (b.insecure ?? false) &&
    (a.ca ?? []).join('\n') === (b.ca ?? []).join('\n') &&
    a.auth?.username === b.auth?.username &&
    a.auth?.password === b.auth?.password
  );
}
