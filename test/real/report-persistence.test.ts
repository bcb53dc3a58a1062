/**
 * Report persistence against the real API server, through the real @kubernetes/client-node
 * code: ConfigMap `mirrorgate-report`, one key per replica, resourceVersion-checked writes,
 * periodic flushes (none while nothing changed, as the server's own request metrics show),
 * a reloaded flush interval and staleness (the latter also as `serve` applies it), reload
 * on restart, adoption of the keys of replicas a rolling update removed, an idle
 * replica's heartbeat, the merged view, the size bound, garbage in a key. One server for
 * the file, a fresh namespace per test. Faults the real server cannot be made to show are
 * in test/report/persistence.test.ts.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import { readPod, planPod } from '../../src/core/pod.js';
import { compileRules } from '../../src/core/rules.js';
import { configMapStore, readMergedReport, ReportPersister, REPORT_CONFIGMAP, type ConfigMapStore } from '../../src/kube/report-store.js';
import { createLogger } from '../../src/logger.js';
import { ReportCache, type Report } from '../../src/report/rewrites.js';
import { serve } from '../../src/serve.js';
import { LogSink } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import { eventually } from '../support/real-cluster.js';
import { serveOptions, tempDir } from '../support/serve.js';

// This file starts etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

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

/** One test's corner of the real server: its own namespace. */
interface Cluster {
  readonly kube: RealKube;
  readonly ns: string;
  readonly store: ConfigMapStore;
  configMap(): Promise<{ metadata: { labels?: Record<string, string> }; data?: Record<string, string> } | undefined>;
  /** Requests with this verb about ConfigMaps the API server answered so far (all namespaces). */
  configMapRequests(verb: string): Promise<number>;
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
  opts: { now?: () => Date; flushSeconds?: number; staleAfterMs?: number; maxBytes?: number; timers?: FakeTimers } = {},
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
    timers: opts.timers,
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

async function stored(c: Cluster): Promise<Record<string, string>> {
  return (await c.configMap())?.data ?? {};
}

async function storedReport(c: Cluster, key: string): Promise<{ updatedAt: string; report: Report } | undefined> {
  const v = (await stored(c))[key];
  return v === undefined ? undefined : (JSON.parse(v) as { updatedAt: string; report: Report });
}

async function rewrittenIn(c: Cluster, key: string): Promise<number | undefined> {
  return (await storedReport(c, key))?.report.registries['docker.io']?.rewritten;
}

async function mergedRewritten(store: ConfigMapStore): Promise<number | undefined> {
  return (await readMergedReport(store, new Date(T0))).registries['docker.io']?.rewritten;
}

/**
 * The store, counting what the persister asks of it. A flush reads before anything else,
 * and it starts at once when its timer fires: a read counted right after the fake timers
 * moved is a flush the timer began.
 */
function counting(store: ConfigMapStore): { store: ConfigMapStore; reads(): number; writes(): number } {
  let reads = 0;
  let writes = 0;
  return {
    store: {
      read: () => {
        reads++;
        return store.read();
      },
      create: (data) => {
        writes++;
        return store.create(data);
      },
      replace: (data, rv) => {
        writes++;
        return store.replace(data, rv);
      },
    },
    reads: () => reads,
    writes: () => writes,
  };
}

/** A store that refuses objects over `limit` bytes, as the API server refuses ConfigMaps over 1 MiB. */
function limited(store: ConfigMapStore, limit: number): ConfigMapStore {
  const size = (data: Record<string, string>): number => Object.entries(data).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
  const check = (data: Record<string, string>): void => {
    if (size(data) > limit) throw new Error(`ConfigMap "mirrorgate-report" is invalid: []: Too long: must have at most ${limit} bytes`);
  };
  return {
    read: () => store.read(),
    create: async (data) => {
      check(data);
      await store.create(data);
    },
    replace: async (data, rv) => {
      check(data);
      await store.replace(data, rv);
    },
  };
}

t.test('report persistence against the real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  const kc = new KubeConfig();
  kc.loadFromFile(kube.adminKubeconfig);
  let n = 0;
  const cluster = async (_t: unknown): Promise<Cluster> => {
    const ns = `report-${++n}`;
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    return {
      kube,
      ns,
      store: configMapStore(kc, ns),
      configMap: async () => {
        const a = await kube.request('GET', `/api/v1/namespaces/${ns}/configmaps/${REPORT_CONFIGMAP}`);
        return a.status === 200 ? (JSON.parse(a.body) as { metadata: { labels?: Record<string, string> }; data?: Record<string, string> }) : undefined;
      },
      configMapRequests: async (verb) => {
        let total = 0;
        for (const line of (await kube.request('GET', '/metrics')).body.split('\n')) {
          if (line.startsWith('apiserver_request_total{') && line.includes('resource="configmaps"') && line.includes(`verb="${verb}"`)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
        }
        return total;
      },
    };
  };

  await t.test('the first flush creates the ConfigMap; each replica writes its own key', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    const a = replica(store, 'pod-a');
    const b = replica(store, 'pod-b');
    a.admit(2);
    b.admit(3);
    await a.persister.flush();
    const cm = await api.configMap();
    t.ok(cm, 'created');
    t.same(cm?.metadata.labels, { 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/component': 'report' });
    t.same(Object.keys(await stored(api)), ['pod-a']);
    await b.persister.flush();
    t.same(Object.keys(await stored(api)).sort(), ['pod-a', 'pod-b']);
    t.equal((await rewrittenIn(api, 'pod-a')), 2);
    t.equal((await rewrittenIn(api, 'pod-b')), 3);
    t.match((await storedReport(api, 'pod-a')), { updatedAt: new Date(T0).toISOString(), report: { registries: { 'docker.io': { target: 'mirror.example.com/dockerhub', namespaces: ['team-a'], images: ['docker.io/library/nginx:1.14.2'] } } } });
    t.equal(a.persister.lastError, undefined);
    t.equal(await mergedRewritten(store), 5, 'readMergedReport sums the replicas');
  });

  await t.test('flushes periodically, and not when nothing changed', async (t) => {
    const api = await cluster(t);
    const counted = counting(api.store);
    const timers = new FakeTimers();
    const a = replica(counted.store, 'pod-a', { flushSeconds: 60, timers });
    await a.persister.start();
    t.teardown(() => a.persister.stop());
    /** One interval on the fake timers: the flush it began, to its end. */
    const interval = async (what: string): Promise<void> => {
      const reads = counted.reads();
      timers.advance(60_000);
      t.equal(counted.reads(), reads + 1, `${what}: the timer began a flush`);
      await a.persister.flush(); // the one in flight
    };
    a.admit(1);
    await interval('first');
    t.equal(await rewrittenIn(api, 'pod-a'), 1, 'written at the first interval');
    a.admit(2);
    await interval('second');
    t.equal(await rewrittenIn(api, 'pod-a'), 3, 'and at the next');
    // Idle: intervals pass without a write (the wall clock stands still, so no heartbeat is due).
    // Counted by the API server itself too (its request metrics for ConfigMaps).
    const writes = counted.writes();
    const puts = await api.configMapRequests('PUT');
    for (let i = 1; i <= 3; i++) await interval(`idle ${i}`);
    t.equal(counted.writes(), writes, 'no write while nothing changed');
    t.equal(await api.configMapRequests('PUT'), puts, 'none reached the API server');
  });

  await t.test('a reloaded flushSeconds applies to the next writes', async (t) => {
    const api = await cluster(t);
    const counted = counting(api.store);
    const timers = new FakeTimers();
    const a = replica(counted.store, 'pod-a', { flushSeconds: 3600, timers });
    await a.persister.start();
    t.teardown(() => a.persister.stop());
    a.admit(1);
    // start() wrote the empty key; at the interval it started with, nothing follows for an hour.
    const reads = counted.reads();
    timers.advance(60_000);
    t.equal(counted.reads(), reads, 'no flush a minute in at 3600 s');
    const puts = await api.configMapRequests('PUT');
    a.persister.setFlushSeconds(60);
    // The next write comes an interval after the reload.
    timers.advance(59_999);
    t.equal(counted.reads(), reads, 'not before the new interval has passed');
    timers.advance(1);
    t.equal(counted.reads(), reads + 1, 'a flush at the new interval');
    await a.persister.flush(); // the one in flight
    t.equal(await rewrittenIn(api, 'pod-a'), 1);
    t.ok((await api.configMapRequests('PUT')) > puts, 'written by the timer, not by start() (the API server counted the update)');
    a.admit(2);
    timers.advance(60_000);
    t.equal(counted.reads(), reads + 2, 'and the next one');
    await a.persister.flush();
    t.equal(await rewrittenIn(api, 'pod-a'), 3);
  });

  await t.test('a restart with the same replica name continues the counts, never doubles them', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    const first = replica(store, 'pod-a');
    await first.persister.start();
    first.admit(3);
    await first.persister.stop();
    t.equal((await rewrittenIn(api, 'pod-a')), 3);

    const second = replica(store, 'pod-a');
    await second.persister.start();
    t.equal(second.cache.snapshot().registries['docker.io']?.rewritten, 3, 'reloaded on start');
    t.equal(second.logs.find('report reloaded from the cluster').length, 1);
    second.admit(1);
    await second.persister.flush();
    await second.persister.flush(true);
    await second.persister.stop();
    t.equal((await rewrittenIn(api, 'pod-a')), 4, 'continued, not doubled');
    t.equal(await mergedRewritten(store), 4);
  });

  await t.test('rolling update: the key of a replica that is gone is adopted exactly once', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    let clock = T0;
    const now = (): Date => new Date(clock);
    const staleAfterMs = 60_000;
    const old = replica(store, 'pod-old', { now, staleAfterMs });
    old.admit(4);
    old.admit(1, 'redis:7', 'team-b');
    await old.persister.stop();

    // Not yet stale: the new replica leaves it alone.
    clock = T0 + staleAfterMs - 1000;
    const fresh = replica(store, 'pod-new-1', { now, staleAfterMs });
    fresh.admit(2);
    await fresh.persister.flush();
    t.same(Object.keys(await stored(api)).sort(), ['pod-new-1', 'pod-old']);

    clock = T0 + staleAfterMs + 1000;
    fresh.admit(1);
    await fresh.persister.flush();
    t.same(Object.keys(await stored(api)), ['pod-new-1'], 'old key deleted');
    t.equal((await rewrittenIn(api, 'pod-new-1')), 8, 'old counts summed into the adopter');
    t.match((await storedReport(api, 'pod-new-1'))?.report.registries['docker.io'], { namespaces: ['team-a', 'team-b'] });
    t.equal(fresh.cache.snapshot().registries['docker.io']?.rewritten, 8, 'and into its live counts');
    t.equal(fresh.logs.find('adopted report keys of replicas that are gone').length, 1);

    // Later flushes do not add the adopted counts again.
    fresh.admit(1);
    await fresh.persister.flush();
    await fresh.persister.flush(true);
    t.equal((await rewrittenIn(api, 'pod-new-1')), 9);
    t.equal(await mergedRewritten(store), 9);
  });

  await t.test('a reloaded staleAfterMs applies at the next flush', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    let clock = T0;
    const now = (): Date => new Date(clock);
    const old = replica(store, 'pod-old', { now });
    old.admit(2);
    await old.persister.stop();

    clock = T0 + 5 * 60_000;
    const live = replica(store, 'pod-live', { now, flushSeconds: 60, staleAfterMs: 10 * 60_000 });
    live.admit(1);
    await live.persister.flush();
    t.same(Object.keys(await stored(api)).sort(), ['pod-live', 'pod-old'], 'five minutes old, stale only after ten: kept');

    live.persister.setStaleAfterMs(4 * 60_000);
    await live.persister.flush();
    t.same(Object.keys(await stored(api)), ['pod-live'], 'stale after four minutes now: adopted, with nothing new to write');
    t.equal(await rewrittenIn(api, 'pod-live'), 3, 'its counts summed into the adopter');
  });

