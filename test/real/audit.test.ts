/**
 * Audit mode through the real API server: the pod is stored as sent, the client gets the
 * webhook's warnings (what kubectl prints as `Warning:` lines), and the report counts it;
 * a `--dry-run=server` creation gets the same warnings and leaves no trace in the report.
 */
import t from 'tap';
import { getText } from '../support/http.js';
import { kubectl } from '../support/k8s-tools.js';
import { realKubeTestOptions } from '../support/kube-apiserver.js';
import { pod, startRealCluster, type Obj } from '../support/real-cluster.js';

// This file starts a whole control plane (etcd, kube-apiserver, mirrorgate) on a machine
// that may be busy: more than package.json's per-file 120 s, told to the runner.
t.setTimeout(300_000);

t.test('audit mode through the real API server', realKubeTestOptions(), async (t) => {
  const cluster = await startRealCluster({
    mode: 'audit',
    rules: [{ from: 'docker.io', to: 'mirror.example.com/dockerhub' }],
    policy: { allowedRegistries: ['mirror.example.com'] },
  });
  t.teardown(() => cluster.stop());
  const { kube, mg } = cluster;
  const report = async (): Promise<Obj> => JSON.parse(await getText(`${mg.metricsUrl}/report`)) as Obj;

  const before = await report();
  const dry = await kube.request('POST', '/api/v1/namespaces/apps/pods?dryRun=All', pod('dry', 'nginx:1.27'));
  t.equal(dry.status, 201, dry.body);
  t.ok((dry.warnings ?? []).some((w) => w.includes('mirror.example.com/dockerhub/library/nginx:1.27')), `dry run warns: ${JSON.stringify(dry.warnings)}`);
  t.same((await report()).registries, before.registries, 'a dry run leaves no trace in the report');
  t.equal((await kube.request('GET', '/api/v1/namespaces/apps/pods/dry')).status, 404, 'and nothing stored');

  const made = await kube.request('POST', '/api/v1/namespaces/apps/pods', pod('web', 'nginx:1.27'));
  t.equal(made.status, 201, made.body);
  t.ok((made.warnings ?? []).some((w) => w.includes('mirror.example.com/dockerhub/library/nginx:1.27')), `warns: ${JSON.stringify(made.warnings)}`);
  const stored = await kube.must<Obj>('GET', '/api/v1/namespaces/apps/pods/web');
  t.equal(stored.spec.containers[0].image, 'nginx:1.27', 'audit changes nothing');
  const viaKubectl = await kubectl(['--kubeconfig', kube.adminKubeconfig, 'create', '-f', '-'], {
    input: JSON.stringify(pod('web2', 'nginx:1.27', {}, { namespace: 'apps' })),
  });
  t.equal(viaKubectl.code, 0, viaKubectl.stderr);
  t.match(viaKubectl.stderr, /^Warning: .*mirror\.example\.com\/dockerhub\/library\/nginx:1\.27/m, 'kubectl prints the Warning: lines');
  const after = await report();
  t.equal(after.registries['docker.io']?.wouldRewrite, (before.registries['docker.io']?.wouldRewrite ?? 0) + 2, 'each real creation is counted once');
});
