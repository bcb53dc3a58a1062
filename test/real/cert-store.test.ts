/**
 * The certificate lifecycle over the real API server: `kubeCertStore` and `reconcile`
 * through the real @kubernetes/client-node code, for the Secret `mirrorgate-tls` and the
 * caBundle of the MutatingWebhookConfiguration: first run and a second that writes nothing
 * (counted by the server's own request metrics), the empty Secret the manifests ship filled
 * in place, a webhook added later, two replicas at
 * once, refusals that are not races, a full CA rotation with an injected clock, and the
 * server's answer to a failed JSON-patch test. One server for the file, a namespace and a
 * configuration per test.
 */
import { X509Certificate } from 'node:crypto';
import t from 'tap';
import { defaultServingNames } from '../../src/certs.js';
import { kubeCertStore, reconcile, recordServed } from '../../src/kube/cert-rotation.js';
import { KEYS, SERVED_PREFIX, splitPem, TLS_SECRET, type RotationPolicy } from '../../src/core/rotation.js';
import { loadKubeClient } from '../../src/kube/client.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import type { Obj } from '../support/real-cluster.js';

// This file starts etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

const DAY = 86_400_000;
const NS = 'mirrorgate';
const names = defaultServingNames('mirrorgate', NS);
const log = createLogger({ level: 'warn', destination: new LogSink() });

function policy(now: () => Date): () => RotationPolicy {
  return () => ({ now: now(), names, renewBeforeDays: 30, caRenewBeforeDays: 90, overlapMs: 10 * 60_000, liveWindowMs: 30 * 60_000 });
}

const unb64 = (s: unknown): string => Buffer.from(String(s), 'base64').toString('utf8');

interface Api {
  readonly kube: RealKube;
  readonly ns: string;
  secret(): Promise<Obj | undefined>;
  webhookConfiguration(): Promise<Obj>;
  putWebhookConfiguration(o: Obj): Promise<void>;
  /** Requests with `verb` about `resource` the API server answered so far. */
  count(verb: string, resource: string): Promise<number>;
  /** Writes (POST, PUT, PATCH, DELETE) about secrets and webhook configurations so far. */
  writes(): Promise<number>;
}

/** The caBundle of every webhook, decoded. */
async function bundles(api: Api): Promise<string[]> {
  const webhooks = ((await api.webhookConfiguration()).webhooks ?? []) as { clientConfig: { caBundle?: string } }[];
  return webhooks.map((w) => (w.clientConfig.caBundle === undefined ? '' : unb64(w.clientConfig.caBundle)));
}

async function secretData(api: Api): Promise<Record<string, string>> {
  const s = await api.secret();
  return Object.fromEntries(Object.entries((s?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, unb64(v)]));
}

