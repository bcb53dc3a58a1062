/**
 * ServiceAccounts for Workload Identity wiring: an informer cache of every
 * ServiceAccount, keeping only the annotations the identity providers read, plus one
 * bounded direct GET on a miss. The miss matters: a ServiceAccount created a moment
 * before its pod (`kubectl apply` of both, Helm) may not have reached the cache yet,
 * the race amazon-eks-pod-identity-webhook users hit (its issue #174). A GET that found
 * nothing or failed is remembered briefly, so a missing account or an API outage costs
 * the API server one request per second per account, not one per admission.
 */
import { Observable, type CoreV1Api, type ConfigurationOptions, type KubernetesObject, type RequestContext, type ResponseContext, type Watch } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { systemClock, systemTimers, type Clock, type ServiceAccountInfo, type ServiceAccountLookup as AdmissionServiceAccounts, type Timers } from '../ports.js';
import { describe, keyOf, ReflectedCache, statusOf } from './reflector.js';

/** The admission port (from the cache; on a miss, one direct GET bounded by `waitMs`, default 200), and whether the cache synced. */
export interface ServiceAccountLookup extends AdmissionServiceAccounts {
  synced(): boolean;
}

/** Annotation prefixes the identity providers read; everything else is dropped. */
export const IDENTITY_ANNOTATION_PREFIXES: readonly string[] = [
  'eks.amazonaws.com/',
  'cloud.google.com/',
  'iam.gke.io/',
  'azure.workload.identity/',
  'mirrorgate.io/',
];

export interface ServiceAccountCacheOptions {
  readonly core: Pick<CoreV1Api, 'listServiceAccountForAllNamespaces' | 'readNamespacedServiceAccount'>;
  readonly watch: Pick<Watch, 'watch'>;
  readonly log: Logger;
  readonly metrics?: Pick<Metrics, 'serviceAccountLookups'> | undefined;
  /** Bound of the direct GET on a miss (default 200 ms). */
  readonly waitMs?: number | undefined;
  /**
   * How long a direct GET that found nothing (404) or failed is remembered (default
   * 1000 ms): admissions for that account meanwhile answer unknown at once instead of
   * each asking the API server again. The watch still delivers the account the moment
   * it exists, and the cache answers before this memory is consulted.
   */
  readonly unknownTtlMs?: number | undefined;
  /** Monotonic milliseconds (default: the clock's). */
  readonly now?: (() => number) | undefined;
  /** The bound of the direct GET, and the informer's resync, backoff and waits (the system's by default). */
  readonly timers?: Timers | undefined;
  /** Monotonic time of the informer, and of the unknown memory when `now` is not given (the system's by default). */
  readonly clock?: Clock | undefined;
  /** Which annotations to keep (default: {@link IDENTITY_ANNOTATION_PREFIXES}). */
  readonly keepAnnotation?: ((key: string) => boolean) | undefined;
  readonly resyncMs?: number | undefined;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
}

type LookupResult = 'cache' | 'direct' | 'miss' | 'error';

/** Accounts remembered as unknown at most; beyond, the memory starts over. */
const MAX_REMEMBERED_UNKNOWN = 10_000;

const EMPTY: Readonly<Record<string, string>> = Object.freeze({});

/** Informer cache of ServiceAccounts. `start()` it; it never throws and never blocks. */
/** Kubernetes object names are at most 253 characters. */
const MAX_OBJECT_NAME = 253;

export class ServiceAccountCache extends ReflectedCache<Readonly<Record<string, string>>> implements ServiceAccountLookup {
  readonly #o: ServiceAccountCacheOptions;
  readonly #keep: (key: string) => boolean;
  readonly #inflight = new Map<string, Promise<ServiceAccountInfo | undefined>>();
  /** Direct GETs that answered nothing: until when, and what they answered. */
  readonly #unknown = new Map<string, { readonly until: number; readonly result: 'miss' | 'error' }>();
  readonly #now: () => number;
  readonly #timers: Timers;
  #waitMs: number;

