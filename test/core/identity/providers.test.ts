import t from 'tap';
import { planAws, type AwsSettings } from '../../../src/core/identity/aws.js';
import { planAzure, type AzureSettings } from '../../../src/core/identity/azure.js';
import { externalAccountJson, planGcp, type GcpSettings } from '../../../src/core/identity/gcp.js';

const ROLE = 'arn:aws:iam::111122223333:role/s3-reader';
const AWS: AwsSettings = { audience: 'sts.amazonaws.com', tokenExpiration: 86400, region: undefined, stsRegionalEndpoints: false, fsGroup: undefined };
const GCP: GcpSettings = { audience: 'sts.googleapis.com', tokenExpiration: 86400, region: undefined, tokenVolumeMode: 0o440 };
const AZURE: AzureSettings = { audience: 'api://AzureADTokenExchange', tokenExpiration: 3600, authorityHost: 'https://login.microsoftonline.com/', tenantId: undefined, layout: 'v1.6' };
const AZURE_POD = { podName: 'web', podGenerateName: '', hostNetwork: false, volumes: [] };
const PROVIDER = 'projects/12345/locations/global/workloadIdentityPools/pool/providers/cluster';

function awsToken(wiring: { volumes: readonly any[] } | undefined): any {
  return wiring?.volumes[0].projected.sources[0].serviceAccountToken;
}

t.test('AWS token expiration: pod > ServiceAccount > config, Go integer syntax, bounds', async (t) => {
  const cases: { name: string; pod?: string; sa?: string; config?: number; expected: number; warnings: number }[] = [
    { name: 'config default', expected: 86400, warnings: 0 },
    { name: 'config value', config: 3600, expected: 3600, warnings: 0 },
    { name: 'ServiceAccount over config', sa: '7200', config: 3600, expected: 7200, warnings: 0 },
    { name: 'pod over ServiceAccount', pod: '1800', sa: '7200', expected: 1800, warnings: 0 },
    { name: 'explicit sign and leading zeros, as strconv.ParseInt', pod: '+0900', expected: 900, warnings: 0 },
    { name: 'minimum kept', pod: '600', expected: 600, warnings: 0 },
    { name: 'below minimum raised', pod: '599', expected: 600, warnings: 1 },
    { name: 'negative raised', sa: '-5', expected: 600, warnings: 1 },
    { name: 'above EKS 24h kept (upstream sets no ceiling)', sa: '172800', expected: 172800, warnings: 0 },
    { name: 'over 2^32 lowered', sa: '4294967297', expected: 4294967296, warnings: 1 },
    { name: 'out of int64 range is not a number', pod: '9223372036854775808', sa: '3600', expected: 3600, warnings: 1 },
    { name: 'invalid pod value falls back to the ServiceAccount', pod: '1h', sa: '3600', expected: 3600, warnings: 1 },
    { name: 'invalid everywhere falls back to config', pod: '', sa: '1.5', config: 1200, expected: 1200, warnings: 2 },
    { name: 'spaces are invalid', pod: ' 3600', expected: 86400, warnings: 1 },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const podAnnotations: Record<string, string> = {};
      const saAnnotations: Record<string, string> = { 'eks.amazonaws.com/role-arn': ROLE };
      if (c.pod !== undefined) podAnnotations['eks.amazonaws.com/token-expiration'] = c.pod;
      if (c.sa !== undefined) saAnnotations['eks.amazonaws.com/token-expiration'] = c.sa;
      const r = planAws({ podAnnotations, saAnnotations, nodeSelector: {}, volumes: [] }, { ...AWS, tokenExpiration: c.config ?? AWS.tokenExpiration });
      t.equal(awsToken(r.wiring).expirationSeconds, c.expected);
      t.equal(r.warnings.length, c.warnings, r.warnings.join(' | '));
    });
  }
});

