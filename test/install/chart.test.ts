/**
 * charts/mirrorgate with the real helm: `helm lint --strict`, then `helm template` across
 * the value combinations users choose (certificate modes, monitoring, network policy,
 * scheduling, webhook selectors, image by digest, another namespace). Every rendered
 * object is validated against the Kubernetes schemas (and strictly for core kinds); the
 * rendered config is one the webhook accepts; values.schema.json refuses bad values; and
 * the default render installs the same objects as the kustomize base (field by field; the
 * config compared as parsed).
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import t, { type Test } from 'tap';
import { parseConfig } from '../../src/config/schema.js';
import { helm, helmOk } from '../support/k8s-tools.js';
import { BASE, kustomize, OVERLAYS, parseYamlStream, unknownFields, validateSchema, type Obj } from '../support/render.js';

const CHART = resolve(import.meta.dirname, '../../charts/mirrorgate');
const CLUSTER_SCOPED = new Set(['ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'PriorityClass']);

async function template(namespace: string, sets: string[], release = 'mirrorgate'): Promise<Obj[]> {
  // "json:key=value" goes through --set-json (lists and maps), the rest through --set.
  const args = ['template', release, CHART, '--namespace', namespace,
    ...sets.flatMap((s) => (s.startsWith('json:') ? ['--set-json', s.slice(5)] : ['--set', s]))];
  return parseYamlStream(await helmOk(args), `helm ${args.join(' ')}`);
}

const find = (objs: Obj[], kind: string, name?: string): Obj => {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata?.name === name));
  if (!o) throw new Error(`no ${kind}/${name ?? '*'}`);
  return o;
};
const container = (objs: Obj[]): Obj => find(objs, 'Deployment').spec.template.spec.containers[0];

async function checkAll(t: Test, objs: Obj[], namespace: string): Promise<void> {
  for (const o of objs) {
    const id = `${o.kind as string}/${o.metadata?.name as string}`;
    await t.resolves(validateSchema(o), `${id} schema`);
    if (!/(cert-manager|monitoring\.coreos)\.(io|com)\//.test(o.apiVersion as string)) t.same(unknownFields(o), [], `${id} has no unknown fields`);
    if (!CLUSTER_SCOPED.has(o.kind as string)) t.equal(o.metadata?.namespace, namespace, `${id} is in ${namespace}`);
  }
  const cm = find(objs, 'ConfigMap');
  t.doesNotThrow(() => parseConfig(cm.data['config.yaml'] as string, 'chart config'), 'the webhook accepts the rendered config');
}

t.test('helm lint --strict', async (t) => {
  const r = await helm(['lint', '--strict', CHART]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
});

t.test('defaults: self-managed certificates, audit mode, nothing optional', async (t) => {
  const objs = await template('mirrorgate', []);
  await checkAll(t, objs, 'mirrorgate');
  const args = container(objs).args as string[];
  t.ok(args.includes('--manage-certs'));
  t.ok(args.includes('--webhook-name=mirrorgate'));
  t.notOk(objs.some((o) => ['ServiceMonitor', 'PrometheusRule', 'NetworkPolicy', 'Certificate', 'Issuer'].includes(o.kind as string)));
  t.equal(find(objs, 'ConfigMap').data['config.yaml'].includes('mode: audit'), true);
  t.equal(container(objs).image, 'ghcr.io/mirrorgate/mirrorgate:0.1.0');
  const secret = find(objs, 'Secret', 'mirrorgate-tls');
  t.equal(secret.type, 'Opaque');
  t.notOk('data' in secret, 'created empty: the webhook fills it, an upgrade never overwrites it');
  t.equal(find(objs, 'Deployment').spec.template.spec.priorityClassName, find(objs, 'PriorityClass').metadata.name, "the chart's own priority class");
  const conditions = find(objs, 'MutatingWebhookConfiguration').webhooks[0].matchConditions as Obj[];
  t.same(conditions.map((c) => c.name), ['not-a-static-mirror-pod'], 'static mirror pods are never sent');
});

t.test('the namespace comes from --namespace; it and cert-manager\'s are always excluded', async (t) => {
  const objs = await template('infra', ['json:webhook.excludeNamespaces=[]'], 'gate');
  await checkAll(t, objs, 'infra');
  const w = find(objs, 'MutatingWebhookConfiguration').webhooks[0];
  t.match(w.clientConfig.service, { name: 'gate-mirrorgate', namespace: 'infra' });
  const names = (w.namespaceSelector.matchExpressions as Obj[]).find((e) => e.key === 'kubernetes.io/metadata.name');
  t.same(names?.values, ['infra', 'cert-manager']);
  t.notMatch(JSON.stringify(objs.map((o) => o.metadata.namespace)), /"mirrorgate"/, 'nothing in a hard-coded namespace');
  const binding = find(objs, 'ClusterRoleBinding');
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: 'gate-mirrorgate', namespace: 'infra' }]);
  t.ok((container(objs).env as Obj[]).some((e) => e.name === 'MIRRORGATE_SERVICE' && e.value === 'gate-mirrorgate'));
});

t.test('certificates from cert-manager: issuers, certificate for the service, CA injection', async (t) => {
  const objs = await template('infra', ['certificates.mode=certManager']);
  await checkAll(t, objs, 'infra');
  const cert = find(objs, 'Certificate', 'mirrorgate-tls');
  t.same(cert.spec.dnsNames, ['mirrorgate', 'mirrorgate.infra', 'mirrorgate.infra.svc', 'mirrorgate.infra.svc.cluster.local']);
  t.equal(find(objs, 'MutatingWebhookConfiguration').metadata.annotations['cert-manager.io/inject-ca-from'], 'infra/mirrorgate-tls');
  const pod = find(objs, 'Deployment').spec.template.spec;
  t.equal(pod.volumes.find((v: Obj) => v.name === 'tls').secret.secretName, cert.spec.secretName);
  t.notOk((container(objs).args as string[]).includes('--manage-certs'));
  t.ok((container(objs).args as string[]).includes('--tls-cert=/etc/mirrorgate/tls/tls.crt'));
  t.equal(objs.filter((o) => o.kind === 'Issuer').length, 2, 'self-signed and CA issuers');
  const role = find(objs, 'Role');
  t.notOk(JSON.stringify(role.rules).includes('secrets'), 'cert-manager owns the Secret: no Secret access');
  t.notOk(objs.some((o) => o.kind === 'Secret'), 'no empty Secret of ours: cert-manager creates it');
  t.notOk(JSON.stringify(find(objs, 'ClusterRole').rules).includes('mutatingwebhookconfigurations'), 'no caBundle patching');

  const own = await template('infra', ['certificates.mode=certManager', 'certificates.certManager.issuerRef.name=corp-ca', 'certificates.certManager.issuerRef.kind=ClusterIssuer']);
  await checkAll(t, own, 'infra');
  t.equal(own.filter((o) => o.kind === 'Issuer').length, 0, 'no issuers of ours with issuerRef');
  t.same(find(own, 'Certificate').spec.issuerRef, { name: 'corp-ca', kind: 'ClusterIssuer' });
});

t.test('certificates from an existing Secret plus caBundle', async (t) => {
  const ca = Buffer.from('-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n').toString('base64');
  const objs = await template('mirrorgate', ['certificates.mode=secret', 'certificates.existingSecret.name=corp-tls', `certificates.existingSecret.caBundle=${ca}`]);
  await checkAll(t, objs, 'mirrorgate');
  t.equal(find(objs, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.caBundle, ca);
  t.equal(find(objs, 'Deployment').spec.template.spec.volumes.find((v: Obj) => v.name === 'tls').secret.secretName, 'corp-tls');
  t.notOk(objs.some((o) => o.kind === 'Secret'), 'the Secret is yours: the chart neither creates nor touches it');
  t.notOk(JSON.stringify(find(objs, 'Role').rules).includes('secrets'), 'and mirrorgate may not read it through the API (it is mounted)');
});

t.test('monitoring and network policy, scheduling, selectors, digest', async (t) => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const objs = await template('obs', [
    'metrics.serviceMonitor.enabled=true', 'metrics.prometheusRule.enabled=true', 'networkPolicy.enabled=true',
    'priorityClassName=system-cluster-critical', 'replicaCount=3', `image.digest=${digest}`,
    'webhook.failurePolicy=Fail', 'webhook.timeoutSeconds=10',
    'webhook.objectSelector.matchLabels.team=payments',
    'webhook.matchConditions[0].name=not-nodes', "webhook.matchConditions[0].expression=!request.userInfo.username.startsWith('system:node:')",
    'webhook.namespaceSelector.matchExpressions[0].key=team', 'webhook.namespaceSelector.matchExpressions[0].operator=Exists',
    'topologySpreadConstraints[0].maxSkew=2', 'topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname', 'topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule',
    'resources.limits.memory=512Mi',
    'json:affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"pool","operator":"In","values":["system"]}]}]}}}',
    'json:tolerations=[{"key":"dedicated","operator":"Equal","value":"system","effect":"NoSchedule"}]',
    'config.registries.mirror\\.example\\.com.auth.secret=mirror-creds',
  ]);
  await checkAll(t, objs, 'obs');
  const alerts = (find(objs, 'PrometheusRule').spec.groups[0].rules as Obj[]).map((r) => r.alert);
  t.same(alerts, ['MirrorgateCertificateExpiring', 'MirrorgateAdmissionsFailing', 'MirrorgateMirrorUnreachable', 'MirrorgateCopiesFailing']);
  t.equal(find(objs, 'ServiceMonitor').spec.endpoints[0].port, 'metrics');
  t.ok(find(objs, 'NetworkPolicy'));
  const d = find(objs, 'Deployment');
  t.equal(d.spec.replicas, 3);
  t.equal(d.spec.template.spec.priorityClassName, 'system-cluster-critical');
  t.notOk(objs.some((o) => o.kind === 'PriorityClass'), 'no class of ours when one is named');
  t.equal(container(objs).image, `ghcr.io/mirrorgate/mirrorgate@${digest}`);
  t.equal(d.spec.template.spec.topologySpreadConstraints[0].maxSkew, 2);
  t.same(container(objs).resources, { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } }, 'resources');
  t.same(Object.keys(d.spec.template.spec.affinity as Obj), ['nodeAffinity'], 'affinity replaces the default anti-affinity');
  t.equal(d.spec.template.spec.tolerations[0].key, 'dedicated');
  const w = find(objs, 'MutatingWebhookConfiguration').webhooks[0];
  t.equal(w.failurePolicy, 'Fail');
  t.equal(w.timeoutSeconds, 10);
  t.same(w.objectSelector, { matchLabels: { team: 'payments' } });
  t.same(w.matchConditions.map((c: Obj) => c.name), ['not-a-static-mirror-pod', 'not-nodes'], 'yours after the built-in one');
  t.ok((w.namespaceSelector.matchExpressions as Obj[]).some((e) => e.key === 'team' && e.operator === 'Exists'));
  const secretRules = (find(objs, 'Role').rules as Obj[]).filter((r) => r.resources.includes('secrets'));
  t.same(secretRules.map((r) => [r.resourceNames, r.verbs]), [[['mirrorgate-tls'], ['get', 'update']], [['mirror-creds'], ['get']]], 'Secrets by name only, none created');
});

t.test("mirrorgate's own cloud identity: the ServiceAccount as each kustomize overlay gives it", async (t) => {
  const sa = (objs: Obj[]): Obj => find(objs, 'ServiceAccount');
  const overlay = async (name: string): Promise<Obj[]> => kustomize(join(OVERLAYS, name));
  const gke = sa(await overlay('gke-workload-identity')).metadata.annotations as Record<string, string>;
  const eks = sa(await overlay('eks-irsa')).metadata.annotations as Record<string, string>;
  const aksObjs = await overlay('aks-workload-identity');
  const aks = sa(aksObjs).metadata.annotations as Record<string, string>;
  const cases: [string, string, Record<string, string>][] = [
    ['gcpServiceAccount', gke['iam.gke.io/gcp-service-account'] as string, gke],
    ['awsRoleArn', eks['eks.amazonaws.com/role-arn'] as string, eks],
    ['azureClientId', aks['azure.workload.identity/client-id'] as string, aks],
  ];
  for (const [value, setting, annotations] of cases) {
    const objs = await template('infra', [`cloudIdentity.${value}=${setting}`]);
    await checkAll(t, objs, 'infra');
    t.same(sa(objs).metadata.annotations, annotations, `${value}: the overlay's annotations`);
    const labels = find(objs, 'Deployment').spec.template.metadata.labels as Record<string, string>;
    t.equal(labels['azure.workload.identity/use'], value === 'azureClientId' ? 'true' : undefined, `${value}: the AKS pod label only for Azure`);
  }
  t.equal(find(aksObjs, 'Deployment').spec.template.metadata.labels['azure.workload.identity/use'], 'true', 'as the AKS overlay labels them');
  const both = await template('infra', [`cloudIdentity.gcpServiceAccount=${gke['iam.gke.io/gcp-service-account'] as string}`, 'serviceAccount.annotations.team=platform']);
  t.same(sa(both).metadata.annotations, { ...gke, team: 'platform' }, 'serviceAccount.annotations add to them');
  t.notOk(sa(await template('infra', [])).metadata.annotations, 'none by default');
});

t.test('config: every section of the webhook\'s config file goes through as given', async (t) => {
  const objs = await template('mirrorgate', [
    'config.mode=enforce',
    'json:config.rules=[{"from":"docker.io","to":"mirror.example.com/dockerhub","verify":true}]',
    'json:config.policy={"allowedRegistries":["mirror.example.com"]}',
    'json:config.pullSecrets=[{"name":"pull","registries":["mirror.example.com"]}]',
    'json:config.registries={"mirror.example.com":{"auth":{"secret":"mirror-creds"}}}',
    'json:config.verification={"timeoutMs":800,"onUnreachable":"deny","platforms":["linux/amd64"]}',
    'json:config.identity={"aws":{"enabled":false}}',
    'json:config.report={"flushSeconds":30}',
  ]);
  await checkAll(t, objs, 'mirrorgate');
  const config = parseConfig(find(objs, 'ConfigMap').data['config.yaml'] as string, 'chart');
  t.equal(config.mode, 'enforce');
  t.equal(config.ruleSet.rules[0]?.verify, true, 'rules');
  t.ok(config.policy, 'policy');
  t.same(config.pullSecrets.map((p) => p.name), ['pull'], 'pullSecrets');
  t.same(config.registries['mirror.example.com']?.auth, { secret: 'mirror-creds' }, 'registries');
  t.match(config.verification, { timeoutMs: 800, onUnreachable: 'deny', platforms: ['linux/amd64'] }, 'verification');
  t.equal(config.identity.settings.aws, undefined, 'identity: aws wiring off');
  t.ok(config.identity.settings.gcp, 'identity: the others on');
  t.equal(config.report.flushSeconds, 30, 'report');
  t.same((find(objs, 'Role').rules as Obj[]).find((r) => r.resourceNames?.includes('mirror-creds'))?.verbs, ['get'], 'the named credentials readable, by name');
  const bad = await helm(['template', 'mirrorgate', CHART, '--set', 'config.logLevel=loud']);
  t.not(bad.code, 0);
  t.match(bad.stderr, /logLevel/, 'a bad config value fails helm install');
});

t.test('NOTES.txt: how to wait, open the report and switch to enforce, for this release', async (t) => {
  // helm renders NOTES only on install; a client-side dry run needs no cluster.
  const r = await helm(['install', 'gate', CHART, '--namespace', 'infra', '--dry-run=client']);
  t.equal(r.code, 0, r.stderr);
  const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
  t.match(notes, 'kubectl -n infra rollout status deploy/gate-mirrorgate');
  t.match(notes, 'kubectl -n infra port-forward svc/gate-mirrorgate 9090:9090');
  t.match(notes, 'http://127.0.0.1:9090/report.html');
  t.match(notes, 'mirrorgate report --kubeconfig ~/.kube/config --namespace infra');
  t.match(notes, 'helm upgrade gate CHART -n infra --reset-then-reuse-values --set config.mode=enforce', 'upgrade names the chart and keeps new defaults');
});

t.test('values.schema.json refuses bad values', async (t) => {
  const bad: [string[], RegExp][] = [
    [['config.mode=nonsense'], /config\/mode/],
    [['webhook.failurePolicy=Sometimes'], /failurePolicy/],
    [['webhook.timeoutSeconds=31'], /timeoutSeconds/],
    [['certificates.mode=vault'], /certificates\/mode/],
    [['certificates.mode=secret'], /existingSecret/],
    [['image.digest=latest'], /digest/],
    [['replicaCount=0'], /replicaCount/],
    [['webhook.matchConditions[0].name=x'], /expression/],
    [['unknownValue=1'], /unknownValue/],
    [['metrics.port=8443'], /metrics\/port/],
    [['webhook.objectSelector.matchLabels.skip=true'], /objectSelector/],
    [['cloudIdentity.gcpServiceAccount=mirrorgate@gmail.com'], /gcpServiceAccount/],
    [['cloudIdentity.awsRoleArn=arn:aws:iam::1:role/x'], /awsRoleArn/],
    [['cloudIdentity.azureClientId=not-a-uuid'], /azureClientId/],
    [['priorityClass.value=2000000000'], /priorityClass\/value/],
  ];
  for (const [sets, message] of bad) {
    const r = await helm(['template', 'mirrorgate', CHART, ...sets.flatMap((s) => ['--set', s])]);
    t.not(r.code, 0, `${sets.join(' ')} fails`);
    t.match(r.stderr, message, sets.join(' '));
  }
});

/** Labels and annotations only helm adds; everything else must match the base. */
const HELM_ONLY = new Set(['app.kubernetes.io/instance', 'app.kubernetes.io/version', 'app.kubernetes.io/managed-by', 'helm.sh/chart', 'checksum/config']);
function normalise(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normalise);
  if (v === null || typeof v !== 'object') return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v as Obj)) if (!HELM_ONLY.has(k)) out[k] = normalise(x);
  return out;
}

