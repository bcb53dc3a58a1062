/**
 * Workload Identity wiring through the real API server, from real ServiceAccounts: pods
 * created through it are stored with the AWS, GCP and Azure wiring, so the server's own
 * validation accepted every env var, mount and projected token volume mirrorgate added
 * (next to the ServiceAccount admission plugin's own kube-api-access volume). Also: a
 * ServiceAccount created a moment before its pod, an annotation changed after start, a
 * namespace in audit, a second webhook whose sidecar makes the server call mirrorgate again
 * (the second pass adds nothing twice), and UPDATE and kubectl debug, never wired.
 *
 * (A pod naming a ServiceAccount that does not exist never reaches a webhook here: the
 * API server's ServiceAccount admission plugin refuses it first. mirrorgate's answer for
 * that case is tested in test/kube/identity-e2e.test.ts.)
 */
import t from 'tap';
import { azureVolumeName } from '../../src/core/identity/azure.js';
import { getText, metricSample } from '../support/http.js';
import { kubectl } from '../support/k8s-tools.js';
import { realKubeTestOptions } from '../support/kube-apiserver.js';
import { eventually, kubectlApply, pod, startRealCluster, type Obj } from '../support/real-cluster.js';
import { startSidecarWebhook } from '../support/sidecar-webhook.js';

// This file starts a whole control plane (etcd, kube-apiserver, mirrorgate) on a machine
// that may be busy: more than package.json's per-file 120 s, told to the runner.
t.setTimeout(300_000);

const ANNOTATIONS = {
  'eks.amazonaws.com/role-arn': 'arn:aws:iam::111122223333:role/s3-reader',
  'cloud.google.com/workload-identity-provider': 'projects/12345/locations/global/workloadIdentityPools/on-prem/providers/this-cluster',
  'cloud.google.com/service-account-email': 'app-x@my-project.iam.gserviceaccount.com',
  'azure.workload.identity/client-id': '00000000-0000-0000-0000-000000000001',
  'azure.workload.identity/tenant-id': '00000000-0000-0000-0000-0000000000aa',
};

const AWS_ENV = ['AWS_DEFAULT_REGION', 'AWS_REGION', 'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE'];
const GCP_ENV = ['GOOGLE_APPLICATION_CREDENTIALS', 'CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE', 'CLOUDSDK_CONFIG', 'CLOUDSDK_CORE_PROJECT'];
const AZURE_ENV = ['AZURE_CLIENT_ID', 'AZURE_TENANT_ID', 'AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'];
/** The mounts of the three clouds in pod `podName` (Azure v1.6.0 names its volume after the pod). */
function mountsFor(podName: string): Record<string, string> {
  return {
    'aws-iam-token': '/var/run/secrets/eks.amazonaws.com/serviceaccount',
    'gcp-iam-token': '/var/run/secrets/sts.googleapis.com/serviceaccount',
    'external-credential-config': '/var/run/secrets/workload-identity',
    'gcloud-config': '/var/run/secrets/gcloud/config',
    [azureVolumeName(podName, '')]: '/var/run/secrets/azure/wi',
  };
}
const MOUNTS = mountsFor('web-1');

/** A pod as a ReplicaSet controller would send it: two containers and a native sidecar. */
function workloadPod(name: string, serviceAccountName: string | undefined): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: { app: 'web', 'azure.workload.identity/use': 'true' } },
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

const envOf = (c: Obj | undefined): Record<string, string> => Object.fromEntries(((c?.env ?? []) as Obj[]).map((e) => [e.name, e.value]));
const mountsOf = (c: Obj | undefined): Record<string, string> => Object.fromEntries(((c?.volumeMounts ?? []) as Obj[]).map((m) => [m.name, m.mountPath]));

