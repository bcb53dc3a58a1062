/**
 * mirrorgate's own registry access with cloud identities, end to end: real docker-registry
 * instances behind Bearer token servers that accept only what the cloud flows produce
 * (a Google access token for `oauth2accesstoken`, an ECR password for `AWS`, an ACR refresh
 * token on `POST /oauth2/token`). The cloud identity services are test doubles
 * (test/support/cloud.ts); they cannot run here.
 *
 * - `mirrorgate copy` with each source (GKE metadata, Workload Identity Federation, IRSA,
 *   EKS Pod Identity, Azure Workload Identity);
 * - `verify: true` through POST /mutate of a running `serve()`, for all three clouds at once;
 * - expiry on a fake clock: the next copy, and the next verification through /mutate,
 *   gets fresh credentials, for every flow;
 * - refusals reported with the registry and the step;
 * - no key or token in logs, metrics, the report or the CLI's output.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { main } from '../../src/cli.js';
import { validateConfig } from '../../src/config/schema.js';
import { parseReference, type ImageReference } from '../../src/core/reference.js';
import { copyImage } from '../../src/copy/copier.js';
import { RegistryClient } from '../../src/registry/client.js';
import { CloudSources } from '../../src/registry/cloud/sources.js';
import { serve } from '../../src/serve.js';
import { endpointFor, loadEndpoints } from '../../src/verify/endpoints.js';
import { LogSink, patchOf, review } from '../support/app.js';
import { acrDouble, FakeClock, startAwsDouble, startEntraDouble, startGoogleDouble } from '../support/cloud.js';
import { getText, metricSample, postJson } from '../support/http.js';
import { waitFor } from '../support/wait.js';
import { pushImage, startRegistry, type Credentials } from '../support/registry.js';
import { serveOptions } from '../support/serve.js';
import { startTokenServer } from '../support/token-server.js';
import { headDigest } from '../copy/support.js';

/** The test's own way in, to check what landed; mirrorgate is never given it. */
const checker: Credentials = { username: 'checker', password: 'checker-only' };
const isChecker = (u: string, p: string): boolean => u === checker.username && p === checker.password;

function ref(s: string): ImageReference {
  const p = parseReference(s);
  if (!p.ok) throw new Error(p.reason);
  return p.ref;
}

function capture(env: Record<string, string>): { out: string[]; err: string[]; io: { out(l: string): void; err(l: string): void; env: Record<string, string> } } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l) => out.push(l), err: (l) => err.push(l), env } };
}

