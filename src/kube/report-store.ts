/**
 * Persisting the report in the cluster: ConfigMap `mirrorgate-report` in the webhook's
 * namespace, one key per replica (its pod name), written every `flushSeconds` and on
 * shutdown with resourceVersion-checked updates, reloaded on start.
 *
 * Rolling updates give pods new names, so keys of replicas that are gone would pile up
 * and their counts would have no owner. A key not updated for `staleAfterMs` is adopted
 * by a live replica: merged into its own counts and deleted in the same
 * resourceVersion-checked update, so two replicas can never both adopt it, and no count
 * is lost or counted twice. An idle replica rewrites its key now and then so that it is
 * never taken for gone. A key nobody can read (not a stored report) is dropped by the
 * next writer: it holds no counts, only space.
 */
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import { mergeReports, parseReport, REPORT_SCHEMA_VERSION, type Report, type ReportCache } from '../report/rewrites.js';
import { statusOf } from './errors.js';
import { MirrorgateError } from '../errors.js';
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from '../ports.js';

export const REPORT_CONFIGMAP = 'mirrorgate-report';
/** ConfigMaps are capped at 1 MiB in etcd; keep well under it. */
export const MAX_CONFIGMAP_BYTES = 900_000;

/** The ConfigMap operations persistence needs. */
export interface ConfigMapStore {
  /** undefined when it does not exist. */
  read(): Promise<{ data: Record<string, string>; resourceVersion: string } | undefined>;
  /** Throws ConflictError when it exists already. */
  create(data: Record<string, string>): Promise<void>;
  /** Throws ConflictError when resourceVersion is stale. */
  replace(data: Record<string, string>, resourceVersion: string): Promise<void>;
}

export class ConflictError extends MirrorgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('MG_CONFLICT', message, options);
  }
}


/** ConfigMapStore over the real API through @kubernetes/client-node. */
export function configMapStore(kc: KubeConfig, namespace: string, name = REPORT_CONFIGMAP): ConfigMapStore {
  const api = kc.makeApiClient(CoreV1Api);
  const body = (data: Record<string, string>, resourceVersion?: string): V1ConfigMap => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace, resourceVersion, labels: { 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/component': 'report' } },
    data,
  });
  return {
    async read() {
      try {
        const cm = await api.readNamespacedConfigMap({ name, namespace });
        return { data: cm.data ?? {}, resourceVersion: cm.metadata?.resourceVersion ?? '' };
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw err;
      }
    },
    async create(data) {
      try {
        await api.createNamespacedConfigMap({ namespace, body: body(data) });
      } catch (err) {
        if (statusOf(err) === 409) throw new ConflictError(`configmap ${namespace}/${name} exists already`, { cause: err });
        throw err;
      }
    },
    async replace(data, resourceVersion) {
      try {
        await api.replaceNamespacedConfigMap({ name, namespace, body: body(data, resourceVersion) });
      } catch (err) {
        if (statusOf(err) === 409) throw new ConflictError(`configmap ${namespace}/${name} changed meanwhile`, { cause: err });
        throw err;
      }
    },
  };
}

interface Stored {
  updatedAt: string;
  report: Report;
}

function decodeKey(value: string, key: string): Stored | undefined {
  try {
    const raw = JSON.parse(value) as { updatedAt?: unknown; report?: unknown } | null;
    // An updatedAt that is not a time could never become stale: unreadable like the rest.
    if (raw === null || typeof raw.updatedAt !== 'string' || Number.isNaN(Date.parse(raw.updatedAt)) || raw.report === undefined) return undefined;
    return { updatedAt: raw.updatedAt, report: parseReport(JSON.stringify(raw.report), `${REPORT_CONFIGMAP}[${key}]`) };
  } catch {
    return undefined;
  }
}

/**
 * Halve every list until the stored value fits; counts are kept, lists become overflow.
 * An image cut from `images` loses its usage with it. Only when no list is left is the
 * trend cut, oldest hours first.
 */
