/**
 * Each cloud credential source against test doubles of its identity services (they cannot
 * run here; see test/support/cloud.ts): the documented exchanges in order, what each step
 * sends, refresh after expiry on a fake clock, and an error naming the registry and the
 * step for every refusal. End to end against the real registry: cloud-registry.test.ts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { externalAccountJson } from '../../src/core/identity/gcp.js';
import { awsSource, ecrRegion } from '../../src/registry/cloud/aws.js';
import { azureSource } from '../../src/registry/cloud/azure.js';
import { googleSource } from '../../src/registry/cloud/google.js';
import { CredentialError, type ChallengeContext } from '../../src/registry/credentials.js';
import { FakeClock, startAwsDouble, startEntraDouble, startGoogleDouble } from '../support/cloud.js';

const HOUR = 3600_000;
const ctx: ChallengeContext = { base: new URL('https://registry.example') };

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-cloud-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('google', async (t) => {
  const clock = new FakeClock();
  const subject = 'eyJhbGciOiJSUzI1NiJ9.projected-sa-token.sig';
  const provider = 'projects/123/locations/global/workloadIdentityPools/pool/providers/kind';
  const email = 'mirrorgate@acme-prod.iam.gserviceaccount.com';
  const g = await startGoogleDouble({ clock, audience: `//iam.googleapis.com/${provider}`, subjectToken: subject, serviceAccount: email });
  t.teardown(() => g.stop());
  const dir = await tempDir(t);
  const tokenFile = path.join(dir, 'token');
  await writeFile(tokenFile, subject + '\n');

  /** The credential configuration mirrorgate injects into pods, pointed at the doubles. */
  async function credentialFile(name: string, impersonate: boolean): Promise<string> {
    const cfg = JSON.parse(externalAccountJson(provider, impersonate ? email : undefined)) as Record<string, unknown>;
    t.equal(cfg.token_url, 'https://sts.googleapis.com/v1/token', 'the injected file names Google STS');
    cfg.token_url = g.stsUrl;
    if (impersonate) cfg.service_account_impersonation_url = g.impersonationUrl;
    cfg.credential_source = { ...(cfg.credential_source as object), file: tokenFile };
    const p = path.join(dir, name);
    await writeFile(p, JSON.stringify(cfg));
    return p;
  }

  t.test('GKE: the metadata server at GCE_METADATA_HOST, user oauth2accesstoken, refreshed after expiry', async (t) => {
    const s = googleSource({ registry: 'us-docker.pkg.dev', env: { GCE_METADATA_HOST: g.metadataHost }, now: clock.now });
    const before = g.calls.length;
    const [a, b] = await Promise.all([s.get(ctx), s.get(ctx)]);
    t.equal(a.username, 'oauth2accesstoken');
    t.match(a.password, /^ya29\.meta-/);
    t.equal(b.password, a.password);
    t.same(g.calls.slice(before), [{ what: 'metadata', status: 200 }], 'one request for two callers, with Metadata-Flavor: Google');
    t.ok(g.accepts(a.password));
    clock.advance(HOUR);
    t.notOk(g.accepts(a.password), 'the old token expired');
    const c = await s.get(ctx);
    t.not(c.password, a.password, 'a new token after expiry');
    t.ok(g.accepts(c.password));
  });

  t.test('Workload Identity Federation: STS exchange of the projected token, then impersonation', async (t) => {
    const file = await credentialFile('federation.json', true);
    const s = googleSource({ registry: 'europe-docker.pkg.dev', env: { GOOGLE_APPLICATION_CREDENTIALS: file }, now: clock.now });
    const before = g.calls.length;
    const a = await s.get(ctx);
    t.same(g.calls.slice(before), [{ what: 'sts', status: 200 }, { what: 'impersonation', status: 200 }]);
    t.match(a, { username: 'oauth2accesstoken', password: /^ya29\.sa-/ });
    t.ok(g.accepts(a.password));
  });

  t.test('Workload Identity Federation without impersonation: the federated token itself', async (t) => {
    const file = await credentialFile('direct.json', false);
    const s = googleSource({ registry: 'gcr.io', env: { GOOGLE_APPLICATION_CREDENTIALS: file }, now: clock.now });
    const a = await s.get(ctx);
    t.match(a.password, /^sts-/);
  });

  const failures: { name: string; env: () => Promise<Record<string, string>>; refuse?: () => void; expect: RegExp }[] = [
    {
      name: 'metadata server without Workload Identity (404)',
      env: async () => ({ GCE_METADATA_HOST: g.metadataHost }),
      refuse: () => (g.refuse.metadata = true),
      expect: /^gar\.example: google credentials: metadata server token: refused \(HTTP 404\): is Workload Identity enabled/,
    },
    {
      name: 'STS refuses the subject token',
      env: async () => {
        await writeFile(tokenFile, 'someone-elses-token');
        return { GOOGLE_APPLICATION_CREDENTIALS: await credentialFile('f1.json', true) };
      },
      expect: /^gar\.example: google credentials: STS token exchange: refused \(HTTP 400 invalid_grant\)$/,
    },
    {
      name: 'impersonation refused',
      env: async () => ({ GOOGLE_APPLICATION_CREDENTIALS: await credentialFile('f2.json', true) }),
      refuse: () => (g.refuse.impersonation = true),
      expect: /^gar\.example: google credentials: service account impersonation: refused \(HTTP 403 PERMISSION_DENIED\): grant roles\/iam\.workloadIdentityUser/,
    },
    {
      name: 'a service account key file',
      env: async () => {
        await writeFile(path.join(dir, 'key.json'), JSON.stringify({ type: 'service_account', private_key: '-----BEGIN PRIVATE KEY-----\nMII...' }));
        return { GOOGLE_APPLICATION_CREDENTIALS: path.join(dir, 'key.json') };
      },
      expect: /^gar\.example: google credentials: credential file: .*key\.json is "service_account", not an external_account configuration/,
    },
    {
      name: 'a missing credential file',
      env: async () => ({ GOOGLE_APPLICATION_CREDENTIALS: path.join(dir, 'nope.json') }),
      expect: /credential file: cannot read .*nope\.json \(ENOENT\)$/,
    },
    {
      name: 'a plain-HTTP token_url to another host',
      env: async () => {
        await writeFile(path.join(dir, 'http.json'), JSON.stringify({ type: 'external_account', audience: 'a', subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', token_url: 'http://sts.example.com/v1/token', credential_source: { file: tokenFile } }));
        return { GOOGLE_APPLICATION_CREDENTIALS: path.join(dir, 'http.json') };
      },
      expect: /token_url must be an https URL$/,
    },
  ];
  for (const f of failures) {
    t.test(`refused: ${f.name}`, async (t) => {
      await writeFile(tokenFile, subject);
      g.refuse.metadata = g.refuse.impersonation = g.refuse.sts = false;
      const env = await f.env();
      f.refuse?.();
      const s = googleSource({ registry: 'gar.example', env, now: clock.now });
      const err = await s.get(ctx).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.ok(err instanceof CredentialError, 'a CredentialError');
      t.match((err as Error).message, f.expect);
      for (const secret of [subject, ...g.tokens.all]) t.notOk((err as Error).message.includes(secret), 'no token in the message');
      g.refuse.metadata = g.refuse.impersonation = g.refuse.sts = false;
    });
  }
});

t.test('aws', async (t) => {
  const clock = new FakeClock();
  const region = 'eu-west-1';
  const roleArn = 'arn:aws:iam::123456789012:role/mirrorgate';
  const webIdentityToken = 'eyJhbGciOiJSUzI1NiJ9.irsa-token.sig';
  const podIdentityToken = 'eyJhbGciOiJSUzI1NiJ9.pod-identity-token.sig';
  const aws = await startAwsDouble({ clock, roleArn, webIdentityToken, podIdentityToken, region });
  t.teardown(() => aws.stop());
  const dir = await tempDir(t);
  await writeFile(path.join(dir, 'irsa'), webIdentityToken);
  await writeFile(path.join(dir, 'eks-pod-identity'), podIdentityToken);
  const host = `123456789012.dkr.ecr.${region}.amazonaws.com`;
  const irsa = { AWS_ROLE_ARN: roleArn, AWS_WEB_IDENTITY_TOKEN_FILE: path.join(dir, 'irsa'), AWS_ENDPOINT_URL_STS: aws.stsUrl, AWS_ENDPOINT_URL_ECR: aws.ecrUrl };

  t.test('the region comes from the ECR host', async (t) => {
    t.equal(ecrRegion(host), region);
    t.equal(ecrRegion('123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com'), 'us-gov-west-1');
    t.equal(ecrRegion('123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn'), 'cn-north-1');
    t.equal(ecrRegion('mirror.example.com'), undefined);
  });

  t.test('IRSA: AssumeRoleWithWebIdentity, then a SigV4-signed GetAuthorizationToken; cached for its lifetime', async (t) => {
    const s = awsSource({}, { registry: host, env: irsa, now: clock.now });
    const before = aws.calls.length;
    const [a, b] = await Promise.all([s.get(ctx), s.get(ctx)]);
    t.equal(a.username, 'AWS');
    t.ok(aws.acceptsPassword(a.password));
    t.equal(b.password, a.password);
    t.same(aws.calls.slice(before), [{ what: 'sts', status: 200 }, { what: 'ecr', status: 200 }], 'one exchange for two callers; the ECR double checked the signature');
    clock.advance(11 * HOUR);
    t.equal((await s.get(ctx)).password, a.password, 'still the same after 11 h');
    clock.advance(HOUR);
    t.notOk(aws.acceptsPassword(a.password), 'expired after 12 h');
    const c = await s.get(ctx);
    t.not(c.password, a.password);
    t.ok(aws.acceptsPassword(c.password), 'a new one');
  });

  t.test('EKS Pod Identity: the agent with the pod token, then GetAuthorizationToken', async (t) => {
    const s = awsSource(
      { region },
      { registry: 'ecr-proxy.internal', env: { AWS_CONTAINER_CREDENTIALS_FULL_URI: aws.podIdentityUrl, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: path.join(dir, 'eks-pod-identity'), AWS_ENDPOINT_URL_ECR: aws.ecrUrl }, now: clock.now },
    );
    const before = aws.calls.length;
    const a = await s.get(ctx);
    t.ok(aws.acceptsPassword(a.password));
    t.same(aws.calls.slice(before), [{ what: 'pod-identity', status: 200 }, { what: 'ecr', status: 200 }]);
  });

  const failures: { name: string; env: Record<string, string>; refuse?: () => void; region?: string; registry?: string; expect: RegExp }[] = [
    { name: 'STS refuses the role', env: { ...irsa, AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/other' }, expect: /^ecr\.host: aws credentials: STS AssumeRoleWithWebIdentity: refused \(HTTP 403 AccessDenied\)$/ },
    { name: 'ECR refuses GetAuthorizationToken', env: irsa, refuse: () => (aws.refuse.ecr = true), expect: /^ecr\.host: aws credentials: ecr:GetAuthorizationToken: refused \(HTTP 400 AccessDeniedException\): the role needs ecr:GetAuthorizationToken/ },
    {
      name: 'the Pod Identity agent refuses the token',
      env: { AWS_CONTAINER_CREDENTIALS_FULL_URI: aws.podIdentityUrl, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: path.join(dir, 'irsa'), AWS_ENDPOINT_URL_ECR: aws.ecrUrl },
      expect: /^ecr\.host: aws credentials: EKS Pod Identity agent: /,
    },
    { name: 'no identity at all', env: { AWS_ENDPOINT_URL_ECR: aws.ecrUrl }, expect: /^ecr\.host: aws credentials: identity: no AWS identity: set AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN/ },
    { name: 'no region', env: irsa, registry: 'ecr-proxy.internal', expect: /identity: no region: .*auth\.aws\.region or AWS_REGION$/ },
  ];
  for (const f of failures) {
    t.test(`refused: ${f.name}`, async (t) => {
      aws.refuse.ecr = false;
      f.refuse?.();
      const registry = f.registry ?? 'ecr.host';
      const s = awsSource(f.registry ? {} : { region }, { registry, env: f.env, now: clock.now });
      const err = await s.get(ctx).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.ok(err instanceof CredentialError);
      t.match((err as Error).message, f.expect.source.startsWith('^ecr') && f.registry ? new RegExp(f.expect.source.replace('ecr\\.host', 'ecr-proxy\\.internal')) : f.expect);
      for (const secret of [webIdentityToken, podIdentityToken, ...aws.secrets]) t.notOk((err as Error).message.includes(secret), 'no secret in the message');
      aws.refuse.ecr = false;
    });
  }
});

t.test('azure', async (t) => {
  const clock = new FakeClock();
  const tenant = '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const clientId = '11111111-2222-3333-4444-555555555555';
  const federatedToken = 'eyJhbGciOiJSUzI1NiJ9.azure-federated.sig';
  const entra = await startEntraDouble({ clock, tenant, clientId, federatedToken });
  t.teardown(() => entra.stop());
  const dir = await tempDir(t);
  await writeFile(path.join(dir, 'azure-identity-token'), federatedToken);
  const env = { AZURE_CLIENT_ID: clientId, AZURE_TENANT_ID: tenant, AZURE_FEDERATED_TOKEN_FILE: path.join(dir, 'azure-identity-token'), AZURE_AUTHORITY_HOST: entra.authorityHost };

  t.test('a federated assertion for an Entra ID token; ACR refresh tokens are tested with the registry', async (t) => {
    // The exchange itself needs the registry's token service: cloud-registry.test.ts.
    const s = azureSource({}, { registry: 'acme.azurecr.io', env: { ...env, AZURE_CLIENT_ID: 'not-this-app' }, now: clock.now });
    const err = await s.get(ctx).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    t.match(err?.message, /^acme\.azurecr\.io: azure credentials: Entra ID token: refused \(HTTP 400 invalid_client AADSTS70021\)$/);
    t.same(entra.calls.at(-1), { what: 'entra', status: 400 });
    t.notOk(err?.message.includes(federatedToken));
  });

  t.test('missing Workload Identity environment', async (t) => {
    const s = azureSource({}, { registry: 'acme.azurecr.io', env: { AZURE_CLIENT_ID: clientId }, now: clock.now });
    await t.rejects(s.get(ctx), /^acme\.azurecr\.io: azure credentials: identity: AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID must be set \(label the pod azure\.workload\.identity\/use/);
  });

  t.test('an unreadable federated token file', async (t) => {
    const s = azureSource({}, { registry: 'acme.azurecr.io', env: { ...env, AZURE_FEDERATED_TOKEN_FILE: path.join(dir, 'nope') }, now: clock.now });
    await t.rejects(s.get(ctx), /azure credentials: federated token: cannot read .*nope \(ENOENT\)$/);
  });
});
