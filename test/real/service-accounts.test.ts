/**
 * The ServiceAccount cache against the real API server, through the real client-node
 * code: the initial list keeps only the annotations of interest and answers from the
 * cache; an account the server does not know is asked for once per second, not once per
 * admission, and found as soon as the watch delivers it; the periodic resync relists.
 * Requests are counted by the API server itself (its request metrics). One server for
 * the file, a namespace per test.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { ServiceAccountCache } from '../../src/kube/service-accounts.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { LogSink } from '../support/app.js';
import { realKubeTestOptions, startRealKube } from '../support/kube-apiserver.js';
import { eventually } from '../support/real-cluster.js';

// This file starts etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

const BACKOFF = { initialMs: 20, maxMs: 100 };

async function lookups(metrics: Metrics): Promise<Record<string, number>> {
  const m = await metrics.serviceAccountLookups.get();
  return Object.fromEntries(m.values.map((v) => [String(v.labels.result), v.value]));
}

t.test('the ServiceAccount cache against the real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  const client = loadKubeClient({ file: kube.adminKubeconfig });
  /** Requests with this verb about ServiceAccounts the server answered so far (GET: one account; LIST). */
  const requests = async (verb: 'GET' | 'LIST'): Promise<number> => {
    let n = 0;
    for (const line of (await kube.request('GET', '/metrics')).body.split('\n')) {
      if (line.startsWith('apiserver_request_total{') && line.includes('resource="serviceaccounts"') && line.includes(`verb="${verb}"`) && !line.includes('subresource="token"')) {
        n += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
    }
    return n;
  };
  const cacheFor = (t: { teardown(fn: () => unknown): void }, opts: { resyncMs?: number; now?: () => number; unknownTtlMs?: number } = {}) => {
    const metrics = createMetrics({ defaultMetrics: false });
    const cache = new ServiceAccountCache({ core: client.core, watch: client.watch, log: createLogger({ level: 'debug', destination: new LogSink() }), metrics, backoff: BACKOFF, resyncMs: opts.resyncMs ?? 0, now: opts.now, unknownTtlMs: opts.unknownTtlMs });
    t.teardown(() => cache.stop());
    return { cache, metrics };
  };

  await t.test('initial list: annotations of interest only, answered from the cache', async (t) => {
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'team-a' } });
    await kube.must('POST', '/api/v1/namespaces/team-a/serviceaccounts', { metadata: { name: 'default' } });
    await kube.must('POST', '/api/v1/namespaces/team-a/serviceaccounts', {
      metadata: { name: 'app', annotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::111122223333:role/app', 'kubectl.kubernetes.io/last-applied-configuration': '{"huge":true}' } },
    });
    const { cache, metrics } = cacheFor(t);
    t.equal(cache.synced(), false, 'not synced before start');
    cache.start();
    t.equal(await cache.waitForSync(30_000), true);
    const gets = await requests('GET');
    t.same(await cache.get('team-a', 'app'), { namespace: 'team-a', name: 'app', annotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::111122223333:role/app' } });
    t.same((await cache.get('team-a', 'default'))?.annotations, {});
    t.equal(await requests('GET'), gets, 'no direct GET for cached accounts');
    t.same(await lookups(metrics), { cache: 2, direct: 0, miss: 0, error: 0 });
    t.match(cache.status(), { synced: true, healthy: true });
  });

  await t.test('an account the API does not know is asked for once per second, not once per admission', async (t) => {
    let clock = 0;
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'team-b' } });
    const { cache, metrics } = cacheFor(t, { now: () => clock, unknownTtlMs: 1000 });
    cache.start();
    t.equal(await cache.waitForSync(30_000), true);
    const gets = await requests('GET');
    for (let i = 0; i < 20; i++) t.equal(await cache.get('team-b', 'ghost'), undefined, `admission ${i}: unknown`);
    t.equal(await requests('GET'), gets + 1, 'one GET for 20 admissions');
    clock += 999;
    t.equal(await cache.get('team-b', 'ghost'), undefined);
    t.equal(await requests('GET'), gets + 1, 'still remembered just before the TTL ends');
    clock += 2;
    t.equal(await cache.get('team-b', 'ghost'), undefined);
    t.equal(await requests('GET'), gets + 2, 'asked again once the TTL is over');

    // Created now: the watch delivers it and the cache answers before the memory does.
    await kube.must('POST', '/api/v1/namespaces/team-b/serviceaccounts', { metadata: { name: 'ghost', annotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/ghost' } } });
    await eventually('delivered by the watch', async () => cache.cached('team-b', 'ghost') !== undefined);
    t.same((await cache.get('team-b', 'ghost'))?.annotations, { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/ghost' }, 'found within the TTL');
    t.equal(await requests('GET'), gets + 2);
    t.same(await lookups(metrics), { cache: 1, direct: 0, miss: 22, error: 0 });
  });

  await t.test('periodic resync relists', async (t) => {
    const { cache } = cacheFor(t, { resyncMs: 150 });
    const lists = await requests('LIST');
    cache.start();
    t.equal(await cache.waitForSync(30_000), true);
    await eventually('relisted twice', async () => (await requests('LIST')) >= lists + 3);
    t.equal(cache.synced(), true);
  });
});
