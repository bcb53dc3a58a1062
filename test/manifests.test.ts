/**
 * manifests/: the base and every overlay build with the real `kubectl kustomize`; every
 * object validates against the Kubernetes API schemas offline (types, required fields,
 * and no unknown fields) and carries the settings the design promises. RBAC grants
 * exactly what the code uses.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import t, { type Test } from 'tap';
import { parseConfig } from '../src/config/schema.js';
import { BASE, kustomize, MANIFESTS, OVERLAYS, unknownFields, validateSchema, type Obj } from './support/render.js';

const base = await kustomize(BASE);
const overlay = await kustomize(join(OVERLAYS, 'cert-manager'));
// Every overlay, so a new one cannot ship without building and validating.
const overlays = await Promise.all(readdirSync(OVERLAYS).map(async (d) => ({ name: d, objects: await kustomize(join(OVERLAYS, d)) })));
const identityOverlays = {
  gke: await kustomize(join(OVERLAYS, 'gke-workload-identity')),
  eks: await kustomize(join(OVERLAYS, 'eks-irsa')),
  aks: await kustomize(join(OVERLAYS, 'aks-workload-identity')),
};
const CLUSTER_SCOPED = ['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'PriorityClass'];
const find = (objs: Obj[], kind: string, name = 'mirrorgate'): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!o) throw new Error(`no ${kind}/${name}`);
  return o;
};

t.test('every object of the base and of every overlay validates against the API schemas, strictly', async (t) => {
  t.ok(overlays.length >= 1, `overlays: ${overlays.map((o) => o.name).join(', ')}`);
  for (const o of [...base, ...overlays.flatMap((x) => x.objects)]) {
    const id = `${o.kind as string}/${o.metadata?.name as string}`;
    await t.resolves(validateSchema(o), `${id} schema`);
    if (!(o.apiVersion as string).startsWith('cert-manager.io/')) t.same(unknownFields(o), [], `${id} has no unknown fields`);
    if (!CLUSTER_SCOPED.includes(o.kind as string)) {
      t.equal(o.metadata?.namespace, 'mirrorgate', `${id} is in the mirrorgate namespace`);
    }
  }
});

t.test('the strict check catches a typo', async (t) => {
  const dep = structuredClone(find(base, 'Deployment'));
  dep.spec.template.spec.containers[0].readinesProbe = {};
  t.same(unknownFields(dep), ['spec.template.spec.containers[0].readinesProbe']);
  dep.spec.replicas = 'two';
  await t.rejects(validateSchema(dep), /replicas must be integer/);
});

t.test('the shipped config is valid and starts in audit mode', async (t) => {
  const cm = find(base, 'ConfigMap', 'mirrorgate-config');
  const config = parseConfig(cm.data['config.yaml'] as string, 'manifests/base/config.yaml');
  t.equal(config.mode, 'audit');
});

t.test('Deployment: replicas, anti-affinity, non-root, read-only root, probes, resources, grace', async (t) => {
  const d = find(base, 'Deployment');
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  t.equal(d.spec.replicas, 2);
  t.equal(d.spec.strategy.rollingUpdate.maxUnavailable, 0, 'never below capacity during a rollout');
  t.ok(pod.affinity.podAntiAffinity, 'anti-affinity');
  t.equal(pod.securityContext.runAsNonRoot, true);
  t.ok(pod.securityContext.runAsUser > 0, 'numeric non-root user');
  t.equal(c.securityContext.readOnlyRootFilesystem, true);
  t.equal(c.securityContext.allowPrivilegeEscalation, false);
  t.same(c.securityContext.capabilities.drop, ['ALL']);
  t.match(c.readinessProbe.httpGet, { path: '/readyz', scheme: 'HTTPS' });
  t.match(c.livenessProbe.httpGet, { path: '/healthz', scheme: 'HTTPS' });
  t.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory, 'requests and a memory limit');
  const delay = Number(/--shutdown-delay=(\d+)s/.exec((c.args as string[]).join(' '))?.[1]);
  t.ok(pod.terminationGracePeriodSeconds >= delay + 10, 'grace period covers the shutdown delay plus the drain');
  t.ok((c.env as Obj[]).some((e) => e.name === 'POD_NAME' && e.valueFrom.fieldRef.fieldPath === 'metadata.name'), 'POD_NAME for the report key');
  t.ok((c.args as string[]).includes('serve'));
  const pdb = find(base, 'PodDisruptionBudget');
  t.same(pdb.spec.selector.matchLabels, d.spec.selector.matchLabels);
});

t.test('Service routes 443 to the webhook port', async (t) => {
  const s = find(base, 'Service');
  const d = find(base, 'Deployment');
  t.same(s.spec.selector, d.spec.selector.matchLabels);
  t.match(s.spec.ports[0], { port: 443, targetPort: 'webhook' });
});

t.test('MutatingWebhookConfiguration', async (t) => {
  const w = find(base, 'MutatingWebhookConfiguration').webhooks[0];
  t.same(w.admissionReviewVersions, ['v1']);
  t.equal(w.sideEffects, 'NoneOnDryRun');
  t.equal(w.reinvocationPolicy, 'IfNeeded');
  t.ok(w.timeoutSeconds >= 1 && w.timeoutSeconds <= 30);
  t.ok(['Ignore', 'Fail'].includes(w.failurePolicy));
  t.match(w.clientConfig.service, { name: 'mirrorgate', namespace: 'mirrorgate', path: '/mutate', port: 443 });
  t.same(w.rules[0].operations, ['CREATE', 'UPDATE']);
  t.same(w.rules[0].resources, ['pods', 'pods/ephemeralcontainers']);
  const exprs = w.namespaceSelector.matchExpressions as Obj[];
  t.ok(exprs.some((e) => e.key === 'kubernetes.io/metadata.name' && e.operator === 'NotIn' && e.values.includes('kube-system') && e.values.includes('mirrorgate')));
  t.ok(exprs.some((e) => e.key === 'mirrorgate.io/mode' && e.operator === 'NotIn' && e.values.includes('off')));
  const text = readFileSync(join(BASE, 'webhook.yaml'), 'utf8');
  t.match(text, /failurePolicy, by mode:[\s\S]*audit[\s\S]*enforce with policy/, 'failurePolicy documented for each mode');
});

t.test('base: the webhook manages its own certificate', async (t) => {
  const c = find(base, 'Deployment').spec.template.spec.containers[0];
  t.ok((c.args as string[]).includes('--manage-certs'));
  t.notOk((c.args as string[]).some((a) => a.startsWith('--tls-cert')));
});

t.test('cert-manager overlay: certificate for the service, served from files, and CA injection', async (t) => {
  const cert = find(overlay, 'Certificate', 'mirrorgate-tls');
  const dep = find(overlay, 'Deployment').spec.template.spec;
  t.equal(cert.spec.secretName, dep.volumes.find((v: Obj) => v.name === 'tls').secret.secretName);
  const args = dep.containers[0].args as string[];
  t.notOk(args.includes('--manage-certs'), 'cert-manager owns the certificate');
  t.ok(args.includes('--tls-cert=/etc/mirrorgate/tls/tls.crt'));
  t.ok((dep.containers[0].volumeMounts as Obj[]).some((m) => m.name === 'tls' && m.mountPath === '/etc/mirrorgate/tls'));
  t.ok((cert.spec.dnsNames as string[]).includes('mirrorgate.mirrorgate.svc'));
  t.equal(find(overlay, 'MutatingWebhookConfiguration').metadata.annotations['cert-manager.io/inject-ca-from'], 'mirrorgate/mirrorgate-tls');
  t.notOk(overlay.some((o) => o.kind === 'Secret'), "no empty Secret of ours: cert-manager creates and owns mirrorgate-tls");
  t.notMatch(JSON.stringify(find(overlay, 'Role').rules), /secrets/, 'no access to any Secret');
  t.notMatch(JSON.stringify(find(overlay, 'ClusterRole').rules), /mutatingwebhookconfigurations/, 'no caBundle patching: the CA injector fills it');
});

t.test('base: priority above ordinary workloads; static mirror pods never sent; the TLS Secret created empty', async (t) => {
  const pc = find(base, 'PriorityClass');
  t.equal(find(base, 'Deployment').spec.template.spec.priorityClassName, pc.metadata.name);
  t.ok(pc.value > 0 && pc.value <= 1_000_000_000, 'a user-definable priority (system classes are above 1e9)');
  t.equal(pc.globalDefault, false);
  const w = find(base, 'MutatingWebhookConfiguration').webhooks[0];
  t.same(w.matchConditions, [{ name: 'not-a-static-mirror-pod', expression: "!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)" }]);
  const secret = find(base, 'Secret', 'mirrorgate-tls');
  t.equal(secret.type, 'Opaque', 'a type the webhook keeps when it fills the Secret');
  t.notOk('data' in secret || 'stringData' in secret, 'no data: re-applying never overwrites the certificates');
});

/** Build an overlay of ours, as a user writes one, in a temporary folder beside nothing of ours. */
async function userOverlay(t: Test, kustomization: string): Promise<Obj[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-overlay-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'kustomization.yaml'), kustomization.replaceAll('MANIFESTS', relative(dir, MANIFESTS)));
  return kustomize(dir);
}