t.test('AWS sts-regional-endpoints and audience', async (t) => {
  const cases: { name: string; sa: Record<string, string>; settings?: Partial<AwsSettings>; sts: boolean; audience: string; warnings?: number }[] = [
    { name: 'off by default', sa: {}, sts: false, audience: 'sts.amazonaws.com' },
    { name: 'config on', sa: {}, settings: { stsRegionalEndpoints: true }, sts: true, audience: 'sts.amazonaws.com' },
    { name: 'annotation "true"', sa: { 'eks.amazonaws.com/sts-regional-endpoints': 'true' }, sts: true, audience: 'sts.amazonaws.com' },
    { name: 'annotation "1" (ParseBool)', sa: { 'eks.amazonaws.com/sts-regional-endpoints': '1' }, sts: true, audience: 'sts.amazonaws.com' },
    { name: 'annotation "False" over config on', sa: { 'eks.amazonaws.com/sts-regional-endpoints': 'False' }, settings: { stsRegionalEndpoints: true }, sts: false, audience: 'sts.amazonaws.com' },
    { name: 'annotation "yes" ignored', sa: { 'eks.amazonaws.com/sts-regional-endpoints': 'yes' }, sts: false, audience: 'sts.amazonaws.com', warnings: 1 },
    { name: 'SA audience over config', sa: { 'eks.amazonaws.com/audience': 'custom' }, settings: { audience: 'cfg' }, sts: false, audience: 'custom' },
    { name: 'config audience', sa: {}, settings: { audience: 'cfg' }, sts: false, audience: 'cfg' },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = planAws({ podAnnotations: {}, saAnnotations: { 'eks.amazonaws.com/role-arn': ROLE, ...c.sa }, nodeSelector: {}, volumes: [] }, { ...AWS, ...c.settings });
      const names = r.wiring?.envGroups.flat().map((e) => e.name) ?? [];
      t.equal(names.includes('AWS_STS_REGIONAL_ENDPOINTS'), c.sts);
      t.equal(awsToken(r.wiring).audience, c.audience);
      t.equal(r.warnings.length, c.warnings ?? 0);
    });
  }
});

t.test('AWS skip-containers and Windows paths', async (t) => {
  const cases: { name: string; value: string; expected: string[] }[] = [
    { name: 'comma-separated', value: 'a,b', expected: ['a', 'b'] },
    { name: 'spaces trimmed', value: ' a , b ', expected: ['a', 'b'] },
    { name: 'csv quotes', value: '"a","b"', expected: ['a', 'b'] },
    { name: 'empty entries dropped', value: 'a,,', expected: ['a'] },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = planAws({ podAnnotations: { 'eks.amazonaws.com/skip-containers': c.value }, saAnnotations: { 'eks.amazonaws.com/role-arn': ROLE }, nodeSelector: {}, volumes: [] }, AWS);
      t.same([...(r.wiring?.skipContainers ?? [])], c.expected);
    });
  }
  t.test('beta Windows node selector', async (t) => {
    const r = planAws({ podAnnotations: {}, saAnnotations: { 'eks.amazonaws.com/role-arn': ROLE }, nodeSelector: { 'beta.kubernetes.io/os': 'windows' }, volumes: [] }, AWS);
    const file = r.wiring?.envGroups.flat().find((e) => e.name === 'AWS_WEB_IDENTITY_TOKEN_FILE');
    t.equal(file?.value, 'C:\\var\\run\\secrets\\eks.amazonaws.com\\serviceaccount\\token');
  });
  t.test('an existing aws-iam-token volume with our audience is not foreign', async (t) => {
    const volumes = [{ name: 'aws-iam-token', projected: { sources: [{ serviceAccountToken: { audience: 'sts.amazonaws.com', path: 'token' } }] } }];
    const r = planAws({ podAnnotations: {}, saAnnotations: { 'eks.amazonaws.com/role-arn': ROLE }, nodeSelector: {}, volumes }, AWS);
    t.ok(r.wiring);
    t.same(r.warnings, []);
  });
});

t.test('GCP external_account credential JSON as upstream renders it', async (t) => {
  t.equal(
    externalAccountJson(PROVIDER, 'app-x@my-project.iam.gserviceaccount.com'),
    '{"type":"external_account","audience":"//iam.googleapis.com/projects/12345/locations/global/workloadIdentityPools/pool/providers/cluster",' +
      '"subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"https://sts.googleapis.com/v1/token",' +
      '"service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/app-x@my-project.iam.gserviceaccount.com:generateAccessToken",' +
      '"credential_source":{"file":"/var/run/secrets/sts.googleapis.com/serviceaccount/token","format":{"type":"text"}}}',
  );
  t.notMatch(externalAccountJson(PROVIDER, undefined), /service_account_impersonation_url/, 'no impersonation without an email');
  t.match(externalAccountJson('projects/a&b<c>/locations/x/workloadIdentityPools/y/providers/z', undefined), /a\\u0026b\\u003cc\\u003e/, "Go's HTML-safe escaping");
});