function fit(report: Report, maxBytes: number): string {
  let r = report;
  for (;;) {
    const text = JSON.stringify(r);
    // The API server's limit is on bytes, not UTF-16 code units.
    if (Buffer.byteLength(text) <= maxBytes) return text;
    const lists = Object.values(r.registries).some((e) => e.images.length + e.missing.length + e.namespaces.length + Object.keys(e.pending).length > 0);
    if (!lists) {
      if (r.trend.length === 0) return text; // nothing left to cut
      r = { ...r, trend: r.trend.slice(Math.ceil(r.trend.length / 2)) };
      continue;
    }
    const registries = Object.fromEntries(
      Object.entries(r.registries).map(([k, e]) => {
        const cut = <T>(list: T[]): T[] => list.slice(0, Math.floor(list.length / 2));
        const images = cut(e.images);
        return [
          k,
          {
            ...e,
            images,
            imagesOverflow: e.imagesOverflow + e.images.length - images.length,
            usage: Object.fromEntries(images.flatMap((i) => (e.usage[i] === undefined ? [] : [[i, e.usage[i]] as const]))),
            missing: cut(e.missing),
            missingOverflow: e.missingOverflow + e.missing.length - cut(e.missing).length,
            namespaces: cut(e.namespaces),
            namespacesOverflow: e.namespacesOverflow + e.namespaces.length - cut(e.namespaces).length,
            pending: Object.fromEntries(cut(Object.entries(e.pending))),
            pendingOverflow: e.pendingOverflow + Object.keys(e.pending).length - cut(Object.keys(e.pending)).length,
          },
        ];
      }),
    );
    const shrunk = { ...r, registries };
    if (JSON.stringify(shrunk).length >= text.length) return text; // nothing left to cut
    r = shrunk;
  }
}

export interface ReportPersisterOptions {
  readonly store: ConfigMapStore;
  readonly cache: ReportCache;
  /** This replica's key: its pod name. */
  readonly replica: string;
  /** The wall clock (timestamps, staleness of other replicas' keys); the system's by default. */
  readonly now?: Clock['wall'] | undefined;
  /** The flush timer (the system's, unref'd, by default); tests pass fake ones and advance them. */
  readonly timers?: Timers | undefined;
  readonly log: Logger;
  readonly flushSeconds: number;
  /** A key older than this belongs to a replica that is gone (default 3 flush intervals, at least 2 min). */
  readonly staleAfterMs?: number;
  readonly maxBytes?: number;
  readonly maxAttempts?: number;
}

export class ReportPersister {
  #timer: TimerHandle | undefined;
  readonly #now: Clock['wall'];
  readonly #timers: Timers;
  #flushSeconds: number;
  #flushing: Promise<void> | undefined;
  #writtenVersion = -1;
  #lastError: string | undefined;
  /**
   * Whether this replica's own stored counts (from before a restart) are in the cache.
   * They are taken in by the first successful write, not by a bare read: that write is
   * resourceVersion-checked like an adoption, so a start with the API down loses nothing
   * and a key another replica adopts meanwhile is never counted twice.
   */
  #reloaded = false;
  #staleAfterMs: number;

  constructor(private readonly opts: ReportPersisterOptions) {
    this.#staleAfterMs = opts.staleAfterMs ?? Math.max(3 * opts.flushSeconds * 1000, 120_000);
    this.#flushSeconds = opts.flushSeconds;
    this.#now = opts.now ?? ((): Date => systemClock.wall());
    this.#timers = opts.timers ?? systemTimers;
  }

