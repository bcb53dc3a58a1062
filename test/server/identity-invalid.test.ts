/**
 * identity.onInvalidAnnotation through the admission route: an identity annotation the
 * upstream webhook rejects denies the pod by default (with the annotation named), admits it
 * with a warning and the relaxed wiring under `warn`, and only warns in audit mode.
 */
import t from 'tap';
import { admit } from '../conformance/identity-harness.js';

const AZURE_POD = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', labels: { 'azure.workload.identity/use': 'true' }, annotations: { 'azure.workload.identity/service-account-token-expiration': '86401' } },
  spec: { serviceAccountName: 'app', containers: [{ name: 'app', image: 'registry.example.com/app:1' }] },
};
const GCP_POD = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'job' }, spec: { serviceAccountName: 'gcp', containers: [{ name: 'app', image: 'registry.example.com/app:1' }] } };
const ACCOUNTS = {
  'team-a/app': { 'azure.workload.identity/client-id': 'c' },
  'team-a/gcp': { 'cloud.google.com/workload-identity-provider': 'malformed', 'cloud.google.com/service-account-email': 'x@p.iam.gserviceaccount.com' },
};

t.test('deny by default, naming the annotation and the setting', async (t) => {
  const az = await admit({}, AZURE_POD, ACCOUNTS, 'team-a');
  t.equal(az.allowed, false);
  t.match(az.message, /^mirrorgate: denied: workload identity: pod azure\.workload\.identity\/service-account-token-expiration: 86401 is outside 3600\.\.86400 \(identity\.onInvalidAnnotation: deny\)$/);
  const gcp = await admit({}, GCP_POD, ACCOUNTS, 'team-a');
  t.equal(gcp.allowed, false);
  t.match(gcp.message, /cloud\.google\.com\/workload-identity-provider is not projects\/…\/providers\/…/);
});

t.test('warn: admitted with the relaxed wiring and a warning', async (t) => {
  const az = await admit({ identity: { onInvalidAnnotation: 'warn' } }, AZURE_POD, ACCOUNTS, 'team-a');
  t.equal(az.allowed, true);
  t.match(az.warnings, [/^mirrorgate: pod azure\.workload\.identity\/service-account-token-expiration: 86401 is outside 3600\.\.86400$/]);
  t.equal(az.pod.spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds, 86400, 'clamped');
  const gcp = await admit({ identity: { onInvalidAnnotation: 'warn' } }, GCP_POD, ACCOUNTS, 'team-a');
  t.equal(gcp.allowed, true);
  t.equal(gcp.pod.spec.volumes, undefined, 'a configuration problem leaves the pod unwired');
  t.match(gcp.warnings.join('\n'), /workload-identity-provider/);
});

t.test('audit mode: would deny, admitted unchanged', async (t) => {
  const az = await admit({ mode: 'audit' }, AZURE_POD, ACCOUNTS, 'team-a');
  t.equal(az.allowed, true);
  t.same(az.pod, AZURE_POD);
  t.match(az.warnings.join('\n'), /mirrorgate: would deny: pod azure\.workload\.identity\/service-account-token-expiration/);
});

t.test('a valid pod is not affected by the setting', async (t) => {
  const ok = { ...AZURE_POD, metadata: { ...AZURE_POD.metadata, annotations: {} } };
  for (const onInvalidAnnotation of ['deny', 'warn']) {
    const a = await admit({ identity: { onInvalidAnnotation } }, ok, ACCOUNTS, 'team-a');
    t.equal(a.allowed, true);
    t.same(a.warnings, []);
    t.equal(a.pod.spec.containers[0].env[0].value, 'c');
  }
});
