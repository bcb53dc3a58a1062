/**
 * Composition root of `mirrorgate serve`: config, logger, metrics, certificates and
 * the two servers, wired together; SIGTERM drains and exits 0.
 */
import type { FastifyInstance } from 'fastify';
import type { Server as HttpsServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import { defaultServingNames, ensureCertificates } from './certs.js';
import { ConfigWatcher, loadConfigFile } from './config/watch.js';
import type { Config } from './config/schema.js';
import { createLogger, type Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { KubeRuntime } from './kube/setup.js';
import { buildServer } from './server/app.js';
import { buildMetricsServer } from './server/metrics-route.js';
import { readTlsFiles, tlsSecureContextOptions, tlsServerOptions, watchTlsFiles, type TlsFiles } from './server/tls.js';
import type { SecretReader } from './verify/endpoints.js';
import { Verification } from './verify/setup.js';

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
  /** How long to keep serving after SIGTERM while endpoints are updated. */
  readonly shutdownDelayMs: number;
  readonly noKube: boolean;
  readonly kubeconfig: string | undefined;
  /** Reads dockerconfigjson Secrets for `registries.*.auth.secret`; undefined with `--no-kube`. */
  readonly secretReader?: SecretReader | undefined;
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
  /** Readiness false, wait the shutdown delay, drain, close. Idempotent. */
  shutdown(reason: string): Promise<void>;
}

/** Start the webhook. Throws ConfigError (exit 2) or a startup error (exit 1). */
export async function serve(opts: ServeOptions): Promise<Running> {
  const initial = await loadConfigFile(opts.configPath);
  const log = createLogger({ level: initial.config.logLevel, destination: opts.logDestination });
  const metrics = createMetrics();
  const now = (): number => performance.now();
  // Registry client and verifier, when some rule says `verify: true`; a missing CA or auth
  // file is a config error, as at reload (where the previous settings then stay).
  const verification = await Verification.start(initial.config, { metrics, log, now, secrets: opts.secretReader });

  // Kubernetes caches start in the background: an unreachable API degrades, never blocks.
  const kube = opts.noKube ? undefined : new KubeRuntime({ kubeconfig: opts.kubeconfig, pullSecrets: initial.config.file.pullSecrets, log, metrics });

  const watcher = new ConfigWatcher(opts.configPath, initial, {
    onReload: (config: Config) => {
      metrics.configReloads.inc({ result: 'success' });
      log.level = config.logLevel;
      log.info({ path: opts.configPath, mode: config.mode, rules: config.ruleSet.rules.length }, 'config reloaded');
      kube?.configure(config.file.pullSecrets);
      void verification.reload(config);
    },
    onReject: (err: Error) => {
      metrics.configReloads.inc({ result: 'failure' });
      log.error({ path: opts.configPath, error: err.message }, 'config rejected; the last good config stays in force');
    },
  }).start();

  let tlsFiles: TlsFiles;
  let caFile: string | undefined;
  if (opts.tlsCert !== undefined && opts.tlsKey !== undefined) {
    tlsFiles = { certFile: opts.tlsCert, keyFile: opts.tlsKey };
  } else {
    const made = await ensureCertificates(opts.certsDir, defaultServingNames(opts.serviceName, opts.namespace));
    tlsFiles = { certFile: made.certFile, keyFile: made.keyFile };
    caFile = made.caFile;
    log.info({ certsDir: opts.certsDir, created: made.created }, made.created ? 'created self-signed certificates' : 'reusing certificates');
  }
  const pair = await readTlsFiles(tlsFiles);

  let shuttingDown = false;
  const app = buildServer({
    config: watcher,
    metrics,
    log,
    now,
    https: tlsServerOptions(pair),
    namespaceMode: kube?.namespaceMode,
    observers: kube
      ? [{ observe: ({ request, evaluation }) => kube.afterAdmission({ namespace: request.namespace, dryRun: request.dryRun, patched: evaluation.response.patch !== undefined, operations: evaluation.plan?.operations }) }]
      : undefined,
    verifier: verification.verifier,
    readiness: {
      notReadyReasons: () => (shuttingDown ? ['shutting down'] : []),
      degraded: () => (kube ? kube.degraded() : ['no Kubernetes API access (--no-kube)']),
    },
  });
  const tlsWatch = watchTlsFiles(tlsFiles, {
    onReload: (next) => {
      try {
        // Full options, not just {cert, key}: setSecureContext resets whatever is not
        // passed, TLS 1.2 minimum included.
        (app.server as unknown as HttpsServer).setSecureContext(tlsSecureContextOptions(next));
        log.info({ certFile: tlsFiles.certFile }, 'serving certificate reloaded');
      } catch (err) {
        log.error({ err }, 'serving certificate reload failed; keeping the current one');
      }
    },
    onError: (err) => log.error({ error: err.message }, 'serving certificate files invalid; keeping the current one'),
  }, { initial: pair });
  const metricsApp = buildMetricsServer({ metrics, log });

  await app.listen({ host: opts.host, port: opts.port });
  await metricsApp.listen({ host: opts.metricsHost, port: opts.metricsPort });
  const url = `https://${hostForUrl(opts.host)}:${portOf(app)}`;
  const metricsUrl = `http://${hostForUrl(opts.metricsHost)}:${portOf(metricsApp)}`;
  log.info({ url: `${url}/mutate`, metrics: `${metricsUrl}/metrics`, mode: initial.config.mode, rules: initial.config.ruleSet.rules.length }, 'mirrorgate listening');

  let closing: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    closing ??= (async () => {
      shuttingDown = true;
      log.info({ reason, delayMs: opts.shutdownDelayMs }, 'shutting down: not ready, still serving while endpoints update');
      await new Promise((r) => setTimeout(r, opts.shutdownDelayMs));
      watcher.stop();
      tlsWatch.stop();
      // close() stops accepting and waits for in-flight requests; idle keep-alive
      // connections are closed (forceCloseConnections: 'idle').
      await app.close();
      await metricsApp.close();
      await kube?.stop();
      verification.close();
      log.info('shut down');
    })();
    return closing;
  };
  return { app, metricsApp, log, metrics, url, metricsUrl, caFile, kube, shutdown };
}

function portOf(app: FastifyInstance): number {
  const addr = app.server.address();
  return typeof addr === 'object' && addr !== null ? addr.port : 0;
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}
