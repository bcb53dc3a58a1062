/**
 * Scoped rules and exclusions end to end through POST /mutate, with namespace labels from
 * the namespace cache watching the loopback Kubernetes API.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { NamespaceCache } from '../../src/kube/namespaces.js';
import { createLogger } from '../../src/logger.js';
import { LogSink, patchOf, review, testApp } from '../support/app.js';
import { kubeconfigFor, startKubeApi, waitFor } from '../support/kube-api.js';

const json = { 'content-type': 'application/json' };

t.test('rules by namespace name, namespace labels and pod labels; exclusions still judged', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'blue-1', labels: { tenant: 'blue' } } });
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'other', labels: {} } });
  const client = loadKubeClient({ file: await kubeconfigFor(api) });
  const cache = new NamespaceCache({ core: client.core, watch: client.watch, log: createLogger({ destination: new LogSink() }), backoff: { initialMs: 20, maxMs: 100 }, resyncMs: 0 }).start();
  t.teardown(() => cache.stop());
  t.equal(await cache.waitForSync(5000), true);

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
  t.equal(operator.image, undefined, 'the pod selector leaves the operator\'s pods alone');
  t.equal(operator.response.allowed, true, 'quay.io is allowed as it is');

  const registry = await admit('other', 'registry:2');
  t.equal(registry.response.allowed, false, 'an excluded image is still judged by the policy');
  t.match(registry.response.status.message, '"registry:2" is not from an allowed registry');
  const agent = await admit('other', 'ghcr.io/acme/mirror-agent:1');
  t.equal(agent.response.allowed, false, 'a top-level exclusion too');

  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'blue-2', labels: { tenant: 'blue' } } });
  await waitFor('new namespace seen', () => cache.labels('blue-2') !== undefined);
  t.equal((await admit('blue-2', 'nginx:1')).image, 'blue.example.com/hub/library/nginx:1', 'a namespace labelled later');
});
