/**
 * mirrorgate's Kubernetes adapters against the real API server, one server for the file:
 * - the Namespace label cache: every namespace is listed and watched, only labels kept
 *   (the server's own `kubernetes.io/metadata.name` included); label changes and deletions
 *   after start are seen; then scoped rules and exclusions through POST /mutate with
 *   namespace labels from that cache;
 * - pull-secret replication: a copy is created on demand (labelled, annotated with its
 *   source), kept in sync when the source changes, costs no request once current, and a
 *   namespace's own secret of the same name is never touched; failures never throw;
 * - `mirrorgate certs --kubeconfig`: the Secret and the caBundle of the configuration.
 */
import { X509Certificate } from 'node:crypto';
import t from 'tap';
import { main } from '../../src/cli.js';
import { KEYS, TLS_SECRET } from '../../src/core/rotation.js';
import { loadKubeClient } from '../../src/kube/client.js';
import { MODE_LABEL, NamespaceCache } from '../../src/kube/namespaces.js';
import { COPIED_FROM_ANNOTATION, MANAGED_BY_LABEL, PullSecretReplicator } from '../../src/kube/pull-secret-replicator.js';
import { createLogger } from '../../src/logger.js';
import { LogSink, patchOf, review, testApp } from '../support/app.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import { eventually, type Obj } from '../support/real-cluster.js';

// This file starts etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

const json = { 'content-type': 'application/json' };

async function namespace(kube: RealKube, name: string, labels: Record<string, string> = {}): Promise<void> {
  await kube.must('POST', '/api/v1/namespaces', { metadata: { name, labels } });
}

/** Replace a namespace's labels (the server keeps kubernetes.io/metadata.name itself). */
async function relabel(kube: RealKube, name: string, labels: Record<string, string>): Promise<void> {
  const current = await kube.must<{ metadata: Record<string, unknown> }>('GET', `/api/v1/namespaces/${name}`);
  await kube.must('PUT', `/api/v1/namespaces/${name}`, { metadata: { ...current.metadata, labels } });
}

/**
 * Delete a namespace for good. Without a controller-manager nobody finalizes it: do what
 * the namespace controller does once it is empty (clear spec.finalizers).
 */
async function deleteNamespace(kube: RealKube, name: string): Promise<void> {
  await kube.must('DELETE', `/api/v1/namespaces/${name}`);
  await kube.must('PUT', `/api/v1/namespaces/${name}/finalize`, { apiVersion: 'v1', kind: 'Namespace', metadata: { name }, spec: { finalizers: [] } });
}

