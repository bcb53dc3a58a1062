/**
 * The Namespace label cache against the loopback Kubernetes API: every namespace is listed
 * and watched, only labels kept; label changes after start are seen.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { MODE_LABEL, NamespaceCache } from '../../src/kube/namespaces.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { kubeconfigFor, startKubeApi, waitFor, type KubeObject } from '../support/kube-api.js';

function ns(name: string, mode?: string): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: mode === undefined ? {} : { [MODE_LABEL]: mode } } };
}

t.test('mode labels: listed, changed, removed; unknown values ignored', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put(ns('plain'));
  api.put(ns('team-audit', 'audit'));
  api.put(ns('team-off', 'off'));
  api.put(ns('team-typo', 'audti'));
  const logs = new LogSink();
  const client = loadKubeClient({ file: await kubeconfigFor(api) });
  const cache = new NamespaceCache({ core: client.core, watch: client.watch, log: createLogger({ destination: logs }), backoff: { initialMs: 20, maxMs: 100 }, resyncMs: 0 }).start();
  t.teardown(() => cache.stop());
  t.equal(await cache.waitForSync(5000), true);

  const cases: { ns: string; want: string | undefined }[] = [
    { ns: 'plain', want: undefined },
    { ns: 'team-audit', want: 'audit' },
    { ns: 'team-off', want: 'off' },
    { ns: 'team-typo', want: undefined },
    { ns: 'unknown', want: undefined },
  ];
  for (const c of cases) t.equal(cache.modeLabel(c.ns), c.want, c.ns);
  t.equal(logs.find('namespace mode label has an unknown value; ignored (audit, enforce or off)').length, 1, 'the typo is logged');
  const list = api.requests.find((r) => r.path === '/api/v1/namespaces' && !r.watch);
  t.equal(list?.query.get('labelSelector'), null, 'every namespace is listed: rules may select by any label');
  t.same(cache.labels('team-audit'), { [MODE_LABEL]: 'audit', 'kubernetes.io/metadata.name': 'team-audit' }, 'labels are kept');
  t.same(cache.labels('plain'), { 'kubernetes.io/metadata.name': 'plain' }, 'a namespace with no labels of its own is known');
  t.equal(cache.labels('unknown'), undefined, 'an unknown namespace has no labels');

  api.put(ns('plain', 'audit'));
  await waitFor('label added', () => cache.modeLabel('plain') === 'audit');
  api.put(ns('team-audit', 'enforce'));
  await waitFor('label changed', () => cache.modeLabel('team-audit') === 'enforce');
  api.put(ns('team-off'));
  await waitFor('label removed', () => cache.modeLabel('team-off') === undefined);
  api.remove('namespaces', undefined, 'plain');
  await waitFor('namespace deleted', () => cache.modeLabel('plain') === undefined);
  t.match(cache.status(), { name: 'namespaces', synced: true, healthy: true });
});
