/**
 * The certificate lifecycle over a Kubernetes API: `kubeCertStore` and `reconcile`
 * through the real @kubernetes/client-node code against the loopback API, for the
 * Secret `mirrorgate-tls` and the caBundle of the MutatingWebhookConfiguration.
 */
import { X509Certificate } from 'node:crypto';
import t from 'tap';
import { defaultServingNames } from '../../src/certs.js';
import { loadKubeClient } from '../../src/kube/client.js';
import { KEYS, reconcile, recordServed, SERVED_PREFIX, splitPem, TLS_SECRET, type RotationPolicy } from '../../src/kube/cert-rotation.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { kubeconfigFor, startKubeApi, type KubeApi, type KubeObject } from '../support/kube-api.js';
import { kubeCertStore } from '../../src/kube/cert-rotation.js';

const DAY = 86_400_000;
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

const writes = (api: KubeApi, from: number): string[] =>
  api.requests.slice(from).filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path}`);

t.test('first run creates the Secret and fills the caBundle of every webhook; a second run writes nothing', async (t) => {
  const { api, store } = await setup(t);
  const now = new Date();
  const first = await reconcile(store, policy(() => now), log);
  t.same(first.steps, ['create', 'publish-bundle']);

  const secret = api.get('secrets', NS, TLS_SECRET);
  t.equal(secret?.type, 'kubernetes.io/tls');
  t.match(secret?.metadata.labels, { 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/component': 'certificates' });
  const data = secretData(api);
  t.same(Object.keys(data).sort(), [KEYS.ca, KEYS.caKey, KEYS.cert, KEYS.key].sort(), 'ca and serving pair, nothing staged');
  t.match(data[KEYS.cert], /^-----BEGIN CERTIFICATE-----/, 'data is base64 of the PEM');
  t.match(data[KEYS.key], /^-----BEGIN PRIVATE KEY-----/);

  const ca = new X509Certificate(data[KEYS.ca]!);
  const leaf = new X509Certificate(data[KEYS.cert]!);
  t.ok(leaf.verify(ca.publicKey), 'serving certificate signed by the CA');
  for (const n of names.dnsNames) t.equal(leaf.checkHost(n, { subject: 'never' }), n, `valid for ${n}`);
  t.equal(first.cert, data[KEYS.cert], 'result names the stored certificate');
  t.equal(first.certExpiry?.getTime(), Date.parse(leaf.validTo));
  t.equal(first.caExpiry?.getTime(), Date.parse(ca.validTo));

  const published = bundles(api);
  t.equal(published.length, 2);
  for (const b of published) t.same(splitPem(b), [data[KEYS.ca]!.trim()], 'every webhook trusts exactly the CA');

  const mark = api.requests.length;
  const again = await reconcile(store, policy(() => now), log);
  t.same(again.steps, [], 'nothing to do');
  t.same(writes(api, mark), [], 'no write at all');
});

t.test('the Secret the manifests create empty (Opaque, helm labels) is filled in place: type, labels and annotations kept, nothing created', async (t) => {
  const { api, store } = await setup(t);
  const labels = { 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/managed-by': 'Helm', 'app.kubernetes.io/instance': 'mirrorgate' };
  const annotations = { 'meta.helm.sh/release-name': 'mirrorgate', 'meta.helm.sh/release-namespace': NS };
  api.put({ apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: TLS_SECRET, namespace: NS, labels, annotations } });
  const from = api.requests.length;
  const first = await reconcile(store, policy(() => new Date()), log);
  t.same(first.steps, ['create', 'publish-bundle']);
  t.same(writes(api, from).filter((w) => w.includes('/secrets')), [`PUT /api/v1/namespaces/${NS}/secrets/${TLS_SECRET}`], 'replaced, never created');
  const secret = api.get('secrets', NS, TLS_SECRET);
  t.equal(secret?.type, 'Opaque', 'a Secret type cannot change: kept');
  t.match(secret?.metadata.labels, { ...labels, 'app.kubernetes.io/component': 'certificates' }, "helm's ownership labels kept");
  t.match(secret?.metadata.annotations, annotations, "helm's annotations kept");
  t.same(Object.keys(secretData(api)).sort(), [KEYS.ca, KEYS.caKey, KEYS.cert, KEYS.key].sort());
  t.same((await reconcile(store, policy(() => new Date()), log)).steps, [], 'then current');
});

t.test('a missing Secret mirrorgate may not create: an error that says to apply the manifests', async (t) => {
  const { api, store } = await setup(t);
  api.onNext({ method: 'POST', path: '/secrets', status: 403 });
  await t.rejects(reconcile(store, policy(() => new Date()), log), /Secret mirrorgate\/mirrorgate-tls is missing and mirrorgate may not create it: apply the manifests/);
});

t.test('a webhook added without a caBundle gets it too', async (t) => {
  const { api, store } = await setup(t);
  await reconcile(store, policy(() => new Date()), log);
  const mwc = api.get('mutatingwebhookconfigurations', undefined, WEBHOOK)!;
  const added = { name: 'late.mirrorgate.io', admissionReviewVersions: ['v1'], sideEffects: 'None', clientConfig: { service: { name: 'mirrorgate', namespace: NS } } };
  api.put({ ...mwc, webhooks: [...(mwc.webhooks as unknown[]), added] });

  const again = await reconcile(store, policy(() => new Date()), log);
  t.same(again.steps, ['publish-bundle']);
  const all = bundles(api);
  t.equal(all.length, 3);
  t.ok(all.every((b) => b !== '' && b === all[0]), 'all three carry the same bundle');
});

// Imitation only: the PATCH is held back so that a concurrent change lands in between
// (a timing the real server cannot be made to show on demand).
t.test('a concurrent change of the webhook configuration fails the patch test; reconcile re-reads and retries', async (t) => {
  const { api, store } = await setup(t);
  const now = new Date();
  // Hold the first caBundle patch while someone else edits the configuration.
  api.onNext({ method: 'PATCH', path: 'mutatingwebhookconfigurations', delayMs: 300 });
  const running = reconcile(store, policy(() => now), log);
  const patchSeen = async (): Promise<void> => {
    while (!api.requests.some((r) => r.method === 'PATCH')) await new Promise((r) => setTimeout(r, 5));
  };
  await patchSeen();
  const mwc = api.get('mutatingwebhookconfigurations', undefined, WEBHOOK)!;
  const webhooks = (mwc.webhooks as { clientConfig: Record<string, unknown> }[]).map((w) => ({ ...w, clientConfig: { ...w.clientConfig, caBundle: Buffer.from('stranger').toString('base64') } }));
  api.put({ ...mwc, metadata: { ...mwc.metadata, labels: { edited: 'by-someone-else' } }, webhooks });

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

t.test('two replicas reconciling at once over the API create one CA', async (t) => {
  const { api, store } = await setup(t);
  const now = new Date();
  const results = await Promise.all([reconcile(store, policy(() => now), log), reconcile(store, policy(() => now), log)]);
  t.equal(results.flatMap((r) => r.steps).filter((s) => s === 'create').length, 1, 'created once');
  t.equal(api.requests.filter((r) => r.method === 'POST').length, 2, 'the loser got AlreadyExists');
  const ca = secretData(api)[KEYS.ca]!;
  for (const b of bundles(api)) t.same(splitPem(b), [ca.trim()]);
  t.same((await reconcile(store, policy(() => now), log)).steps, [], 'converged');
});

t.test('refusals that are not races surface instead of looping', async (t) => {
  t.test('a Secret made by someone else (keys mirrorgate never writes) is not overwritten', async (t) => {
    const { api, store } = await setup(t);
    api.put({ kind: 'Secret', metadata: { name: TLS_SECRET, namespace: NS }, type: 'Opaque', data: { note: Buffer.from('hand made').toString('base64') } });
    await t.rejects(reconcile(store, policy(() => new Date()), log), /Secret mirrorgate\/mirrorgate-tls holds keys mirrorgate does not write \(note\): not overwriting it/);
    t.equal(api.requests.filter((r) => r.method === 'PUT').length, 0, 'not touched');
    t.same(Object.keys(secretData(api)), ['note']);
  });
  t.test('a Secret the API refuses to update (422) surfaces at once', async (t) => {
    const { api, store } = await setup(t);
    api.put({ kind: 'Secret', metadata: { name: TLS_SECRET, namespace: NS }, type: 'Opaque' });
    api.onNext({ method: 'PUT', path: '/secrets', status: 422 });
    await t.rejects(reconcile(store, policy(() => new Date()), log), { code: 422 });
    t.equal(api.requests.filter((r) => r.method === 'PUT').length, 1, 'tried once');
  });
  t.test('no webhook configuration', async (t) => {
    const { api, store } = await setup(t);
    api.remove('mutatingwebhookconfigurations', undefined, WEBHOOK);
    await t.rejects(reconcile(store, policy(() => new Date()), log), /MutatingWebhookConfiguration mirrorgate not found/);
  });
});

t.test('a full CA rotation over the API, with an injected clock', async (t) => {
  const { api, store } = await setup(t);
  let now = new Date('2026-11-24T00:00:00Z');
  const pol = policy(() => now);
  const trusted = (pem: string): boolean => bundles(api).every((b) => splitPem(b).some((c) => new X509Certificate(pem).checkIssued(new X509Certificate(c))));

  t.same((await reconcile(store, pol, log)).steps, ['create', 'publish-bundle']);
  const servedV1 = secretData(api)[KEYS.cert]!;
  await recordServed(store, 'mirrorgate-6d8f7c9b5-abcde', servedV1, now);
  await recordServed(store, 'mirrorgate-6d8f7c9b5-fghij', servedV1, now);
  t.same((await reconcile(store, pol, log)).steps, [], 'steady state');
  const annotations = api.get('secrets', NS, TLS_SECRET)?.metadata.annotations ?? {};
  t.equal(Object.keys(annotations).filter((k) => k.startsWith(SERVED_PREFIX)).length, 2, 'both replicas recorded');

  // The CA is within 90 days of its end: a next CA is staged beside it.
  now = new Date(now.getTime() + 3600 * DAY);
  const staged = await reconcile(store, pol, log);
  t.ok(staged.steps.includes('stage-next-ca'), 'staged');
  t.ok(secretData(api)[KEYS.next], 'ca-next.crt in the Secret');
  t.ok(bundles(api).every((b) => splitPem(b).length === 2), 'every webhook trusts old and new');
  t.ok(trusted(secretData(api)[KEYS.cert]!), 'what is served stays trusted');

  now = new Date(now.getTime() + 11 * 60_000);
  t.ok((await reconcile(store, pol, log)).steps.includes('promote-next-ca'), 'promoted after the overlap');
  const servedV2 = secretData(api)[KEYS.cert]!;
  t.ok(secretData(api)[KEYS.previous], 'old CA kept as previous');
  t.ok(trusted(servedV1), 'a replica still serving the old certificate is trusted');
  t.ok(trusted(servedV2), 'the new certificate is trusted');

  await recordServed(store, 'mirrorgate-6d8f7c9b5-abcde', servedV2, now);
  await recordServed(store, 'mirrorgate-6d8f7c9b5-fghij', servedV1, now);
  t.same((await reconcile(store, pol, log)).steps, [], 'waits for the replica still on the old certificate');

  await recordServed(store, 'mirrorgate-6d8f7c9b5-fghij', servedV2, now);
  t.same((await reconcile(store, pol, log)).steps, ['retire-previous-ca', 'publish-bundle']);
  t.ok(bundles(api).every((b) => splitPem(b).length === 1), 'the old CA left every webhook');
  t.notOk(trusted(servedV1));
  t.ok(trusted(servedV2));
  t.same(Object.keys(secretData(api)).sort(), [KEYS.ca, KEYS.caKey, KEYS.cert, KEYS.key].sort());

  // A replica gone for a week is forgotten when another one records.
  now = new Date(now.getTime() + 8 * DAY);
  await recordServed(store, 'mirrorgate-6d8f7c9b5-abcde', servedV2, now);
  const left = Object.keys(api.get('secrets', NS, TLS_SECRET)?.metadata.annotations ?? {}).filter((k) => k.startsWith(SERVED_PREFIX));
  t.same(left, [`${SERVED_PREFIX}mirrorgate-6d8f7c9b5-abcde`]);
});
