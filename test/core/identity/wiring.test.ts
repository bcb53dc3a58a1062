import { readdirSync, readFileSync } from 'node:fs';
import fjp from 'fast-json-patch';
import t from 'tap';
import { validateIdentityConfig } from '../../../src/config/identity.js';
import { azureVolumeName } from '../../../src/core/identity/azure.js';
import { planIdentity, type IdentityPlan, type IdentitySettings, type ServiceAccountInfo } from '../../../src/core/identity/wiring.js';

const { applyPatch, deepClone } = fjp;

type Pod = Record<string, any>;

interface Fixture {
  description: string;
  settings?: unknown;
  serviceAccount: { annotations: Record<string, string> } | null;
  pod: Pod;
  expectedPod: Pod;
  expectedWarnings: string[];
  /** What upstream would deny the pod for (the plan's problems); none when absent. */
  expectedProblems?: string[];
  expectedApplied: string[];
}

const FIXTURES = new URL('../../fixtures/identity/', import.meta.url);

function settingsOf(raw: unknown): IdentitySettings {
  const { settings, problems } = validateIdentityConfig(raw);
  if (problems.length > 0) throw new Error(`fixture settings: ${JSON.stringify(problems)}`);
  return settings;
}

function sa(annotations: Record<string, string>): ServiceAccountInfo {
  return { namespace: 'team-a', name: 'app', annotations };
}

/** Apply the plan as the API server would, with the annotations merged as the caller does. */
function apply(pod: Pod, plan: IdentityPlan): Pod {
  // validate=true: every operation must be valid RFC 6902 against this document.
  const out = applyPatch(deepClone(pod), plan.operations, true, false).newDocument as Pod;
  if (Object.keys(plan.annotations).length > 0) {
    out.metadata ??= {};
    out.metadata.annotations = { ...(out.metadata.annotations ?? {}), ...plan.annotations };
  }
  return out;
}

const names = readdirSync(FIXTURES).filter((f) => f.endsWith('.json')).sort();

t.test('golden fixtures', async (t) => {
  t.ok(names.length >= 20, 'one fixture per behaviour');
  for (const file of names) {
    const f = JSON.parse(readFileSync(new URL(file, FIXTURES), 'utf8')) as Fixture;
    t.test(`${file}: ${f.description}`, async (t) => {
      const settings = settingsOf(f.settings);
      const account = f.serviceAccount === null ? undefined : sa(f.serviceAccount.annotations);
      const before = deepClone(f.pod);
      const plan = planIdentity(f.pod, account, settings);
      t.same(f.pod, before, 'the input pod is not modified');
      t.same(apply(f.pod, plan), f.expectedPod, 'patched pod');
      t.same(plan.warnings, f.expectedWarnings, 'warnings');
      t.same(plan.problems, f.expectedProblems ?? [], 'problems');
      for (const p of plan.problems) t.ok(p.length <= 110, `problem short enough for a warning: ${p}`);
      t.same(plan.applied, f.expectedApplied, 'applied');
      for (const w of plan.warnings) t.ok(w.length < 120, `warning under 120 characters: ${w}`);

      const again = planIdentity(f.expectedPod, account, settings);
      t.same(again.operations, [], 'second pass: no operations');
      t.same(again.annotations, {}, 'second pass: no annotations');
      t.same(again.applied, [], 'second pass: nothing applied');
    });
  }
});

const ROLE = 'arn:aws:iam::111122223333:role/s3-reader';
const ALL = settingsOf(undefined);
const AZURE_LABEL = { 'azure.workload.identity/use': 'true' };
const EVERY_SA = sa({
  'eks.amazonaws.com/role-arn': ROLE,
  'cloud.google.com/workload-identity-provider': 'projects/1/locations/global/workloadIdentityPools/p/providers/k',
  'cloud.google.com/service-account-email': 'x@proj.iam.gserviceaccount.com',
  'azure.workload.identity/client-id': 'client',
});

function pod(spec: Pod, metadata: Pod = { name: 'web' }): Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec };
}

