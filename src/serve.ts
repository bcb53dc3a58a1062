/**
 * Composition root of `mirrorgate serve`: the list of components (the log level, the
 * Kubernetes caches, registry verification, the report and its persistence, background
 * copies, the config file, certificates and the two servers) handed to the runtime
 * (src/runtime.ts), which starts them in this order, applies each reload to all of them
 * or none, and stops them in reverse. SIGTERM drains and exits 0.
 */
import type { FastifyInstance } from 'fastify';
import type { Server as HttpsServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import { ConfigWatcher, loadConfigFile } from './config/watch.js';
import type { Config } from './config/schema.js';
import { formatReference } from './core/reference.js';
import { copyImage, BlobLocations } from './copy/copier.js';
import { copyOnMissObserver } from './copy/copy-on-miss.js';
import { CopyQueue } from './copy/queue.js';
import { DEFAULT_CERT_CHECK_INTERVAL_MS, rotationPolicy } from './core/rotation.js';
import type { ReportPersister } from './kube/report-store.js';
import type { KubeRuntime } from './kube/setup.js';
import { createLogger, type Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { RegistryClient } from './registry/client.js';
import { ReportCache } from './report/rewrites.js';
import { workloadOf } from './core/workload.js';
import { buildServer } from './server/app.js';
import { drain } from './server/drain.js';
import { buildMetricsServer } from './server/metrics-route.js';
import { judgeRef } from './core/policy.js';
import type { ImageReference } from './core/reference.js';
import { setTimerOn, sleepOn, systemTimers, type AdmissionObserver, type SecretReader, type Timers } from './ports.js';
import { tlsSecureContextOptions, tlsServerOptions } from './server/tls.js';
import { Certificates, type FileSource, type GeneratedSource, type ManagedSource } from './server/certificates.js';
import { Runtime } from './runtime.js';
import { endpointFor } from './verify/endpoints.js';
import { Verification } from './verify/setup.js';
import { CloudSources } from './registry/cloud/sources.js';

export interface ServeOptions {
  readonly configPath: string;
  readonly host: string;
  readonly port: number;
  readonly metricsPort: number;
  readonly metricsHost: string;
  readonly tlsCert: string | undefined;
  readonly tlsKey: string | undefined;
  readonly certsDir: string;
  /** Service and namespace the serving certificate must be valid for. */
  readonly serviceName: string;
  readonly namespace: string;
  /** This replica's name (its pod name): its key in the report ConfigMap. */
  readonly replica?: string | undefined;
  /**
   * Keep the serving certificate in the Secret `mirrorgate-tls` and the webhook's
   * caBundle current through the API (renewal, CA rotation with overlap).
   */
  readonly manageCerts?: boolean | undefined;
  /** The MutatingWebhookConfiguration whose caBundle is managed. */
  readonly webhookName?: string | undefined;
  /** How often managed certificates are reconciled. */
  readonly certCheckIntervalMs?: number | undefined;
  /** The wall clock (certificate rotation, report timestamps); the system's when omitted. Tests inject one. */
  readonly clock?: (() => Date) | undefined;
  /**
   * The timers every component starts (report flushes, config debounce, copy retries,
   * the Kubernetes caches and pull-secret replication, lookup bounds, certificate checks,
   * the shutdown waits); the system's, unref'd, when
   * omitted. Tests inject fake ones and advance them.
   */
  readonly timers?: Timers | undefined;
  /** How long to keep serving after SIGTERM while endpoints are updated. */
  readonly shutdownDelayMs: number;
  /** After the delay, how long requests in flight may take before their connections are cut (default 15 s). */
  readonly drainTimeoutMs?: number | undefined;
  /** Resolves after `ms` during shutdown (the delay and each step's bound); tests inject fake timers. */
  readonly shutdownSleep?: ((ms: number) => Promise<void>) | undefined;
  readonly noKube: boolean;
  readonly kubeconfig: string | undefined;
  /** Reads dockerconfigjson Secrets for `registries.*.auth.secret`; from the cluster by default. */
  readonly secretReader?: SecretReader | undefined;
  /**
   * The environment cloud identities are read from (`GOOGLE_APPLICATION_CREDENTIALS`,
   * `AWS_ROLE_ARN`, `AZURE_CLIENT_ID`, ...) for `registries.*.auth: {google|aws|azure}`;
   * none when omitted.
   */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
  /**
   * The clock cloud credentials expire by, in milliseconds (default `performance.now`):
   * tests move it past a token's lifetime to see the next admission fetch a fresh one.
   */
  readonly credentialClock?: (() => number) | undefined;
  /** Log destination; stdout when omitted. */
  readonly logDestination?: import('pino').DestinationStream | undefined;
}

export interface Running {
  readonly app: FastifyInstance;
  readonly metricsApp: FastifyInstance;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly url: string;
  readonly metricsUrl: string;
  readonly caFile: string | undefined;
  /** Kubernetes caches and replication; undefined with `--no-kube`. */
  readonly kube: KubeRuntime | undefined;
  readonly report: ReportCache;
  /** Readiness false, wait the shutdown delay, drain, flush the report, close. Idempotent. */
  shutdown(reason: string): Promise<void>;
}

/** Start the webhook. Throws ConfigError (exit 2) or a startup error (exit 1). */
export async function serve(opts: ServeOptions): Promise<Running> {
  const initial = await loadConfigFile(opts.configPath);
  const log = createLogger({ level: initial.config.logLevel, destination: opts.logDestination });
  const metrics = createMetrics();
  const now = (): number => performance.now();
  const wallClock = opts.clock ?? ((): Date => new Date());
  const timers = opts.timers ?? systemTimers;
  // Every component's start, reload and stop goes through the runtime (src/runtime.ts).
  const runtime = new Runtime(initial.config, { log, reloads: metrics.configReloads });
  try {
    return await start();
  } catch (err) {
    // Whatever started before the failure must not keep the process alive.
    await runtime.stop();
    throw err;
  }

  async function start(): Promise<Running> {
    // @kubernetes/client-node costs ~75 MB of memory to load: only when there is a cluster.
    const k8s = opts.noKube ? undefined : await loadKubeModules();
    runtime.add({ name: 'log', prepare: (next) => ({ commit: () => (log.level = next.logLevel) }) });

    // Kubernetes caches start in the background: an unreachable API degrades, never blocks.
    const kube = k8s === undefined
      ? undefined
      : new k8s.setup.KubeRuntime({ kubeconfig: opts.kubeconfig, pullSecrets: initial.config.file.pullSecrets, log, metrics, serviceAccountWaitMs: initial.config.identity.lookup.waitMs, timers });
    if (kube) {
      runtime.add({
        name: 'kubernetes',
        prepare: (next) => ({
          commit: () => {
            kube.configure(next.file.pullSecrets);
            kube.setServiceAccountWaitMs(next.identity.lookup.waitMs);
          },
        }),
        degraded: () => kube.degraded(),
        stop: () => kube.stop(),
      });
    } else {
      runtime.add({ name: 'kubernetes', degraded: () => ['no Kubernetes API access (--no-kube): no identity wiring, namespace modes or report persistence'] });
    }
    const secrets = opts.secretReader ?? (kube && k8s ? k8s.secrets.dockerConfigReader(kube.client.core, opts.namespace) : undefined);

    // Registry client and verifier when some rule says `verify: true`; a missing CA or auth
    // file is a config error, at start (exit 2) and at reload (rejected as a whole).
    const cloud = new CloudSources({ env: opts.env ?? {}, now: opts.credentialClock ?? now, log });
    const verification = await Verification.start(initial.config, { metrics, log, now, secrets, cloud, timers });
    runtime.add({ name: 'verification', prepare: (next) => verification.prepare(next), stop: () => verification.close() });

    // The report: every decision, persisted in the cluster when there is one.
    // The trend counts an image pulled as it is as done when it comes from a rule's target
    // host (the mirror) or a registry the current policy allows, as the page does.
    const report = new ReportCache(wallClock, initial.config.mode, {}, (registry) => servedAsIs(runtime.config.current(), registry));
    runtime.add({ name: 'report', prepare: (next) => ({ commit: () => report.setMode(next.mode) }) });
    const persister: ReportPersister | undefined =
      kube && k8s && opts.replica
        ? new k8s.reportStore.ReportPersister({ store: k8s.reportStore.configMapStore(kube.client.config, opts.namespace), cache: report, replica: opts.replica, now: wallClock, timers, log, flushSeconds: initial.config.report.flushSeconds, staleAfterMs: initial.config.report.staleAfterSeconds * 1000 })
        : undefined;
    const stopPersister = persister ? once(() => persister.stop()) : undefined;
    if (persister && stopPersister) {
      runtime.add({
        name: 'report persistence',
        start: () => persister.start(),
        prepare: (next) => ({
          commit: () => {
            persister.setFlushSeconds(next.report.flushSeconds);
            persister.setStaleAfterMs(next.report.staleAfterSeconds * 1000);
          },
        }),
        degraded: () => (persister.lastError ? [`report not persisted: ${persister.lastError}`] : []),
        stop: stopPersister,
      });
    }

    // Background copies of images found missing from the mirror (rules with copyOnMiss).
    const copyClient = new RegistryClient({ now, log });
    const locations = new BlobLocations();
    const copies = new CopyQueue({
      copy: (source, target, signal) => copyImage(source, target, { client: copyClient, endpoint: (h) => endpointFor(verification.endpoints, h), locations, signal, log, timers }),
      timers,
      metrics,
      log,
      onOutcome: (o) => {
        report.recordCopy(o.source.registry, formatReference(o.source), o.ok);
        // The image is in the mirror now: the next pod is rewritten at once rather than
        // when the cached "absent" answer expires.
        if (o.ok) verification.forget(formatReference(o.target));
      },
    });
    runtime.add({ name: 'copies', stop: async () => { await copies.close(); copyClient.close(); } });

    const observers: AdmissionObserver[] = [
      {
        name: 'report',
        observe: ({ request, evaluation }) => report.record(evaluation.plan?.decisions ?? [], request.namespace, !evaluation.response.allowed, workloadOf(request.object)),
      },
      copyOnMissObserver({ queue: copies, log }),
    ];
    if (kube) {
      observers.push({
        name: 'pull-secrets',
        observe: ({ request, evaluation }) =>
          kube.afterAdmission({ namespace: request.namespace, dryRun: request.dryRun, patched: evaluation.response.patch !== undefined, addedPullSecrets: evaluation.plan?.addedPullSecrets }),
      });
    }

    // The config file: a change goes to every component at once, or to none.
    const watcher = new ConfigWatcher(opts.configPath, initial, {
      onReload: (config: Config) => void runtime.reload(config, `${opts.configPath} changed`),
      onReject: (err: Error) => runtime.rejected(`${opts.configPath} changed`, [err.message]),
    }, { timers });
    runtime.add({ name: 'config file', start: () => void watcher.start(), stop: () => watcher.stop() });

    const certs = runtime.add(new Certificates({ source: await certificateSource(kube, k8s), metrics, log, timers }));
    await runtime.start();

    let shuttingDown = false;
    const app = buildServer({
      config: runtime.config,
      metrics,
      log,
      now,
      setTimer: setTimerOn(timers),
      https: tlsServerOptions(certs.initial),
      namespaces: kube ? { mode: kube.namespaceMode, labels: (ns: string) => kube.namespaces.labels(ns) } : undefined,
      nodes: kube?.nodes,
      serviceAccounts: kube?.serviceAccounts,
      observers,
      verifier: verification.verifier,
      draining: () => shuttingDown,
      readiness: { notReadyReasons: () => (shuttingDown ? ['shutting down'] : []), degraded: () => runtime.degraded() },
    });
    certs.attach((pair) => (app.server as unknown as HttpsServer).setSecureContext(tlsSecureContextOptions(pair)));
    const metricsApp = buildMetricsServer({
      metrics,
      log,
      report: { report: async () => (persister ? persister.merged() : report.snapshot()) },
      // The page flags only what the current policy does not allow, with each registry's settings.
      context: () => {
        const config = runtime.config.current();
        return { registries: config.registries, allowed: allowedByPolicy(config) };
      },
    });
    // The metrics server stops after the webhook has drained (reverse order).
    runtime.add({ name: 'metrics server', start: async () => void (await metricsApp.listen({ host: opts.metricsHost, port: opts.metricsPort })), stop: () => metricsApp.close() });
    const closeWebhook = once(() => app.close());
    runtime.add({ name: 'webhook server', start: async () => void (await app.listen({ host: opts.host, port: opts.port })), stop: closeWebhook });
    await runtime.start();
    const url = `https://${hostForUrl(opts.host)}:${portOf(app)}`;
    const metricsUrl = `http://${hostForUrl(opts.metricsHost)}:${portOf(metricsApp)}`;
    log.info({ url: `${url}/mutate`, metrics: `${metricsUrl}/metrics`, mode: initial.config.mode, rules: initial.config.ruleSet.rules.length }, 'mirrorgate listening');

    let closing: Promise<void> | undefined;
    const shutdown = (reason: string): Promise<void> => {
      closing ??= (async () => {
        shuttingDown = true;
        log.info({ reason, delayMs: opts.shutdownDelayMs, drainTimeoutMs: drainTimeoutMs(opts) }, 'shutting down: not ready, still serving while endpoints update');
        // No reload or certificate swap while draining.
        watcher.stop();
        certs.stop();
        const outcome = await drain(
          {
            // close() stops accepting and waits for in-flight requests; idle keep-alive
            // connections are closed (forceCloseConnections: 'idle').
            close: closeWebhook,
            cutAll: () => (app.server as unknown as HttpsServer).closeAllConnections(),
            flush: persister && stopPersister ? (final) => (final ? stopPersister() : persister.flush(true)) : undefined,
            // Everything else, in reverse start order (the final report write is done).
            after: () => runtime.stop(),
          },
          { delayMs: opts.shutdownDelayMs, drainTimeoutMs: drainTimeoutMs(opts), flushTimeoutMs: SHUTDOWN_STEP_TIMEOUT_MS, sleep: opts.shutdownSleep ?? ((ms) => sleepOn(timers, ms)), log },
        );
        log.info({ cut: outcome.cut, reportWriteFailures: outcome.flushFailures }, 'shut down');
      })();
      return closing;
    };
    return { app, metricsApp, log, metrics, url, metricsUrl, caFile: certs.caFile, kube, report, shutdown };
  }

  /** Where the serving certificate comes from: the cluster (--manage-certs), files, or made here. */
  async function certificateSource(kube: KubeRuntime | undefined, k8s: KubeModules | undefined): Promise<ManagedSource | FileSource | GeneratedSource> {
    // node-forge (about 12 MB resident) only when certificates must be made here.
    if (opts.manageCerts) {
      if (kube === undefined || k8s === undefined) throw new Error('--manage-certs needs Kubernetes API access (drop --no-kube)');
      const { kubeCertStore, reconcile, recordServed } = k8s.certRotation;
      const { defaultServingNames } = await import('./certs.js');
      const store = kubeCertStore(kube.client.config, { namespace: opts.namespace, webhook: opts.webhookName ?? 'mirrorgate' });
      const intervalMs = opts.certCheckIntervalMs ?? DEFAULT_CERT_CHECK_INTERVAL_MS;
      const names = defaultServingNames(opts.serviceName, opts.namespace);
      const replica = opts.replica;
      return {
        kind: 'managed',
        where: `Secret ${opts.namespace}/mirrorgate-tls`,
        intervalMs,
        reconcile: () => reconcile(store, () => rotationPolicy(wallClock(), names, intervalMs), log),
        read: async () => {
          const s = await store.readSecret();
          const cert = s?.data['tls.crt'];
          const key = s?.data['tls.key'];
          return cert && key ? { pair: { cert, key }, ca: s.data['ca.crt'] ?? '' } : undefined;
        },
        recordServed: replica === undefined ? undefined : (pem) => recordServed(store, replica, pem, wallClock()),
      };
    }
    if (opts.tlsCert !== undefined && opts.tlsKey !== undefined) return { kind: 'files', files: { certFile: opts.tlsCert, keyFile: opts.tlsKey } };
    return {
      kind: 'generated',
      certsDir: opts.certsDir,
      make: async () => {
        const { defaultServingNames, ensureCertificates } = await import('./certs.js');
        const made = await ensureCertificates(opts.certsDir, defaultServingNames(opts.serviceName, opts.namespace));
        return { files: { certFile: made.certFile, keyFile: made.keyFile }, caFile: made.caFile, caCert: made.caCert, created: made.created };
      },
    };
  }
}

/** `fn` once: later calls get the first call's promise. */
function once(fn: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= fn());
}

/** Bound of each report write and of the final release at shutdown. */
const SHUTDOWN_STEP_TIMEOUT_MS = 2000;
export const DEFAULT_DRAIN_TIMEOUT_MS = 15_000;

function drainTimeoutMs(opts: ServeOptions): number {
  return opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
}

async function loadKubeModules() {
  const [setup, reportStore, certRotation, secrets] = await Promise.all([
    import('./kube/setup.js'),
    import('./kube/report-store.js'),
    import('./kube/cert-rotation.js'),
    import('./kube/secrets.js'),
  ]);
  return { setup, reportStore, certRotation, secrets };
}
type KubeModules = Awaited<ReturnType<typeof loadKubeModules>>;

function portOf(app: FastifyInstance): number {
  const addr = app.server.address();
  return typeof addr === 'object' && addr !== null ? addr.port : 0;
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

/** The policy's verdict on a whole registry: allowed when it allows any repository there (a bare host entry). */
function allowedByPolicy(config: Config): ((registry: string) => boolean) | undefined {
  const policy = config.policy;
  if (policy === undefined) return undefined;
  const asRef = (registry: string): ImageReference => ({ registry, repository: '', tag: undefined, digest: undefined, suffix: '' });
  return (registry: string) => judgeRef(policy, asRef(registry), registry).allowed;
}

/** An image pulled as it is counts as migrated when it comes from a rule's target host or an allowed registry. */
function servedAsIs(config: Config, registry: string): boolean {
  let hosts = targetHosts.get(config);
  if (hosts === undefined) {
    hosts = new Set(config.ruleSet.rules.flatMap((rule) => rule.targets.map((t) => (t.target.split('/')[0] ?? '').toLowerCase())));
    targetHosts.set(config, hosts);
  }
  if (hosts.has(registry.toLowerCase())) return true;
  return allowedByPolicy(config)?.(registry) ?? false;
}

/** Target hosts per loaded config, computed once per config rather than per admission. */
const targetHosts = new WeakMap<Config, Set<string>>();
