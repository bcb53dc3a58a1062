/**
 * Persisting the report in the cluster: ConfigMap `mirrorgate-report` in the webhook's
 * namespace, one key per replica (its pod name), written every `flushSeconds` and on
 * shutdown with resourceVersion-checked updates, reloaded on start.
 *
 * Rolling updates give pods new names, so keys of replicas that are gone would pile up
 * and their counts would have no owner. A key not updated for `staleAfterMs` is adopted
 * by a live replica: merged into its own counts and deleted in the same
 * resourceVersion-checked update, so two replicas can never both adopt it, and no count
 * is lost or counted twice.
 */
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import { mergeReports, parseReport, type Report, type ReportCache } from '../report/rewrites.js';

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

export class ConflictError extends Error {
  readonly code = 'MG_CONFLICT';
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
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
    const raw = JSON.parse(value) as { updatedAt?: unknown; report?: unknown };
    if (typeof raw.updatedAt !== 'string' || raw.report === undefined) return undefined;
    return { updatedAt: raw.updatedAt, report: parseReport(JSON.stringify(raw.report), `${REPORT_CONFIGMAP}[${key}]`) };
  } catch {
    return undefined;
  }
}

/** Halve every list until the stored value fits; counts are kept, lists become overflow. */
function fit(report: Report, maxBytes: number): string {
  let r = report;
  for (;;) {
    const text = JSON.stringify(r);
    if (text.length <= maxBytes) return text;
    const registries = Object.fromEntries(
      Object.entries(r.registries).map(([k, e]) => {
        const cut = <T>(list: T[]): T[] => list.slice(0, Math.floor(list.length / 2));
        return [
          k,
          {
            ...e,
            images: cut(e.images),
            imagesOverflow: e.imagesOverflow + e.images.length - cut(e.images).length,
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
  readonly now: () => Date;
  readonly log: Logger;
  readonly flushSeconds: number;
  /** A key older than this belongs to a replica that is gone (default 3 flush intervals, at least 2 min). */
  readonly staleAfterMs?: number;
  readonly maxBytes?: number;
  readonly maxAttempts?: number;
}

export class ReportPersister {
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #writtenVersion = -1;
  #lastError: string | undefined;
  readonly #staleAfterMs: number;

  constructor(private readonly opts: ReportPersisterOptions) {
    this.#staleAfterMs = opts.staleAfterMs ?? Math.max(3 * opts.flushSeconds * 1000, 120_000);
  }

  /** Why the last flush failed, if it did (for readiness' degraded list). */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Reload this replica's own counts (a restart with the same pod name), then flush periodically. */
  async start(): Promise<void> {
    try {
      const cm = await this.opts.store.read();
      const own = cm?.data[this.opts.replica];
      const stored = own === undefined ? undefined : decodeKey(own, this.opts.replica);
      if (stored) {
        this.opts.cache.absorb(stored.report);
        this.opts.log.info({ replica: this.opts.replica, registries: Object.keys(stored.report.registries).length }, 'report reloaded from the cluster');
      }
    } catch (err) {
      this.#lastError = (err as Error).message;
      this.opts.log.warn({ error: this.#lastError }, 'report not reloaded: Kubernetes API unreachable; counting from zero until it is');
    }
    this.#timer = setInterval(() => {
      this.flush().catch(() => undefined);
    }, this.opts.flushSeconds * 1000);
    this.#timer.unref();
  }

  /** Stop the timer and write a last time. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
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
        const now = this.opts.now();
        const adopted: { key: string; report: Report }[] = [];
        for (const [key, value] of Object.entries(cm?.data ?? {})) {
          if (key === replica) continue;
          const stored = decodeKey(value, key);
          if (stored === undefined || now.getTime() - Date.parse(stored.updatedAt) > this.#staleAfterMs) {
            adopted.push({ key, report: stored?.report ?? { generatedAt: '', mode: 'enforce', registries: {} } });
          }
        }
        if (!force && adopted.length === 0 && version === this.#writtenVersion && cm?.data[replica] !== undefined) return;
        const mine = adopted.length === 0 ? cache.snapshot() : mergeReports([cache.snapshot(), ...adopted.map((a) => a.report)], now);
        const data: Record<string, string> = { ...(cm?.data ?? {}) };
        for (const a of adopted) delete data[a.key];
        const others = Object.keys(data).filter((k) => k !== replica).length;
        const budget = Math.floor((this.opts.maxBytes ?? MAX_CONFIGMAP_BYTES) / (others + 1)) - 64;
        data[replica] = `{"updatedAt":${JSON.stringify(now.toISOString())},"report":${fit(mine, budget)}}`;
        if (cm === undefined) await store.create(data);
        else await store.replace(data, cm.resourceVersion);
        // Only now that the write succeeded do the adopted counts become ours.
        for (const a of adopted) cache.absorb(a.report);
        if (adopted.length > 0) log.info({ adopted: adopted.map((a) => a.key) }, 'adopted report keys of replicas that are gone');
        // After an adoption the cache changed under us: write again next time.
        this.#writtenVersion = adopted.length > 0 ? -1 : version;
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

  /** The merged report over all replicas, with this replica's live counts. Falls back to the local view. */
  async merged(): Promise<Report> {
    const live = this.opts.cache.snapshot();
    try {
      const cm = await this.opts.store.read();
      const others: Report[] = [];
      for (const [key, value] of Object.entries(cm?.data ?? {})) {
        if (key === this.opts.replica) continue;
        const stored = decodeKey(value, key);
        if (stored) others.push(stored.report);
      }
      return mergeReports([live, ...others], this.opts.now());
    } catch (err) {
      this.opts.log.warn({ error: (err as Error).message }, 'report: cluster view unavailable; showing this replica only');
      return live;
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