t.test('minimal operations', async (t) => {
  const cases: { name: string; spec: Pod; expected: string[] }[] = [
    {
      name: 'lists absent: one add per list',
      spec: { containers: [{ name: 'app' }] },
      expected: ['add /spec/containers/0/env', 'add /spec/containers/0/volumeMounts', 'add /spec/volumes'],
    },
    {
      name: 'lists present: appended item by item',
      spec: { containers: [{ name: 'app', env: [], volumeMounts: [{ name: 'x', mountPath: '/x' }] }], volumes: [{ name: 'x', emptyDir: {} }] },
      expected: ['add /spec/containers/0/env/-', 'add /spec/containers/0/env/-', 'add /spec/containers/0/volumeMounts/-', 'add /spec/volumes/-'],
    },
    {
      name: 'null lists are replaced whole',
      spec: { containers: [{ name: 'app', env: null, volumeMounts: null }], volumes: null },
      expected: ['add /spec/containers/0/env', 'add /spec/containers/0/volumeMounts', 'add /spec/volumes'],
    },
    {
      name: 'init containers before containers, each by index',
      spec: { initContainers: [{ name: 'a' }], containers: [{ name: 'b' }, { name: 'c' }] },
      expected: [
        'add /spec/initContainers/0/env',
        'add /spec/initContainers/0/volumeMounts',
        'add /spec/containers/0/env',
        'add /spec/containers/0/volumeMounts',
        'add /spec/containers/1/env',
        'add /spec/containers/1/volumeMounts',
        'add /spec/volumes',
      ],
    },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const plan = planIdentity(pod(c.spec), sa({ 'eks.amazonaws.com/role-arn': ROLE }), ALL);
      t.same(plan.operations.map((o) => `${o.op} ${o.path}`), c.expected);
      const once = apply(pod(c.spec), plan);
      t.same(planIdentity(once, sa({ 'eks.amazonaws.com/role-arn': ROLE }), ALL).operations, []);
    });
  }
});

t.test('several providers on a pod without volumes create the list in one operation', async (t) => {
  const p = pod({ containers: [{ name: 'app' }] }, { name: 'web', labels: AZURE_LABEL });
  const plan = planIdentity(p, EVERY_SA, ALL);
  const volumeOps = plan.operations.filter((o) => o.path.startsWith('/spec/volumes'));
  t.equal(volumeOps.length, 1);
  t.same(
    (volumeOps[0] as { value: { name: string }[] }).value.map((v) => v.name),
    ['aws-iam-token', 'gcp-iam-token', 'external-credential-config', 'gcloud-config', azureVolumeName('web', '')],
  );
  t.same(plan.applied, ['aws', 'gcp', 'azure']);
});

t.test('fields the planner does not know survive, and only wired paths change', async (t) => {
  const p = pod(
    {
      containers: [{ name: 'app', image: 'app:1', futureField: { a: [1, 2] }, env: [{ name: 'X', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }] }],
      initContainers: [{ name: 'sidecar', restartPolicy: 'Always', startupProbe: { exec: { command: ['true'] } } }],
      ephemeralContainers: [{ name: 'debug', image: 'busybox' }],
      hostAliases: [{ ip: '127.0.0.1', hostnames: ['x'] }],
      futureSpec: true,
    },
    { name: 'web', labels: AZURE_LABEL, annotations: { keep: 'me' } },
  );
  const plan = planIdentity(p, EVERY_SA, ALL);
  for (const op of plan.operations) {
    t.equal(op.op, 'add', `only adds: ${op.path}`);
    t.match(op.path, /^\/spec\/((initContainers|containers)\/\d+\/(env|volumeMounts)|volumes)(\/-)?$/, `targeted path: ${op.path}`);
  }
  const out = apply(p, plan);
  t.same(out.spec.containers[0].futureField, { a: [1, 2] });
  t.same(out.spec.containers[0].env[0], { name: 'X', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
  t.equal(out.spec.initContainers[0].restartPolicy, 'Always');
  t.same(out.spec.ephemeralContainers, [{ name: 'debug', image: 'busybox' }], 'ephemeral containers are not wired');
  t.same(out.spec.hostAliases, p.spec.hostAliases);
  t.equal(out.spec.futureSpec, true);
  t.equal(out.metadata.annotations.keep, 'me');
});

t.test('an env name or mount path set by one provider is not added again by another', async (t) => {
  // Both AWS and a user value: AWS_REGION set by the container blocks the AWS region group.
  const settings = settingsOf({ aws: { region: 'eu-west-1' } });
  const p = pod({ containers: [{ name: 'app', env: [{ name: 'AWS_DEFAULT_REGION', value: 'us-east-1' }], volumeMounts: [{ name: 'mine', mountPath: '/var/run/secrets/azure/wi' }] }] }, { name: 'web', labels: AZURE_LABEL });
  const out = apply(p, planIdentity(p, EVERY_SA, settings));
  const env = out.spec.containers[0].env as { name: string }[];
  const counts = new Map<string, number>();
  for (const e of env) counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
  for (const [name, n] of counts) t.equal(n, 1, `${name} once`);
  t.notOk(counts.has('AWS_REGION'), 'a container that sets one region variable gets neither');
  const paths = (out.spec.containers[0].volumeMounts as { mountPath: string }[]).map((m) => m.mountPath);
  t.equal(new Set(paths).size, paths.length, 'mount paths unique');
  t.equal(paths.filter((x) => x === '/var/run/secrets/azure/wi').length, 1, 'the existing mount at the Azure path is kept');
});

t.test('fsGroup', async (t) => {
  const settings = settingsOf({ aws: { fsGroup: 2000 } });
  const role = sa({ 'eks.amazonaws.com/role-arn': ROLE });
  const cases: { name: string; securityContext: unknown; expected: unknown }[] = [
    { name: 'no securityContext: added whole', securityContext: undefined, expected: { op: 'add', path: '/spec/securityContext', value: { fsGroup: 2000 } } },
    { name: 'securityContext without fsGroup: field added', securityContext: { runAsUser: 1 }, expected: { op: 'add', path: '/spec/securityContext/fsGroup', value: 2000 } },
    { name: 'fsGroup already set: kept', securityContext: { fsGroup: 0 }, expected: undefined },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const spec: Pod = { containers: [{ name: 'app' }] };
      if (c.securityContext !== undefined) spec.securityContext = c.securityContext;
      const plan = planIdentity(pod(spec), role, settings);
      t.same(plan.operations.find((o) => o.path.startsWith('/spec/securityContext')), c.expected);
    });
  }
  t.test('not set without AWS wiring', async (t) => {
    const plan = planIdentity(pod({ containers: [{ name: 'app' }] }), sa({}), settings);
    t.same(plan.operations, []);
  });
});

