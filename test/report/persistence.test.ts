/**
 * Report persistence when the API misbehaves, against the loopback imitation of the
 * Kubernetes API (test/support/kube-api.ts), through the real @kubernetes/client-node code:
 * each test here needs a fault the real API server cannot be made to show on demand (a
 * write held back, conflicts forced, a 500, an outage), and says which. Everything else
 * (keys per replica, periodic flushes, a reloaded flush interval, reload on restart,
 * adoption, the size bound, garbage in a key) is tested against the real API server in
 * test/real/report-persistence.test.ts.
 */
import { KubeConfig } from '@kubernetes/client-node';
import t, { type Test } from 'tap';
import { readPod, planPod } from '../../src/core/pod.js';
import { compileRules } from '../../src/core/rules.js';
import { configMapStore, readMergedReport, ReportPersister, REPORT_CONFIGMAP, type ConfigMapStore } from '../../src/kube/report-store.js';
import { createLogger } from '../../src/logger.js';
import { ReportCache, type Report } from '../../src/report/rewrites.js';
import { LogSink } from '../support/app.js';
import { kubeconfigFor, startKubeApi, type KubeApi } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';

const NS = 'mirrorgate';
const T0 = Date.parse('2026-11-22T10:00:00Z');

const compiled = compileRules([{ from: 'docker.io', to: 'mirror.example.com/dockerhub' }]);
if (!compiled.ok) throw new Error('rules');
const ruleSet = compiled.ruleSet;

/** The decisions of one pod with these images (enforce mode, no policy). */
function decisions(images: readonly string[]) {
  const view = readPod({ spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } });
  if (!view.ok) throw new Error(view.error);
  return planPod({ operation: 'CREATE', subResource: '', pod: view.pod, oldPod: undefined, mode: 'enforce' }, { ruleSet, policy: undefined, pullSecrets: [] }).decisions;
}

interface Cluster {
  api: KubeApi;
  store: ConfigMapStore;
}

async function cluster(t: Test): Promise<Cluster> {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  const kc = new KubeConfig();
  kc.loadFromFile(await kubeconfigFor(api));
  return { api, store: configMapStore(kc, NS) };
}

interface Replica {
  cache: ReportCache;
  persister: ReportPersister;
  logs: LogSink;
  /** Admit `n` pods with nginx (rewritten) in `namespace`. */
  admit(n: number, image?: string, namespace?: string): void;
}

function replica(
  store: ConfigMapStore,
  name: string,
  opts: { now?: () => Date; flushSeconds?: number; staleAfterMs?: number; maxBytes?: number } = {},
): Replica {
  const now = opts.now ?? ((): Date => new Date(T0));
  const logs = new LogSink();
  const cache = new ReportCache(now, 'enforce');
  const persister = new ReportPersister({
    store,
    cache,
    replica: name,
    now,
    log: createLogger({ level: 'debug', destination: logs }),
    flushSeconds: opts.flushSeconds ?? 3600,
    staleAfterMs: opts.staleAfterMs,
    maxBytes: opts.maxBytes,
  });
  return {
    cache,
    persister,
    logs,
    admit(n, image = 'nginx:1.14.2', namespace = 'team-a') {
      for (let i = 0; i < n; i++) cache.record(decisions([image]), namespace);
    },
  };
}

function stored(api: KubeApi): Record<string, string> {
  const cm = api.get('configmaps', NS, REPORT_CONFIGMAP);
  return (cm?.data ?? {}) as Record<string, string>;
}

function storedReport(api: KubeApi, key: string): { updatedAt: string; report: Report } | undefined {
  const v = stored(api)[key];
  return v === undefined ? undefined : (JSON.parse(v) as { updatedAt: string; report: Report });
}

function rewrittenIn(api: KubeApi, key: string): number | undefined {
  return storedReport(api, key)?.report.registries['docker.io']?.rewritten;
}

async function mergedRewritten(store: ConfigMapStore): Promise<number | undefined> {
  return (await readMergedReport(store, new Date(T0))).registries['docker.io']?.rewritten;
}

// Imitation only: a PUT held back so that admissions land while the flush is in flight.
t.test('stop writes the final counts, also those recorded while a flush was in flight', async (t) => {
  const { api, store } = await cluster(t);
  const a = replica(store, 'pod-a');
  await a.persister.start();
  a.admit(1);
  await a.persister.flush();
  t.equal(rewrittenIn(api, 'pod-a'), 1);
  // A periodic flush is writing (its PUT held back) when more pods arrive and SIGTERM comes.
  const held = api.holdNext('PUT');
  a.admit(1);
  const inFlight = a.persister.flush();
  await held.reached;
  a.admit(5);
  const stopped = a.persister.stop();
  held.release();
  await stopped;
  await inFlight;
  t.equal(rewrittenIn(api, 'pod-a'), 7, 'nothing recorded before stop() is lost');
});

