/**
 * The certificate store against the loopback imitation of the API (test/support/kube-api.ts),
 * for what the real server cannot be made to show on demand (a caBundle PATCH held back
 * while someone else edits the configuration; a 403 or a 422 answered on demand), each test
 * saying which, and the imitation's answer to a failed JSON-patch test, checked against the
 * real server's in test/real/cert-store.test.ts, where the plain cases run.
 */
import t from 'tap';
import { defaultServingNames } from '../../src/certs.js';
import { loadKubeClient } from '../../src/kube/client.js';
import { reconcile } from '../../src/kube/cert-rotation.js';
import { KEYS, splitPem, TLS_SECRET, type RotationPolicy } from '../../src/core/rotation.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { kubeconfigFor, startKubeApi, type KubeApi, type KubeObject } from '../support/kube-api.js';
import { kubeCertStore } from '../../src/kube/cert-rotation.js';

const NS = 'mirrorgate';
const WEBHOOK = 'mirrorgate';
const names = defaultServingNames('mirrorgate', NS);
const log = createLogger({ level: 'warn', destination: new LogSink() });

function policy(now: () => Date): () => RotationPolicy {
  return () => ({ now: now(), names, renewBeforeDays: 30, caRenewBeforeDays: 90, overlapMs: 10 * 60_000, liveWindowMs: 30 * 60_000 });
}

/** A webhook configuration as the manifests declare it: two webhooks, no caBundle yet. */
function webhookConfiguration(extra: Record<string, unknown>[] = []): KubeObject {
  const webhook = (name: string): Record<string, unknown> => ({
    name,
    admissionReviewVersions: ['v1'],
    sideEffects: 'NoneOnDryRun',
    clientConfig: { service: { name: 'mirrorgate', namespace: NS, path: '/mutate', port: 443 } },
  });
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: WEBHOOK },
    webhooks: [webhook('pods.mirrorgate.io'), webhook('ephemeral.mirrorgate.io'), ...extra],
  };
}

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ api: KubeApi; store: ReturnType<typeof kubeCertStore> }> {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: NS } });
  api.put(webhookConfiguration());
  const kc = loadKubeClient({ file: await kubeconfigFor(api) }).config;
  return { api, store: kubeCertStore(kc, { namespace: NS, webhook: WEBHOOK }) };
}

const unb64 = (s: unknown): string => Buffer.from(String(s), 'base64').toString('utf8');

/** The caBundle of every webhook, decoded. */
function bundles(api: KubeApi): string[] {
  const mwc = api.get('mutatingwebhookconfigurations', undefined, WEBHOOK);
  const webhooks = (mwc?.webhooks ?? []) as { clientConfig: { caBundle?: string } }[];
  return webhooks.map((w) => (w.clientConfig.caBundle === undefined ? '' : unb64(w.clientConfig.caBundle)));
}

function secretData(api: KubeApi): Record<string, string> {
  const s = api.get('secrets', NS, TLS_SECRET);
  return Object.fromEntries(Object.entries((s?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, unb64(v)]));
}

// Imitation only: a 403 on the create, answered on demand.
t.test('a missing Secret mirrorgate may not create: an error that says to apply the manifests', async (t) => {
  const { api, store } = await setup(t);
  api.onNext({ method: 'POST', path: '/secrets', status: 403 });
  await t.rejects(reconcile(store, policy(() => new Date()), log), /Secret mirrorgate\/mirrorgate-tls is missing and mirrorgate may not create it: apply the manifests/);
});

// Imitation only: the PATCH is held back so that a concurrent change lands in between
// (a timing the real server cannot be made to show on demand).
t.test('a concurrent change of the webhook configuration fails the patch test; reconcile re-reads and retries', async (t) => {
  const { api, store } = await setup(t);
  const now = new Date();
  // Hold the first caBundle patch while someone else edits the configuration.
  const held = api.holdNext('PATCH', 'mutatingwebhookconfigurations');
  const running = reconcile(store, policy(() => now), log);
  await held.reached;
  const mwc = api.get('mutatingwebhookconfigurations', undefined, WEBHOOK)!;
  const webhooks = (mwc.webhooks as { clientConfig: Record<string, unknown> }[]).map((w) => ({ ...w, clientConfig: { ...w.clientConfig, caBundle: Buffer.from('stranger').toString('base64') } }));
  api.put({ ...mwc, metadata: { ...mwc.metadata, labels: { edited: 'by-someone-else' } }, webhooks });
  held.release();

  const result = await running;
  t.same(result.steps, ['create', 'publish-bundle']);
  const patches = api.requests.filter((r) => r.method === 'PATCH');
  t.equal(patches.length, 2, 'the first patch failed its test, the second went through');
  const after = api.get('mutatingwebhookconfigurations', undefined, WEBHOOK)!;
  t.same(after.metadata.labels, { edited: 'by-someone-else' }, 'the other writer’s change is kept');
  const ca = secretData(api)[KEYS.ca]!;
  for (const b of bundles(api)) t.same(splitPem(b), [ca.trim()], 'the stranger bundle is replaced by ours');
});

t.test('the loopback API answers a failed JSON-patch test as the real one does', async (t) => {
  const { api } = await setup(t);
  const res = await fetch(`${api.url}/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${WEBHOOK}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/json-patch+json' },
    body: JSON.stringify([
      { op: 'test', path: '/metadata/resourceVersion', value: '1' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: 'eA==' },
    ]),
  });
  t.equal(res.status, 422);
  t.match(await res.json(), {
    kind: 'Status',
    status: 'Failure',
    reason: 'Invalid',
    code: 422,
    message: 'the server rejected our request due to an error in our request',
    details: {},
  });
  t.equal(bundles(api)[0], '', 'nothing written');
});

// Imitation only: a 422 answer on demand to an update the real server would accept.
t.test('refusals that are not races surface instead of looping', async (t) => {
  t.test('a Secret the API refuses to update (422) surfaces at once', async (t) => {
    const { api, store } = await setup(t);
    api.put({ kind: 'Secret', metadata: { name: TLS_SECRET, namespace: NS }, type: 'Opaque' });
    api.onNext({ method: 'PUT', path: '/secrets', status: 422 });
    await t.rejects(reconcile(store, policy(() => new Date()), log), { code: 422 });
    t.equal(api.requests.filter((r) => r.method === 'PUT').length, 1, 'tried once');
  });
});