t.test('Workload Identity through the real API server', realKubeTestOptions(), async (t) => {
  const cluster = await startRealCluster({
    mode: 'enforce',
    rules: [{ from: 'docker.io', to: 'mirror.example.com/dockerhub' }],
    identity: { aws: { region: 'us-east-1' }, serviceAccountWaitMs: 2000 },
  });
  t.teardown(() => cluster.stop());
  const { kube, mg } = cluster;
  for (const ns of ['team-a', 'team-audit']) {
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: ns, ...(ns === 'team-audit' ? { labels: { 'mirrorgate.io/mode': 'audit' } } : {}) } });
    await kube.must('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name: 'workload', annotations: ANNOTATIONS } });
  }
  // Every pod in team-a also passes a second webhook (after mirrorgate) that adds a
  // sidecar, so the server calls mirrorgate again on the wired pod: a second pass that added
  // a volume twice would make the pod invalid, and one that added env twice would show.
  const sidecar = await startSidecarWebhook('mesh', 'envoyproxy/envoy:v1.31.0');
  t.teardown(() => sidecar.close());
  await kubectlApply(kube, [sidecar.configuration('zz-sidecar', 'team-a')]);
  await eventually('the sidecar webhook is called', async () => {
    const a = await kube.must<Obj>('POST', '/api/v1/namespaces/team-a/pods?dryRun=All', pod('probe', 'nginx:1.27', { serviceAccountName: 'workload' }));
    return (a.spec.containers as Obj[]).length === 2;
  });
  const lookups = async (): Promise<number> => {
    const text = await getText(`${mg.metricsUrl}/metrics`);
    return ['cache', 'direct', 'miss', 'error'].reduce((n, r) => n + metricSample(text, `mirrorgate_serviceaccount_lookups_total{result="${r}"}`), 0);
  };
  const create = async (ns: string, body: Obj): Promise<Obj> => {
    await kube.must('POST', `/api/v1/namespaces/${ns}/pods`, body);
    return kube.must<Obj>('GET', `/api/v1/namespaces/${ns}/pods/${body.metadata.name as string}`);
  };

  await t.test('AWS, GCP and Azure wired on CREATE, and stored: the API server validated all of it', async (t) => {
    // The cache may not have the ServiceAccount yet (created just above): then the direct GET finds it.
    const stored = await create('team-a', workloadPod('web-1', 'workload'));
    const [web, worker] = stored.spec.containers as Obj[];
    const proxy = (stored.spec.initContainers as Obj[])[0];
    t.equal(web?.image, 'mirror.example.com/dockerhub/library/nginx:1.14.2', 'images are still rewritten');
    t.same((web?.env as Obj[]).slice(0, 2), [{ name: 'AWS_REGION', value: 'eu-west-1' }, { name: 'KEEP', value: 'me' }], 'existing env kept in place');
    t.equal((web?.env as Obj[]).filter((e) => e.name === 'AWS_REGION').length, 1, 'never duplicated');
    t.match(envOf(worker), {
      AWS_ROLE_ARN: ANNOTATIONS['eks.amazonaws.com/role-arn'],
      AWS_WEB_IDENTITY_TOKEN_FILE: '/var/run/secrets/eks.amazonaws.com/serviceaccount/token',
      AWS_REGION: 'us-east-1',
      GOOGLE_APPLICATION_CREDENTIALS: '/var/run/secrets/workload-identity/federation.json',
      AZURE_CLIENT_ID: ANNOTATIONS['azure.workload.identity/client-id'],
      AZURE_TENANT_ID: ANNOTATIONS['azure.workload.identity/tenant-id'],
      AZURE_FEDERATED_TOKEN_FILE: '/var/run/secrets/azure/wi/token/azure-identity-token',
    });
    for (const c of [web, worker, proxy]) {
      t.match(mountsOf(c), MOUNTS, `${c?.name as string}: the three clouds' mounts`);
      const names = Object.keys(envOf(c));
      // The web container sets AWS_REGION itself: the region group is not half-added there.
      for (const n of [...AWS_ENV.filter((e) => c !== web || !e.includes('REGION')), ...GCP_ENV, ...AZURE_ENV]) t.ok(names.includes(n), `${c?.name as string}: env ${n}`);
    }
    t.notOk(Object.keys(envOf(web)).includes('AWS_DEFAULT_REGION'), 'no AWS_DEFAULT_REGION where the container sets AWS_REGION');
    const mesh = (stored.spec.containers as Obj[])[2];
    t.equal(mesh?.name, 'mesh', 'the second webhook added its sidecar');
    t.equal(mesh?.image, 'mirror.example.com/dockerhub/envoyproxy/envoy:v1.31.0', 'and the server called mirrorgate again (it rewrote the sidecar)');
    for (const c of stored.spec.containers as Obj[]) {
      const names = ((c.env ?? []) as Obj[]).map((e) => e.name as string);
      t.same(names, [...new Set(names)], `${c.name as string}: no env var twice after the second pass`);
      const mounts = ((c.volumeMounts ?? []) as Obj[]).map((m) => m.name as string);
      t.same(mounts, [...new Set(mounts)], `${c.name as string}: no mount twice`);
    }
    t.equal(proxy?.restartPolicy, 'Always', 'the native sidecar keeps restartPolicy');
    const volumes = Object.fromEntries((stored.spec.volumes as Obj[]).map((v) => [v.name, v]));
    for (const name of Object.keys(MOUNTS)) t.ok(volumes[name], `volume ${name}`);
    t.ok(Object.keys(volumes).some((n) => n.startsWith('kube-api-access-')), "the ServiceAccount plugin's own token volume is there too");
    t.match(volumes['aws-iam-token'], { projected: { sources: [{ serviceAccountToken: { audience: 'sts.amazonaws.com', expirationSeconds: 86400, path: 'token' } }] } });
    t.match(volumes[azureVolumeName('web-1', '')], { projected: { sources: [{ serviceAccountToken: { audience: 'api://AzureADTokenExchange', path: 'token/azure-identity-token' } }] } });
    t.match(volumes['gcp-iam-token'], { projected: { sources: [{ serviceAccountToken: { audience: 'sts.googleapis.com' } }] } });
    t.match(JSON.parse(stored.metadata.annotations['cloud.google.com/external-credentials-json'] as string), { type: 'external_account' });
  });

  await t.test('a ServiceAccount created a moment before its pod is wired', async (t) => {
    for (const [i, provider] of (['aws', 'gcp', 'azure'] as const).entries()) {
      const name = `fresh-${provider}`;
      const annotations = Object.fromEntries(
        Object.entries(ANNOTATIONS).filter(([k]) => k.startsWith({ aws: 'eks.', gcp: 'cloud.google.com/', azure: 'azure.' }[provider])),
      );
      await kube.must('POST', '/api/v1/namespaces/team-a/serviceaccounts', { metadata: { name, annotations } });
      const p = workloadPod(`fresh-${i}`, name);
      if (provider !== 'azure') delete p.metadata.labels['azure.workload.identity/use'];
      const stored = await create('team-a', p);
      const env = envOf((stored.spec.containers as Obj[])[1]);
      const expect = { aws: 'AWS_ROLE_ARN', gcp: 'GOOGLE_APPLICATION_CREDENTIALS', azure: 'AZURE_CLIENT_ID' } as const;
      for (const [prov, variable] of Object.entries(expect)) {
        if (prov === provider) t.ok(env[variable], `${provider}: ${variable} is set`);
        else t.notOk(env[variable], `${provider}: no ${variable}`);
      }
    }
  });

  await t.test('an annotation changed after start reaches the next pod (the default ServiceAccount)', async (t) => {
    await kube.must('POST', '/api/v1/namespaces/team-a/serviceaccounts', { metadata: { name: 'default', annotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::111122223333:role/first' } } });
    const first = await create('team-a', { ...workloadPod('default-1', undefined), metadata: { name: 'default-1' } });
    t.equal(envOf((first.spec.containers as Obj[])[1]).AWS_ROLE_ARN, 'arn:aws:iam::111122223333:role/first');
    const role = 'arn:aws:iam::111122223333:role/changed';
    await kube.must('PATCH', '/api/v1/namespaces/team-a/serviceaccounts/default', JSON.stringify({ metadata: { annotations: { 'eks.amazonaws.com/role-arn': role } } }), 'application/merge-patch+json');
    // The cache learns it from its watch: pods may still get the old role for a moment (dry runs leave no trace).
    await eventually('the new role is wired', async () => {
      const a = await kube.must<Obj>('POST', '/api/v1/namespaces/team-a/pods?dryRun=All', { ...workloadPod('default-dry', undefined), metadata: { name: 'default-dry' } });
      return envOf((a.spec.containers as Obj[])[1]).AWS_ROLE_ARN === role;
    });
    const stored = await create('team-a', { ...workloadPod('default-2', undefined), metadata: { name: 'default-2' } });
    t.equal(envOf((stored.spec.containers as Obj[])[1]).AWS_ROLE_ARN, role);
  });

  await t.test('a namespace labelled mirrorgate.io/mode=audit: stored as sent, kubectl prints what would be wired', async (t) => {
    const r = await kubectl(['--kubeconfig', kube.adminKubeconfig, '-n', 'team-audit', 'create', '-f', '-'], { input: JSON.stringify(workloadPod('audited', 'workload')) });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, /^Warning: .*would wire workload identity: aws, gcp, azure/m);
    const stored = await kube.must<Obj>('GET', '/api/v1/namespaces/team-audit/pods/audited');
    t.equal(stored.spec.containers[0].image, 'nginx:1.14.2');
    t.same(envOf(stored.spec.containers[1]), {}, 'nothing wired');
    t.notOk((stored.spec.volumes as Obj[]).some((v) => v.name in mountsFor('audited')));
  });

  await t.test('a static mirror pod (as a kubelet registers one) is stored untouched', async (t) => {
    // A mirror pod may not name a ServiceAccount (the server refuses it): its namespace's default would drive the wiring.
    const p = workloadPod('mirror-1', undefined);
    p.metadata.annotations = { 'kubernetes.io/config.mirror': 'abc123' };
    p.spec.nodeName = 'node-1';
    const stored = await create('team-a', p);
    t.equal(stored.spec.containers[0].image, 'nginx:1.14.2', 'not rewritten');
    t.same(envOf(stored.spec.containers[1]), {}, 'not wired');
  });

  await t.test('UPDATE and kubectl debug on a wired pod: images rewritten, never wired, no ServiceAccount looked up', async (t) => {
    const before = await kube.must<Obj>('GET', '/api/v1/namespaces/team-a/pods/web-1');
    const looked = await lookups();
    const patch = { spec: { containers: [{ name: 'worker', image: 'nginx:1.28' }] } };
    const u = await kube.request('PATCH', '/api/v1/namespaces/team-a/pods/web-1', JSON.stringify(patch), 'application/strategic-merge-patch+json');
    t.equal(u.status, 200, u.body);
    const updated = await kube.must<Obj>('GET', '/api/v1/namespaces/team-a/pods/web-1');
    t.equal(updated.spec.containers[1].image, 'mirror.example.com/dockerhub/library/nginx:1.28');
    t.same(updated.spec.containers.map(envOf), before.spec.containers.map(envOf), 'UPDATE: no env added');
    t.same(updated.spec.volumes, before.spec.volumes, 'UPDATE: no volume added');
    const r = await kubectl(['--kubeconfig', kube.adminKubeconfig, '-n', 'team-a', 'debug', 'web-1', '--image=busybox:1.36', '--container=debugger']);
    t.equal(r.code, 0, r.stderr);
    const stored = await kube.must<Obj>('GET', '/api/v1/namespaces/team-a/pods/web-1');
    const debuggerC = (stored.spec.ephemeralContainers as Obj[])[0];
    t.equal(debuggerC?.image, 'mirror.example.com/dockerhub/library/busybox:1.36');
    t.same(envOf(debuggerC), {});
    t.same(mountsOf(debuggerC), {});
    t.equal(await lookups(), looked, 'no ServiceAccount lookup for either');
  });
});