// Imitation only: a PUT held to force the two flushes to overlap (409 conflicts on demand).
t.test('two replicas flushing at the same moment: conflicts are retried, no write is lost', async (t) => {
  const { api, store } = await cluster(t);
  const a = replica(store, 'pod-a');
  const b = replica(store, 'pod-b');
  a.admit(1);
  await a.persister.flush();
  for (let round = 1; round <= 5; round++) {
    a.admit(1);
    b.admit(2);
    // Hold the first write back until the other one has landed: both read the same
    // resourceVersion, so the held one certainly conflicts and is retried.
    const held = api.holdNext('PUT');
    const flushes = [a.persister.flush(), b.persister.flush()];
    await held.reached;
    await Promise.race(flushes);
    held.release();
    await Promise.all(flushes);
    t.equal(rewrittenIn(api, 'pod-a'), 1 + round, `round ${round}: pod-a`);
    t.equal(rewrittenIn(api, 'pod-b'), 2 * round, `round ${round}: pod-b`);
  }
  t.equal(a.persister.lastError, undefined);
  t.equal(b.persister.lastError, undefined);
  t.equal(await mergedRewritten(store), 16);
});



// Imitation only: a PUT held to force the adoption race. Rounds: the writes as they come;
// the first held until the other one arrives (released while it is handled); the first
// held until the other one has landed (the held one certainly conflicts).
t.test('rolling update: two new replicas racing to adopt one key never count it twice', async (t) => {
  for (const hold of ['none', 'until-arrived', 'until-landed'] as const) {
    const { api, store } = await cluster(t);
    let clock = T0;
    const now = (): Date => new Date(clock);
    const old = replica(store, 'pod-old', { now, staleAfterMs: 1000 });
    old.admit(10);
    await old.persister.stop();
    clock = T0 + 5000;
    const n1 = replica(store, 'pod-new-1', { now, staleAfterMs: 1000 });
    const n2 = replica(store, 'pod-new-2', { now, staleAfterMs: 1000 });
    n1.admit(1);
    n2.admit(2);
    const puts = api.requests.filter((r) => r.method === 'PUT').length;
    const held = hold === 'none' ? undefined : api.holdNext('PUT');
    const flushes = [n1.persister.flush(), n2.persister.flush()];
    if (held !== undefined) {
      await held.reached;
      if (hold === 'until-arrived') await waitFor('the other PUT', () => api.requests.filter((r) => r.method === 'PUT').length === puts + 2);
      else await Promise.race(flushes);
      held.release();
    }
    await Promise.all(flushes);
    await Promise.all([n1.persister.stop(), n2.persister.stop()]);
    t.same(Object.keys(stored(api)).sort(), ['pod-new-1', 'pod-new-2'], `${hold}: old key gone`);
    t.equal(n1.logs.find('adopted report keys of replicas that are gone').length + n2.logs.find('adopted report keys of replicas that are gone').length, 1, `${hold}: adopted once`);
    t.equal(await mergedRewritten(store), 13, `${hold}: 10 + 1 + 2`);
    const live = (n1.cache.snapshot().registries['docker.io']?.rewritten ?? 0) + (n2.cache.snapshot().registries['docker.io']?.rewritten ?? 0);
    t.equal(live, 13, `${hold}: live counts agree`);
  }
});



// Imitation only: an outage at start and during a flush.
t.test('the API down at start and during a flush: logged, lastError set, retried, nothing lost', async (t) => {
  const { api, store } = await cluster(t);
  const before = replica(store, 'pod-a');
  before.admit(3);
  await before.persister.stop();

  // Restart while the API is down: nothing to reload yet.
  await api.stop();
  const a = replica(store, 'pod-a');
  await a.persister.start();
  t.teardown(() => a.persister.stop());
  t.ok(a.persister.lastError, 'lastError set');
  t.match(a.logs.find('report not reloaded yet: Kubernetes API unreachable; the stored counts are taken in at the next flush'), [{ level: 'warn', error: /.+/ }], 'a warning is logged');
  a.admit(1);
  t.equal((await a.persister.merged()).registries['docker.io']?.rewritten, 1, 'merged falls back to this replica');

  await api.start();
  await a.persister.flush();
  t.equal(a.persister.lastError, undefined, 'cleared by a successful flush');
  t.equal(rewrittenIn(api, 'pod-a'), 4, 'the counts stored before the restart are kept');
  t.equal(a.cache.snapshot().registries['docker.io']?.rewritten, 4);
  t.equal((await a.persister.merged()).registries['docker.io']?.rewritten, 4);

  // Down during a flush.
  await api.stop();
  a.admit(2);
  await a.persister.flush();
  t.match(a.persister.lastError, /.+/, 'lastError set by the failed flush');
  t.ok(a.logs.find('report flush failed; will retry at the next interval').length >= 1);
  await api.start();
  await a.persister.flush();
  t.equal(a.persister.lastError, undefined);
  t.equal(rewrittenIn(api, 'pod-a'), 6, 'nothing lost');
  await a.persister.flush(true);
  t.equal(rewrittenIn(api, 'pod-a'), 6, 'nothing doubled');
});

