/**
 * Verification through the config as users write it (`registries:` with CA and auth files
 * or Secrets) against real registries: Basic auth with htpasswd, Bearer tokens from a
 * token server, TLS with a CA made here. Also how unreadable files are reported.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, validateConfig, type Config } from '../../src/config/schema.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { loadEndpoints } from '../../src/verify/endpoints.js';
import type { SecretReader } from '../../src/ports.js';
import { Verification } from '../../src/verify/setup.js';
import { LogSink } from '../support/app.js';
import { createTestTls, pushImage, startRegistry } from '../support/registry.js';
import { startTokenServer } from '../support/token-server.js';

function dockerConfig(host: string, username: string, password: string): string {
  return JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${username}:${password}`).toString('base64') } } });
}

function configFor(host: string, registry: Record<string, unknown>, verification: Record<string, unknown> = {}): Config {
  return validateConfig({
    rules: [{ from: 'docker.io', to: `${host}/dockerhub`, verify: true }],
    registries: { [host]: registry },
    verification: { timeoutMs: 3000, ...verification },
  });
}

async function started(config: Config, secrets?: SecretReader): Promise<{ verification: Verification; logs: LogSink; metrics: Metrics }> {
  const logs = new LogSink();
  const log = createLogger({ level: 'debug', destination: logs });
  const metrics = createMetrics({ defaultMetrics: false });
  const verification = await Verification.start(config, { metrics, log, now: () => performance.now(), secrets });
  return { verification, logs, metrics };
}

async function outcome(v: Verification, target: string): Promise<string | undefined> {
  return (await v.verifier.verify([target], 5000)).outcomes.get(target);
}

t.test('Basic auth (htpasswd), credentials from a docker config file', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-verify-'));
  const reg = await startRegistry({ auth: { htpasswd: { user: 'robot', pass: 's3cret!' } } });
  t.teardown(async () => {
    await reg.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await pushImage(reg, 'dockerhub/library/nginx', '1.14.2');
  const target = `${reg.host}/dockerhub/library/nginx:1.14.2`;

  const good = path.join(dir, 'good.json');
  await writeFile(good, dockerConfig(reg.host, 'robot', 's3cret!'));
  const ok = await started(configFor(reg.host, { insecure: true, auth: { file: good } }));
  t.teardown(() => ok.verification.close());
  t.equal(await outcome(ok.verification, target), 'present');
  t.equal(await outcome(ok.verification, `${reg.host}/dockerhub/library/nginx:9`), 'absent');
  t.notMatch(JSON.stringify(ok.logs.lines), /s3cret/, 'the password is never logged');

  const wrong = path.join(dir, 'wrong.json');
  await writeFile(wrong, dockerConfig(reg.host, 'robot', 'nope'));
  const bad = await started(configFor(reg.host, { insecure: true, auth: { file: wrong } }));
  t.teardown(() => bad.verification.close());
  t.equal(await outcome(bad.verification, target), 'unreachable', 'refused credentials: cannot verify');
  t.match(await bad.metrics.registry.metrics(), new RegExp(`mirrorgate_registry_checks_total\\{registry="${reg.host}",result="error"\\} 1`));

  const anonymous = await started(configFor(reg.host, { insecure: true }));
  t.teardown(() => anonymous.verification.close());
  t.equal(await outcome(anonymous.verification, target), 'unreachable', 'no credentials: cannot verify');
});

t.test('Bearer token server, credentials from a dockerconfigjson Secret', async (t) => {
  const tokens = await startTokenServer({ users: { puller: 'tok-pass' } });
  const reg = await startRegistry({ auth: { token: tokens } });
  t.teardown(async () => {
    await reg.stop();
    await tokens.stop();
  });
  // Pushing needs a token too: the token server grants known users every action.
  await pushImage(reg, 'dockerhub/library/nginx', '1.14.2', { auth: { username: 'puller', password: 'tok-pass' } });
  const target = `${reg.host}/dockerhub/library/nginx:1.14.2`;
  const asked: string[] = [];
  const secrets: SecretReader = {
    readDockerConfig: async (name) => {
      asked.push(name);
      return name === 'mirror-pull' ? dockerConfig(reg.host, 'puller', 'tok-pass') : undefined;
    },
  };

  const ok = await started(configFor(reg.host, { insecure: true, auth: { secret: 'mirror-pull' } }), secrets);
  t.teardown(() => ok.verification.close());
  t.same(asked, ['mirror-pull'], 'the Secret is read at startup');
  const before = tokens.requests.length;
  t.equal(await outcome(ok.verification, target), 'present');
  t.equal(await outcome(ok.verification, `${reg.host}/dockerhub/library/other:1`), 'absent');
  t.ok(tokens.requests.length > before, 'a token was fetched');
  t.ok(tokens.requests.slice(before).every((r) => r.user === 'puller' && r.status === 200), 'with the Secret\'s user');
  const logged = JSON.stringify(ok.logs.lines);
  t.ok(tokens.tokens.every((tok) => !logged.includes(tok)), 'no token in the logs');

  const missing = await started(configFor(reg.host, { insecure: true, auth: { secret: 'not-there' } }), secrets);
  t.teardown(() => missing.verification.close());
  t.equal(missing.logs.find('registry auth Secret not found; checks go anonymous').length, 1);
  t.equal(await outcome(missing.verification, target), 'unreachable', 'anonymous tokens have no access');

  const noKube = await started(configFor(reg.host, { insecure: true, auth: { secret: 'mirror-pull' } }));
  t.teardown(() => noKube.verification.close());
  t.match(noKube.logs.find('registry auth Secret cannot be read without Kubernetes access (--no-kube); checks go anonymous')[0], {
    level: 'warn',
    registry: reg.host,
    secret: 'mirror-pull',
  });
});

t.test('TLS with a CA made in the test', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-verify-'));
  const pki = createTestTls();
  const reg = await startRegistry({ tls: pki });
  t.teardown(async () => {
    await reg.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await pushImage(reg, 'dockerhub/library/nginx', '1.14.2');
  const target = `${reg.host}/dockerhub/library/nginx:1.14.2`;
  const caFile = path.join(dir, 'mirror-ca.crt');
  await writeFile(caFile, pki.ca);

  const trusted = await started(configFor(reg.host, { ca: caFile }));
  t.teardown(() => trusted.verification.close());
  t.equal(await outcome(trusted.verification, target), 'present');
  t.equal(await outcome(trusted.verification, `${reg.host}/dockerhub/library/nginx:0`), 'absent');

  const untrusted = await started(configFor(reg.host, {}));
  t.teardown(() => untrusted.verification.close());
  t.equal(await outcome(untrusted.verification, target), 'unreachable', 'an unknown CA is never trusted');
});

t.test('unreadable CA and auth files are config errors naming the field', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-verify-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const notPem = path.join(dir, 'not.pem');
  await writeFile(notPem, 'hello');
  const notJson = path.join(dir, 'auth.json');
  await writeFile(notJson, '{"auths": {"a.io": {"auth": "secret-value"');
  const config = validateConfig({
    registries: {
      'a.io': { ca: path.join(dir, 'missing.crt') },
      'b.io': { ca: notPem },
      'c.io': { auth: { file: path.join(dir, 'missing.json') } },
      'd.io': { auth: { file: notJson } },
    },
  });
  const logs = new LogSink();
  const err = await loadEndpoints(config.registries, { log: createLogger({ destination: logs }) }).catch((e: unknown) => e);
  t.ok(err instanceof ConfigError);
  const problems = (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
  t.same(problems, [
    `registries["a.io"].ca: cannot read ${path.join(dir, 'missing.crt')}: ENOENT`,
    `registries["b.io"].ca: ${notPem} holds no PEM certificate`,
    `registries["c.io"].auth.file: cannot use ${path.join(dir, 'missing.json')}: ENOENT`,
    `registries["d.io"].auth.file: cannot use ${notJson}: docker config: not valid JSON`,
  ]);
  t.notMatch((err as Error).message, /secret-value/, 'file contents are never quoted');

  const verifying = validateConfig({ rules: [{ from: 'docker.io', to: 'a.io/hub', verify: true }], registries: { 'a.io': { ca: path.join(dir, 'missing.crt') } } });
  await t.rejects(Verification.start(verifying, { metrics: createMetrics({ defaultMetrics: false }), log: createLogger({ destination: logs }), now: () => 0 }), ConfigError, 'startup fails');
});

t.test('reload: verification turned on later; unreadable files keep the previous settings', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-verify-'));
  const reg = await startRegistry();
  t.teardown(async () => {
    await reg.stop();
    await rm(dir, { recursive: true, force: true });
  });
  await pushImage(reg, 'dockerhub/library/nginx', '1.14.2');
  const target = `${reg.host}/dockerhub/library/nginx:1.14.2`;
  const { verification, logs } = await started(validateConfig({ verification: { onUnreachable: 'deny' } }));
  t.teardown(() => verification.close());
  t.same(await verification.verifier.verify([target], 5000), { outcomes: new Map([[target, 'unreachable']]), onUnreachable: 'deny' }, 'nothing verified: no client');

  await verification.reload(configFor(reg.host, { insecure: true }));
  t.equal(await outcome(verification, target), 'present', 'a reload turned verification on');

  await verification.reload(configFor(reg.host, { ca: path.join(dir, 'missing.crt') }));
  t.equal(logs.find('registry settings rejected; the previous ones stay in force').length, 1);
  t.equal(await outcome(verification, `${reg.host}/dockerhub/library/nginx:2`), 'absent', 'still plain HTTP as before');
});