t.test('nothing is planned', async (t) => {
  const cases: { name: string; pod: Pod; sa: ServiceAccountInfo | undefined; settings?: IdentitySettings }[] = [
    { name: 'ServiceAccount unknown', pod: pod({ containers: [{ name: 'app' }] }), sa: undefined },
    { name: 'no spec', pod: { metadata: { name: 'x' } }, sa: EVERY_SA },
    { name: 'every provider off', pod: pod({ containers: [{ name: 'app' }] }, { labels: AZURE_LABEL }), sa: EVERY_SA, settings: { aws: undefined, gcp: undefined, azure: undefined } },
    { name: 'empty role ARN', pod: pod({ containers: [{ name: 'app' }] }), sa: sa({ 'eks.amazonaws.com/role-arn': '' }) },
    { name: 'Azure label not "true"', pod: pod({ containers: [{ name: 'app' }] }, { labels: { 'azure.workload.identity/use': 'yes' } }), sa: sa({ 'azure.workload.identity/client-id': 'c' }) },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const plan = planIdentity(c.pod, c.sa, c.settings ?? ALL);
      t.same(plan, { operations: [], annotations: {}, warnings: [], problems: [], applied: [] });
    });
  }
});

t.test('a malformed container is skipped with a warning, the others are wired', async (t) => {
  const p = pod({ containers: [{ name: 'bad', env: 'nope' }, { name: 'good' }, 'not-a-container'] });
  const plan = planIdentity(p, sa({ 'eks.amazonaws.com/role-arn': ROLE }), ALL);
  t.same(plan.warnings, ['mirrorgate: container "bad": malformed env or volumeMounts; identity not wired']);
  t.ok(plan.operations.some((o) => o.path === '/spec/containers/1/env'));
  t.notOk(plan.operations.some((o) => o.path.startsWith('/spec/containers/0/')));
});

t.test('GCP annotations: only the ones that differ are returned, our values win', async (t) => {
  const gcpSa = sa({
    'cloud.google.com/workload-identity-provider': 'projects/1/locations/global/workloadIdentityPools/p/providers/k',
    'cloud.google.com/service-account-email': 'x@proj.iam.gserviceaccount.com',
  });
  const first = planIdentity(pod({ containers: [{ name: 'app' }] }), gcpSa, ALL);
  const tampered = pod({ containers: [{ name: 'app' }] }, { annotations: { ...first.annotations, 'cloud.google.com/external-credentials-json': '{"type":"other"}' } });
  const plan = planIdentity(tampered, gcpSa, ALL);
  t.same(plan.annotations, { 'cloud.google.com/external-credentials-json': first.annotations['cloud.google.com/external-credentials-json'] });
});