// Imitation only: a 500 answer.
t.test('an API error answer (500) during a flush is retried at the next one', async (t) => {
  const { api, store } = await cluster(t);
  const a = replica(store, 'pod-a');
  a.admit(2);
  api.onNext({ method: 'POST', status: 500 });
  await a.persister.flush();
  t.ok(a.persister.lastError);
  t.equal(api.get('configmaps', NS, REPORT_CONFIGMAP), undefined);
  await a.persister.flush();
  t.equal(a.persister.lastError, undefined);
  t.equal(rewrittenIn(api, 'pod-a'), 2);
});




// Imitation only: the API is down while admissions come in (an outage).
t.test('counts reloaded after new admissions keep the newer lastSeen', async (t) => {
  const { api, store } = await cluster(t);
  let clock = T0;
  const now = (): Date => new Date(clock);
  const before = replica(store, 'pod-a', { now });
  before.admit(1);
  await before.persister.stop();
  await api.stop();
  clock = T0 + 60_000;
  const after = replica(store, 'pod-a', { now });
  await after.persister.start();
  t.teardown(() => after.persister.stop());
  after.admit(1);
  await api.start();
  await after.persister.flush();
  t.match(after.cache.snapshot().registries['docker.io'], { rewritten: 2, firstSeen: new Date(T0).toISOString(), lastSeen: new Date(T0 + 60_000).toISOString() });
});

t.test('the trend and per-image usage are persisted with the report, reloaded, merged across replicas, within the size limit', async (t) => {
  const { api, store } = await cluster(t);
  let clock = T0;
  const now = (): Date => new Date(clock);
  const a = replica(store, 'pod-a', { now });
  const b = replica(store, 'pod-b', { now });
  // Eight days of traffic on pod-a, one pod an hour; pod-b joins in the last hour.
  for (let h = 0; h < 8 * 24; h++) {
    a.admit(1);
    if (h < 8 * 24 - 1) clock += 3_600_000;
  }
  b.admit(2);
  await a.persister.flush();
  await b.persister.flush();
  const mine = storedReport(api, 'pod-a')?.report;
  t.equal(mine?.trend.length, 168, 'seven days of hourly points stored');
  t.equal(mine?.registries['docker.io']?.usage['docker.io/library/nginx:1.14.2']?.admissions, 192, 'per-image usage stored');

  const merged = await readMergedReport(store, now());
  t.same(merged.trend.at(-1), { hour: new Date(clock - (clock % 3_600_000)).toISOString(), done: 3, total: 3 }, 'the same hour summed over replicas');
  t.equal(merged.registries['docker.io']?.usage['docker.io/library/nginx:1.14.2']?.admissions, 194);

  // A restart of pod-a continues its trend rather than starting a new one.
  await a.persister.stop();
  const again = replica(store, 'pod-a', { now });
  await again.persister.start();
  t.teardown(() => again.persister.stop());
  again.admit(1);
  t.same(again.cache.snapshot().trend.at(-1), { hour: new Date(clock - (clock % 3_600_000)).toISOString(), done: 2, total: 2 }, 'reloaded, then counted on');

  // Within a small size limit: lists are cut first, the trend last, and the write fits.
  const alone = await cluster(t);
  const small = replica(alone.store, 'pod-c', { now, maxBytes: 6_000 });
  for (let i = 0; i < 200; i++) small.cache.record(decisions([`registry-${i % 4}.example.com/team/app-${i}:1.0`]), `ns-${i % 5}`);
  for (let h = 0; h < 168; h++) {
    clock += 3_600_000;
    small.admit(1);
  }
  await small.persister.flush();
  t.equal(small.persister.lastError, undefined);
  const value = stored(alone.api)['pod-c'] ?? '';
  t.ok(Buffer.byteLength(value) <= 6_000, `stored ${Buffer.byteLength(value)} bytes within 6000`);
  const cut = storedReport(alone.api, 'pod-c')?.report;
  t.ok((cut?.trend.length ?? 0) > 0, `the trend kept (${cut?.trend.length ?? 0} hours) while lists gave way`);
  t.equal(Object.values(cut?.registries ?? {}).reduce((n, e) => n + e.unchanged + e.rewritten, 0), 368, 'every admission still counted');
});
