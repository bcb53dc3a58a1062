/**
 * `serve` with managed certificates (`--manage-certs`) when the API is down at start:
 * an outage at a chosen moment, against the loopback imitation (test/support/kube-api.ts).
 * The plain cases run against the real API server in test/real/manage-certs.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { KEYS, TLS_SECRET } from '../../src/core/rotation.js';
import { serve, type Running } from '../../src/serve.js';
import { LogSink } from '../support/app.js';
import { kubeconfigFor, startKubeApi, type KubeApi } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';
import { serveOptions } from '../support/serve.js';

const NS = 'mirrorgate';
const WEBHOOK = 'mirrorgate';
const REPLICA = 'mirrorgate-7c9d6b5f4-q2x8z';
const CONFIG = `mode: enforce
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
`;

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ api: KubeApi; dir: string; kubeconfig: string }> {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: NS } });
  api.put({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: WEBHOOK },
    webhooks: [{ name: 'pods.mirrorgate.io', admissionReviewVersions: ['v1'], sideEffects: 'NoneOnDryRun', clientConfig: { service: { name: 'mirrorgate', namespace: NS, path: '/mutate' } } }],
  });
  const dir = await mkdtemp(join(tmpdir(), 'mg-manage-certs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  return { api, dir, kubeconfig: await kubeconfigFor(api) };
}

function start(dir: string, kubeconfig: string, logs: LogSink): Promise<Running> {
  return serve(
    serveOptions(dir, {
      namespace: NS,
      replica: REPLICA,
      manageCerts: true,
      webhookName: WEBHOOK,
      certCheckIntervalMs: 100,
      noKube: false,
      kubeconfig,
      logDestination: logs,
    }),
  );
}

const unb64 = (s: unknown): string => Buffer.from(String(s), 'base64').toString('utf8');

function caBundle(api: KubeApi): string {
  const mwc = api.get('mutatingwebhookconfigurations', undefined, WEBHOOK);
  const [hook] = (mwc?.webhooks ?? []) as { clientConfig: { caBundle?: string } }[];
  return hook?.clientConfig.caBundle === undefined ? '' : unb64(hook.clientConfig.caBundle);
}

function secretData(api: KubeApi): Record<string, string> {
  const s = api.get('secrets', NS, TLS_SECRET);
  return Object.fromEntries(Object.entries((s?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, unb64(v)]));
}

/**
 * GET over TLS trusting `ca` only, as the API server trusts the caBundle: the serving
 * certificate seen (on a new connection; Node does not expose it on a reused one), the
 * socket and whether it was reused.
 */
function getTls(url: string, ca: string, agent: Agent | false): Promise<{ status: number; cert: string; socket: unknown; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpsRequest({ hostname: u.hostname, port: u.port, path: u.pathname, ca, agent, servername: 'mirrorgate.mirrorgate.svc' }, (res) => {
      const cert = (res.socket as TLSSocket).getPeerX509Certificate()?.toString() ?? '';
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cert, socket: res.socket, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.end();
  });
}


const samePem = (a: string, b: string): boolean => new X509Certificate(a).fingerprint256 === new X509Certificate(b).fingerprint256;

// Imitation only: an API server that is down at start and comes up later (an outage).
t.test('API down at start: serve retries and starts when the API comes up', async (t) => {
  const { api, dir, kubeconfig } = await setup(t);
  await api.stop();
  const logs = new LogSink();
  const starting = start(dir, kubeconfig, logs);
  await waitFor('a failed attempt', () => logs.find('certificates: cannot reach the Secret or the webhook configuration yet').length > 0, 30_000); // the first attempt loads the Kubernetes modules lazily
  t.equal(api.get('secrets', NS, TLS_SECRET), undefined, 'nothing created while the API is down');
  await api.start();
  const running = await starting;
  t.teardown(() => running.shutdown('test over'));

  const bundle = caBundle(api);
  t.ok(samePem(bundle, secretData(api)[KEYS.ca]!));
  const res = await getTls(`${running.url}/healthz`, bundle, false);
  t.equal(res.status, 200);
  t.ok(samePem(res.cert, secretData(api)[KEYS.cert]!));
});