void t.test('registry access with cloud identities', async (t) => {
  const clock = new FakeClock();
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-cloud-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  // --- Google: metadata server, STS, IAM Credentials; Artifact Registry's token service accepts their access tokens.
  const gSubject = 'eyJhbGciOiJSUzI1NiJ9.gcp-projected.sig';
  const provider = 'projects/123/locations/global/workloadIdentityPools/pool/providers/kind';
  const email = 'mirrorgate@acme-prod.iam.gserviceaccount.com';
  const google = await startGoogleDouble({ clock, audience: `//iam.googleapis.com/${provider}`, subjectToken: gSubject, serviceAccount: email });
  const gTokens = await startTokenServer({ authenticate: (u, p) => isChecker(u, p) || (u === 'oauth2accesstoken' && google.accepts(p)) });

  // --- AWS: STS, the Pod Identity agent, ECR; ECR's registry accepts the passwords GetAuthorizationToken issued.
  const region = 'us-east-1';
  const roleArn = 'arn:aws:iam::123456789012:role/mirrorgate';
  const irsaToken = 'eyJhbGciOiJSUzI1NiJ9.irsa.sig';
  const podToken = 'eyJhbGciOiJSUzI1NiJ9.pod-identity.sig';
  const aws = await startAwsDouble({ clock, roleArn, webIdentityToken: irsaToken, podIdentityToken: podToken, region });
  const aTokens = await startTokenServer({ authenticate: (u, p) => isChecker(u, p) || (u === 'AWS' && aws.acceptsPassword(p)) });

  // --- Azure: Entra ID; ACR's token service (exchange + refresh-token grant) signs the registry's tokens.
  const tenant = '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const clientId = '11111111-2222-3333-4444-555555555555';
  const zToken = 'eyJhbGciOiJSUzI1NiJ9.azure-federated.sig';
  const entra = await startEntraDouble({ clock, tenant, clientId, federatedToken: zToken });
  const acr = acrDouble({ clock, entra, tenant, service: 'mirrorgate-test' });
  const zTokens = await startTokenServer({ path: '/oauth2/token', extra: acr.extra, refreshTokens: acr.refreshTokens, authenticate: isChecker });

  const [src, gReg, aReg, zReg] = await Promise.all([
    startRegistry(),
    startRegistry({ auth: { token: gTokens } }),
    startRegistry({ auth: { token: aTokens } }),
    startRegistry({ auth: { token: zTokens } }),
  ]);
  t.teardown(async () => {
    await Promise.all([src.stop(), gReg.stop(), aReg.stop(), zReg.stop()]);
    await Promise.all([google.stop(), aws.stop(), entra.stop(), gTokens.stop(), aTokens.stop(), zTokens.stop()]);
  });

  const file = async (name: string, content: string): Promise<string> => {
    const p = path.join(dir, name);
    await writeFile(p, content);
    return p;
  };
  const federation = await file(
    'federation.json',
    JSON.stringify({
      type: 'external_account',
      audience: `//iam.googleapis.com/${provider}`,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      token_url: google.stsUrl,
      service_account_impersonation_url: google.impersonationUrl,
      credential_source: { file: await file('gcp-token', gSubject), format: { type: 'text' } },
    }),
  );
  const env = {
    metadata: { GCE_METADATA_HOST: google.metadataHost },
    wif: { GOOGLE_APPLICATION_CREDENTIALS: federation },
    irsa: { AWS_ROLE_ARN: roleArn, AWS_WEB_IDENTITY_TOKEN_FILE: await file('aws-token', irsaToken), AWS_ENDPOINT_URL_STS: aws.stsUrl, AWS_ENDPOINT_URL_ECR: aws.ecrUrl },
    podIdentity: { AWS_CONTAINER_CREDENTIALS_FULL_URI: aws.podIdentityUrl, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: await file('pod-token', podToken), AWS_ENDPOINT_URL_ECR: aws.ecrUrl },
    azure: { AZURE_CLIENT_ID: clientId, AZURE_TENANT_ID: tenant, AZURE_FEDERATED_TOKEN_FILE: await file('azure-token', zToken), AZURE_AUTHORITY_HOST: entra.authorityHost },
  };
  const registries = (): Record<string, unknown> => ({
    [src.host]: { insecure: true },
    [gReg.host]: { insecure: true, auth: { google: {} } },
    [aReg.host]: { insecure: true, auth: { aws: { region } } },
    [zReg.host]: { insecure: true, auth: { azure: {} } },
  });
  /** Everything secret that any flow handled. */
  const secrets = (): string[] => [gSubject, irsaToken, podToken, zToken, ...google.tokens.all, ...aws.secrets, ...entra.tokens.all, ...acr.refresh, ...gTokens.tokens, ...aTokens.tokens, ...zTokens.tokens];
  const leaks = (text: string): string[] => secrets().filter((s) => text.includes(s));

  const digests = {
    google: await pushImage(src, 'google/app', 'v1', { content: 'for artifact registry' }),
    aws: await pushImage(src, 'aws/app', 'v1', { content: 'for ecr' }),
    azure: await pushImage(src, 'azure/app', 'v1', { content: 'for acr' }),
  };

  const variants = [
    { name: 'Google, GKE metadata server', cloud: 'google', reg: gReg, env: env.metadata, user: 'oauth2accesstoken', tokens: gTokens },
    { name: 'Google, Workload Identity Federation with impersonation', cloud: 'google', reg: gReg, env: env.wif, user: 'oauth2accesstoken', tokens: gTokens },
    { name: 'AWS, IRSA', cloud: 'aws', reg: aReg, env: env.irsa, user: 'AWS', tokens: aTokens },
    { name: 'AWS, EKS Pod Identity', cloud: 'aws', reg: aReg, env: env.podIdentity, user: 'AWS', tokens: aTokens },
    { name: 'Azure Workload Identity', cloud: 'azure', reg: zReg, env: env.azure, user: 'acr-identity', tokens: zTokens },
  ] as const;

  for (const [i, v] of variants.entries()) {
    await t.test(`mirrorgate copy: ${v.name}`, async (t) => {
      const repo = `copy${i}`;
      const config = await file(
        `copy-${i}.yaml`,
        JSON.stringify({ rules: [{ from: `${src.host}/${v.cloud}`, to: `${v.reg.host}/${repo}` }], registries: registries() }),
      );
      const before = v.tokens.requests.length;
      const c = capture(v.env);
      const code = await main(['copy', '--config', config, `${src.host}/${v.cloud}/app:v1`], c.io);
      t.equal(code, 0, c.err.join('\n'));
      t.match(c.out.join('\n'), digests[v.cloud], 'the summary names the digest');
      const seen = v.tokens.requests.slice(before);
      t.equal(await headDigest(v.reg, `${repo}/app`, 'v1', checker), digests[v.cloud], 'digest-exact in the registry');
      t.ok(seen.length > 0 && seen.every((q) => q.user === v.user && q.status === 200), `every token was asked for as ${v.user}, and granted`);
      t.ok(seen.some((q) => q.scopes.includes(`repository:${repo}/app:pull,push`)), 'with push on the target repository');
      if (v.cloud === 'azure') t.ok(seen.every((q) => q.method === 'POST'), 'with the refresh token grant, never Basic');
      t.same(leaks([...c.out, ...c.err].join('\n')), [], 'no token in the output');
    });
  }

  await t.test('verify: true through /mutate, all three clouds in one webhook; nothing secret in logs, metrics or report', async (t) => {
    const rules = ['google', 'aws', 'azure'].map((cloud, i) => ({ from: `${src.host}/${cloud}`, to: `${[gReg, aReg, zReg][i]!.host}/mirror`, verify: true }));
    // The images to be found: copied there by the test's own user.
    for (const reg of [gReg, aReg, zReg]) await pushImage(reg, 'mirror/app', 'v1', { auth: checker, content: `in ${reg.host}` });
    const configPath = await file('serve.yaml', JSON.stringify({ logLevel: 'debug', rules, registries: registries(), verification: { timeoutMs: 10_000 } }));
    const logs = new LogSink();
    const running = await serve(serveOptions(dir, { configPath, logDestination: logs, env: { ...env.wif, ...env.irsa, ...env.azure } }));
    t.teardown(() => running.shutdown('test over'));
    const ca = await readFile(path.join(dir, 'certs', 'ca.crt'), 'utf8');
    const agent = new Agent({ keepAlive: true, ca });
    t.teardown(() => agent.destroy());

    const { uid, body } = review({
      object: {
        metadata: { generateName: 'app-' },
        spec: { containers: ['google', 'aws', 'azure'].map((c) => ({ name: c, image: `${src.host}/${c}/app:v1` })).concat([{ name: 'gone', image: `${src.host}/google/gone:v1` }]) },
      },
    });
    const res = await postJson<{ response: { uid: string; allowed: boolean; patch?: string; warnings?: string[] } }>(`${running.url}/mutate?timeout=10s`, ca, body, agent);
    t.equal(res.json.response.uid, uid);
    const patch = patchOf(res.json.response) ?? [];
    for (const [i, reg] of [gReg, aReg, zReg].entries()) {
      t.ok(
        patch.some((op) => JSON.stringify(op) === JSON.stringify({ op: 'replace', path: `/spec/containers/${i}/image`, value: `${reg.host}/mirror/app:v1` })),
        `container ${i}: present in the mirror, rewritten`,
      );
    }
    t.notOk(JSON.stringify(patch).includes('/spec/containers/3/image'), 'an image the mirror lacks keeps its original');
    t.match(res.json.response.warnings?.join('\n'), /google\/gone:v1 is not in the mirror yet/);
    const checks = logs.find('registry manifest check');
    t.ok([gReg, aReg, zReg].every((r) => checks.some((l) => l.result === 'present' && l.registry === r.host && l.repository === 'mirror/app')), 'a verification log line per cloud, present');
    t.ok(logs.find('registry credentials fetched').length >= 3, 'credentials fetched, logged without the token');

    const metrics = await getText(`${running.metricsUrl}/metrics`);
    t.match(metrics, new RegExp(`mirrorgate_registry_checks_total\\{registry="${aReg.host}",result="present"\\} 1`));
    const report = await getText(`${running.metricsUrl}/report`);
    t.same(leaks(JSON.stringify(logs.lines)), [], 'no token in the logs');
    t.same(leaks(metrics), [], 'no token in the metrics');
    t.same(leaks(report), [], 'no token in the report');
    t.ok(secrets().length > 20, 'the check looked for every token issued');
  });

  await t.test('expired credentials are fetched anew (fake clock)', async (t) => {
    const cloud = new CloudSources({ env: { ...env.metadata, ...env.irsa, ...env.azure }, now: clock.now });
    const endpoints = await loadEndpoints(validateConfig({ registries: registries() }).registries, { log: { warn: () => undefined }, cloud });
    const client = new RegistryClient({ now: clock.now });
    t.teardown(() => client.close());
    const copy = (cloudName: string, reg: { host: string }, tag: string) =>
      copyImage(ref(`${src.host}/${cloudName}/app:v1`), ref(`${reg.host}/refresh/${cloudName}/app:${tag}`), { client, endpoint: (h) => endpointFor(endpoints, h) });
    const exchanges = (): number[] => [google.calls.filter((c) => c.what === 'metadata' && c.status === 200).length, aws.calls.filter((c) => c.what === 'ecr' && c.status === 200).length, acr.calls.filter((c) => c.what === 'exchange' && c.status === 200).length];

    for (const [name, reg] of [['google', gReg], ['aws', aReg], ['azure', zReg]] as const) await copy(name, reg, 'first');
    const first = exchanges();
    const used = [gTokens, aTokens, zTokens].map((s) => s.requests.length);
    // 13 hours: beyond Google's hour, ECR's 12 hours and ACR's 3 hours.
    clock.advance(13 * 3600_000);
    for (const [name, reg] of [['google', gReg], ['aws', aReg], ['azure', zReg]] as const) {
      const r = await copy(name, reg, 'second');
      t.equal(r.digest, digests[name], `${name}: copied with fresh credentials`);
    }
    t.same(exchanges().map((n, i) => n - first[i]!), [1, 1, 1], 'one new exchange per cloud');
    t.ok(google.tokens.all.slice(0, -1).every((tok) => !google.accepts(tok)), 'the earlier Google tokens would be refused now');
    t.ok([gTokens, aTokens, zTokens].every((s, i) => s.requests.slice(used[i]).every((q) => q.status === 200)), 'no token request was refused: nothing expired was sent');
  });

  /** A running webhook with the three clouds' credentials, its log, and a way to admit one pod. */
  const webhook = async (t: Test, name: string, raw: Record<string, unknown>) => {
    const configPath = await file(`${name}.yaml`, JSON.stringify({ logLevel: 'debug', registries: registries(), verification: { timeoutMs: 10_000, platforms: 'off' }, ...raw }));
    const logs = new LogSink();
    const running = await serve(serveOptions(path.join(dir, name), { configPath, logDestination: logs, env: { ...env.wif, ...env.irsa, ...env.azure } }));
    t.teardown(() => running.shutdown('test over'));
    const ca = await readFile(path.join(dir, name, 'certs', 'ca.crt'), 'utf8');
    const agent = new Agent({ keepAlive: true, ca });
    t.teardown(() => agent.destroy());
    const admit = async (images: Record<string, string>) => {
      const { uid, body } = review({ object: { metadata: { generateName: 'app-' }, spec: { containers: Object.entries(images).map(([n, image]) => ({ name: n, image })) } } });
      const res = await postJson<{ response: { uid: string; allowed: boolean; patch?: string; warnings?: string[]; status?: { message: string } } }>(`${running.url}/mutate?timeout=10s`, ca, body, agent);
      if (res.json.response.uid !== uid) throw new Error(`answer for ${res.json.response.uid}, not ${uid}`);
      return res.json.response;
    };
    const metrics = (): Promise<string> => getText(`${running.metricsUrl}/metrics`);
    const report = (): Promise<string> => getText(`${running.metricsUrl}/report`);
    return { logs, admit, metrics, report };
  };
  const clouds = [
    { cloud: 'google', reg: gReg },
    { cloud: 'aws', reg: aReg },
    { cloud: 'azure', reg: zReg },
  ] as const;

  await t.test('verify: true through /mutate with every exchange refused: reported as such in the warning, log and metric, nothing secret anywhere', async (t) => {
    google.refuse.sts = true;
    aws.refuse.ecr = true;
    acr.refuse.exchange = true;
    t.teardown(() => {
      google.refuse.sts = false;
      aws.refuse.ecr = false;
      acr.refuse.exchange = false;
    });
    const rules = clouds.map(({ cloud, reg }) => ({ from: `${src.host}/${cloud}`, to: `${reg.host}/mirror`, verify: true }));
    const w = await webhook(t, 'refused-mutate', { rules });
    const images = Object.fromEntries(clouds.map(({ cloud }) => [cloud, `${src.host}/${cloud}/app:v1`]));
    const res = await w.admit(images);
    t.equal(res.allowed, true, 'onUnreachable original: admitted');
    t.notOk(JSON.stringify(patchOf(res) ?? []).includes('/image'), 'every container keeps its original');
    t.same(
      res.warnings,
      clouds.map(({ cloud }) => `mirrorgate: container "${cloud}": mirror refused mirrorgate's credentials (see its log); kept ${src.host}/${cloud}/app:v1`),
      'the warning says the credentials were refused, not that the mirror is down',
    );
    const steps = {
      google: /google credentials: STS token exchange: refused \(HTTP 400 invalid_grant\)/,
      aws: /aws credentials: ecr:GetAuthorizationToken: refused \(HTTP 400 AccessDeniedException\)/,
      azure: /azure credentials: ACR token exchange: refused \(HTTP 401\)/,
    };
    const failed = w.logs.find('registry manifest check failed');
    for (const { cloud, reg } of clouds) {
      const line = failed.find((l) => l.registry === reg.host);
      t.match(line?.reason, steps[cloud], `${cloud}: the log line names the registry and the step`);
    }
    const metrics = await w.metrics();
    for (const { reg } of clouds) {
      t.match(metrics, `mirrorgate_registry_credential_failures_total{registry="${reg.host}"} 1`);
      t.match(metrics, `mirrorgate_registry_checks_total{registry="${reg.host}",result="error"} 1`);
    }
    const report = await w.report();
    t.same(leaks(JSON.stringify(w.logs.lines)), [], 'no token in the logs');
    t.same(leaks(metrics), [], 'no token in the metrics');
    t.same(leaks(report), [], 'no token in the report');
    t.same(leaks(JSON.stringify(res)), [], 'no token in the answer');
  });

  await t.test('copy on miss with cloud credentials: each cloud\'s mirror gets the image, then serves it', async (t) => {
    const rules = clouds.map(({ cloud, reg }) => ({ from: `${src.host}/${cloud}`, to: `${reg.host}/on-miss`, verify: true, copyOnMiss: true }));
    const w = await webhook(t, 'copy-on-miss', { rules, verification: { timeoutMs: 10_000, platforms: 'off', cacheSeconds: { present: 60, absent: 1 } } });
    const images = Object.fromEntries(clouds.map(({ cloud }) => [cloud, `${src.host}/${cloud}/app:v1`]));
    const first = await w.admit(images);
    t.notOk(JSON.stringify(patchOf(first) ?? []).includes('/image'), 'missing: the originals stay');
    await waitFor('three copies', async () => metricSample(await w.metrics(), 'mirrorgate_copies_total{result="success"}') === 3, 30_000);
    for (const { cloud, reg } of clouds) t.equal(await headDigest(reg, 'on-miss/app', 'v1', checker), digests[cloud], `${cloud}: copied digest-exact with its cloud credentials`);
    const second = await w.admit(images);
    const patch = JSON.stringify(patchOf(second) ?? []);
    for (const [i, { cloud, reg }] of clouds.entries()) t.ok(patch.includes(`"path":"/spec/containers/${i}/image","value":"${reg.host}/on-miss/app:v1"`), `${cloud}: the next admission is rewritten`);
    t.same(leaks(JSON.stringify(w.logs.lines)), [], 'no token in the logs');
    t.same(leaks(await w.metrics()), [], 'no token in the metrics');
    t.same(leaks(await w.report()), [], 'no token in the report');
  });

  /** Successful answers of each step of the flows these tests refresh. */
  const steps = () => ({
    sts: google.calls.filter((c) => c.what === 'sts' && c.status === 200).length,
    impersonation: google.calls.filter((c) => c.what === 'impersonation' && c.status === 200).length,
    podIdentity: aws.calls.filter((c) => c.what === 'pod-identity' && c.status === 200).length,
    ecr: aws.calls.filter((c) => c.what === 'ecr' && c.status === 200).length,
    entra: entra.calls.filter((c) => c.what === 'entra' && c.status === 200).length,
    exchange: acr.calls.filter((c) => c.what === 'exchange' && c.status === 200).length,
  });
  const diff = (a: ReturnType<typeof steps>, b: ReturnType<typeof steps>): Record<string, number> =>
    Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v - a[k as keyof typeof a]]));
  /** The identities whose refresh the first fake-clock test does not cover. */
  const others = { ...env.wif, ...env.podIdentity, ...env.azure };

  await t.test('expired credentials are fetched anew through copy: Workload Identity Federation with impersonation, EKS Pod Identity, Azure (fake clock)', async (t) => {
    const cloud = new CloudSources({ env: others, now: clock.now });
    const endpoints = await loadEndpoints(validateConfig({ registries: registries() }).registries, { log: { warn: () => undefined }, cloud });
    const client = new RegistryClient({ now: clock.now });
    t.teardown(() => client.close());
    const copy = (cloudName: string, reg: { host: string }, tag: string) =>
      copyImage(ref(`${src.host}/${cloudName}/app:v1`), ref(`${reg.host}/refresh-others/${cloudName}/app:${tag}`), { client, endpoint: (h) => endpointFor(endpoints, h) });
    for (const { cloud: name, reg } of clouds) await copy(name, reg, 'first');
    const first = steps();
    const granted = [gTokens, aTokens, zTokens].map((s) => s.requests.length);
    // Past every lifetime the doubles issue: the old tokens are refused from here on.
    clock.advance(13 * 3600_000);
    t.ok(google.tokens.all.every((tok) => !google.accepts(tok)), 'every Google token issued so far is expired');
    for (const { cloud: name, reg } of clouds) {
      const r = await copy(name, reg, 'second');
      t.equal(r.digest, digests[name], `${name}: copied with fresh credentials`);
      t.equal(await headDigest(reg, `refresh-others/${name}/app`, 'second', checker), digests[name], `${name}: digest-exact in the registry`);
    }
    t.same(diff(first, steps()), { sts: 1, impersonation: 1, podIdentity: 1, ecr: 1, entra: 1, exchange: 1 }, 'each step of each flow ran once more');
    t.ok([gTokens, aTokens, zTokens].every((s, i) => s.requests.slice(granted[i]).every((q) => q.status === 200)), 'no token request was refused: nothing expired was sent');
  });

  await t.test('verify: true through /mutate after expiry: Workload Identity Federation with impersonation, EKS Pod Identity and Azure fetch fresh credentials (fake clock)', async (t) => {
    const rules = clouds.map(({ cloud, reg }) => ({ from: `${src.host}/${cloud}`, to: `${reg.host}/expiry`, verify: true }));
    for (const reg of [gReg, aReg, zReg]) {
      for (const name of ['before', 'after']) await pushImage(reg, `expiry/${name}`, 'v1', { auth: checker, content: `${name} in ${reg.host}` });
    }
    const configPath = await file('expiry-mutate.yaml', JSON.stringify({ logLevel: 'debug', rules, registries: registries(), verification: { timeoutMs: 10_000, platforms: 'off' } }));
    const logs = new LogSink();
    const running = await serve(serveOptions(path.join(dir, 'expiry-mutate'), { configPath, logDestination: logs, env: others, credentialClock: clock.now }));
    t.teardown(() => running.shutdown('test over'));
    const ca = await readFile(path.join(dir, 'expiry-mutate', 'certs', 'ca.crt'), 'utf8');
    const agent = new Agent({ keepAlive: true, ca });
    t.teardown(() => agent.destroy());
    const admit = async (name: string) => {
      const { uid, body } = review({ object: { metadata: { generateName: 'app-' }, spec: { containers: clouds.map(({ cloud }) => ({ name: cloud, image: `${src.host}/${cloud}/${name}:v1` })) } } });
      const res = await postJson<{ response: { uid: string; allowed: boolean; patch?: string; warnings?: string[] } }>(`${running.url}/mutate?timeout=10s`, ca, body, agent);
      t.equal(res.json.response.uid, uid);
      return res.json.response;
    };
    // Each admission checks a repository not seen before, so it needs a registry token, and
    // so the cloud credential that token is asked for with.
    const rewritten = (res: { patch?: string }, name: string): void => {
      const patch = patchOf(res) ?? [];
      for (const [i, { cloud, reg }] of clouds.entries()) {
        t.ok(
          patch.some((op) => JSON.stringify(op) === JSON.stringify({ op: 'replace', path: `/spec/containers/${i}/image`, value: `${reg.host}/expiry/${name}:v1` })),
          `${cloud}: ${name}:v1 found in the mirror, rewritten`,
        );
      }
    };
    const before = await admit('before');
    rewritten(before, 'before');
    t.same(before.warnings ?? [], [], 'no warning before expiry');
    const first = steps();
    const granted = [gTokens, aTokens, zTokens].map((s) => s.requests.length);

    clock.advance(13 * 3600_000);
    const after = await admit('after');
    rewritten(after, 'after');
    t.same(after.warnings ?? [], [], 'no warning after expiry: the credentials were not refused');
    t.same(diff(first, steps()), { sts: 1, impersonation: 1, podIdentity: 1, ecr: 1, entra: 1, exchange: 1 }, 'each step of each flow ran once more');
    t.ok([gTokens, aTokens, zTokens].every((s, i) => s.requests.length > granted[i]! && s.requests.slice(granted[i]).every((q) => q.status === 200)), 'every cloud asked its token server again, and nothing expired was sent');
    const fetched = logs.find('registry credentials fetched');
    for (const reg of [gReg, aReg, zReg]) t.equal(fetched.filter((l) => l.registry === reg.host).length, 2, `${reg.host}: fetched twice, before and after expiry`);
    const metrics = await getText(`${running.metricsUrl}/metrics`);
    for (const reg of [gReg, aReg, zReg]) t.equal(metricSample(metrics, `mirrorgate_registry_credential_failures_total{registry="${reg.host}"}`), 0, `${reg.host}: no credential failure`);
    t.same(leaks(JSON.stringify(logs.lines)), [], 'no token in the logs');
    t.same(leaks(metrics), [], 'no token in the metrics');
  });

  await t.test('a refused exchange is reported as such, naming the registry and the step', async (t) => {
    const cases = [
      { name: 'google', reg: gReg, env: env.wif, refuse: () => (google.refuse.sts = true), expect: new RegExp(`^${gReg.host}: google credentials: STS token exchange: refused \\(HTTP 400 invalid_grant\\)`) },
      { name: 'aws', reg: aReg, env: env.irsa, refuse: () => (aws.refuse.ecr = true), expect: new RegExp(`^${aReg.host}: aws credentials: ecr:GetAuthorizationToken: refused \\(HTTP 400 AccessDeniedException\\)`) },
      { name: 'azure', reg: zReg, env: env.azure, refuse: () => (acr.refuse.exchange = true), expect: new RegExp(`^${zReg.host}: azure credentials: ACR token exchange: refused \\(HTTP 401\\): does the identity hold AcrPull`) },
    ];
    for (const c of cases) {
      c.refuse();
      const config = await file(`refused-${c.name}.yaml`, JSON.stringify({ rules: [{ from: `${src.host}/${c.name}`, to: `${c.reg.host}/refused` }], registries: registries() }));
      const out = capture(c.env);
      t.equal(await main(['copy', '--config', config, `${src.host}/${c.name}/app:v1`], out.io), 1, `${c.name}: exit 1`);
      const line = out.err.find((l) => l.startsWith('mirrorgate: copy failed:')) ?? '';
      t.match(line.replace(/^mirrorgate: copy failed: \S+ -> \S+: /, ''), c.expect, `${c.name}: ${line}`);
      t.same(leaks(out.err.join('\n')), [], 'no token in the error');
    }
    google.refuse.sts = false;
    aws.refuse.ecr = false;
    acr.refuse.exchange = false;
  });
});
