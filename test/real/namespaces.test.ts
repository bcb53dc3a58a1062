/**
 * The Namespace label cache against the real API server: every namespace is listed and
 * watched, only labels kept (the server's own `kubernetes.io/metadata.name` included);
 * label changes and deletions after start are seen. Then scoped rules and exclusions
 * through POST /mutate with namespace labels from that cache.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { MODE_LABEL, NamespaceCache } from '../../src/kube/namespaces.js';
import { createLogger } from '../../src/logger.js';
import { LogSink, patchOf, review, testApp } from '../support/app.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import { eventually } from '../support/real-cluster.js';

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
    const { app } = testApp(raw, { namespaceLabels: (ns) => cache.labels(ns) });
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
});
