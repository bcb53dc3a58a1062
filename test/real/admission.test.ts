/**
 * The real Kubernetes API server calls mirrorgate (enforce mode): pods created through it
 * are stored as mirrorgate's patches leave them, after the server's own validation.
 * mirrorgate runs as its own process with a TokenRequest token of its ServiceAccount, so
 * the RBAC from manifests/ is all it may do.
 */
import t from 'tap';
import { kubectl } from '../support/k8s-tools.js';
import { realKubeTestOptions } from '../support/kube-apiserver.js';
import { pod, startRealCluster } from '../support/real-cluster.js';

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

  await t.test('mirrorgate may not read a Secret in another namespace', async (t) => {
    await kube.must('POST', '/api/v1/namespaces/apps/secrets', { metadata: { name: 'db' }, stringData: { password: 'x' } });
    const token = await kube.serviceAccountToken('mirrorgate', 'mirrorgate');
    const a = await kube.requestAs(token, 'GET', '/api/v1/namespaces/apps/secrets/db');
    t.equal(a.status, 403, a.body);
    t.match(a.body, /system:serviceaccount:mirrorgate:mirrorgate/);
    const own = await kube.requestAs(token, 'GET', '/api/v1/namespaces/mirrorgate/serviceaccounts/mirrorgate');
    t.equal(own.status, 200, 'while what the manifests grant works');
  });
});