t.test('GCP triggers, modes and precedence', async (t) => {
  const base = { 'cloud.google.com/workload-identity-provider': PROVIDER, 'cloud.google.com/service-account-email': 'x@proj.iam.gserviceaccount.com' };
  const cases: { name: string; sa: Record<string, string>; pod?: Record<string, string>; wired: boolean; warnings: number; problems?: number; check?: (w: any) => void }[] = [
    { name: 'nothing annotated', sa: {}, wired: false, warnings: 0 },
    { name: 'both annotations', sa: base, wired: true, warnings: 0 },
    { name: 'email alone', sa: { 'cloud.google.com/service-account-email': 'x@proj.iam.gserviceaccount.com' }, wired: false, warnings: 0, problems: 1 },
    { name: 'malformed provider', sa: { ...base, 'cloud.google.com/workload-identity-provider': 'pool/cluster' }, wired: false, warnings: 0, problems: 1 },
    { name: 'injection-mode gcloud is injected directly, with a warning', sa: { ...base, 'cloud.google.com/injection-mode': 'gcloud' }, wired: true, warnings: 1 },
    { name: 'injection-mode DIRECT (case-insensitive)', sa: { ...base, 'cloud.google.com/injection-mode': 'DIRECT' }, wired: true, warnings: 0 },
    { name: 'unknown injection-mode', sa: { ...base, 'cloud.google.com/injection-mode': 'sidecar' }, wired: false, warnings: 0, problems: 1 },
    { name: 'unknown injection-mode on an otherwise unannotated ServiceAccount (upstream checks it first)', sa: { 'cloud.google.com/injection-mode': 'sidecar' }, wired: false, warnings: 0, problems: 1 },
    { name: 'bad token-expiration on an otherwise unannotated ServiceAccount', sa: { 'cloud.google.com/token-expiration': '1d' }, wired: false, warnings: 0, problems: 1 },
    { name: 'bad gcloud-run-as-user: a problem, wired when relaxed', sa: { ...base, 'cloud.google.com/gcloud-run-as-user': 'nobody' }, wired: true, warnings: 0, problems: 1 },
    { name: 'unknown token-exchange-mode', sa: { ...base, 'cloud.google.com/token-exchange-mode': 'magic' }, wired: false, warnings: 0, problems: 1 },
    {
      name: 'injection-mode direct: upstream direct mode exactly (no gcloud config, no override)',
      sa: { ...base, 'cloud.google.com/injection-mode': 'direct' },
      wired: true,
      warnings: 0,
      check: (w) => {
        t.same(w.volumes.map((v: any) => v.name), ['gcp-iam-token', 'external-credential-config']);
        t.same(w.mounts.map((m: any) => m.name), ['gcp-iam-token', 'external-credential-config']);
        t.same(w.envReplace.map((e: any) => e.name), ['GOOGLE_APPLICATION_CREDENTIALS']);
        t.same(w.envGroups.flat().map((e: any) => e.name), ['CLOUDSDK_CORE_PROJECT']);
      },
    },
    {
      name: 'unset injection-mode: the gcloud config directory too; reserved names replaced; gcloud-setup skipped',
      sa: base,
      wired: true,
      warnings: 0,
      check: (w) => {
        t.same(w.volumes.map((v: any) => v.name), ['gcp-iam-token', 'external-credential-config', 'gcloud-config']);
        t.same(w.envReplace.map((e: any) => e.name), ['GOOGLE_APPLICATION_CREDENTIALS', 'CLOUDSDK_CONFIG']);
        t.equal(w.replaceVolumes, true);
        t.equal(w.replaceMounts, true);
        t.ok(w.skipContainers.has('gcloud-setup'));
        t.equal(w.volumes[0].projected.defaultMode, 0o440);
        t.equal(w.volumes[1].downwardAPI.defaultMode, 0o440);
      },
    },
    {
      name: 'project from the email',
      sa: base,
      wired: true,
      warnings: 0,
      check: (w) => t.same(w.envGroups.flat().find((e: any) => e.name === 'CLOUDSDK_CORE_PROJECT'), { name: 'CLOUDSDK_CORE_PROJECT', value: 'proj' }),
    },
    {
      name: 'pod token-expiration over ServiceAccount',
      sa: { ...base, 'cloud.google.com/token-expiration': '7200' },
      pod: { 'cloud.google.com/token-expiration': '5400' },
      wired: true,
      warnings: 0,
      check: (w) => t.equal(w.annotations['cloud.google.com/token-expiration'], '5400'),
    },
    {
      name: 'invalid pod token-expiration: a problem; relaxed, the ServiceAccount value',
      sa: { ...base, 'cloud.google.com/token-expiration': '7200' },
      pod: { 'cloud.google.com/token-expiration': 'soon' },
      wired: true,
      warnings: 0,
      problems: 1,
      check: (w) => t.equal(w.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds, 7200),
    },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = planGcp({ podAnnotations: c.pod ?? {}, saAnnotations: c.sa }, GCP);
      t.equal(r.wiring !== undefined, c.wired);
      t.equal(r.warnings.length, c.warnings, r.warnings.join(' | '));
      t.equal(r.problems?.length ?? 0, c.problems ?? 0, (r.problems ?? []).join(' | '));
      for (const p of r.problems ?? []) t.ok(p.length <= 110, `problem short enough for a warning: ${p}`);
      if (c.check && r.wiring) c.check(r.wiring);
    });
  }
});

