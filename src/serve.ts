/**
 * Composition root of `mirrorgate serve`: config, logger, metrics, Kubernetes caches,
 * registry verification, the report and its persistence, background copies,
 * certificates and the two servers, wired together; SIGTERM drains and exits 0.
 */
import type { FastifyInstance } from 'fastify';
import { X509Certificate } from 'node:crypto';
import type { Server as HttpsServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import { ConfigWatcher, loadConfigFile } from './config/watch.js';
import type { Config } from './config/schema.js';
import { formatReference } from './core/reference.js';
import { copyImage, BlobLocations } from './copy/copier.js';
import { copyOnMissObserver } from './copy/copy-on-miss.js';
import { CopyQueue } from './copy/queue.js';
import type { RotationPolicy } from './kube/cert-rotation.js';
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
import type { AdmissionObserver, SecretReader } from './ports.js';
import { readTlsFiles, tlsSecureContextOptions, tlsServerOptions, watchTlsFiles, type TlsFiles, type TlsPair } from './server/tls.js';
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
  const stops: (() => unknown)[] = [];
  try {
    return await start();
  } catch (err) {
    // Whatever started before the failure must not keep the process alive.
    for (const stop of stops.reverse()) await stop();
    throw err;
  }

  async function start(): Promise<Running> {
    // @kubernetes/client-node costs ~75 MB of memory to load: only when there is a cluster.
    const k8s = opts.noKube ? undefined : await loadKubeModules();
    // Kubernetes caches start in the background: an unreachable API degrades, never blocks.
    const kube = k8s === undefined
      ? undefined
      : new k8s.setup.KubeRuntime({ kubeconfig: opts.kubeconfig, pullSecrets: initial.config.file.pullSecrets, log, metrics, serviceAccountWaitMs: initial.config.identity.lookup.waitMs });
    if (kube) stops.push(() => kube.stop());
    const secrets = opts.secretReader ?? (kube && k8s ? k8s.secrets.dockerConfigReader(kube.client.core, opts.namespace) : undefined);

    // Registry client and verifier when some rule says `verify: true`; a missing CA or auth
    // file is a config error, as at reload (where the previous settings then stay).
    const cloud = new CloudSources({ env: opts.env ?? {}, now, log });
    const verification = await Verification.start(initial.config, { metrics, log, now, secrets, cloud });
    stops.push(() => verification.close());

    // The report: every decision, persisted in the cluster when there is one.
    // The trend counts an image pulled as it is as done when it comes from a rule's target
    // host (the mirror) or a registry the current policy allows, as the page does.
    const report = new ReportCache(wallClock, initial.config.mode, {}, (registry) => servedAsIs(watcher.current(), registry));
    const persister: ReportPersister | undefined =
      kube && k8s && opts.replica
        ? new k8s.reportStore.ReportPersister({ store: k8s.reportStore.configMapStore(kube.client.config, opts.namespace), cache: report, replica: opts.replica, now: wallClock, log, flushSeconds: initial.config.report.flushSeconds })
        : undefined;
    await persister?.start();
    if (persister) stops.push(() => persister.stop());

    // Background copies of images found missing from the mirror (rules with copyOnMiss).
    const copyClient = new RegistryClient({ now, log });
    stops.push(() => copyClient.close());
    const locations = new BlobLocations();
    const copies = new CopyQueue({
      copy: (source, target, signal) => copyImage(source, target, { client: copyClient, endpoint: (h) => endpointFor(verification.endpoints, h), locations, signal, log }),
      metrics,
      log,
      onOutcome: (o) => {
        report.recordCopy(o.source.registry, formatReference(o.source), o.ok);
        // The image is in the mirror now: the next pod is rewritten at once rather than
        // when the cached "absent" answer expires.
        if (o.ok) verification.forget(formatReference(o.target));
      },
    });
    stops.push(() => copies.close());

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
          kube.afterAdmission({ namespace: request.namespace, dryRun: request.dryRun, patched: evaluation.response.patch !== undefined, operations: evaluation.plan?.operations }),
      });
    }

    const watcher = new ConfigWatcher(opts.configPath, initial, {
      onReload: (config: Config) => {
        metrics.configReloads.inc({ result: 'success' });
        log.level = config.logLevel;
        log.info({ path: opts.configPath, mode: config.mode, rules: config.ruleSet.rules.length }, 'config reloaded');
        kube?.configure(config.file.pullSecrets);
        report.setMode(config.mode);
        void verification.reload(config);
      },
      onReject: (err: Error) => {
        metrics.configReloads.inc({ result: 'failure' });
        log.error({ path: opts.configPath, error: err.message }, 'config rejected; the last good config stays in force');
      },
    }).start();
    stops.push(() => watcher.stop());

    const certs = await certificates(kube, k8s);
    stops.push(() => certs.stop());

    let shuttingDown = false;
    const app = buildServer({
      config: watcher,
      metrics,
      log,
      now,
      https: tlsServerOptions(certs.initial),
      namespaces: kube ? { mode: kube.namespaceMode, labels: (ns: string) => kube.namespaces.labels(ns) } : undefined,
      nodes: kube?.nodes,
      serviceAccounts: kube?.serviceAccounts,
      observers,
      verifier: verification.verifier,
      draining: () => shuttingDown,
      readiness: {
        notReadyReasons: () => (shuttingDown ? ['shutting down'] : []),
        degraded: () => [
          ...(kube ? kube.degraded() : ['no Kubernetes API access (--no-kube): no identity wiring, namespace modes or report persistence']),
          ...(persister?.lastError ? [`report not persisted: ${persister.lastError}`] : []),
          ...certs.degraded(),
        ],
      },
    });
    certs.attach((pair) => (app.server as unknown as HttpsServer).setSecureContext(tlsSecureContextOptions(pair)));
    const metricsApp = buildMetricsServer({
      metrics,
      log,
      report: { report: async () => (persister ? persister.merged() : report.snapshot()) },
      // The page flags only what the current policy does not allow, with each registry's settings.
      context: () => {
        const config = watcher.current();
        return { registries: config.registries, allowed: allowedByPolicy(config) };
      },
    });

    await app.listen({ host: opts.host, port: opts.port });
    stops.push(() => app.close());
    await metricsApp.listen({ host: opts.metricsHost, port: opts.metricsPort });
    stops.push(() => metricsApp.close());
    const url = `https://${hostForUrl(opts.host)}:${portOf(app)}`;
    const metricsUrl = `http://${hostForUrl(opts.metricsHost)}:${portOf(metricsApp)}`;
    log.info({ url: `${url}/mutate`, metrics: `${metricsUrl}/metrics`, mode: initial.config.mode, rules: initial.config.ruleSet.rules.length }, 'mirrorgate listening');

    let closing: Promise<void> | undefined;
    const shutdown = (reason: string): Promise<void> => {
      closing ??= (async () => {
        shuttingDown = true;
        log.info({ reason, delayMs: opts.shutdownDelayMs, drainTimeoutMs: drainTimeoutMs(opts) }, 'shutting down: not ready, still serving while endpoints update');
        watcher.stop();
        certs.stop();
        const outcome = await drain(
          {
            // close() stops accepting and waits for in-flight requests; idle keep-alive
            // connections are closed (forceCloseConnections: 'idle').
            close: () => app.close(),
            cutAll: () => (app.server as unknown as HttpsServer).closeAllConnections(),
            flush: persister ? (final) => (final ? persister.stop() : persister.flush(true)) : undefined,
            after: async () => {
              await metricsApp.close();
              await copies.close();
              await kube?.stop();
              verification.close();
              copyClient.close();
            },
          },
          { delayMs: opts.shutdownDelayMs, drainTimeoutMs: drainTimeoutMs(opts), flushTimeoutMs: SHUTDOWN_STEP_TIMEOUT_MS, sleep: opts.shutdownSleep ?? sleep, log },
        );
        log.info({ cut: outcome.cut, reportWriteFailures: outcome.flushFailures }, 'shut down');
      })();
      return closing;
    };
    return { app, metricsApp, log, metrics, url, metricsUrl, caFile: certs.caFile, kube, report, shutdown };
  }

  /** Where the serving certificate comes from, and how it is kept current. */
  async function certificates(kube: KubeRuntime | undefined, k8s: KubeModules | undefined): Promise<{
    initial: TlsPair;
    caFile: string | undefined;
    attach(apply: (pair: TlsPair) => void): void;
    degraded(): string[];
    stop(): void;
  }> {
    const setExpiry = (pem: string, which: 'serving' | 'ca'): void => {
      try {
        metrics.certificateExpiry.set({ certificate: which }, Date.parse(new X509Certificate(pem).validTo) / 1000);
      } catch {
        // Unreadable: the TLS loader reports it.
      }
    };
    let apply: (pair: TlsPair) => void = () => undefined;
    /** Swap the TLS context; false (and the current one kept) when the pair is refused. */
    const reload = (pair: TlsPair, what: string): boolean => {
      try {
        apply(pair);
        setExpiry(pair.cert, 'serving');
        log.info({ source: what }, 'serving certificate reloaded');
        return true;
      } catch (err) {
        log.error({ err }, 'serving certificate reload failed; keeping the current one');
        return false;
      }
    };

    if (opts.manageCerts) {
      if (kube === undefined || k8s === undefined) throw new Error('--manage-certs needs Kubernetes API access (drop --no-kube)');
      const { kubeCertStore, reconcile, recordServed } = k8s.certRotation;
      const { defaultServingNames } = await import('./certs.js');
      const store = kubeCertStore(kube.client.config, { namespace: opts.namespace, webhook: opts.webhookName ?? 'mirrorgate' });
      const policy = (): RotationPolicy => ({
        now: wallClock(),
        names: defaultServingNames(opts.serviceName, opts.namespace),
        renewBeforeDays: 30,
        caRenewBeforeDays: 90,
        overlapMs: 10 * 60_000,
        liveWindowMs: 3 * (opts.certCheckIntervalMs ?? 10 * 60_000),
      });
      const readPair = async (): Promise<{ pair: TlsPair; ca: string } | undefined> => {
        const s = await store.readSecret();
        const cert = s?.data['tls.crt'];
        const key = s?.data['tls.key'];
        return cert && key ? { pair: { cert, key }, ca: s.data['ca.crt'] ?? '' } : undefined;
      };
      // The first reconcile must succeed before there is anything to serve: retry with backoff.
      let first: { pair: TlsPair; ca: string } | undefined;
      for (let attempt = 1; first === undefined; attempt++) {
        try {
          await reconcile(store, policy, log);
          first = await readPair();
          // Every write lost a race (bounded steps): not an error, but nothing to serve yet either.
          if (first === undefined) throw new Error(`no serving certificate in Secret ${opts.namespace}/mirrorgate-tls yet`);
        } catch (err) {
          const delay = Math.min(30_000, 500 * 2 ** attempt);
          log.warn({ error: (err as Error).message, retryInMs: delay }, 'certificates: cannot reach the Secret or the webhook configuration yet');
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      let served = first.pair;
      setExpiry(served.cert, 'serving');
      setExpiry(first.ca, 'ca');
      let lastError: string | undefined;
      let ticking = false;
      const tick = async (): Promise<void> => {
        // A slow API must not stack reconciles on top of each other.
        if (ticking) return;
        ticking = true;
        try {
          await reconcile(store, policy, log);
          const current = await readPair();
          // What is recorded as served must be what the listener really uses.
          if (current && current.pair.cert !== served.cert && reload(current.pair, 'Secret mirrorgate-tls')) served = current.pair;
          if (current) setExpiry(current.ca, 'ca');
          if (opts.replica) await recordServed(store, opts.replica, served.cert, wallClock());
          lastError = undefined;
        } catch (err) {
          lastError = (err as Error).message;
          log.warn({ error: lastError }, 'certificates: reconcile failed; will retry');
        } finally {
          ticking = false;
        }
      };
      const timer = setInterval(() => void tick(), opts.certCheckIntervalMs ?? 10 * 60_000);
      timer.unref();
      if (opts.replica) await recordServed(store, opts.replica, served.cert, wallClock()).catch(() => undefined);
      return {
        initial: served,
        caFile: undefined,
        attach: (fn) => (apply = fn),
        degraded: () => (lastError ? [`certificates not reconciled: ${lastError}`] : []),
        stop: () => clearInterval(timer),
      };
    }

    let tlsFiles: TlsFiles;
    let caFile: string | undefined;
    if (opts.tlsCert !== undefined && opts.tlsKey !== undefined) {
      tlsFiles = { certFile: opts.tlsCert, keyFile: opts.tlsKey };
    } else {
      // node-forge (about 12 MB resident) only when certificates must be made here.
      const { defaultServingNames, ensureCertificates } = await import('./certs.js');
      const made = await ensureCertificates(opts.certsDir, defaultServingNames(opts.serviceName, opts.namespace));
      tlsFiles = { certFile: made.certFile, keyFile: made.keyFile };
      caFile = made.caFile;
      setExpiry(made.caCert, 'ca');
      log.info({ certsDir: opts.certsDir, created: made.created }, made.created ? 'created self-signed certificates' : 'reusing certificates');
    }
    const pair = await readTlsFiles(tlsFiles);
    setExpiry(pair.cert, 'serving');
    const watch = watchTlsFiles(
      tlsFiles,
      {
        onReload: (next) => reload(next, tlsFiles.certFile),
        onError: (err) => log.error({ error: err.message }, 'serving certificate files invalid; keeping the current one'),
      },
      { initial: pair },
    );
    return { initial: pair, caFile, attach: (fn) => (apply = fn), degraded: () => [], stop: () => watch.stop() };
  }
}

/** Bound of each report write and of the final release at shutdown. */
const SHUTDOWN_STEP_TIMEOUT_MS = 2000;
export const DEFAULT_DRAIN_TIMEOUT_MS = 15_000;

function drainTimeoutMs(opts: ServeOptions): number {
  return opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
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
