/**
 * Pull-secret replication against the loopback Kubernetes API: a copy is created on
 * demand (labelled, annotated with its source), kept in sync when the source changes,
 * and a namespace's own secret of the same name is never touched.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { COPIED_FROM_ANNOTATION, MANAGED_BY_LABEL, PullSecretReplicator } from '../../src/kube/pull-secret-replicator.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { kubeconfigFor, startKubeApi, waitFor, type KubeApi, type KubeObject } from '../support/kube-api.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

function ns(name: string): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
}

function dockerSecret(namespace: string, name: string, auth: string, extra: Partial<KubeObject['metadata']> = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace, ...extra },
    type: 'kubernetes.io/dockerconfigjson',
    data: { '.dockerconfigjson': b64(JSON.stringify({ auths: { 'mirror.example.com': { auth: b64(auth) } } })) },
  };
}

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ api: KubeApi; replicator: PullSecretReplicator; logs: LogSink }> {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  for (const n of ['mirrorgate', 'team-a', 'team-b']) api.put(ns(n));
  api.put(dockerSecret('mirrorgate', 'mirror-pull', 'user:one'));
  api.put(dockerSecret('mirrorgate', 'unrelated', 'x:y'));
  const logs = new LogSink();
  const client = loadKubeClient({ file: await kubeconfigFor(api) });
  const replicator = new PullSecretReplicator({ core: client.core, watch: client.watch, log: createLogger({ destination: logs }), backoff: { initialMs: 20, maxMs: 100 }, resyncMs: 0 });
  t.teardown(() => replicator.stop());
  replicator.configure([{ name: 'mirror-pull', sourceNamespace: 'mirrorgate' }]);
  await waitFor('source synced', () => replicator.synced());
  return { api, replicator, logs };
}

const writes = (api: KubeApi): number => api.requests.filter((r) => r.method === 'POST' || r.method === 'PUT').length;

t.test('creates a labelled copy on demand, then keeps it in sync with the source', async (t) => {
  const { api, replicator } = await setup(t);
  replicator.ensure('team-a', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  const copy = api.get('secrets', 'team-a', 'mirror-pull');
  const source = api.get('secrets', 'mirrorgate', 'mirror-pull');
  t.equal(copy?.metadata.labels?.[MANAGED_BY_LABEL], 'mirrorgate');
  t.equal(copy?.metadata.annotations?.[COPIED_FROM_ANNOTATION], 'mirrorgate/mirror-pull');
  t.equal(copy?.type, 'kubernetes.io/dockerconfigjson');
  t.same(copy?.data, source?.data);

  const before = writes(api);
  for (let i = 0; i < 5; i++) replicator.ensure('team-a', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.equal(writes(api), before, 'a known, current copy costs no API call');

  replicator.ensure('team-b', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.ok(api.get('secrets', 'team-b', 'mirror-pull'), 'second namespace');

  // The source is rotated: every copy follows.
  api.put(dockerSecret('mirrorgate', 'mirror-pull', 'user:two'));
  const rotated = api.get('secrets', 'mirrorgate', 'mirror-pull')?.data;
  await waitFor('copies updated', () =>
    ['team-a', 'team-b'].every((n) => JSON.stringify(api.get('secrets', n, 'mirror-pull')?.data) === JSON.stringify(rotated)),
  );
  await replicator.idle();
  t.pass('both copies carry the new data');

  t.equal(api.get('secrets', 'team-a', 'unrelated'), undefined, 'unconfigured secrets are never copied');
  replicator.ensure('team-a', 'unrelated', 'mirrorgate');
  await replicator.idle();
  t.equal(api.get('secrets', 'team-a', 'unrelated'), undefined);
});

t.test("a namespace's own secret of that name is left alone", async (t) => {
  const { api, replicator, logs } = await setup(t);
  api.put(dockerSecret('team-a', 'mirror-pull', 'team:own'));
  const own = api.get('secrets', 'team-a', 'mirror-pull');
  replicator.ensure('team-a', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.same(api.get('secrets', 'team-a', 'mirror-pull'), own, 'unchanged');
  t.equal(logs.find('namespace has its own secret of that name; not replacing it').length, 1);
  // A managed copy elsewhere shows when the replicator has seen the source change: no
  // fixed sleep, which would pass whether or not the event ever arrived.
  replicator.ensure('team-b', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  api.put(dockerSecret('mirrorgate', 'mirror-pull', 'user:two'));
  const rotated = JSON.stringify(api.get('secrets', 'mirrorgate', 'mirror-pull')?.data);
  await waitFor('the managed copy followed the source', () => JSON.stringify(api.get('secrets', 'team-b', 'mirror-pull')?.data) === rotated);
  await replicator.idle();
  t.same(api.get('secrets', 'team-a', 'mirror-pull'), own, 'still unchanged after a source change');
});

t.test('failures never throw: a missing namespace or source is logged, and retried on the next ask', async (t) => {
  const { api, replicator, logs } = await setup(t);
  replicator.ensure('no-such-ns', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.equal(logs.find('pull secret copy failed').length, 1, 'create into a missing namespace fails, logged');
  api.put(ns('no-such-ns'));
  replicator.ensure('no-such-ns', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.ok(api.get('secrets', 'no-such-ns', 'mirror-pull'), 'created on the next ask');

  api.remove('secrets', 'mirrorgate', 'mirror-pull');
  await waitFor('deletion seen', () => logs.find('source pull secret deleted; existing copies are left as they are').length === 1);
  replicator.ensure('team-b', 'mirror-pull', 'mirrorgate');
  await replicator.idle();
  t.equal(api.get('secrets', 'team-b', 'mirror-pull'), undefined);
  t.equal(logs.find('pull secret to copy does not exist in its source namespace; nothing copied').length, 1);
  t.ok(api.get('secrets', 'no-such-ns', 'mirror-pull'), 'existing copies stay');
});