t.test('the certificate store against the real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  const kc = loadKubeClient({ file: kube.adminKubeconfig }).config;
  const count = async (verb: string, resource: string): Promise<number> => {
    let n = 0;
    for (const line of (await kube.request('GET', '/metrics')).body.split('\n')) {
      if (line.startsWith('apiserver_request_total{') && line.includes(`resource="${resource}"`) && line.includes(`verb="${verb}"`)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return n;
  };
  let n = 0;
  /** A namespace and a webhook configuration as the manifests declare it: two webhooks, no caBundle yet. */
  const setup = async (): Promise<{ api: Api; store: ReturnType<typeof kubeCertStore> }> => {
    const ns = `certs-${++n}`;
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    const webhook = (name: string): Obj => ({
      name,
      admissionReviewVersions: ['v1'],
      sideEffects: 'NoneOnDryRun',
      clientConfig: { service: { name: 'mirrorgate', namespace: ns, path: '/mutate', port: 443 } },
    });
    const path = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations';
    await kube.must('POST', path, { metadata: { name: ns }, webhooks: [webhook('pods.mirrorgate.io'), webhook('ephemeral.mirrorgate.io')] });
    const api: Api = {
      kube,
      ns,
      secret: async () => {
        const a = await kube.request('GET', `/api/v1/namespaces/${ns}/secrets/${TLS_SECRET}`);
        return a.status === 200 ? (JSON.parse(a.body) as Obj) : undefined;
      },
      webhookConfiguration: () => kube.must<Obj>('GET', `${path}/${ns}`),
      putWebhookConfiguration: async (o) => {
        await kube.must('PUT', `${path}/${ns}`, o);
      },
      count,
      writes: async () => {
        let w = 0;
        for (const verb of ['POST', 'PUT', 'PATCH', 'DELETE']) for (const r of ['secrets', 'mutatingwebhookconfigurations']) w += await count(verb, r);
        return w;
      },
    };
    return { api, store: kubeCertStore(kc, { namespace: ns, webhook: ns }) };
  };

  await t.test('a failed JSON-patch test is answered 422 with its cause (what the imitation copies)', async (t) => {
    const { api } = await setup();
    const a = await kube.request(
      'PATCH',
      `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${api.ns}`,
      JSON.stringify([
        { op: 'test', path: '/metadata/resourceVersion', value: '1' },
        { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: 'eA==' },
      ]),
      'application/json-patch+json',
    );
    t.equal(a.status, 422);
    t.match(JSON.parse(a.body), {
      kind: 'Status',
      status: 'Failure',
      reason: 'Invalid',
      code: 422,
      message: 'the server rejected our request due to an error in our request',
      details: {},
    });
    t.same((JSON.parse(a.body) as Obj).details, {}, 'no cause in the details');
    t.equal((await bundles(api))[0], '', 'nothing written');
  });

  await t.test('first run creates the Secret and fills the caBundle of every webhook; a second run writes nothing', async (t) => {
    const { api, store } = await setup();
    const now = new Date();
    const first = await reconcile(store, policy(() => now), log);
    t.same(first.steps, ['create', 'publish-bundle']);

    const secret = (await api.secret());
    t.equal(secret?.type, 'kubernetes.io/tls');
    t.match(secret?.metadata.labels, { 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/component': 'certificates' });
    const data = (await secretData(api));
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

    const published = (await bundles(api));
    t.equal(published.length, 2);
    for (const b of published) t.same(splitPem(b), [data[KEYS.ca]!.trim()], 'every webhook trusts exactly the CA');

    const mark = await api.writes();
    const again = await reconcile(store, policy(() => now), log);
    t.same(again.steps, [], 'nothing to do');
    t.equal(await api.writes(), mark, 'no write at all (the API server counted none)');
  });

  await t.test('the Secret the manifests create empty (Opaque, helm labels) is filled in place: type, labels and annotations kept, nothing created', async (t) => {
    const { api, store } = await setup();
    const labels = { 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/managed-by': 'Helm', 'app.kubernetes.io/instance': 'mirrorgate' };
    const annotations = { 'meta.helm.sh/release-name': 'mirrorgate', 'meta.helm.sh/release-namespace': api.ns };
    const shipped = await kube.must<Obj>('POST', `/api/v1/namespaces/${api.ns}/secrets`, { metadata: { name: TLS_SECRET, labels, annotations }, type: 'Opaque' });
    const secretWrites = async (): Promise<Record<string, number>> => {
      const w: Record<string, number> = {};
      for (const verb of ['POST', 'PUT', 'PATCH', 'DELETE']) w[verb] = await count(verb, 'secrets');
      return w;
    };
    const before = await secretWrites();
    const first = await reconcile(store, policy(() => new Date()), log);
    t.same(first.steps, ['create', 'publish-bundle']);
    const after = await secretWrites();
    t.same(
      Object.fromEntries(Object.entries(after).map(([verb, n]) => [verb, n - (before[verb] ?? 0)])),
      { POST: 0, PUT: 1, PATCH: 0, DELETE: 0 },
      'one update, never a create (the API server counted the requests)',
    );
    const secret = await api.secret();
    t.equal(secret?.metadata.uid, shipped.metadata.uid, 'the same object, filled in place, not recreated');
    t.equal(secret?.type, 'Opaque', 'a Secret type cannot change: kept');
    t.match(secret?.metadata.labels, { ...labels, 'app.kubernetes.io/component': 'certificates' }, "helm's ownership labels kept");
    t.match(secret?.metadata.annotations, annotations, "helm's annotations kept");
    t.same(Object.keys(await secretData(api)).sort(), [KEYS.ca, KEYS.caKey, KEYS.cert, KEYS.key].sort());

    const mark = await api.writes();
    t.same((await reconcile(store, policy(() => new Date()), log)).steps, [], 'then current');
    t.equal(await count('PUT', 'secrets'), after.PUT, 'no further update of the Secret');
    t.equal(await api.writes(), mark, 'no write at all');
  });

  await t.test('a webhook added without a caBundle gets it too', async (t) => {
    const { api, store } = await setup();
    await reconcile(store, policy(() => new Date()), log);
    const mwc = await api.webhookConfiguration();
    const added = { name: 'late.mirrorgate.io', admissionReviewVersions: ['v1'], sideEffects: 'None', clientConfig: { service: { name: 'mirrorgate', namespace: api.ns } } };
    await api.putWebhookConfiguration({ ...mwc, webhooks: [...(mwc.webhooks as unknown[]), added] });

    const again = await reconcile(store, policy(() => new Date()), log);
    t.same(again.steps, ['publish-bundle']);
    const all = (await bundles(api));
    t.equal(all.length, 3);
    t.ok(all.every((b) => b !== '' && b === all[0]), 'all three carry the same bundle');
  });

  await t.test('two replicas reconciling at once over the API create one CA', async (t) => {
    const { api, store } = await setup();
    const now = new Date();
    const posts = await api.count('POST', 'secrets');
    const results = await Promise.all([reconcile(store, policy(() => now), log), reconcile(store, policy(() => now), log)]);
    t.equal(results.flatMap((r) => r.steps).filter((s) => s === 'create').length, 1, 'created once');
    t.equal(await api.count('POST', 'secrets'), posts + 2, 'the loser got AlreadyExists');
    const ca = (await secretData(api))[KEYS.ca]!;
    for (const b of (await bundles(api))) t.same(splitPem(b), [ca.trim()]);
    t.same((await reconcile(store, policy(() => now), log)).steps, [], 'converged');
  });

  await t.test('refusals that are not races surface instead of looping', async (t) => {
    await t.test('a Secret made by someone else (keys mirrorgate never writes) is not overwritten', async (t) => {
      const { api, store } = await setup();
      await api.kube.must('POST', `/api/v1/namespaces/${api.ns}/secrets`, { metadata: { name: TLS_SECRET }, type: 'Opaque', data: { note: Buffer.from('hand made').toString('base64') } });
      const puts = await api.count('PUT', 'secrets');
      await t.rejects(reconcile(store, policy(() => new Date()), log), /holds keys mirrorgate does not write \(note\): not overwriting it/);
      t.equal(await api.count('PUT', 'secrets'), puts, 'not touched');
      t.same(Object.keys(await secretData(api)), ['note']);
    });
    await t.test('no webhook configuration', async (t) => {
      const { api, store } = await setup();
      await api.kube.must('DELETE', `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${api.ns}`);
      await t.rejects(reconcile(store, policy(() => new Date()), log), new RegExp(`MutatingWebhookConfiguration ${api.ns} not found`));
    });
  });

  await t.test('a full CA rotation over the API, with an injected clock', async (t) => {
    const { api, store } = await setup();
    let now = new Date('2026-11-24T00:00:00Z');
    const pol = policy(() => now);
    const trusted = async (pem: string): Promise<boolean> => (await bundles(api)).every((b) => splitPem(b).some((c) => new X509Certificate(pem).checkIssued(new X509Certificate(c))));

    t.same((await reconcile(store, pol, log)).steps, ['create', 'publish-bundle']);
    const servedV1 = (await secretData(api))[KEYS.cert]!;
    await recordServed(store, 'mirrorgate-6d8f7c9b5-abcde', servedV1, now);
    await recordServed(store, 'mirrorgate-6d8f7c9b5-fghij', servedV1, now);
    t.same((await reconcile(store, pol, log)).steps, [], 'steady state');
    const annotations = (await api.secret())?.metadata.annotations ?? {};
    t.equal(Object.keys(annotations).filter((k) => k.startsWith(SERVED_PREFIX)).length, 2, 'both replicas recorded');

    // The CA is within 90 days of its end: a next CA is staged beside it.
    now = new Date(now.getTime() + 3600 * DAY);
    const staged = await reconcile(store, pol, log);
    t.ok(staged.steps.includes('stage-next-ca'), 'staged');
    t.ok((await secretData(api))[KEYS.next], 'ca-next.crt in the Secret');
    t.ok((await bundles(api)).every((b) => splitPem(b).length === 2), 'every webhook trusts old and new');
    t.ok(await trusted((await secretData(api))[KEYS.cert]!), 'what is served stays trusted');

    now = new Date(now.getTime() + 11 * 60_000);
    t.ok((await reconcile(store, pol, log)).steps.includes('promote-next-ca'), 'promoted after the overlap');
    const servedV2 = (await secretData(api))[KEYS.cert]!;
    t.ok((await secretData(api))[KEYS.previous], 'old CA kept as previous');
    t.ok(await trusted(servedV1), 'a replica still serving the old certificate is trusted');
    t.ok(await trusted(servedV2), 'the new certificate is trusted');

    await recordServed(store, 'mirrorgate-6d8f7c9b5-abcde', servedV2, now);
    await recordServed(store, 'mirrorgate-6d8f7c9b5-fghij', servedV1, now);
    t.same((await reconcile(store, pol, log)).steps, [], 'waits for the replica still on the old certificate');

    await recordServed(store, 'mirrorgate-6d8f7c9b5-fghij', servedV2, now);
    t.same((await reconcile(store, pol, log)).steps, ['retire-previous-ca', 'publish-bundle']);
    t.ok((await bundles(api)).every((b) => splitPem(b).length === 1), 'the old CA left every webhook');
    t.notOk(await trusted(servedV1));
    t.ok(await trusted(servedV2));
    t.same(Object.keys((await secretData(api))).sort(), [KEYS.ca, KEYS.caKey, KEYS.cert, KEYS.key].sort());

    // A replica gone for a week is forgotten when another one records.
    now = new Date(now.getTime() + 8 * DAY);
    await recordServed(store, 'mirrorgate-6d8f7c9b5-abcde', servedV2, now);
    const left = Object.keys((await api.secret())?.metadata.annotations ?? {}).filter((k) => k.startsWith(SERVED_PREFIX));
    t.same(left, [`${SERVED_PREFIX}mirrorgate-6d8f7c9b5-abcde`]);
  });
});