t.test('one source of truth: the default render installs what the kustomize base does', async (t) => {
  const chart = await template('mirrorgate', []);
  const base = (await kustomize(BASE)).filter((o) => o.kind !== 'Namespace'); // helm install --create-namespace
  const key = (o: Obj): string => `${o.kind as string}/${o.metadata.name as string}`;
  t.same(chart.map(key).sort(), base.map(key).sort(), 'the same objects');
  for (const b of base) {
    const c = chart.find((o) => key(o) === key(b)) as Obj;
    if (b.kind === 'ConfigMap') {
      t.same(parseConfig(c.data['config.yaml'] as string, 'chart'), parseConfig(b.data['config.yaml'] as string, 'base'), 'the same config');
      continue;
    }
    t.same(normalise(c), normalise(b), key(b));
  }
});

t.test('the Grafana dashboard ships with the chart as an optional ConfigMap for the sidecar', async (t) => {
  const shipped = await readFile(resolve(CHART, 'dashboards/mirrorgate.json'), 'utf8');
  const isDashboard = (o: Obj): boolean => o.kind === 'ConfigMap' && o.metadata?.name === 'mirrorgate-dashboard';
  t.notOk((await template('mirrorgate', [])).some(isDashboard), 'off by default');

  const objs = await template('obs', ['metrics.grafanaDashboard.enabled=true', 'metrics.grafanaDashboard.annotations.grafana_folder=Platform']);
  await checkAll(t, objs, 'obs');
  const cm = find(objs, 'ConfigMap', 'mirrorgate-dashboard');
  t.equal(cm.metadata.labels.grafana_dashboard, '1', "the label the grafana chart's sidecar looks for by default");
  t.equal(cm.metadata.labels['app.kubernetes.io/name'], 'mirrorgate');
  t.same(cm.metadata.annotations, { grafana_folder: 'Platform' });
  t.equal(cm.data['mirrorgate.json'], shipped.trim(), 'the dashboard file, as it is');
  t.match(JSON.parse(cm.data['mirrorgate.json'] as string), { uid: String, panels: Array }, 'and it is JSON a Grafana can import');
  t.ok(find(objs, 'ConfigMap', 'mirrorgate-config').data['config.yaml'], 'the config ConfigMap is still there beside it');

  const elsewhere = await template('obs', ['metrics.grafanaDashboard.enabled=true', 'metrics.grafanaDashboard.namespace=monitoring', 'json:metrics.grafanaDashboard.labels={"grafana_dashboard":"mirrorgate"}']);
  const moved = find(elsewhere, 'ConfigMap', 'mirrorgate-dashboard');
  await t.resolves(validateSchema(moved), 'valid in another namespace too');
  t.equal(moved.metadata.namespace, 'monitoring', "in Grafana's namespace when asked");
  t.equal(moved.metadata.labels.grafana_dashboard, 'mirrorgate');

  const bad = await helm(['template', 'mirrorgate', CHART, '--set', 'metrics.grafanaDashboard.namespace=Not_A_Namespace']);
  t.not(bad.code, 0, 'a namespace that is not a name is refused');
  t.match(bad.stderr, /grafanaDashboard\/namespace/);
  const typo = await helm(['template', 'mirrorgate', CHART, '--set', 'metrics.grafanaDashboard.enable=true']);
  t.not(typo.code, 0, 'a misspelt key is refused, not ignored');
});