  constructor(options: ServiceAccountCacheOptions) {
    const keepAnnotation = options.keepAnnotation ?? ((k: string) => IDENTITY_ANNOTATION_PREFIXES.some((p) => k.startsWith(p)));
    super({
      name: 'serviceaccounts',
      path: '/api/v1/serviceaccounts',
      list: async (token, limit) => {
        const list = await options.core.listServiceAccountForAllNamespaces({ limit, ...(token !== undefined ? { _continue: token } : {}) });
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '', continue: list.metadata?._continue };
      },
      watch: options.watch,
      keep: (obj) => keptAnnotations(obj, keepAnnotation),
      log: options.log,
      resyncMs: options.resyncMs,
      backoff: options.backoff,
      timers: options.timers,
      clock: options.clock,
    });
    this.#o = options;
    this.#timers = options.timers ?? systemTimers;
    this.#waitMs = options.waitMs ?? 200;
    this.#keep = keepAnnotation;
    const clock = options.clock ?? systemClock;
    this.#now = options.now ?? (() => clock.now());
  }


  /** From the cache only: no API call, not counted. */
  cached(namespace: string, name: string): ServiceAccountInfo | undefined {
    const annotations = this.reflector.get(keyOf(namespace, name));
    return annotations === undefined ? undefined : { namespace, name, annotations };
  }

  async get(namespace: string, name: string): Promise<ServiceAccountInfo | undefined> {
    // No such object can exist (names are at most 253 characters): never ask the API,
    // never remember the key.
    if (namespace.length > MAX_OBJECT_NAME || name.length > MAX_OBJECT_NAME) {
      this.#count('miss');
      return undefined;
    }
    const key = keyOf(namespace, name);
    const cached = this.reflector.get(key);
    if (cached !== undefined) {
      this.#count('cache');
      return { namespace, name, annotations: cached };
    }
    // Asked a moment ago and not found, or the API failed: without this every admission
    // of a workload whose account is missing (or every admission during an API outage)
    // would send the API server a GET, when it can least afford them.
    const remembered = this.#unknown.get(key);
    if (remembered !== undefined) {
      if (this.#now() < remembered.until) {
        this.#count(remembered.result);
        return undefined;
      }
      this.#unknown.delete(key);
    }
    // Concurrent admissions of one workload's pods share one GET.
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#direct(namespace, name).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    return pending;
  }

  /** The bound of the direct GET on a miss (`identity.lookup.waitMs`, applied on reload). */
  setWaitMs(ms: number): void {
    this.#waitMs = ms;
  }

  async #direct(namespace: string, name: string): Promise<ServiceAccountInfo | undefined> {
    const waitMs = this.#waitMs;
    const abort = new AbortController();
    const timer = this.#timers.after(waitMs, () => abort.abort());
    try {
      const sa = await this.#o.core.readNamespacedServiceAccount({ name, namespace }, withSignal(abort.signal));
      const annotations = this.#annotationsOf(sa);
      // The watch will deliver it too; until then the next pod need not ask again.
      this.reflector.set(keyOf(namespace, name), annotations);
      this.#count('direct');
      this.#o.log.debug({ namespace, serviceAccount: name }, 'service account not in the cache yet; found by a direct lookup');
      return { namespace, name, annotations };
    } catch (err) {
      if (statusOf(err) === 404) {
        this.#rememberUnknown(namespace, name, 'miss');
        this.#count('miss');
        this.#o.log.debug({ namespace, serviceAccount: name }, 'service account not found');
        return undefined;
      }
      this.#rememberUnknown(namespace, name, 'error');
      this.#count('error');
      this.#o.log.warn(
        { namespace, serviceAccount: name, waitMs, error: abort.signal.aborted ? `no answer within ${waitMs} ms` : describe(err) },
        'service account lookup failed; answering unknown',
      );
      return undefined;
    } finally {
      timer.cancel();
    }
  }

  #rememberUnknown(namespace: string, name: string, result: 'miss' | 'error'): void {
    const ttl = this.#o.unknownTtlMs ?? 1000;
    if (ttl <= 0) return;
    if (this.#unknown.size >= MAX_REMEMBERED_UNKNOWN) this.#unknown.clear();
    this.#unknown.set(keyOf(namespace, name), { until: this.#now() + ttl, result });
  }

  #annotationsOf(obj: KubernetesObject): Readonly<Record<string, string>> {
    return keptAnnotations(obj, this.#keep);
  }

  #count(result: LookupResult): void {
    this.#o.metrics?.serviceAccountLookups.inc({ result });
  }
}

/** Request options that attach an AbortSignal to a client-node call. */
export function withSignal(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (ctx: RequestContext) => {
          ctx.setSignal(signal);
          return new Observable(Promise.resolve(ctx));
        },
        post: (res: ResponseContext) => new Observable(Promise.resolve(res)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

/** The annotations of `obj` that `keep` accepts (a frozen shared empty object when none). */
function keptAnnotations(obj: KubernetesObject, keep: (key: string) => boolean): Readonly<Record<string, string>> {
  const all = obj.metadata?.annotations;
  if (!all) return EMPTY;
  let kept: Record<string, string> | undefined;
  for (const [k, v] of Object.entries(all)) {
    if (!keep(k)) continue;
    kept ??= {};
    kept[k] = v;
  }
  return kept ? Object.freeze(kept) : EMPTY;
}
