/**
 * `serve` with Kubernetes access, against the loopback imitation of the Kubernetes API,
 * for faults a real API server cannot be made to show on demand: the API going away and
 * coming back (readiness says degraded, admission goes on from the caches), and a
 * ServiceAccount GET that hangs (the reloaded wait bound cuts it). The same wiring against
 * the real server (namespace modes, pull-secret replication, ServiceAccount lookups) is in
 * test/real/adapters.test.ts and test/real/admission.test.ts. And the KubeConfig errors.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { KubeConfigError, loadKubeClient } from '../../src/kube/client.js';
import { serve } from '../../src/serve.js';
import { LogSink, review } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { kubeconfigFor, startKubeApi } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';
import { serveOptions } from '../support/serve.js';

const CONFIG = `mode: enforce
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
pullSecrets:
  - name: mirror-pull
    registries: [mirror.example.com]
    copyFrom: mirrorgate
`;

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-serve-kube-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

// Imitation: the API server is stopped and started again mid-test (an outage) to show
// degraded readiness without blocked admission. The audit label and replication are also
// shown by the real API server (test/real/identity.test.ts, test/real/chart.test.ts).
t.test('namespace audit label, pull-secret replication, degraded readiness', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: 'mirrorgate' } });
  api.put({ kind: 'Namespace', metadata: { name: 'team-a', labels: { 'mirrorgate.io/mode': 'audit' } } });
  api.put({ kind: 'Namespace', metadata: { name: 'team-b' } });
  api.put({ kind: 'Secret', metadata: { name: 'mirror-pull', namespace: 'mirrorgate' }, type: 'kubernetes.io/dockerconfigjson', data: { '.dockerconfigjson': 'e30=' } });
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const logs = new LogSink();
  const running = await serve(serveOptions(dir, { noKube: false, kubeconfig: await kubeconfigFor(api), logDestination: logs }));
  t.teardown(() => running.shutdown('test over'));
  const kube = running.kube;
  if (!kube) throw new Error('kube expected');
  await waitFor('caches synced', () => kube.namespaces.synced() && kube.serviceAccounts.synced() && kube.replicator?.synced() === true);

  const ready = await running.app.inject({ method: 'GET', url: '/readyz' });
  t.same(ready.json(), { status: 'ready', degraded: [] });

  const audited = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ namespace: 'team-a' }).body });
  const a = audited.json<{ response: { allowed: boolean; patch?: string; warnings?: string[] } }>().response;
  t.equal(a.patch, undefined, 'audit namespace: no patch');
  t.match(a.warnings?.join('\n') ?? '', /would be rewritten/);
  t.equal(api.get('secrets', 'team-a', 'mirror-pull'), undefined, 'no copy when nothing was added');

  const enforced = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ namespace: 'team-b' }).body });
  t.type(enforced.json<{ response: { patch?: string } }>().response.patch, 'string', 'other namespaces: patched');
  await waitFor('copy created', () => api.get('secrets', 'team-b', 'mirror-pull'));
  t.match(api.get('secrets', 'team-b', 'mirror-pull')?.metadata.labels, { 'app.kubernetes.io/managed-by': 'mirrorgate' });

  const dry = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ namespace: 'mirrorgate', dryRun: true }).body });
  t.equal(dry.statusCode, 200);

  // The API goes away: readiness says so, admission goes on.
  await api.stop();
  await waitFor('degraded reported', async () => (await running.app.inject({ method: 'GET', url: '/readyz' })).json<{ degraded: string[] }>().degraded.length > 0);
  const degraded = await running.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(degraded.statusCode, 200, 'still ready');
  t.match(degraded.json<{ degraded: string[] }>().degraded.join('\n'), /Kubernetes API unreachable, serviceaccounts served from cache/);
  const during = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ namespace: 'team-a' }).body });
  t.equal(during.json<{ response: { patch?: string } }>().response.patch, undefined, 'audit label still known from the cache');
  await api.start();
  await waitFor('recovered', async () => (await running.app.inject({ method: 'GET', url: '/readyz' })).json<{ degraded: string[] }>().degraded.length === 0);
  t.equal(api.get('secrets', 'mirrorgate', 'mirror-pull') !== undefined, true);
});

// Imitation: a 500 on the source list on demand. serve hands its timers to pull-secret
// replication too: the failed source list is retried on them, when they say.
t.test('pull-secret replication runs on the timers serve is given', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: 'mirrorgate' } });
  api.put({ kind: 'Secret', metadata: { name: 'mirror-pull', namespace: 'mirrorgate' }, type: 'kubernetes.io/dockerconfigjson', data: { '.dockerconfigjson': 'e30=' } });
  const sourceList = /^\/api\/v1\/namespaces\/mirrorgate\/secrets$/;
  api.onNext({ method: 'GET', path: sourceList, watch: false, status: 500 });
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const logs = new LogSink();
  const timers = new FakeTimers();
  // A jitter no other timer of serve's lands on: the default first backoff, 250 ms × 0.8492.
  timers.randomValue = 0.123;
  const running = await serve(serveOptions(dir, { noKube: false, kubeconfig: await kubeconfigFor(api), logDestination: logs, timers }));
  t.teardown(() => running.shutdown('test over'));
  const replicator = running.kube?.replicator;
  if (!replicator) throw new Error('replicator expected');
  await waitFor('the failed source list', () => logs.find('Kubernetes API unreachable; cache not synced yet').some((l) => l.informer === 'secrets/mirrorgate'));
  t.ok(timers.delays.includes(212), `its retry waits on the given timers (${timers.delays.join(', ')})`);
  t.equal(replicator.synced(), false);
  timers.advance(212);
  await waitFor('the retried list to sync the source', () => replicator.synced());
  t.equal(api.requests.filter((r) => sourceList.test(r.path) && !r.watch).length, 2, 'listed twice: the failure and the retry');
});

t.test('KubeConfig: a missing file or no config at all is a clear error', async (t) => {
  const dir = await tempDir(t);
  t.throws(() => loadKubeClient({ file: join(dir, 'nope') }), new KubeConfigError(`kubeconfig ${join(dir, 'nope')} does not exist`));
  t.throws(() => loadKubeClient({ env: {}, home: dir }), /no Kubernetes configuration.*--kubeconfig FILE or --no-kube/);
  t.throws(() => loadKubeClient({ env: { KUBECONFIG: join(dir, 'nope') }, home: dir }), /KUBECONFIG names/);
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  await t.rejects(serve(serveOptions(dir, { noKube: false, kubeconfig: join(dir, 'nope') })), KubeConfigError);
});

t.test('a reload applies identity.serviceAccountWaitMs to the next lookups', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: 'mirrorgate' } });
  api.put({ kind: 'Namespace', metadata: { name: 'team-a' } });
  const dir = await tempDir(t);
  const configPath = join(dir, 'config.yaml');
  const withWait = (ms: number): string => `${CONFIG}identity:\n  serviceAccountWaitMs: ${ms}\n`;
  await writeFile(configPath, withWait(100));
  const logs = new LogSink();
  const running = await serve(serveOptions(dir, { configPath, noKube: false, kubeconfig: await kubeconfigFor(api), logDestination: logs }));
  t.teardown(() => running.shutdown('test over'));
  const kube = running.kube;
  if (!kube) throw new Error('kube expected');
  await waitFor('caches synced', () => kube.namespaces.synced() && kube.serviceAccounts.synced());
  // The direct GET of an unknown ServiceAccount is held until the admission is answered: the log says which bound cut it.
  const lookupBound = async (account: string): Promise<unknown> => {
    const get = api.holdNext('GET', `/serviceaccounts/${account}`);
    const before = logs.find('service account lookup failed; answering unknown').length;
    await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ namespace: 'team-a', object: { metadata: {}, spec: { serviceAccountName: account, containers: [{ name: 'app', image: 'nginx:1' }] } } }).body });
    await get.reached; // the GET was made (and held): the bound, not an answer, ended the lookup
    get.release();
    return logs.find('service account lookup failed; answering unknown')[before]?.waitMs;
  };
  t.equal(await lookupBound('ghost-1'), 100, 'as started');
  await writeFile(configPath, withWait(300));
  await waitFor('the reload', () => logs.find('config reloaded').length === 1, 15_000);
  t.equal(await lookupBound('ghost-2'), 300, 'the reloaded bound');
  t.equal(logs.find('config rejected; the last good config stays in force').length, 0);
});