t.test('the namespace cache and scoped rules against the real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  const client = loadKubeClient({ file: kube.adminKubeconfig });
  const startCache = (logs: LogSink): NamespaceCache => {
    const cache = new NamespaceCache({ core: client.core, watch: client.watch, log: createLogger({ destination: logs }), backoff: { initialMs: 20, maxMs: 100 }, resyncMs: 0 }).start();
    t.teardown(() => cache.stop());
    return cache;
  };

  await t.test('mode labels: listed, changed, removed; unknown values ignored', async (t) => {
    await namespace(kube, 'plain');
    await namespace(kube, 'team-audit', { [MODE_LABEL]: 'audit' });
    await namespace(kube, 'team-off', { [MODE_LABEL]: 'off' });
    await namespace(kube, 'team-typo', { [MODE_LABEL]: 'audti' });
    const logs = new LogSink();
    const cache = startCache(logs);
    t.equal(await cache.waitForSync(30_000), true);

    const cases: { ns: string; want: string | undefined }[] = [
      { ns: 'plain', want: undefined },
      { ns: 'team-audit', want: 'audit' },
      { ns: 'team-off', want: 'off' },
      { ns: 'team-typo', want: undefined },
      { ns: 'unknown', want: undefined },
    ];
    for (const c of cases) t.equal(cache.modeLabel(c.ns), c.want, c.ns);
    t.equal(logs.find('namespace mode label has an unknown value; ignored (audit, enforce or off)').length, 1, 'the typo is logged');
    t.same(cache.labels('team-audit'), { [MODE_LABEL]: 'audit', 'kubernetes.io/metadata.name': 'team-audit' }, 'labels are kept');
    t.same(cache.labels('plain'), { 'kubernetes.io/metadata.name': 'plain' }, 'a namespace with no labels of its own is known');
    t.same(cache.labels('kube-system'), { 'kubernetes.io/metadata.name': 'kube-system' }, "the server's own namespaces too: every namespace is listed");
    t.equal(cache.labels('unknown'), undefined, 'an unknown namespace has no labels');

    await relabel(kube, 'plain', { [MODE_LABEL]: 'audit' });
    await eventually('label added', async () => cache.modeLabel('plain') === 'audit');
    await relabel(kube, 'team-audit', { [MODE_LABEL]: 'enforce' });
    await eventually('label changed', async () => cache.modeLabel('team-audit') === 'enforce');
    await relabel(kube, 'team-off', {});
    await eventually('label removed', async () => cache.modeLabel('team-off') === undefined);
    await deleteNamespace(kube, 'plain');
    await eventually('namespace deleted', async () => cache.labels('plain') === undefined);
    t.match(cache.status(), { name: 'namespaces', synced: true, healthy: true });
  });

  await t.test('rules by namespace name, namespace labels and pod labels; exclusions still judged', async (t) => {
    await namespace(kube, 'blue-1', { tenant: 'blue' });
    await namespace(kube, 'other');
    const cache = startCache(new LogSink());
    t.equal(await cache.waitForSync(30_000), true);

    const raw = {
      rules: [
        { from: 'docker.io', to: 'mirror.example.com/hub', exclude: ['docker.io/library/registry'] },
        { from: 'docker.io', to: 'blue.example.com/hub', namespaceSelector: { matchLabels: { tenant: 'blue' } } },
        { from: 'docker.io', to: 'green.example.com/hub', namespaces: ['green'] },
        { from: 'quay.io', to: 'mirror.example.com/quay', podSelector: { matchExpressions: [{ key: 'app.kubernetes.io/name', operator: 'NotIn', values: ['cloudnative-pg'] }] } },
      ],
      exclude: ['ghcr.io/acme/mirror-agent'],
      policy: { allowedRegistries: ['mirror.example.com', 'blue.example.com', 'green.example.com', 'quay.io'] },
    };
    const { app } = testApp(raw, { namespaces: { mode: () => undefined, labels: (ns) => cache.labels(ns) } });
    const admit = async (namespace: string, image: string, labels: Record<string, string> = {}) => {
      const { body } = review({ namespace, object: { metadata: { labels }, spec: { containers: [{ name: 'c', image }] } } });
      const res = await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body });
      const response = res.json().response;
      const patch = (patchOf(response) ?? []) as { path: string; value: string }[];
      return { response, image: patch.find((o) => o.path === '/spec/containers/0/image')?.value };
    };

    t.equal((await admit('other', 'nginx:1')).image, 'mirror.example.com/hub/library/nginx:1', 'unscoped rule');
    t.equal((await admit('blue-1', 'nginx:1')).image, 'blue.example.com/hub/library/nginx:1', 'namespace labels from the cache');
    t.equal((await admit('green', 'nginx:1')).image, 'green.example.com/hub/library/nginx:1', 'namespace by name (not in the cache at all)');
    t.equal((await admit('other', 'quay.io/prometheus/node-exporter:v1')).image, 'mirror.example.com/quay/prometheus/node-exporter:v1');
    const operator = await admit('other', 'quay.io/prometheus/node-exporter:v1', { 'app.kubernetes.io/name': 'cloudnative-pg' });
    t.equal(operator.image, undefined, "the pod selector leaves the operator's pods alone");
    t.equal(operator.response.allowed, true, 'quay.io is allowed as it is');

    const registry = await admit('other', 'registry:2');
    t.equal(registry.response.allowed, false, 'an excluded image is still judged by the policy');
    t.match(registry.response.status.message, '"registry:2" is not from an allowed registry');
    const agent = await admit('other', 'ghcr.io/acme/mirror-agent:1');
    t.equal(agent.response.allowed, false, 'a top-level exclusion too');

    await namespace(kube, 'blue-2', { tenant: 'blue' });
    await eventually('new namespace seen', async () => cache.labels('blue-2') !== undefined);
    t.equal((await admit('blue-2', 'nginx:1')).image, 'blue.example.com/hub/library/nginx:1', 'a namespace labelled later');
  });

  const b64 = (v: string): string => Buffer.from(v).toString('base64');
  const unb64 = (v: unknown): string => Buffer.from(String(v), 'base64').toString('utf8');
  const dockerSecret = (name: string, auth: string): Obj => ({
    metadata: { name },
    type: 'kubernetes.io/dockerconfigjson',
    data: { '.dockerconfigjson': b64(JSON.stringify({ auths: { 'mirror.example.com': { auth: b64(auth) } } })) },
  });
  const secret = async (ns: string, name: string): Promise<Obj | undefined> => {
    const a = await kube.request('GET', `/api/v1/namespaces/${ns}/secrets/${name}`);
    return a.status === 200 ? (JSON.parse(a.body) as Obj) : undefined;
  };
  /** Requests about secrets the API server has answered so far (its own metrics). */
  const secretRequests = async (): Promise<number> => {
    const text = (await kube.request('GET', '/metrics')).body;
    let n = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith('apiserver_request_total{') && line.includes('resource="secrets"')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return n;
  };

  await t.test('pull-secret replication', async (t) => {
    for (const n of ['pull-source', 'team-a', 'team-b', 'team-own']) await namespace(kube, n);
    await kube.must('POST', '/api/v1/namespaces/pull-source/secrets', dockerSecret('mirror-pull', 'user:one'));
    await kube.must('POST', '/api/v1/namespaces/pull-source/secrets', dockerSecret('unrelated', 'x:y'));
    await kube.must('POST', '/api/v1/namespaces/team-own/secrets', dockerSecret('mirror-pull', 'team:own'));
    const logs = new LogSink();
    const replicator = new PullSecretReplicator({ core: client.core, watch: client.watch, log: createLogger({ destination: logs }), backoff: { initialMs: 20, maxMs: 100 }, resyncMs: 0 });
    t.teardown(() => replicator.stop());
    replicator.configure([{ name: 'mirror-pull', sourceNamespace: 'pull-source' }]);
    await eventually('source synced', async () => replicator.synced());

    replicator.ensure('team-a', 'mirror-pull', 'pull-source');
    await replicator.idle();
    const copy = await secret('team-a', 'mirror-pull');
    const source = await secret('pull-source', 'mirror-pull');
    t.equal(copy?.metadata.labels?.[MANAGED_BY_LABEL], 'mirrorgate');
    t.equal(copy?.metadata.annotations?.[COPIED_FROM_ANNOTATION], 'pull-source/mirror-pull');
    t.equal(copy?.type, 'kubernetes.io/dockerconfigjson');
    t.same(copy?.data, source?.data);

    const before = await secretRequests();
    t.ok(before > 0, 'the API server counts requests about secrets');
    for (let i = 0; i < 5; i++) replicator.ensure('team-a', 'mirror-pull', 'pull-source');
    await replicator.idle();
    t.equal(await secretRequests(), before, 'a known, current copy costs no request (the API server counted none)');

    replicator.ensure('team-b', 'mirror-pull', 'pull-source');
    await replicator.idle();
    t.ok(await secret('team-b', 'mirror-pull'), 'second namespace');

    const own = await secret('team-own', 'mirror-pull');
    replicator.ensure('team-own', 'mirror-pull', 'pull-source');
    await replicator.idle();
    t.same(await secret('team-own', 'mirror-pull'), own, "a namespace's own secret of that name is left alone");
    t.equal(logs.find('namespace has its own secret of that name; not replacing it').length, 1);

    // The source is rotated: every copy follows, the namespace's own secret does not.
    await kube.must('PUT', '/api/v1/namespaces/pull-source/secrets/mirror-pull', { ...dockerSecret('mirror-pull', 'user:two'), metadata: { name: 'mirror-pull', resourceVersion: source?.metadata.resourceVersion } });
    const rotated = JSON.stringify((await secret('pull-source', 'mirror-pull'))?.data);
    await eventually('copies updated', async () => {
      for (const n of ['team-a', 'team-b']) if (JSON.stringify((await secret(n, 'mirror-pull'))?.data) !== rotated) return false;
      return true;
    });
    await replicator.idle();
    t.same(await secret('team-own', 'mirror-pull'), own, 'still unchanged after a source change');

    replicator.ensure('team-a', 'unrelated', 'pull-source');
    await replicator.idle();
    t.equal(await secret('team-a', 'unrelated'), undefined, 'unconfigured secrets are never copied');

    // Failures never throw: logged, and retried on the next ask.
    replicator.ensure('no-such-ns', 'mirror-pull', 'pull-source');
    await replicator.idle();
    t.equal(logs.find('pull secret copy failed').length, 1, 'create into a missing namespace fails, logged');
    await namespace(kube, 'no-such-ns');
    replicator.ensure('no-such-ns', 'mirror-pull', 'pull-source');
    await replicator.idle();
    t.ok(await secret('no-such-ns', 'mirror-pull'), 'created on the next ask');

    await kube.must('DELETE', '/api/v1/namespaces/pull-source/secrets/mirror-pull');
    await eventually('deletion seen', async () => logs.find('source pull secret deleted; existing copies are left as they are').length === 1);
    await namespace(kube, 'team-c');
    replicator.ensure('team-c', 'mirror-pull', 'pull-source');
    await replicator.idle();
    t.equal(await secret('team-c', 'mirror-pull'), undefined);
    t.equal(logs.find('pull secret to copy does not exist in its source namespace; nothing copied').length, 1);
    t.ok(await secret('team-a', 'mirror-pull'), 'existing copies stay');
  });

  await t.test('mirrorgate certs --kubeconfig', async (t) => {
    const capture = (): { out: string[]; err: string[]; io: { out(l: string): void; err(l: string): void } } => {
      const out: string[] = [];
      const err: string[] = [];
      return { out, err, io: { out: (l) => out.push(l), err: (l) => err.push(l) } };
    };
    await namespace(kube, 'infra');
    const missing = capture();
    t.equal(await main(['certs', '--kubeconfig', kube.adminKubeconfig, '--namespace', 'infra', '--webhook-name', 'gate.example.com'], missing.io), 1);
    t.match(missing.err.join('\n'), /MutatingWebhookConfiguration gate\.example\.com not found/, 'a missing webhook configuration is a runtime failure that names it');
    t.equal(await secret('infra', TLS_SECRET), undefined, 'nothing written before the configuration is found');

    await kube.must('POST', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations', {
      metadata: { name: 'gate.example.com' },
      webhooks: [{ name: 'pods.gate.io', admissionReviewVersions: ['v1'], sideEffects: 'None', clientConfig: { service: { name: 'gate', namespace: 'infra' } } }],
    });
    const args = ['certs', '--kubeconfig', kube.adminKubeconfig, '--namespace', 'infra', '--service', 'gate', '--webhook-name', 'gate.example.com'];
    const c = capture();
    t.equal(await main(args, c.io), 0, c.err.join('\n'));
    t.equal(c.out[0], 'applied: create, publish-bundle');
    t.match(c.out[1], /^serving certificate valid until \d{4}-.*, CA until \d{4}-/);
    const s = await secret('infra', TLS_SECRET);
    t.equal(s?.type, 'kubernetes.io/tls');
    const data = Object.fromEntries(Object.entries((s?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, unb64(v)]));
    t.equal(new X509Certificate(data[KEYS.cert] as string).checkHost('gate.infra.svc', { subject: 'never' }), 'gate.infra.svc');
    const mwc = await kube.must<Obj>('GET', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/gate.example.com');
    t.equal(unb64(mwc.webhooks[0].clientConfig.caBundle).trim(), (data[KEYS.ca] as string).trim(), 'the caBundle is the CA of the Secret');

    const again = capture();
    t.equal(await main(args, again.io), 0);
    t.equal(again.out[0], `Secret infra/${TLS_SECRET} and the caBundle of gate.example.com are current`);
    t.equal((await secret('infra', TLS_SECRET))?.metadata.resourceVersion, s?.metadata.resourceVersion, 'Secret untouched');
  });
});