t.test('Azure: env only when non-empty, tenant precedence, expiration bounds, skip list', async (t) => {
  const label = { 'azure.workload.identity/use': 'true' };
  const cases: {
    name: string;
    sa: Record<string, string>;
    pod?: Record<string, string>;
    settings?: Partial<AzureSettings>;
    env: string[];
    tenant?: string;
    expiration: number;
    warnings: number;
    problems?: number;
  }[] = [
    { name: 'no client, no tenant', sa: {}, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 3600, warnings: 0 },
    {
      name: 'configured tenant when the SA names none',
      sa: { 'azure.workload.identity/client-id': 'c' },
      settings: { tenantId: 'cluster-tenant' },
      env: ['AZURE_CLIENT_ID', 'AZURE_TENANT_ID', 'AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'],
      tenant: 'cluster-tenant',
      expiration: 3600,
      warnings: 0,
    },
    {
      name: 'SA tenant over config',
      sa: { 'azure.workload.identity/tenant-id': 'sa-tenant' },
      settings: { tenantId: 'cluster-tenant' },
      env: ['AZURE_TENANT_ID', 'AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'],
      tenant: 'sa-tenant',
      expiration: 3600,
      warnings: 0,
    },
    { name: 'pod expiration over SA', sa: { 'azure.workload.identity/service-account-token-expiration': '7200' }, pod: { 'azure.workload.identity/service-account-token-expiration': '5400' }, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 5400, warnings: 0 },
    { name: 'empty pod expiration means unset', sa: { 'azure.workload.identity/service-account-token-expiration': '7200' }, pod: { 'azure.workload.identity/service-account-token-expiration': '' }, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 7200, warnings: 0 },
    { name: 'below 3600: a problem; relaxed, raised', sa: { 'azure.workload.identity/service-account-token-expiration': '600' }, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 3600, warnings: 0, problems: 1 },
    { name: '86401: a problem; relaxed, lowered', pod: { 'azure.workload.identity/service-account-token-expiration': '86401' }, sa: {}, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 86400, warnings: 0, problems: 1 },
    { name: 'invalid pod value: a problem; relaxed, the ServiceAccount value', pod: { 'azure.workload.identity/service-account-token-expiration': '3600s' }, sa: { 'azure.workload.identity/service-account-token-expiration': '4800' }, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 4800, warnings: 0, problems: 1 },
    { name: 'bounds kept', sa: { 'azure.workload.identity/service-account-token-expiration': '86400' }, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 86400, warnings: 0 },
    { name: 'invalid: a problem; relaxed, the config value', sa: { 'azure.workload.identity/service-account-token-expiration': '1d' }, settings: { tokenExpiration: 7200 }, env: ['AZURE_FEDERATED_TOKEN_FILE', 'AZURE_AUTHORITY_HOST'], expiration: 7200, warnings: 0, problems: 1 },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = planAzure({ ...AZURE_POD, podLabels: label, podAnnotations: c.pod ?? {}, saAnnotations: c.sa }, { ...AZURE, ...c.settings });
      t.equal(r.problems?.length ?? 0, c.problems ?? 0, (r.problems ?? []).join(' | '));
      const env = r.wiring?.envGroups.flat() ?? [];
      t.same(env.map((e) => e.name), c.env);
      if (c.tenant !== undefined) t.equal(env.find((e) => e.name === 'AZURE_TENANT_ID')?.value, c.tenant);
      t.equal((r.wiring?.volumes[0] as any).projected.sources[0].serviceAccountToken.expirationSeconds, c.expiration);
      t.equal(r.warnings.length, c.warnings, r.warnings.join(' | '));
    });
  }
  t.test('skip-containers: semicolons, trimmed; commas are part of a name', async (t) => {
    const r = planAzure({ ...AZURE_POD, podLabels: label, podAnnotations: { 'azure.workload.identity/skip-containers': ' a ;b;; c,d ' }, saAnnotations: {} }, AZURE);
    t.same([...(r.wiring?.skipContainers ?? [])], ['a', 'b', 'c,d']);
  });
  t.test('inject-proxy-sidecar: no proxy, a warning; hostNetwork or a bad port are problems as upstream', async (t) => {
    const proxy = { 'azure.workload.identity/inject-proxy-sidecar': 'true' };
    let r = planAzure({ ...AZURE_POD, podLabels: label, podAnnotations: proxy, saAnnotations: {} }, AZURE);
    t.equal(r.wiring?.volumes.length, 1);
    t.equal(r.warnings.length, 1);
    t.same(r.problems, []);
    r = planAzure({ ...AZURE_POD, hostNetwork: true, podLabels: label, podAnnotations: proxy, saAnnotations: {} }, AZURE);
    t.match(r.problems, [/hostNetwork/]);
    r = planAzure({ ...AZURE_POD, podLabels: label, podAnnotations: { ...proxy, 'azure.workload.identity/proxy-sidecar-port': '2147483648' }, saAnnotations: {} }, AZURE);
    t.match(r.problems, [/proxy-sidecar-port: "2147483648" is not an integer/], 'int32 as upstream parses it');
    r = planAzure({ ...AZURE_POD, hostNetwork: true, podLabels: label, podAnnotations: { 'azure.workload.identity/proxy-sidecar-port': 'x' }, saAnnotations: {} }, AZURE);
    t.same(r.problems, [], 'without inject-proxy-sidecar neither is looked at');
  });
  t.test('layouts: v1.6 names the volume per pod; v1.5 keeps azure-identity-token', async (t) => {
    let r = planAzure({ ...AZURE_POD, podLabels: label, podAnnotations: {}, saAnnotations: {} }, AZURE);
    const v = r.wiring?.volumes[0] as any;
    t.match(v.name, /^azure-workload-identity-reserved-[0-9a-f]{30}$/);
    t.equal(v.name.length, 63);
    t.equal(v.projected.sources[0].serviceAccountToken.path, 'token/azure-identity-token');
    t.same(r.wiring?.mounts, [{ name: v.name, mountPath: '/var/run/secrets/azure/wi', readOnly: true }]);
    t.equal(r.wiring?.replaceVolumes, true);
    const gen = planAzure({ ...AZURE_POD, podName: '', podGenerateName: 'web-', podLabels: label, podAnnotations: {}, saAnnotations: {} }, AZURE);
    t.not((gen.wiring?.volumes[0] as any).name, v.name, 'generateName hashes with " (prefix)"');
    r = planAzure({ ...AZURE_POD, podLabels: label, podAnnotations: {}, saAnnotations: {} }, { ...AZURE, layout: 'v1.5' });
    t.equal((r.wiring?.volumes[0] as any).name, 'azure-identity-token');
    t.same(r.wiring?.mounts, [{ name: 'azure-identity-token', mountPath: '/var/run/secrets/azure/tokens', readOnly: true }]);
    t.equal(r.wiring?.envGroups.flat().find((e) => e.name === 'AZURE_FEDERATED_TOKEN_FILE')?.value, '/var/run/secrets/azure/tokens/azure-identity-token');
    const served = [{ name: 'other', projected: { sources: [{ serviceAccountToken: { path: 'azure-identity-token' } }] } }];
    r = planAzure({ ...AZURE_POD, volumes: served, podLabels: label, podAnnotations: {}, saAnnotations: {} }, { ...AZURE, layout: 'v1.5' });
    t.same(r.wiring?.volumes, [], 'v1.5: a projected token at its path under any name means no volume');
  });
});
