/**
 * The real Kubernetes API server calls mirrorgate (enforce mode): pods created through it
 * are stored as mirrorgate's patches leave them, after the server's own validation.
 * mirrorgate runs as its own process with a TokenRequest token of its ServiceAccount, so
 * the RBAC from manifests/ is all it may do.
 */
import t from 'tap';
import { kubectl } from '../support/k8s-tools.js';
import { realKubeTestOptions, type HttpAnswer } from '../support/kube-apiserver.js';
import { eventually, kubectlApply, pod, startRealCluster, type Obj } from '../support/real-cluster.js';
import { startSidecarWebhook } from '../support/sidecar-webhook.js';

// This file starts a whole control plane (etcd, kube-apiserver, mirrorgate) on a machine
// that may be busy: more than package.json's per-file 120 s, told to the runner.
t.setTimeout(300_000);

t.test('the real API server calls mirrorgate', realKubeTestOptions(), async (t) => {
  const cluster = await startRealCluster({
    mode: 'enforce',
    rules: [{ from: 'docker.io', to: 'mirror.example.com/dockerhub' }],
    policy: { allowedRegistries: ['mirror.example.com', 'registry.k8s.io'] },
    pullSecrets: [{ name: 'mirror-pull', registries: ['mirror.example.com'] }],
  });
  t.teardown(() => cluster.stop());
  const { kube } = cluster;

  t.test('kubectl apply --server-side of the rendered manifests is accepted', async (t) => {
    for (const what of ['namespace/mirrorgate', 'serviceaccount/mirrorgate', 'clusterrole.rbac.authorization.k8s.io/mirrorgate', 'role.rbac.authorization.k8s.io/mirrorgate', 'deployment.apps/mirrorgate', 'mutatingwebhookconfiguration.admissionregistration.k8s.io/mirrorgate']) {
      t.match(cluster.applied, `${what} serverside-applied`);
    }
  });

  await t.test('a created pod is stored rewritten, with the pull secret and the original images', async (t) => {
    await kube.must('POST', '/api/v1/namespaces/apps/pods', pod('web', 'nginx:1.27'));
    const stored = await kube.must('GET', '/api/v1/namespaces/apps/pods/web');
    t.equal(stored.spec.containers[0].image, 'mirror.example.com/dockerhub/library/nginx:1.27');
    t.same(stored.spec.imagePullSecrets, [{ name: 'mirror-pull' }]);
    t.match(stored.metadata.annotations['mirrorgate.io/original-images'], /nginx:1\.27/);
  });

  await t.test("a pod from a registry outside the policy is refused with mirrorgate's message", async (t) => {
    const a = await kube.request('POST', '/api/v1/namespaces/apps/pods', pod('evil', 'evil.example.net/x:1'));
    t.equal(a.status, 403, a.body);
    const status = JSON.parse(a.body) as { message: string };
    t.match(status.message, /admission webhook "images\.mirrorgate\.io" denied the request/);
    t.match(status.message, /evil\.example\.net/);
    const gone = await kube.request('GET', '/api/v1/namespaces/apps/pods/evil');
    t.equal(gone.status, 404, 'nothing was stored');
  });

  await t.test("kubectl create of a denied pod fails with mirrorgate's message", async (t) => {
    const manifest = JSON.stringify(pod('evil2', 'evil.example.net/y:2', {}, { namespace: 'apps' }));
    const r = await kubectl(['--kubeconfig', kube.adminKubeconfig, 'create', '-f', '-'], { input: manifest });
    t.not(r.code, 0);
    t.match(r.stderr, /admission webhook "images\.mirrorgate\.io" denied the request: .*evil\.example\.net\/y:2/);
  });

  await t.test('an image UPDATE is rewritten and judged; an update that keeps the images is left alone', async (t) => {
    const patch = (body: Obj): Promise<HttpAnswer> =>
      kube.request('PATCH', '/api/v1/namespaces/apps/pods/web', JSON.stringify(body), 'application/strategic-merge-patch+json');
    const changed = await patch({ spec: { containers: [{ name: 'app', image: 'nginx:1.28' }] } });
    t.equal(changed.status, 200, changed.body);
    let stored = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
    t.equal(stored.spec.containers[0].image, 'mirror.example.com/dockerhub/library/nginx:1.28', 'the new image is rewritten');
    t.same(stored.spec.imagePullSecrets, [{ name: 'mirror-pull' }], 'pull secrets are not appended again');

    const labelled = await patch({ metadata: { labels: { tier: 'web' } } });
    t.equal(labelled.status, 200, labelled.body);
    stored = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
    t.equal(stored.metadata.labels.tier, 'web');
    t.equal(stored.spec.containers[0].image, 'mirror.example.com/dockerhub/library/nginx:1.28', 'an unchanged image stays as it is');

    const denied = await patch({ spec: { containers: [{ name: 'app', image: 'evil.example.net/x:1' }] } });
    t.equal(denied.status, 403, denied.body);
    t.match((JSON.parse(denied.body) as Obj).message, /images\.mirrorgate\.io" denied the request: .*evil\.example\.net\/x:1/);
    stored = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
    t.equal(stored.spec.containers[0].image, 'mirror.example.com/dockerhub/library/nginx:1.28', 'a denied update changes nothing');
  });

  await t.test('kubectl debug: a new ephemeral container is rewritten and judged through pods/ephemeralcontainers', async (t) => {
    const before = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
    const r = await kubectl(['--kubeconfig', kube.adminKubeconfig, '-n', 'apps', 'debug', 'web', '--image=busybox:1.36', '--container=debugger']);
    t.equal(r.code, 0, r.stderr);
    const stored = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
    t.equal(stored.spec.ephemeralContainers?.[0]?.image, 'mirror.example.com/dockerhub/library/busybox:1.36');
    t.same(stored.spec.containers, before.spec.containers, 'the other containers are not touched');
    t.same(stored.spec.imagePullSecrets, before.spec.imagePullSecrets);

    const bad = await kubectl(['--kubeconfig', kube.adminKubeconfig, '-n', 'apps', 'debug', 'web', '--image=evil.example.net/tools:1', '--container=evil']);
    t.not(bad.code, 0);
    t.match(bad.stderr, /admission webhook "images\.mirrorgate\.io" denied the request: .*evil\.example\.net\/tools:1/);
    const after = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
    t.equal(after.spec.ephemeralContainers.length, 1, 'the denied one was not added');
  });

  await t.test('a second webhook adding a sidecar makes the API server reinvoke mirrorgate', async (t) => {
    const sidecar = await startSidecarWebhook('mesh-proxy', 'envoyproxy/envoy:v1.31.0');
    t.teardown(() => sidecar.close());
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'meshed' } });
    await kube.must('POST', '/api/v1/namespaces/meshed/serviceaccounts', { metadata: { name: 'default' } });
    // Configuration names order the webhooks: "mirrorgate" runs first, this one after it.
    await kubectlApply(kube, [sidecar.configuration('zz-sidecar', 'meshed')]);
    // The API server picks the configuration up from its watch: wait until a dry run gets the sidecar.
    await eventually('the sidecar webhook is called', async () => {
      const a = await kube.request('POST', '/api/v1/namespaces/meshed/pods?dryRun=All', pod('probe', 'nginx:1.27'));
      return a.status === 201 && (JSON.parse(a.body) as Obj).spec.containers.length === 2;
    });
    const seenBefore = sidecar.seen.length;
    await kube.must('POST', '/api/v1/namespaces/meshed/pods', pod('meshed-web', 'nginx:1.27'));
    const stored = await kube.must<Obj>('GET', '/api/v1/namespaces/meshed/pods/meshed-web');
    t.same(
      (stored.spec.containers as Obj[]).map((c) => [c.name, c.image]),
      [
        ['app', 'mirror.example.com/dockerhub/library/nginx:1.27'],
        ['mesh-proxy', 'mirror.example.com/dockerhub/envoyproxy/envoy:v1.31.0'],
      ],
      'the sidecar, added after mirrorgate ran, is rewritten too: mirrorgate was called again',
    );
    const got = sidecar.seen.slice(seenBefore).filter((p) => p.metadata?.name === 'meshed-web');
    t.equal(got.length, 1);
    t.equal(got[0]?.spec.containers[0].image, 'mirror.example.com/dockerhub/library/nginx:1.27', 'mirrorgate had already run when the sidecar was added');
    t.same(stored.spec.imagePullSecrets, [{ name: 'mirror-pull' }], 'the pull secret is added once');
    const original = JSON.parse(stored.metadata.annotations['mirrorgate.io/original-images'] as string) as Obj;
    t.equal(original.app, 'nginx:1.27');

    // Without the reinvocation the sidecar's image would slip past the policy.
    const sneaky = await startSidecarWebhook('evil-proxy', 'evil.example.net/proxy:1');
    t.teardown(() => sneaky.close());
    await kubectlApply(kube, [sneaky.configuration('zzz-evil-sidecar', 'meshed')]);
    const denied = await eventually('the second sidecar webhook is called', async () => {
      const a = await kube.request('POST', '/api/v1/namespaces/meshed/pods?dryRun=All', pod('probe', 'nginx:1.27'));
      return a.status === 201 && (JSON.parse(a.body) as Obj).spec.containers.length === 2 ? undefined : a;
    });
    t.equal(denied.status, 403, denied.body);
    t.match((JSON.parse(denied.body) as Obj).message, /images\.mirrorgate\.io" denied the request: .*evil\.example\.net\/proxy:1/, 'a sidecar from outside the policy is denied on reinvocation');
    await kube.must('DELETE', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/zzz-evil-sidecar');
  });

  await t.test('mirrorgate may not read a Secret in another namespace', async (t) => {
    await kube.must('POST', '/api/v1/namespaces/apps/secrets', { metadata: { name: 'db' }, stringData: { password: 'x' } });
    const token = await kube.serviceAccountToken('mirrorgate', 'mirrorgate');
    const a = await kube.requestAs(token, 'GET', '/api/v1/namespaces/apps/secrets/db');
    t.equal(a.status, 403, a.body);
    t.match(a.body, /system:serviceaccount:mirrorgate:mirrorgate/);
    const own = await kube.requestAs(token, 'GET', '/api/v1/namespaces/mirrorgate/serviceaccounts/mirrorgate');
    t.equal(own.status, 200, 'while what the manifests grant works');
  });

  await t.test('in its own namespace mirrorgate may create no Secret and read none but mirrorgate-tls, which it may fill', async (t) => {
    const token = await kube.serviceAccountToken('mirrorgate', 'mirrorgate');
    await kube.must('POST', '/api/v1/namespaces/mirrorgate/secrets', { metadata: { name: 'mirror-creds' }, stringData: { password: 'x' } });
    const read = await kube.requestAs(token, 'GET', '/api/v1/namespaces/mirrorgate/secrets/mirror-creds');
    t.equal(read.status, 403, 'another Secret of its namespace is not readable');
    const create = await kube.requestAs(token, 'POST', '/api/v1/namespaces/mirrorgate/secrets', { metadata: { name: 'planted' }, stringData: { a: 'b' } });
    t.equal(create.status, 403, 'no Secret can be created');
    const tls = await kube.requestAs(token, 'GET', '/api/v1/namespaces/mirrorgate/secrets/mirrorgate-tls');
    t.equal(tls.status, 200, 'the empty Secret of the manifests is readable');
    const secret = JSON.parse(tls.body) as Obj;
    t.equal(secret.type, 'Opaque');
    const filled = await kube.requestAs(token, 'PUT', '/api/v1/namespaces/mirrorgate/secrets/mirrorgate-tls', { ...secret, data: { 'tls.crt': Buffer.from('x').toString('base64') } });
    t.equal(filled.status, 200, 'and updatable, as --manage-certs fills it');
  });

  await t.test("a static pod's mirror pod is never sent to mirrorgate (matchConditions, evaluated by the API server)", async (t) => {
    const admissions = async (): Promise<number> => {
      const text = await (await fetch(`${cluster.mg.metricsUrl}/metrics`)).text();
      return text.split('\n').filter((l) => l.startsWith('mirrorgate_admission_requests_total{')).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    };
    const before = await admissions();
    await kube.must('POST', '/api/v1/namespaces/apps/pods', pod('ordinary', 'nginx:1.27'));
    const counted = await admissions();
    t.equal(counted, before + 1, 'an ordinary pod is sent (and counted)');
    const mirror = await kube.request('POST', '/api/v1/namespaces/apps/pods', pod('static-web', 'nginx:1.27', { nodeName: 'node-a' }, { annotations: { 'kubernetes.io/config.mirror': 'c0ffee' } }));
    t.equal(mirror.status, 201, mirror.body);
    t.equal((JSON.parse(mirror.body) as Obj).spec.containers[0].image, 'nginx:1.27', 'stored as the kubelet sent it');
    t.equal(await admissions(), counted, 'mirrorgate was not called');
  });
});