  await t.test('serve applies a reloaded report.staleAfterSeconds to the next flush', async (t) => {
    const api = await cluster(t);
    // A replica that exited a minute ago left its key.
    const gone = replica(api.store, 'pod-gone', { now: () => new Date(Date.now() - 60_000) });
    gone.admit(4);
    await gone.persister.stop();

    const dir = await tempDir(t, 'mg-report-');
    const configPath = join(dir, 'config.yaml');
    // Replaced by a rename, as a ConfigMap update replaces the file.
    const writeConfig = async (report: string): Promise<void> => {
      await writeFile(`${configPath}.next`, `mode: enforce\nrules:\n  - from: docker.io\n    to: mirror.example.com/dockerhub\nreport: ${report}\n`);
      await rename(`${configPath}.next`, configPath);
    };
    await writeConfig('{flushSeconds: 5, staleAfterSeconds: 3600}');
    const logs = new LogSink();
    const running = await serve(serveOptions(dir, { configPath, noKube: false, kubeconfig: kube.adminKubeconfig, namespace: api.ns, replica: 'pod-live', logDestination: logs }));
    t.teardown(() => running.shutdown('test over'));
    t.same(Object.keys(await stored(api)).sort(), ['pod-gone', 'pod-live'], 'a minute old, stale only after an hour: kept by the first flush');

    await writeConfig('{flushSeconds: 5, staleAfterSeconds: 30}');
    await eventually('the reload', async () => logs.find('config reloaded').length === 1);
    await eventually('the key adopted at a flush after the reload', async () => (await stored(api))['pod-gone'] === undefined);
    t.equal(await rewrittenIn(api, 'pod-live'), 4, 'its counts summed into the live replica');
  });