for (const from of ['base', 'overlays/cert-manager']) {
  t.test(`another namespace with kustomize (${from}): every field that names it follows`, async (t) => {
    const objs = await userOverlay(t, `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: infra
resources: [MANIFESTS/${from}]
transformers: [MANIFESTS/follow-namespace]
`);
    t.equal(objs.length, (from === 'base' ? base : overlay).length, 'the same objects');
    for (const o of objs) {
      await t.resolves(validateSchema(o), `${o.kind as string} schema`);
      if (!CLUSTER_SCOPED.includes(o.kind as string)) t.equal(o.metadata.namespace, 'infra', `${o.kind as string}/${o.metadata.name as string} in infra`);
    }
    t.ok(find(objs, 'Namespace', 'infra'));
    const w = find(objs, 'MutatingWebhookConfiguration');
    t.equal(w.webhooks[0].clientConfig.service.namespace, 'infra');
    const names = (w.webhooks[0].namespaceSelector.matchExpressions as Obj[]).find((e) => e.key === 'kubernetes.io/metadata.name');
    t.same(names?.values, ['infra', 'cert-manager', 'kube-system'], 'its own namespace excluded, by its new name');
    for (const b of objs.filter((o) => o.kind.endsWith('Binding'))) t.same(b.subjects, [{ kind: 'ServiceAccount', name: 'mirrorgate', namespace: 'infra' }]);
    t.ok((find(objs, 'Deployment').spec.template.spec.containers[0].env as Obj[]).some((e) => e.name === 'POD_NAMESPACE' && e.valueFrom), 'serve learns its namespace from the pod');
    if (from !== 'base') {
      t.equal(w.metadata.annotations['cert-manager.io/inject-ca-from'], 'infra/mirrorgate-tls');
      t.same(find(objs, 'Certificate', 'mirrorgate-tls').spec.dnsNames, ['mirrorgate', 'mirrorgate.infra', 'mirrorgate.infra.svc', 'mirrorgate.infra.svc.cluster.local']);
    }
    t.notMatch(JSON.stringify(objs), /"namespace":"mirrorgate"|mirrorgate\.mirrorgate|"mirrorgate\/|"values":\["mirrorgate"/, 'the old namespace is named nowhere');
  });
}

/**
 * What the code does with the Kubernetes API, one line per use. RBAC must grant exactly
 * this: a new API call needs a line here and a rule in manifests/base/rbac.yaml.
 */
const USES = [
  'cluster  serviceaccounts get,list,watch', // kube/service-accounts: informer + direct GET on a miss
  'cluster  namespaces get,list,watch', // kube/namespaces: labels (mirrorgate.io/mode, rules' namespaceSelector)
  'cluster  nodes list,watch', // kube/nodes: kubernetes.io/os and kubernetes.io/arch for platform-aware verification
  'cluster  admissionregistration.k8s.io/mutatingwebhookconfigurations[mirrorgate] get,patch', // caBundle
  'mirrorgate  configmaps create', // kube/report-store: first flush
  'mirrorgate  configmaps[mirrorgate-report] get,update', // kube/report-store: flush and reload
  // No Secret create: base/secret.yaml creates mirrorgate-tls empty, --manage-certs fills it.
  'mirrorgate  secrets[mirrorgate-tls] get,update', // --manage-certs: read, first fill, renewal and CA rotation (kube/cert-rotation)
  // registries.*.auth.secret (dockerconfigjson): get by name, added with the config (see rbac.yaml)
];

function grants(objs: Obj[]): string[] {
  const out: string[] = [];
  for (const role of objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')) {
    const scope = role.kind === 'ClusterRole' ? 'cluster' : role.metadata.namespace;
    for (const r of role.rules as Obj[]) {
      for (const g of r.apiGroups as string[]) {
        for (const res of r.resources as string[]) {
          const names = r.resourceNames ? `[${(r.resourceNames as string[]).join(',')}]` : '';
          out.push(`${scope}  ${g === '' ? '' : `${g}/`}${res}${names} ${(r.verbs as string[]).join(',')}`);
        }
      }
    }
  }
  return out.sort();
}

t.test('RBAC grants exactly what the code uses, bound to our ServiceAccount', async (t) => {
  t.same(grants(base), [...USES].sort());
  for (const b of base.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding')) {
    t.same(b.subjects, [{ kind: 'ServiceAccount', name: 'mirrorgate', namespace: 'mirrorgate' }]);
  }
  const dep = find(base, 'Deployment');
  t.equal(dep.spec.template.spec.serviceAccountName, 'mirrorgate');
  const all = JSON.stringify(base.filter((o) => o.kind.endsWith('Role')));
  t.notMatch(all, /"\*"/, 'no wildcards');
});

t.test('cloud identity overlays give mirrorgate\'s ServiceAccount its identity, as each cloud reads it', async (t) => {
  const sa = (objs: Obj[]): Record<string, string> => find(objs, 'ServiceAccount').metadata.annotations as Record<string, string>;
  t.match(sa(identityOverlays.gke), { 'iam.gke.io/gcp-service-account': /^[a-z][-a-z0-9]*@[-a-z0-9]+\.iam\.gserviceaccount\.com$/ });
  t.match(sa(identityOverlays.eks), { 'eks.amazonaws.com/role-arn': /^arn:aws:iam::\d{12}:role\/.+$/ });
  t.match(sa(identityOverlays.aks), { 'azure.workload.identity/client-id': /^[0-9a-f-]{36}$/ });
  // The AKS add-on mutates only pods carrying this label (the ServiceAccount annotation alone is not enough).
  t.equal(find(identityOverlays.aks, 'Deployment').spec.template.metadata.labels['azure.workload.identity/use'], 'true');
  t.notOk(find(base, 'Deployment').spec.template.metadata.labels['azure.workload.identity/use'], 'not in the base');
  for (const objs of Object.values(identityOverlays)) t.equal(objs.length, base.length, 'the same objects as the base');
});
