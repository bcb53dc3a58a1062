/**
 * Workload Identity wiring: what the real API server cannot be made to show, so tested
 * against the loopback imitation (test/support/kube-api.ts) with `serve()` in-process.
 * Everything the real server shows (the three clouds wired and stored, the second pass of a
 * reinvocation, an annotation change, an audit namespace, UPDATE and ephemeral containers
 * never wired, a static mirror pod untouched) is in test/real/identity.test.ts.
 *
 * Here, each for the reason given at the test: the ServiceAccount race with the cache held
 * back (a delayed watch), a ServiceAccount that does not exist (the real server's
 * ServiceAccount admission plugin refuses such a pod before any webhook sees it), and the
 * API hanging or down (an outage).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fastJsonPatch, { type Operation } from 'fast-json-patch';
import t from 'tap';
import { serve, type Running } from '../../src/serve.js';
import { patchOf, review } from '../support/app.js';
import { getText, metricSample, postJson } from '../support/http.js';
import { kubeconfigFor, startKubeApi, type KubeApi } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';
import { serveOptions } from '../support/serve.js';

interface Answer {
  uid: string;
  allowed: boolean;
  patch?: string;
  patchType?: string;
  warnings?: string[];
  auditAnnotations?: Record<string, string>;
  status?: { code?: number; message?: string };
}

interface Pod {
  metadata: { annotations?: Record<string, string>; labels?: Record<string, string>; [k: string]: unknown };
  spec: {
    serviceAccountName?: string;
    containers: Container[];
    initContainers?: Container[];
    ephemeralContainers?: Container[];
    volumes?: { name: string; [k: string]: unknown }[];
  };
}

interface Container {
  name: string;
  image: string;
  env?: { name: string; value?: string }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  restartPolicy?: string;
}

const ANNOTATIONS = {
  'eks.amazonaws.com/role-arn': 'arn:aws:iam::111122223333:role/s3-reader',
  'cloud.google.com/workload-identity-provider': 'projects/12345/locations/global/workloadIdentityPools/on-prem/providers/this-cluster',
  'cloud.google.com/service-account-email': 'app-x@my-project.iam.gserviceaccount.com',
  'azure.workload.identity/client-id': '00000000-0000-0000-0000-000000000001',
  'azure.workload.identity/tenant-id': '00000000-0000-0000-0000-0000000000aa',
};

function config(mode: 'enforce' | 'audit', onUnknown: 'admit' | 'deny'): string {
  return `mode: ${mode}
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
identity:
  aws:
    region: us-east-1
  serviceAccountWaitMs: 200
  onUnknownServiceAccount: ${onUnknown}
`;
}

/** A pod as a ReplicaSet controller would send it: two containers and a native sidecar. */
function pod(serviceAccountName: string | undefined, extra: { annotations?: Record<string, string> } = {}): Pod {
  return {
    metadata: { generateName: 'web-', labels: { app: 'web', 'azure.workload.identity/use': 'true' }, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
    spec: {
      ...(serviceAccountName !== undefined ? { serviceAccountName } : {}),
      initContainers: [{ name: 'proxy', image: 'envoyproxy/envoy:v1.30.0', restartPolicy: 'Always' }],
      containers: [
        { name: 'web', image: 'nginx:1.14.2', env: [{ name: 'AWS_REGION', value: 'eu-west-1' }, { name: 'KEEP', value: 'me' }] },
        { name: 'worker', image: 'registry.example.com/worker:2' },
      ],
    },
  };
}

/** Apply an answer's JSONPatch as the API server does (RFC 6902 on the object as JSON). */
function applied(object: Pod, answer: Answer): Pod {
  const ops = patchOf(answer) as Operation[] | undefined;
  if (ops === undefined) return object;
  return fastJsonPatch.applyPatch(structuredClone(object), ops, true, false).newDocument;
}

function envNames(c: Container | undefined): string[] {
  return (c?.env ?? []).map((e) => e.name);
}

interface Webhook {
  running: Running;
  /** Send a Pod review; `opts` as for review(). */
  admit(opts: Parameters<typeof review>[0]): Promise<Answer>;
  lookups(result: string): Promise<number>;
}

async function startWebhook(
  t: { teardown(fn: () => unknown): void },
  api: KubeApi,
  dir: string,
  mode: 'enforce' | 'audit',
  onUnknown: 'admit' | 'deny',
): Promise<Webhook> {
  const configPath = join(dir, `${mode}-${onUnknown}.yaml`);
  await writeFile(configPath, config(mode, onUnknown));
  const running = await serve(
    serveOptions(dir, {
      configPath,
      // Shared by the servers of this file: created once, reused (RSA keys are slow to make).
      certsDir: join(dir, 'certs'),
      noKube: false,
      kubeconfig: await kubeconfigFor(api),
    }),
  );
  t.teardown(() => running.shutdown('test over'));
  const kube = running.kube;
  if (kube === undefined) throw new Error('Kubernetes access expected');
  await waitFor('caches synced', () => kube.serviceAccounts.synced() && kube.namespaces.synced());
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  const agent = new Agent({ keepAlive: true, ca });
  t.teardown(() => agent.destroy());
  return {
    running,
    admit: async (opts) => {
      const { uid, body } = review(opts);
      const res = await postJson<{ response: Answer }>(`${running.url}/mutate?timeout=10s`, ca, body, agent);
      if (res.status !== 200 || res.json.response.uid !== uid) throw new Error(`unexpected answer ${res.status} ${JSON.stringify(res.json)}`);
      return res.json.response;
    },
    lookups: async (result) => metricSample(await getText(`${running.metricsUrl}/metrics`), `mirrorgate_serviceaccount_lookups_total{result="${result}"}`),
  };
}

t.test('identity wiring through /mutate against the loopback Kubernetes API', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: 'mirrorgate' } });
  api.put({ kind: 'Namespace', metadata: { name: 'team-a' } });
  api.put({ kind: 'Namespace', metadata: { name: 'team-audit', labels: { 'mirrorgate.io/mode': 'audit' } } });
  api.put({ kind: 'ServiceAccount', metadata: { name: 'workload', namespace: 'team-a', annotations: ANNOTATIONS } });
  api.put({ kind: 'ServiceAccount', metadata: { name: 'workload', namespace: 'team-audit', annotations: ANNOTATIONS } });
  const dir = await mkdtemp(join(tmpdir(), 'mg-identity-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const hook = await startWebhook(t, api, dir, 'enforce', 'admit');

  // Imitation only: the cache must be held back (a delayed list, dropped watches) so the
  // pod certainly comes before the ServiceAccount reaches it; the real server's watch
  // delivers too fast to force the direct GET (test/real/identity.test.ts has the race as it falls).
  await t.test('the ServiceAccount race: created a moment before the pod, found by a direct GET', async (t) => {
    const kube = hook.running.kube;
    if (kube === undefined) throw new Error('kube');
    // Hold back the informer's next list or watch so the new ServiceAccount cannot reach
    // the cache before the pod: exactly the window of the race.
    const informer = api.holdNext(undefined, /^\/api\/v1\/serviceaccounts$/, { times: 3 });
    api.dropWatches();
    const direct = await hook.lookups('direct');
    api.put({ kind: 'ServiceAccount', metadata: { name: 'fresh', namespace: 'team-a', annotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::111122223333:role/fresh' } } });
    t.equal(kube.serviceAccounts.cached('team-a', 'fresh'), undefined, 'not in the cache yet');
    const before = pod('fresh');
    const answer = await hook.admit({ namespace: 'team-a', object: before });
    const after = applied(before, answer);
    // Azure is driven by the pod's label alone (as upstream), so it applies too.
    t.equal(answer.auditAnnotations?.wired, 'aws,azure');
    t.match(Object.fromEntries((after.spec.containers[1]?.env ?? []).map((e) => [e.name, e.value])), { AWS_ROLE_ARN: 'arn:aws:iam::111122223333:role/fresh' });
    t.equal(await hook.lookups('direct'), direct + 1, 'counted as a direct lookup');
    t.ok(
      api.requests.some((r) => r.method === 'GET' && r.path === '/api/v1/namespaces/team-a/serviceaccounts/fresh'),
      'one direct GET of the ServiceAccount',
    );
    informer.release();
  });

  // Imitation only: the real server refuses a pod whose ServiceAccount does not exist
  // (its ServiceAccount admission plugin) before calling any webhook.
  await t.test('unknown ServiceAccount, onUnknownServiceAccount: admit', async (t) => {
    const misses = await hook.lookups('miss');
    const before = pod('ghost');
    const answer = await hook.admit({ namespace: 'team-a', object: before });
    t.equal(answer.allowed, true);
    t.match(answer.warnings?.join('\n'), /service account team-a\/ghost is not known yet; workload identity not wired/);
    const after = applied(before, answer);
    t.equal(after.spec.containers[0]?.image, 'mirror.example.com/dockerhub/library/nginx:1.14.2', 'rewriting goes on');
    t.equal(after.spec.volumes, undefined, 'nothing wired');
    t.same(envNames(after.spec.containers[1]), []);
    t.equal(await hook.lookups('miss'), misses + 1, 'mirrorgate_serviceaccount_lookups_total{result="miss"}');
  });

  // Imitation only: a hanging answer and an outage of the API server.
  await t.test('the API hanging or down: admitted without wiring, fast', async (t) => {
    // Hanging: the direct GET is bounded by serviceAccountWaitMs.
    const get = api.holdNext('GET', '/serviceaccounts/slow');
    let started = performance.now();
    const slow = await hook.admit({ namespace: 'team-a', object: pod('slow') });
    let took = performance.now() - started;
    await get.reached; // the GET was made (and held): the bound, not an answer, ended the lookup
    get.release();
    t.equal(slow.allowed, true);
    t.match(slow.warnings?.join('\n'), /service account team-a\/slow is not known yet/);
    t.ok(took < 1000, `answered in ${Math.round(took)} ms, well within 1 s`);

    await api.stop();
    started = performance.now();
    const down = await hook.admit({ namespace: 'team-a', object: pod('absent') });
    took = performance.now() - started;
    t.equal(down.allowed, true);
    t.match(down.warnings?.join('\n'), /service account team-a\/absent is not known yet/);
    t.equal(applied(pod('absent'), down).spec.volumes, undefined, 'not wired');
    t.ok(took < 1000, `answered in ${Math.round(took)} ms, well within 1 s`);

    const cached = await hook.admit({ namespace: 'team-a', object: pod('workload') });
    t.equal(cached.auditAnnotations?.wired, 'aws,gcp,azure', 'ServiceAccounts already cached are still wired');
    await api.start();
  });
});

// Imitation only: a ServiceAccount that does not exist (the real server refuses the pod first).
t.test('onUnknownServiceAccount: deny, and mode: audit', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: 'team-a' } });
  api.put({ kind: 'ServiceAccount', metadata: { name: 'workload', namespace: 'team-a', annotations: ANNOTATIONS } });
  const dir = await mkdtemp(join(tmpdir(), 'mg-identity-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const deny = await startWebhook(t, api, dir, 'enforce', 'deny');
  const denied = await deny.admit({ namespace: 'team-a', object: pod('ghost') });
  t.equal(denied.allowed, false);
  t.equal(denied.patch, undefined);
  t.match(denied.status?.message, /service account team-a\/ghost is not known yet; workload identity not wired \(identity\.onUnknownServiceAccount: deny; retry once it exists\)/);
  const known = await deny.admit({ namespace: 'team-a', object: pod('workload') });
  t.equal(known.allowed, true, 'a known ServiceAccount is admitted');
  t.equal(known.auditAnnotations?.wired, 'aws,gcp,azure');


  // Audit never denies and never patches: the unknown ServiceAccount is a warning only.
  const audit = await startWebhook(t, api, dir, 'audit', 'deny');
  const would = await audit.admit({ namespace: 'team-a', object: pod('workload') });
  t.equal(would.allowed, true);
  t.equal(would.patch, undefined, 'audit: no patch');
  t.equal(would.auditAnnotations?.['would-wire'], 'aws,gcp,azure');
  t.match(would.auditAnnotations?.['would-rewrite'], /mirror\.example\.com/);
  const unknown = await audit.admit({ namespace: 'team-a', object: pod('ghost') });
  t.equal(unknown.allowed, true, 'audit: an unknown ServiceAccount is not denied');
  t.match(unknown.warnings?.join('\n'), /service account team-a\/ghost is not known yet/);
});