  await t.test('an idle replica keeps its key fresh, so no one adopts a live replica', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    let clock = T0;
    const now = (): Date => new Date(clock);
    const staleAfterMs = 60_000;
    const idle = replica(store, 'pod-idle', { now, staleAfterMs, flushSeconds: 20 });
    idle.admit(3);
    await idle.persister.flush();
    // Periodic flushes with nothing new while time passes.
    for (clock = T0; clock <= T0 + 2 * staleAfterMs; clock += 20_000) await idle.persister.flush();
    const busy = replica(store, 'pod-busy', { now, staleAfterMs, flushSeconds: 20 });
    busy.admit(1);
    await busy.persister.flush();
    t.same(Object.keys(await stored(api)).sort(), ['pod-busy', 'pod-idle'], 'the idle key was not adopted');
    idle.admit(1);
    await idle.persister.flush();
    t.equal(await mergedRewritten(store), 5, 'nothing counted twice');
  });

  await t.test('the merged view is the sum over replicas, with this replica live', async (t) => {
    const { store } = await cluster(t);
    const a = replica(store, 'pod-a');
    const b = replica(store, 'pod-b');
    const c = replica(store, 'pod-c');
    a.admit(1);
    b.admit(2, 'nginx:1.14.2', 'team-b');
    c.admit(4, 'redis:7', 'team-c');
    await Promise.all([a.persister.flush(), b.persister.flush(), c.persister.flush()]);
    a.admit(10, 'busybox', 'team-a');
    const merged = await a.persister.merged();
    t.equal(merged.registries['docker.io']?.rewritten, 17);
    t.same([...(merged.registries['docker.io']?.namespaces ?? [])].sort(), ['team-a', 'team-b', 'team-c']);
    t.same(new Set(merged.registries['docker.io']?.images), new Set(['docker.io/library/busybox', 'docker.io/library/nginx:1.14.2', 'docker.io/library/redis:7']));
  });

  await t.test('the size bound: many registries and images stay under the budget, counts intact', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    const maxBytes = 20_000;
    const capped = limited(store, 24_000);
    const a = replica(capped, 'pod-a', { maxBytes });
    let pods = 0;
    for (let r = 0; r < 40; r++) {
      for (let i = 0; i < 30; i++) {
        a.cache.record(decisions([`registry-${r}.example.com/team/app-${i}:1.0.${i}`]), `ns-${i % 7}`);
        pods++;
      }
    }
    a.admit(25);
    await a.persister.flush();
    t.equal(a.persister.lastError, undefined);
    const value = (await stored(api))['pod-a'] ?? '';
    t.ok(Buffer.byteLength(value) <= maxBytes, `stored ${Buffer.byteLength(value)} bytes, budget ${maxBytes}`);
    const report = (await storedReport(api, 'pod-a'))?.report;
    const entries = Object.values(report?.registries ?? {});
    t.equal(entries.reduce((n, e) => n + e.unchanged, 0), pods, 'every admission still counted');
    t.equal(report?.registries['docker.io']?.rewritten, 25);
    t.equal(entries.reduce((n, e) => n + e.images.length + e.imagesOverflow, 0), pods + 1, 'images listed or counted as overflow');

    // A second replica joins while the first holds the whole budget: its write is not refused,
    // and once both have written again they share it.
    const b = replica(capped, 'pod-b', { maxBytes });
    for (let i = 0; i < 400; i++) b.cache.record(decisions([`other-${i % 3}.example.com/team/tool-${i}:2.0`]), `ns-b-${i % 5}`);
    b.admit(2, 'redis:7');
    await b.persister.flush();
    t.equal(b.persister.lastError, undefined, 'the newcomer can write');
    a.admit(1);
    await a.persister.flush();
    b.admit(1, 'redis:7');
    await b.persister.flush();
    const total = Object.entries(await stored(api)).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
    t.ok(total <= maxBytes, `both keys together ${total} bytes, budget ${maxBytes}`);
    t.equal(await mergedRewritten(capped), 29);
  });

  await t.test('garbage in a key is ignored by readers and never breaks a flush', async (t) => {
    const api = await cluster(t);
    const { store } = api;
    await api.kube.must('POST', `/api/v1/namespaces/${api.ns}/configmaps`, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: REPORT_CONFIGMAP, namespace: api.ns },
      data: {
        'pod-a': '{"updatedAt": 12, "report": [',
        'pod-junk': 'not json at all',
        'pod-array': '[1,2,3]',
        'pod-bad-counts': JSON.stringify({ updatedAt: new Date(T0).toISOString(), report: { registries: { 'docker.io': { rewritten: -5, wouldRewrite: 'many', images: [1, 'docker.io/library/x:1'] } } } }),
      },
    });
    t.equal(await mergedRewritten(store), 0, 'readMergedReport survives garbage; bad counts read as 0');
    const a = replica(store, 'pod-a');
    await a.persister.start();
    t.same(a.cache.snapshot().registries, {}, 'an unreadable own key is not reloaded');
    a.admit(2);
    await a.persister.stop();
    t.equal(a.persister.lastError, undefined);
    t.equal((await rewrittenIn(api, 'pod-a')), 2, 'own garbage replaced');
    t.equal(await mergedRewritten(store), 2);
    t.same((await a.persister.merged()).registries['docker.io']?.images.sort(), ['docker.io/library/nginx:1.14.2', 'docker.io/library/x:1']);
  });
});
