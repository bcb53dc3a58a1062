/**
 * `serve` with managed certificates (`--manage-certs`), in-process against the loopback
 * Kubernetes API: the Secret and the caBundle are created, TLS is served with what the
 * Secret holds, a replaced serving certificate is picked up by new connections while
 * keep-alive connections go on, the served annotation and the expiry metric follow, and
 * an API that is down at start only delays the start.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { createServingCert, defaultServingNames } from '../../src/certs.js';
import { fingerprint, KEYS, servedKey, TLS_SECRET } from '../../src/kube/cert-rotation.js';
import { serve, type Running } from '../../src/serve.js';
import { LogSink } from '../support/app.js';
import { getText } from '../support/http.js';
import { kubeconfigFor, startKubeApi, waitFor, type KubeApi } from '../support/kube-api.js';
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

async function servingExpiryMetric(running: Running): Promise<number | undefined> {
  const m = /^mirrorgate_certificate_expiry_timestamp_seconds\{certificate="serving"\} (\d+(?:\.\d+)?)$/m.exec(await getText(`${running.metricsUrl}/metrics`));
  return m ? Number(m[1]) : undefined;
}

const samePem = (a: string, b: string): boolean => new X509Certificate(a).fingerprint256 === new X509Certificate(b).fingerprint256;

t.test('creates the Secret and caBundle, serves it, and follows a replaced serving certificate', async (t) => {
  const { api, dir, kubeconfig } = await setup(t);
  const logs = new LogSink();
  const running = await start(dir, kubeconfig, logs);
  t.teardown(() => running.shutdown('test over'));

  const data = secretData(api);
  t.equal(api.get('secrets', NS, TLS_SECRET)?.type, 'kubernetes.io/tls');
  const bundle = caBundle(api);
  t.ok(samePem(bundle, data[KEYS.ca]!), 'the caBundle holds the CA of the Secret');

  // A client that trusts only the caBundle, for the service name the API server calls.
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: bundle });
  t.teardown(() => agent.destroy());
  const first = await getTls(`${running.url}/healthz`, bundle, agent);
  t.equal(first.status, 200);
  t.ok(samePem(first.cert, data[KEYS.cert]!), 'serves the certificate of the Secret');

  t.equal(await servingExpiryMetric(running), Date.parse(new X509Certificate(data[KEYS.cert]!).validTo) / 1000, 'expiry metric matches the certificate');
  const served = api.get('secrets', NS, TLS_SECRET)?.metadata.annotations?.[servedKey(REPLICA)];
  t.match(served, new RegExp(`^${fingerprint(data[KEYS.cert]!)} \\d{4}-`), 'served annotation recorded');

  // Someone (another replica, an operator) renews the serving certificate in the Secret.
  const renewed = createServingCert({ cert: data[KEYS.ca]!, key: data[KEYS.caKey]! }, defaultServingNames('mirrorgate', NS), { days: 200 });
  const secret = api.get('secrets', NS, TLS_SECRET)!;
  const secretMap = secret.data as Record<string, string>;
  api.put({ ...secret, data: { ...secretMap, [KEYS.cert]: Buffer.from(renewed.cert).toString('base64'), [KEYS.key]: Buffer.from(renewed.key).toString('base64') } });

  await waitFor('new connections see the renewed certificate', async () => samePem((await getTls(`${running.url}/healthz`, bundle, false)).cert, renewed.cert));
  const old = await getTls(`${running.url}/healthz`, bundle, agent);
  t.equal(old.status, 200, 'the keep-alive connection still works');
  t.ok(old.reused && old.socket === first.socket, 'on the connection opened with the first certificate');
  t.ok(samePem(secretData(api)[KEYS.cert]!, renewed.cert), 'the renewed certificate is accepted as is, not replaced');

  const expected = Date.parse(new X509Certificate(renewed.cert).validTo) / 1000;
  await waitFor('expiry metric follows', async () => (await servingExpiryMetric(running)) === expected);
  await waitFor('served annotation follows', () => api.get('secrets', NS, TLS_SECRET)?.metadata.annotations?.[servedKey(REPLICA)]?.startsWith(fingerprint(renewed.cert)));
  t.equal(logs.find('serving certificate reloaded').length, 1);

  const ready = await running.app.inject({ method: 'GET', url: '/readyz' });
  t.notMatch(ready.json<{ degraded: string[] }>().degraded.join('\n'), /certificates/, 'certificates not reported degraded');
});

t.test('a serving certificate put beside the wrong key is replaced, never served nor recorded', async (t) => {
  const { api, dir, kubeconfig } = await setup(t);
  const logs = new LogSink();
  const running = await start(dir, kubeconfig, logs);
  t.teardown(() => running.shutdown('test over'));
  const data = secretData(api);
  const bundle = caBundle(api);

  // A valid certificate with a key that is not its own: no TLS context can be built from it.
  const broken = createServingCert({ cert: data[KEYS.ca]!, key: data[KEYS.caKey]! }, defaultServingNames('mirrorgate', NS), { days: 200 });
  const secret = api.get('secrets', NS, TLS_SECRET)!;
  api.put({ ...secret, data: { ...(secret.data as Record<string, string>), [KEYS.cert]: Buffer.from(broken.cert).toString('base64') } });

  const fresh = await waitFor('a new pair issued', async () => {
    const cert = (await getTls(`${running.url}/healthz`, bundle, false)).cert;
    return !samePem(cert, data[KEYS.cert]!) && cert;
  });
  t.notOk(samePem(fresh, broken.cert), 'the broken certificate was never served');
  const now = secretData(api);
  t.ok(new X509Certificate(now[KEYS.cert]!).checkPrivateKey(createPrivateKey(now[KEYS.key]!)), 'the Secret holds a matching pair again');
  t.ok(samePem(fresh, now[KEYS.cert]!));
  t.match(logs.find('certificates: step applied'), [{ step: 'create' }, { step: 'publish-bundle' }, { step: 'renew-serving', reason: /key/ }]);
  await waitFor('served annotation follows', () => api.get('secrets', NS, TLS_SECRET)?.metadata.annotations?.[servedKey(REPLICA)]?.startsWith(fingerprint(now[KEYS.cert]!)));
});

// Imitation only: an API server that is down at start and comes up later (an outage).
t.test('API down at start: serve retries and starts when the API comes up', async (t) => {
  const { api, dir, kubeconfig } = await setup(t);
  await api.stop();
  const logs = new LogSink();
  const starting = start(dir, kubeconfig, logs);
  await waitFor('a failed attempt', () => logs.find('certificates: cannot reach the Secret or the webhook configuration yet').length > 0);
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
