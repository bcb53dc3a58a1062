/**
 * The ServiceAccount cache when the API misbehaves, against the loopback imitation
 * (test/support/kube-api.ts), through the real client-node code: a dropped watch that
 * resumes, the SA-created-just-before-the-pod race with the watch held back, 500s, 410
 * relists, and the API down at start; each test says which fault it needs. The initial
 * list, unknown accounts and the periodic resync run against the real API server in
 * test/real/service-accounts.test.ts.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { ServiceAccountCache } from '../../src/kube/service-accounts.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { LogSink } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { kubeconfigFor, startKubeApi, type KubeApi, type KubeObject } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';

const BACKOFF = { initialMs: 20, maxMs: 100 };

function sa(namespace: string, name: string, annotations: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace, annotations } };
}

function ns(name: string): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
}

async function setup(t: { teardown(fn: () => unknown): void }, opts: { api?: KubeApi; resyncMs?: number; waitMs?: number; now?: () => number; unknownTtlMs?: number; timers?: FakeTimers } = {}) {
  const api = opts.api ?? (await startKubeApi());
  t.teardown(() => api.close());
  const kubeconfig = await kubeconfigFor(api);
  const logs = new LogSink();
  const log = createLogger({ level: 'debug', destination: logs });
  const metrics = createMetrics({ defaultMetrics: false });
  const client = loadKubeClient({ file: kubeconfig });
  const cache = new ServiceAccountCache({ core: client.core, watch: client.watch, log, metrics, backoff: BACKOFF, resyncMs: opts.resyncMs ?? 0, waitMs: opts.waitMs, now: opts.now, unknownTtlMs: opts.unknownTtlMs, timers: opts.timers });
  t.teardown(() => cache.stop());
  return { api, cache, logs, metrics };
}

async function lookups(metrics: Metrics): Promise<Record<string, number>> {
  const m = await metrics.serviceAccountLookups.get();
  return Object.fromEntries(m.values.map((v) => [String(v.labels.result), v.value]));
}

const directGets = (api: KubeApi): number => api.requests.filter((r) => r.method === 'GET' && !r.watch && /\/namespaces\/[^/]+\/serviceaccounts\/[^/]+$/.test(r.path)).length;
const lists = (api: KubeApi): number => api.requests.filter((r) => r.path === '/api/v1/serviceaccounts' && !r.watch).length;


// Imitation only: a watch cut mid-stream.
t.test('a watch that drops resumes from its resourceVersion and sees later changes', async (t) => {
  const { api, cache } = await setup(t);
  api.put(ns('team-a'));
  cache.start();
  await cache.waitForSync(5000);
  await waitFor('watch open', () => api.openWatches() === 1);
  api.dropWatches();
  await waitFor('watch resumed', () => api.requests.filter((r) => r.watch).length >= 2 && api.openWatches() === 1);
  const resumed = api.requests.filter((r) => r.watch)[1];
  t.not(resumed?.query.get('resourceVersion') ?? '', '', 'resumes from a resourceVersion');
  t.equal(lists(api), 1, 'no relist after a clean drop');

  api.put(sa('team-a', 'late', { 'azure.workload.identity/client-id': 'c1' }));
  await waitFor('event applied', () => cache.cached('team-a', 'late')?.annotations['azure.workload.identity/client-id'] === 'c1');
  t.equal(directGets(api), 0, 'delivered by the watch');

  // Changed after start: the new annotation replaces the old one.
  api.put(sa('team-a', 'late', { 'azure.workload.identity/client-id': 'c2', 'azure.workload.identity/tenant-id': 't' }));
  await waitFor('update applied', () => cache.cached('team-a', 'late')?.annotations['azure.workload.identity/client-id'] === 'c2');
  t.same((await cache.get('team-a', 'late'))?.annotations, { 'azure.workload.identity/client-id': 'c2', 'azure.workload.identity/tenant-id': 't' });

  api.remove('serviceaccounts', 'team-a', 'late');
  await waitFor('delete applied', () => cache.cached('team-a', 'late') === undefined);
  t.equal(await cache.get('team-a', 'late'), undefined, 'deleted: unknown (404 on the direct GET)');
});

// Imitation only: the watch is held back and dropped so the pod certainly comes first.
t.test('the ServiceAccount race: a miss in the cache, then a direct GET finds it', async (t) => {
  const { api, cache, metrics } = await setup(t);
  api.put(ns('team-a'));
  cache.start();
  await cache.waitForSync(5000);
  await waitFor('watch open', () => api.openWatches() === 1);
  // The watch is down (its reconnection held); the SA is created meanwhile.
  const watch = api.holdNext('GET', undefined, { watch: true });
  api.dropWatches();
  api.put(sa('team-a', 'fresh', { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/fresh' }));

  const [a, b] = await Promise.all([cache.get('team-a', 'fresh'), cache.get('team-a', 'fresh')]);
  t.same(a?.annotations, { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/fresh' });
  t.same(b, a, 'concurrent lookups share one answer');
  t.equal(directGets(api), 1, 'one direct GET for both');
  t.same(await cache.get('team-a', 'fresh'), a, 'then from the cache');
  t.equal(directGets(api), 1);

  t.equal(await cache.get('team-a', 'nobody'), undefined, 'absent: unknown');
  t.same(await lookups(metrics), { cache: 1, direct: 1, miss: 1, error: 0 });
  watch.release();
});

// Imitation only: a GET held back past the bound (on fake timers: it passes when the test says).
t.test('a direct GET with no answer within waitMs answers unknown once the bound passes', async (t) => {
  const timers = new FakeTimers();
  const { api, cache, metrics, logs } = await setup(t, { waitMs: 200, timers });
  api.put(ns('team-a'));
  api.put(sa('team-a', 'slow', { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/slow' }));
  // Held until the test is over: found, unless the bound ends the wait first.
  const get = api.holdNext('GET', '/serviceaccounts/slow', { watch: false });
  // Not started: the cache is empty, so the lookup is a direct GET.
  const answer = cache.get('team-a', 'slow');
  await get.reached;
  t.equal(directGets(api), 1);
  timers.advance(199);
  t.equal(timers.pending, 1, 'the bound has not passed yet');
  timers.advance(1);
  t.equal(await answer, undefined, 'no answer within waitMs: unknown');
  t.same(await lookups(metrics), { cache: 0, direct: 0, miss: 0, error: 1 });
  t.match(logs.find('service account lookup failed; answering unknown'), [{ waitMs: 200, error: 'no answer within 200 ms' }]);
  get.release();
});


// Imitation only: a 500 answer and a held-back watch.
t.test('a failing API is asked once per TTL; other accounts are not held back', async (t) => {
  let clock = 0;
  const { api, cache, metrics } = await setup(t, { now: () => clock, unknownTtlMs: 1000 });
  api.put(ns('team-a'));
  cache.start();
  await cache.waitForSync(5000);
  await waitFor('watch open', () => api.openWatches() === 1);
  api.failNextGet(500, '/serviceaccounts/flaky');
  t.equal(await cache.get('team-a', 'flaky'), undefined, 'a 500: unknown');
  for (let i = 0; i < 10; i++) await cache.get('team-a', 'flaky');
  t.equal(directGets(api), 1, 'no GET while the failure is remembered');
  t.equal(await cache.get('team-a', 'other'), undefined, 'another account');
  t.equal(directGets(api), 2, 'is asked for on its own');
  clock += 1001;
  // Meanwhile the account appeared without the watch seeing it (its reconnection held).
  const watch = api.holdNext('GET', undefined, { watch: true });
  api.dropWatches();
  api.put(sa('team-a', 'flaky', { 'azure.workload.identity/client-id': 'c1' }));
  t.same((await cache.get('team-a', 'flaky'))?.annotations, { 'azure.workload.identity/client-id': 'c1' }, 'found by a direct GET after the TTL');
  t.same(await lookups(metrics), { cache: 0, direct: 1, miss: 1, error: 11 });
  watch.release();
});

// Imitation only: an expired watch history (410) on demand, and dropped watches.
t.test('history expired (410): relist, whether as an ERROR event or an HTTP 410', async (t) => {
  for (const tooOldAs of ['event', 'http'] as const) {
    await t.test(tooOldAs, async (t) => {
      const { api, cache } = await setup(t, { api: await startKubeApi({ tooOldAs }) });
      api.put(ns('team-a'));
      cache.start();
      await cache.waitForSync(5000);
      await waitFor('watch open', () => api.openWatches() === 1);
      // The resumed watch is held until the change it misses is compacted away.
      const watch = api.holdNext('GET', undefined, { watch: true });
      api.dropWatches();
      await watch.reached;
      api.put(sa('team-a', 'missed', { 'cloud.google.com/workload-identity-provider': 'projects/1/locations/global/workloadIdentityPools/p/providers/q' }));
      api.compact();
      watch.release();
      await waitFor('relisted', () => lists(api) >= 2);
      await waitFor('missed object listed', () => cache.cached('team-a', 'missed') !== undefined);
      t.equal(directGets(api), 0, 'found by the relist, not a direct GET');
      t.match(cache.status(), { synced: true, healthy: true });
    });
  }
});

// Imitation only: an outage at start and later.
t.test('API down at start: lookups answer unknown at once, readiness degraded, recovery when it comes up', async (t) => {
  const { api, cache, logs } = await setup(t);
  api.put(ns('team-a'));
  api.put(sa('team-a', 'app', { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/app' }));
  await api.stop();
  cache.start();
  await waitFor('a failure recorded', () => cache.status().failures >= 2);
  t.equal(await cache.get('team-a', 'app'), undefined, 'connection refused: unknown');
  t.match(cache.status(), { synced: false, healthy: false, lastError: /ECONNREFUSED|connect/ });
  t.ok(logs.find('Kubernetes API unreachable; cache not synced yet').length >= 1, 'logged');
  const warned = logs.find('Kubernetes API unreachable; cache not synced yet').filter((l) => l.level === 'warn');
  t.equal(warned.length, 1, `repeats are logged at debug (${cache.status().failures} failures)`);

  await api.start();
  t.equal(await cache.waitForSync(5000), true, 'synced once the API is up');
  t.same((await cache.get('team-a', 'app'))?.annotations, { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/app' });
  t.match(cache.status(), { synced: true, healthy: true, failures: 0 });

  // Down again later: the cache keeps answering, the status says it is stale.
  await api.stop();
  await waitFor('failure seen', () => !cache.status().healthy);
  t.same((await cache.get('team-a', 'app'))?.annotations, { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/app' }, 'served from the cache');
  t.equal(cache.synced(), true);
  t.ok(logs.find('Kubernetes API unreachable; serving from the last known cache').length >= 1);
  await api.start();
  await waitFor('healthy again', () => cache.status().healthy);
});