t.test('reserved names are replaced in place (GCP, Azure v1.6), kept where the provider says so', async (t) => {
  const gcpSa = sa({
    'cloud.google.com/workload-identity-provider': 'projects/1/locations/global/workloadIdentityPools/p/providers/k',
    'cloud.google.com/service-account-email': 'x@proj.iam.gserviceaccount.com',
    'cloud.google.com/injection-mode': 'direct',
  });
  const p = pod({
    containers: [
      { name: 'app', env: [{ name: 'GOOGLE_APPLICATION_CREDENTIALS', value: '/mine.json' }, { name: 'KEEP', value: '1' }], volumeMounts: [{ name: 'gcp-iam-token', mountPath: '/to/be/replaced' }] },
      { name: 'gcloud-setup', image: 'busybox' },
    ],
    volumes: [{ name: 'gcp-iam-token', emptyDir: {} }, { name: 'other', emptyDir: {} }],
  });
  const plan = planIdentity(p, gcpSa, ALL);
  t.same(
    plan.operations.filter((o) => o.op === 'replace').map((o) => o.path),
    ['/spec/containers/0/env/0', '/spec/containers/0/volumeMounts/0', '/spec/volumes/0'],
  );
  const out = apply(p, plan);
  t.same(out.spec.containers[0].env[0], { name: 'GOOGLE_APPLICATION_CREDENTIALS', value: '/var/run/secrets/workload-identity/federation.json' });
  t.same(out.spec.containers[0].volumeMounts[0], { name: 'gcp-iam-token', readOnly: true, mountPath: '/var/run/secrets/sts.googleapis.com/serviceaccount' });
  t.equal(out.spec.volumes[0].projected.defaultMode, 0o440);
  t.same(out.spec.containers[1], { name: 'gcloud-setup', image: 'busybox' }, 'upstream\'s gcloud-setup container is never wired');
  t.same(planIdentity(out, gcpSa, ALL).operations, [], 'second pass: nothing');

  const name = azureVolumeName('web', '');
  const az = pod({ containers: [{ name: 'app', volumeMounts: [{ name, mountPath: '/old' }] }], volumes: [{ name, projected: { sources: [{ serviceAccountToken: { path: 'my-projected-volume', audience: 'aud' } }] } }] }, { name: 'web', labels: AZURE_LABEL });
  const azOut = apply(az, planIdentity(az, sa({}), ALL));
  t.same(azOut.spec.volumes, [{ name, projected: { sources: [{ serviceAccountToken: { path: 'token/azure-identity-token', expirationSeconds: 3600, audience: 'api://AzureADTokenExchange' } }] } }], 'v1.6 overrides its volume');
  t.same(azOut.spec.containers[0].volumeMounts, [{ name, mountPath: '/var/run/secrets/azure/wi', readOnly: true }]);
  const v15 = settingsOf({ azure: { layout: 'v1.5' } });
  const old = pod({ containers: [{ name: 'app', volumeMounts: [{ name: 'azure-identity-token', mountPath: '/mine' }] }], volumes: [{ name: 'azure-identity-token', emptyDir: {} }] }, { name: 'web', labels: AZURE_LABEL });
  const oldOut = apply(old, planIdentity(old, sa({}), v15));
  t.same(oldOut.spec.volumes, old.spec.volumes, 'v1.5 keeps a volume of its name');
  t.same(oldOut.spec.containers[0].volumeMounts, old.spec.containers[0].volumeMounts, 'v1.5 keeps a mount of its name');
});

t.test('GCP tokenVolumeMode from the config', async (t) => {
  const settings = settingsOf({ gcp: { tokenVolumeMode: '0400' } });
  const gcpSa = sa({
    'cloud.google.com/workload-identity-provider': 'projects/1/locations/global/workloadIdentityPools/p/providers/k',
    'cloud.google.com/service-account-email': 'x@proj.iam.gserviceaccount.com',
  });
  const out = apply(pod({ containers: [{ name: 'app' }] }), planIdentity(pod({ containers: [{ name: 'app' }] }), gcpSa, settings));
  t.same(out.spec.volumes.filter((v: Pod) => v.projected ?? v.downwardAPI).map((v: Pod) => (v.projected ?? v.downwardAPI).defaultMode), [0o400, 0o400]);
});
