/**
 * Pull-secret replication on injected timers, against the loopback imitation of the
 * Kubernetes API (test/support/kube-api.ts), through the real client-node code: the
 * source watch retries a failing list after the backoff it chose and relists at the
 * resync period only when that time has passed on the fake clock, with jitter from the
 * injected random source. The imitation answers 500 to the first lists, a fault the real
 * API server cannot be made to show on demand. Replication itself (copies, rotation,
 * foreign secrets, failures) runs against the real API server in test/real/adapters.test.ts.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { COPIED_FROM_ANNOTATION, MANAGED_BY_LABEL, PullSecretReplicator } from '../../src/kube/pull-secret-replicator.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { kubeconfigFor, startKubeApi, type KubeObject } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';

const SOURCE_LIST = /^\/api\/v1\/namespaces\/mirrorgate\/secrets$/;
const RESYNC_MS = 600_000;

function secret(namespace: string, name: string, data: string, labels?: Record<string, string>): KubeObject {
  return { kind: 'Secret', metadata: { name, namespace, ...(labels ? { labels } : {}) }, type: 'kubernetes.io/dockerconfigjson', data: { '.dockerconfigjson': Buffer.from(data).toString('base64') } };
}

t.test('the source watch backs off and resyncs on the injected timers; copies follow the source', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  for (const name of ['mirrorgate', 'team-a', 'team-own']) api.put({ kind: 'Namespace', metadata: { name } });
  api.put(secret('mirrorgate', 'mirror-pull', '{"auths":{}}'));
  api.put(secret('team-own', 'mirror-pull', 'theirs'));
  api.onNext({ method: 'GET', path: SOURCE_LIST, watch: false, status: 500, times: 2 });
  const lists = (): number => api.requests.filter((r) => SOURCE_LIST.test(r.path) && !r.watch).length;
  const watches = (): number => api.requests.filter((r) => SOURCE_LIST.test(r.path) && r.watch).length;

  const client = loadKubeClient({ file: await kubeconfigFor(api) });
  const timers = new FakeTimers();
  timers.randomValue = 1; // the top of the jitter band: 1.2 × the delay
  const logs = new LogSink();
  const replicator = new PullSecretReplicator({ core: client.core, watch: client.watch, log: createLogger({ level: 'debug', destination: logs }), backoff: { initialMs: 1000, maxMs: 60_000 }, resyncMs: RESYNC_MS, timers, clock: timers });
  t.teardown(() => replicator.stop());
  replicator.configure([{ name: 'mirror-pull', sourceNamespace: 'mirrorgate' }]);
  t.equal(timers.pending, 1, 'the resync period is on the injected timers');

  await waitFor('the first failed list to schedule its retry', () => timers.delays.length === 1);
  t.same(timers.delays, [1200], 'first retry after the initial backoff, +20% jitter');
  t.equal(lists(), 1);
  t.equal(replicator.synced(), false);

  // Not synced yet: a copy is still made, from a direct read of the source.
  replicator.ensure('team-a', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.match(api.get('secrets', 'team-a', 'mirror-pull'), { metadata: { labels: { [MANAGED_BY_LABEL]: 'mirrorgate' }, annotations: { [COPIED_FROM_ANNOTATION]: 'mirrorgate/mirror-pull' } } });

  timers.advance(1199);
  t.equal(timers.pending, 2, 'the retry still waits 1 ms before its time (and the resync)');
  timers.advance(1);
  t.equal(timers.pending, 1, 'the retry ran when it was due');
  await waitFor('the second failed list to schedule its retry', () => timers.delays.length === 2);
  t.same(timers.delays, [1200, 2400], 'the delay doubled');
  t.equal(lists(), 2);
  timers.advance(2400);
  await waitFor('the third list to sync the source', () => replicator.synced());
  t.equal(lists(), 3);
  await waitFor('the source watch to open', () => watches() === 1);

  // The resync relists when the period has passed on the fake clock.
  timers.advance(RESYNC_MS - 3600);
  await waitFor('the resync to relist', () => lists() === 4);
  await waitFor('the source watch to resume after the relist', () => watches() === 2);

  // The source rotates: the copy follows; the namespace's own secret does not.
  replicator.ensure('team-own', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.equal(logs.find('namespace has its own secret of that name; not replacing it').length, 1);
  const own = api.get('secrets', 'team-own', 'mirror-pull');
  const rotated = api.put(secret('mirrorgate', 'mirror-pull', '{"auths":{"mirror.example.com":{}}}'));
  await waitFor('the copy to follow the source', () => api.get('secrets', 'team-a', 'mirror-pull')?.data !== undefined && JSON.stringify(api.get('secrets', 'team-a', 'mirror-pull')?.data) === JSON.stringify(rotated.data));
  await replicator.idle();
  t.same(api.get('secrets', 'team-own', 'mirror-pull'), own, "the namespace's own secret is left alone after the source change");

  await replicator.stop();
  t.equal(timers.pending, 0, 'stop leaves nothing waiting on the timers');
});