  /**
   * A reloaded `report.flushSeconds`: the next write comes that long after this call.
   */
  setFlushSeconds(seconds: number): void {
    if (seconds === this.#flushSeconds) return;
    this.#flushSeconds = seconds;
    if (this.#timer !== undefined) this.#schedule();
  }

  /**
   * A reloaded `report.staleAfterSeconds`: the next flush judges other replicas' keys, and
   * times this replica's heartbeat, by it. Every replica reads the same config, so they
   * keep agreeing on it once the reload has reached them all.
   */
  setStaleAfterMs(ms: number): void {
    this.#staleAfterMs = ms;
  }

  #schedule(): void {
    this.#timer?.cancel();
    this.#timer = this.#timers.every(this.#flushSeconds * 1000, () => {
      this.flush().catch(() => undefined);
    });
  }

  /** Why the last flush failed, if it did (for readiness' degraded list). */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Reload this replica's own counts (a restart with the same pod name), then flush periodically. */
  async start(): Promise<void> {
    await this.flush(true);
    if (!this.#reloaded) {
      this.opts.log.warn({ error: this.#lastError }, 'report not reloaded yet: Kubernetes API unreachable; the stored counts are taken in at the next flush');
    }
    this.#schedule();
  }

  /** Stop the timer and write a last time. */
  async stop(): Promise<void> {
    this.#timer?.cancel();
    this.#timer = undefined;
    // A flush in flight may have taken its snapshot before the last admissions: wait for
    // it, then write once more.
    await this.#flushing;
    await this.flush(true);
  }

  /** Write this replica's key (and adopt stale ones). Never rejects; failures are logged. */
  flush(force = false): Promise<void> {
    this.#flushing ??= this.#flush(force).finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #flush(force: boolean): Promise<void> {
    const { store, cache, replica, log } = this.opts;
    const attempts = this.opts.maxAttempts ?? 5;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const version = cache.version;
      try {
        const cm = await store.read();
        const now = this.#now();
        const adopted: { key: string; report: Report }[] = [];
        const ownValue = cm?.data[replica];
        const ownStored = ownValue === undefined ? undefined : decodeKey(ownValue, replica);
        // Not yet reloaded (first flush, or the API was down until now): this replica's
        // stored counts are taken in by this write, like an adoption.
        const reload = this.#reloaded ? undefined : ownStored?.report;
        for (const [key, value] of Object.entries(cm?.data ?? {})) {
          if (key === replica) continue;
          const stored = decodeKey(value, key);
          if (stored === undefined || now.getTime() - Date.parse(stored.updatedAt) > this.#staleAfterMs) {
            adopted.push({ key, report: stored?.report ?? { schemaVersion: REPORT_SCHEMA_VERSION, generatedAt: '', mode: 'enforce', registries: {}, trend: [] } });
          }
        }
        // An idle replica still rewrites its key now and then (a heartbeat), or others
        // would take it for gone and adopt the counts of a live replica.
        const fresh = ownStored !== undefined && now.getTime() - Date.parse(ownStored.updatedAt) < this.#staleAfterMs / 3;
        if (!force && this.#reloaded && adopted.length === 0 && version === this.#writtenVersion && fresh) return;
        const taken = [...(reload ? [reload] : []), ...adopted.map((a) => a.report)];
        const mine = taken.length === 0 ? cache.snapshot() : mergeReports([cache.snapshot(), ...taken], now);
        const data: Record<string, string> = { ...(cm?.data ?? {}) };
        for (const a of adopted) delete data[a.key];
        data[replica] = `{"updatedAt":${JSON.stringify(now.toISOString())},"report":${fit(mine, this.#budget(data))}}`;
        if (cm === undefined) await store.create(data);
        else await store.replace(data, cm.resourceVersion);
        // Only now that the write succeeded do the reloaded and adopted counts become ours.
        for (const r of taken) cache.absorb(r);
        if (reload) log.info({ replica, registries: Object.keys(reload.registries).length }, 'report reloaded from the cluster');
        this.#reloaded = true;
        if (adopted.length > 0) log.info({ adopted: adopted.map((a) => a.key) }, 'adopted report keys of replicas that are gone');
        // After a reload or an adoption the cache changed under us: write again next time.
        this.#writtenVersion = taken.length > 0 ? -1 : version;
        this.#lastError = undefined;
        return;
      } catch (err) {
        if (err instanceof ConflictError && attempt < attempts) continue;
        this.#lastError = (err as Error).message;
        log.warn({ error: this.#lastError, attempt }, 'report flush failed; will retry at the next interval');
        return;
      }
    }
  }

  /**
   * Bytes this replica's key may take: a fair share of the limit, and never more than the
   * others leave (a key written when there were fewer replicas is larger than its share
   * until its owner writes again; a write over the API server's limit would be refused).
   */
  #budget(data: Record<string, string>): number {
    const max = this.opts.maxBytes ?? MAX_CONFIGMAP_BYTES;
    let othersBytes = 0;
    let others = 0;
    for (const [k, v] of Object.entries(data)) {
      if (k === this.opts.replica) continue;
      others++;
      othersBytes += Buffer.byteLength(k) + Buffer.byteLength(v);
    }
    const overhead = Buffer.byteLength(this.opts.replica) + 64;
    return Math.max(0, Math.min(Math.floor(max / (others + 1)), max - othersBytes) - overhead);
  }

  /** The merged report over all replicas, with this replica's live counts. Falls back to the local view. */
  async merged(): Promise<Report> {
    try {
      const cm = await this.opts.store.read();
      // Taken after the read, with #reloaded, so that a reload finishing meanwhile is counted once.
      const live = this.opts.cache.snapshot();
      const others: Report[] = [];
      for (const [key, value] of Object.entries(cm?.data ?? {})) {
        // The own key is in the live counts once reloaded; before that, it still counts.
        if (key === this.opts.replica && this.#reloaded) continue;
        const stored = decodeKey(value, key);
        if (stored) others.push(stored.report);
      }
      return mergeReports([live, ...others], this.#now());
    } catch (err) {
      this.opts.log.warn({ error: (err as Error).message }, 'report: cluster view unavailable; showing this replica only');
      return this.opts.cache.snapshot();
    }
  }
}

/** Read the merged report straight from the ConfigMap (for `mirrorgate report --kubeconfig`). */
export async function readMergedReport(store: ConfigMapStore, now: Date): Promise<Report> {
  const cm = await store.read();
  if (cm === undefined) throw new Error(`no ConfigMap ${REPORT_CONFIGMAP} yet: the webhook has not flushed a report`);
  const reports: Report[] = [];
  for (const [key, value] of Object.entries(cm.data)) {
    const stored = decodeKey(value, key);
    if (stored) reports.push(stored.report);
  }
  return mergeReports(reports, now);
}
