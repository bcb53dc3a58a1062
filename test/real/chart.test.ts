/**
 * The Helm chart against the real API server: `helm template` (the real helm) of a release
 * `gate` in namespace `infra` is accepted by `kubectl apply --server-side`, and mirrorgate
 * run with exactly what that render sets up (its args and env, its ServiceAccount's token,
 * so the chart's RBAC is all it has) does its work: certificates and caBundle, rewriting,
 * the report ConfigMap and pull-secret replication with `copyFrom`, while a Secret
 * outside what it replicates stays forbidden.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { helmOk } from '../support/k8s-tools.js';
import { realKubeTestOptions, startRealKube } from '../support/kube-apiserver.js';
import { startMirrorgate } from '../support/mirrorgate-process.js';
import { eventually, kubectlApply, pod, type Obj } from '../support/real-cluster.js';

// This file starts a whole control plane (etcd, kube-apiserver, mirrorgate) on a machine
// that may be busy: more than package.json's per-file 120 s, told to the runner.
t.setTimeout(300_000);

const CHART = join(import.meta.dirname, '..', '..', 'charts', 'mirrorgate');
const NS = 'infra';
const NAME = 'gate-mirrorgate';
const VALUES = {
  config: {
    mode: 'enforce',
    rules: [{ from: 'docker.io', to: 'mirror.example.com/dockerhub' }],
    pullSecrets: [{ name: 'mirror-pull', registries: ['mirror.example.com'], copyFrom: NS }],
    report: { flushSeconds: 5 },
  },
};

t.test('the Helm chart on the real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  const valuesFile = join(kube.dir, 'values.json');
  writeFileSync(valuesFile, JSON.stringify(VALUES));
  const rendered = parseAllDocuments(await helmOk(['template', 'gate', CHART, '--namespace', NS, '-f', valuesFile]))
    .map((d) => d.toJSON() as Obj)
    .filter((o) => o !== null);
  // helm install --create-namespace makes the namespace; the chart does not hold it.
  await kube.must('POST', '/api/v1/namespaces', { metadata: { name: NS } });
  const applied = await kubectlApply(kube, rendered);
  t.test('kubectl apply --server-side of the render is accepted', async (t) => {
    for (const o of rendered) t.match(applied, new RegExp(`${(o.kind as string).toLowerCase()}[^ ]*/${o.metadata.name as string} serverside-applied`), `${o.kind as string} ${o.metadata.name as string}`);
  });

  const find = (kind: string): Obj => {
    const o = rendered.find((x) => x.kind === kind);
    if (o === undefined) throw new Error(`the chart renders no ${kind}`);
    return o;
  };
  await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'apps' } });
  // No controller-manager here: the ServiceAccount admission plugin needs `default`.
  await kube.must('POST', '/api/v1/namespaces/apps/serviceaccounts', { metadata: { name: 'default' } });
  await kube.must('POST', `/api/v1/namespaces/${NS}/secrets`, {
    metadata: { name: 'mirror-pull' },
    type: 'kubernetes.io/dockerconfigjson',
    stringData: { '.dockerconfigjson': JSON.stringify({ auths: { 'mirror.example.com': { auth: Buffer.from('u:p').toString('base64') } } }) },
  });

  // mirrorgate as the Deployment runs it: its args (ports and the config path aside: they
  // are this machine's), its env, the config from the rendered ConfigMap.
  const container = find('Deployment').spec.template.spec.containers[0] as Obj;
  const configFile = join(kube.dir, 'config.yaml');
  writeFileSync(configFile, find('ConfigMap').data['config.yaml'] as string);
  const args = (container.args as string[]).filter((a) => a !== 'serve' && !/^--(config|port|metrics-port|host)=/.test(a));
  const env = Object.fromEntries((container.env as Obj[]).filter((e) => typeof e.value === 'string').map((e) => [e.name, e.value as string]));
  const serviceAccount = find('Deployment').spec.template.spec.serviceAccountName as string;
  t.equal(serviceAccount, NAME);
  const mg = await startMirrorgate(['--config', configFile, '--kubeconfig', await kube.serviceAccountKubeconfig(NS, serviceAccount), ...args], {
    env: { ...env, POD_NAME: `${NAME}-0`, POD_NAMESPACE: NS },
  });
  t.teardown(() => mg.stop());

  // The webhook's Service is taken by the process's URL; the caBundle is what mirrorgate wrote.
  const path = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${NAME}`;
  const mwc = await kube.must<Obj>('GET', path);
  const bundle = (mwc.webhooks as Obj[])[0]?.clientConfig.caBundle as string | undefined;
  t.ok(bundle, 'mirrorgate wrote the caBundle of the chart\'s webhook configuration');
  const ops = (mwc.webhooks as Obj[]).map((_w, i) => ({ op: 'replace', path: `/webhooks/${i}/clientConfig`, value: { url: `${mg.url}/mutate`, caBundle: bundle } }));
  await kube.must('PATCH', path, JSON.stringify(ops), 'application/json-patch+json');
  await eventually('the API server calls the webhook', async () => {
    const a = await kube.must<Obj>('POST', '/api/v1/namespaces/apps/pods?dryRun=All', pod('probe', 'nginx:1.27'));
    return a.spec.containers[0].image === 'mirror.example.com/dockerhub/library/nginx:1.27';
  });

  await t.test('pull-secret replication with only the chart\'s RBAC', async (t) => {
    const stored = await kube.must<Obj>('POST', '/api/v1/namespaces/apps/pods', pod('web', 'nginx:1.27'));
    t.same(stored.spec.imagePullSecrets, [{ name: 'mirror-pull' }]);
    const copy = await eventually('the secret is copied into apps', async () => {
      const a = await kube.request('GET', '/api/v1/namespaces/apps/secrets/mirror-pull');
      return a.status === 200 ? (JSON.parse(a.body) as Obj) : undefined;
    });
    const source = await kube.must<Obj>('GET', `/api/v1/namespaces/${NS}/secrets/mirror-pull`);
    t.equal(copy.type, 'kubernetes.io/dockerconfigjson');
    t.same(copy.data, source.data);
    t.equal(copy.metadata.labels['app.kubernetes.io/managed-by'], 'mirrorgate');
    t.equal(copy.metadata.annotations['mirrorgate.io/copied-from'], `${NS}/mirror-pull`);

    // Credential rotation: the source changes, the copy follows (the source is watched).
    const rotated = Buffer.from(JSON.stringify({ auths: { 'mirror.example.com': { auth: Buffer.from('u:rotated').toString('base64') } } })).toString('base64');
    await kube.must('PATCH', `/api/v1/namespaces/${NS}/secrets/mirror-pull`, JSON.stringify({ data: { '.dockerconfigjson': rotated } }), 'application/merge-patch+json');
    await eventually('the copy follows the source', async () => (await kube.must<Obj>('GET', '/api/v1/namespaces/apps/secrets/mirror-pull')).data['.dockerconfigjson'] === rotated);
  });

  await t.test("least privilege: the chart's roles are enough, and no more", async (t) => {
    const token = await kube.serviceAccountToken(NS, NAME);
    await kube.must('POST', '/api/v1/namespaces/apps/secrets', { metadata: { name: 'db' }, stringData: { password: 'x' } });
    const other = await kube.requestAs(token, 'GET', '/api/v1/namespaces/apps/secrets/db');
    t.equal(other.status, 403, 'a Secret in another namespace is forbidden');
    t.match(other.body, new RegExp(`system:serviceaccount:${NS}:${NAME}`));
    t.equal((await kube.requestAs(token, 'GET', '/api/v1/namespaces/apps/secrets')).status, 403, 'listing secrets elsewhere is forbidden');
    t.equal((await kube.requestAs(token, 'GET', '/api/v1/secrets')).status, 403, 'listing all secrets is forbidden');
    await eventually('the report ConfigMap is written', async () => (await kube.request('GET', `/api/v1/namespaces/${NS}/configmaps/mirrorgate-report`)).status === 200);
    t.notMatch(mg.output(), /forbidden/i, 'no request of mirrorgate was refused');
  });
});
