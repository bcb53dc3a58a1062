/**
 * Kubernetes access for `serve`, in one place: the client, the ServiceAccount and
 * Namespace caches, and pull-secret replication when configured. Nothing here blocks
 * or fails admission: an unreachable API is retried in the background and reported by
 * `degraded()` (readiness) and the log.
 */
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Timers } from '../ports.js';
import { loadKubeClient, type KubeClient } from './client.js';
import { NamespaceCache } from './namespaces.js';
import { NodeCache } from './nodes.js';
import { PullSecretReplicator, type PullSecretSource } from './pull-secret-replicator.js';
import type { ReflectorStatus } from './reflector.js';
import { ServiceAccountCache } from './service-accounts.js';

/** The config's `pullSecrets` entries, as far as replication cares. */
export type PullSecretConfig = readonly { readonly name: string; readonly copyFrom?: string | undefined }[];

export interface KubeSetupOptions {
  /** `--kubeconfig FILE`; in-cluster or the default config when undefined. */
  readonly kubeconfig: string | undefined;
  readonly pullSecrets: PullSecretConfig;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Bound of the direct ServiceAccount GET on a cache miss (default 200 ms). */
  readonly serviceAccountWaitMs?: number | undefined;
  /** Informer relist period (default 10 minutes). */
  readonly resyncMs?: number | undefined;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
  /** The timers of the caches, pull-secret replication and the ServiceAccount lookup bound (the system's by default). */
  readonly timers?: Timers | undefined;
}

export class KubeRuntime {
  readonly client: KubeClient;
  readonly serviceAccounts: ServiceAccountCache;
  readonly namespaces: NamespaceCache;
  /** Node platforms for platform-aware verification (`verification.platforms: nodes`). */
  readonly nodes: NodeCache;
  #replicator: PullSecretReplicator | undefined;
  /** Secret name → source namespace, for secrets with `copyFrom`. */
  #copyFrom = new Map<string, string>();
  readonly #o: KubeSetupOptions;

  /**
   * Load the Kubernetes config (throws KubeConfigError when there is none) and start the
   * caches in the background. Does not wait for the API.
   */
  constructor(options: KubeSetupOptions) {
    this.#o = options;
    const log = options.log.child({ component: 'kube' });
    this.client = loadKubeClient({ file: options.kubeconfig });
    log.info({ server: this.client.server, source: this.client.source }, 'Kubernetes API configured');
    const common = { core: this.client.core, watch: this.client.watch, log, resyncMs: options.resyncMs, backoff: options.backoff, timers: options.timers };
    this.serviceAccounts = new ServiceAccountCache({ ...common, metrics: options.metrics, waitMs: options.serviceAccountWaitMs }).start();
    this.namespaces = new NamespaceCache(common).start();
    this.nodes = new NodeCache(common).start();
    this.configure(options.pullSecrets);
  }

  /** The replicator, while some pull secret has `copyFrom`. */
  get replicator(): PullSecretReplicator | undefined {
    return this.#replicator;
  }

  /** Apply the pull-secret part of a (re)loaded config: start, retarget or stop replication. */
  configure(pullSecrets: PullSecretConfig): void {
    const sources: PullSecretSource[] = [];
    this.#copyFrom = new Map();
    for (const s of pullSecrets) {
      if (s.copyFrom === undefined) continue;
      sources.push({ name: s.name, sourceNamespace: s.copyFrom });
      this.#copyFrom.set(s.name, s.copyFrom);
    }
    if (sources.length === 0) {
      if (this.#replicator) void this.#replicator.stop();
      this.#replicator = undefined;
      return;
    }
    this.#replicator ??= new PullSecretReplicator({
      core: this.client.core,
      watch: this.client.watch,
      log: this.#o.log.child({ component: 'pull-secrets' }),
      resyncMs: this.#o.resyncMs,
      backoff: this.#o.backoff,
      timers: this.#o.timers,
    });
    this.#replicator.configure(sources);
  }

  /** A reloaded `identity.lookup.waitMs`: the bound of the next direct ServiceAccount GETs. */
  setServiceAccountWaitMs(ms: number): void {
    this.serviceAccounts.setWaitMs(ms);
  }

  /** The mode a namespace's `mirrorgate.io/mode` label asks for (`off` is the selector's business). */
  namespaceMode = (namespace: string): 'audit' | 'enforce' | undefined => {
    const label = this.namespaces.modeLabel(namespace);
    return label === 'audit' || label === 'enforce' ? label : undefined;
  };

  /**
   * After an admission: when the answer added replicated pull secrets to the pod, make
   * sure the namespace has them. Never throws, never waits. Dry runs leave no trace.
   */
  afterAdmission(event: { namespace: string; dryRun: boolean; patched: boolean; addedPullSecrets: readonly string[] | undefined }): void {
    const replicator = this.#replicator;
    if (!replicator || event.dryRun || !event.patched || !event.addedPullSecrets) return;
    for (const name of event.addedPullSecrets) {
      const source = this.#copyFrom.get(name);
      if (source !== undefined) replicator.ensure(event.namespace, name, source);
    }
  }

  /** What is degraded, for readiness: caches not synced or the API failing now. */
  degraded(): string[] {
    const out: string[] = [];
    const statuses: ReflectorStatus[] = [this.serviceAccounts.status(), this.namespaces.status(), this.nodes.status(), ...(this.#replicator?.status() ?? [])];
    for (const s of statuses) {
      if (!s.synced) out.push(`Kubernetes API: ${s.name} cache not synced${s.lastError ? ` (${s.lastError})` : ''}`);
      else if (!s.healthy) out.push(`Kubernetes API unreachable, ${s.name} served from cache (${s.lastError ?? 'unknown error'})`);
    }
    return out;
  }

  async stop(): Promise<void> {
    await Promise.all([this.serviceAccounts.stop(), this.namespaces.stop(), this.nodes.stop(), this.#replicator?.stop()]);
  }
}
