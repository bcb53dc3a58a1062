/** Builds the webhook's fastify app with real collaborators for inject() tests. */
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { validateConfig, type Config } from '../../src/config/schema.js';
import type { ConfigSource } from '../../src/config/watch.js';
import { createLogger, type Logger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { buildServer } from '../../src/server/app.js';
import type { MutateDeps } from '../../src/server/mutate-route.js';

/** Collects pino's JSON lines. */
export class LogSink extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') this.lines.push(JSON.parse(line) as Record<string, unknown>);
    cb();
  }
  find(msg: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.msg === msg);
  }
}

export const EXAMPLE = {
  mode: 'enforce',
  rules: [
    { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
    { from: 'quay.io', to: 'mirror.example.com/quay' },
  ],
  policy: { allowedRegistries: ['mirror.example.com', 'registry.k8s.io'] },
  pullSecrets: [{ name: 'mirror-pull', registries: ['mirror.example.com'] }],
};

export interface TestApp {
  app: FastifyInstance;
  metrics: Metrics;
  logs: LogSink;
  log: Logger;
  config: { value: Config };
}

export function testApp(raw: unknown = EXAMPLE, extra: Partial<MutateDeps> & { ready?: () => string[] } = {}): TestApp {
  const logs = new LogSink();
  const log = createLogger({ level: 'debug', destination: logs });
  const metrics = createMetrics({ defaultMetrics: false });
  const config = { value: validateConfig(raw) };
  const source: ConfigSource = extra.config ?? { current: () => config.value };
  const app = buildServer({
    config: source,
    metrics,
    log,
    now: () => performance.now(),
    readiness: { notReadyReasons: extra.ready ?? (() => []), degraded: () => [] },
    namespaces: extra.namespaces,
    nodes: extra.nodes,
    verifier: extra.verifier,
    observers: extra.observers,
    serviceAccounts: extra.serviceAccounts,
  });
  return { app, metrics, logs, log, config };
}

let seq = 0;

/** An AdmissionReview for a Pod, with a fresh uid. */
export function review(opts: {
  operation?: string;
  object?: unknown;
  oldObject?: unknown;
  subResource?: string;
  namespace?: string;
  dryRun?: boolean;
  kind?: { group: string; version: string; kind: string };
  resource?: string;
} = {}): { uid: string; body: Record<string, unknown> } {
  const uid = `00000000-0000-4000-8000-${String(++seq).padStart(12, '0')}`;
  return {
    uid,
    body: {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid,
        kind: opts.kind ?? { group: '', version: 'v1', kind: 'Pod' },
        resource: { group: '', version: 'v1', resource: opts.resource ?? 'pods' },
        subResource: opts.subResource,
        namespace: opts.namespace ?? 'team-a',
        operation: opts.operation ?? 'CREATE',
        userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
        object: opts.object ?? { apiVersion: 'v1', kind: 'Pod', metadata: { generateName: 'web-' }, spec: { containers: [{ name: 'web', image: 'nginx:1.14.2' }] } },
        oldObject: opts.oldObject ?? null,
        dryRun: opts.dryRun ?? false,
      },
    },
  };
}

/** Decode the base64 JSONPatch of an answer. */
export function patchOf(response: { patch?: string }): unknown[] | undefined {
  return response.patch === undefined ? undefined : (JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) as unknown[]);
}
