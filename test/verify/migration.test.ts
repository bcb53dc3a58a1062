/**
 * config/migration.yaml, the example that uses every routing feature, end to end through
 * POST /mutate: its hosts replaced by three real registries (Debian's docker-registry)
 * holding multi-arch indexes pushed through the distribution API, and each registry's auth
 * by plain HTTP (no Secrets without Kubernetes). Ordered targets with platform-aware checks
 * and digest pins, the tenant's scoped rule and pull secret, team-scoped rules, exclusions
 * judged by the policy.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { parse } from 'yaml';
import { validateConfig } from '../../src/config/schema.js';
import { Verification } from '../../src/verify/setup.js';
import { patchOf, review, testApp } from '../support/app.js';
import { pushIndex, startRegistry } from '../support/registry.js';

const json = { 'content-type': 'application/json' };
const EXAMPLE = readFileSync(new URL('../../config/migration.yaml', import.meta.url), 'utf8');

t.test('the example is valid as shipped and uses every routing key', async (t) => {
  const c = validateConfig(parse(EXAMPLE));
  const [hub, blue, quay] = c.ruleSet.rules;
  t.equal(hub?.targets.length, 2);
  t.equal(hub?.pinDigest, true);
  t.equal(hub?.copyOnMiss, true);
  t.equal(hub?.exclude.length, 1);
  t.ok(blue?.scope?.namespaceSelector);
  t.same(quay?.scope?.namespaces, ['team-a', 'team-b']);
  t.ok(quay?.scope?.podSelector);
  t.equal(c.ruleSet.exclude?.length, 1);
  t.same(c.verification.platforms, ['linux/amd64', 'linux/arm64']);
  t.equal(c.verification.refreshSeconds, 60);
});

t.test('the example against real registries', async (t) => {
  const [a, b, blue] = await Promise.all([startRegistry(), startRegistry(), startRegistry()]);
  t.teardown(() => Promise.all([a.stop(), b.stop(), blue.stop()]));
  const text = EXAMPLE.replaceAll('blue-mirror.example.com', blue.host).replaceAll('mirror-a.example.com', a.host).replaceAll('mirror-b.example.com', b.host);
  const raw = parse(text) as Record<string, any>;
  raw.registries = { [a.host]: { insecure: true }, [b.host]: { insecure: true }, [blue.host]: { insecure: true } };

  // nginx: only on the second mirror. redis: the first holds arm64 only, the second both.
  const nginxOnB = await pushIndex(b, 'dockerhub/library/nginx', '1.25');
  await pushIndex(a, 'dockerhub/library/redis', '7', { platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }] });
  const redisOnB = await pushIndex(b, 'dockerhub/library/redis', '7');
  await pushIndex(blue, 'dockerhub/library/nginx', '1.25', { content: 'blue build' });
  const exporterOnA = await pushIndex(a, 'quay/prometheus/node-exporter', 'v1');

  const { app, metrics, log } = testApp(raw, {
    namespaces: { mode: () => undefined, labels: (ns): Record<string, string> => (ns === 'blue' ? { tenant: 'blue' } : {}) },
    verifier: { verify: (targets, budgetMs, opts) => verification.verifier.verify(targets, budgetMs, opts) },
  });
  const verification = await Verification.start(validateConfig(raw), { metrics, log, now: () => performance.now() });
  t.teardown(() => verification.close());
  const admit = async (image: string, opts: { namespace?: string; labels?: Record<string, string> } = {}) => {
    const { body } = review({ namespace: opts.namespace ?? 'team-a', object: { metadata: { labels: opts.labels ?? {} }, spec: { containers: [{ name: 'app', image }] } } });
    const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: body });
    const response = res.json().response as Record<string, any>;
    const patch = (patchOf(response) ?? []) as Record<string, any>[];
    return {
      response,
      image: patch.find((o) => o.path === '/spec/containers/0/image')?.value as string | undefined,
      annotations: (patch.find((o) => o.path === '/metadata/annotations')?.value ?? {}) as Record<string, string>,
      secrets: (patch.find((o) => o.path === '/spec/imagePullSecrets')?.value ?? []) as { name: string }[],
    };
  };

  t.test('the second mirror serves what the first lacks, pinned to its index digest', async (t) => {
    const r = await admit('nginx:1.25');
    t.equal(r.image, `${b.host}/dockerhub/library/nginx:1.25@${nginxOnB}`);
    t.same(JSON.parse(r.annotations['mirrorgate.io/served-by'] ?? '{}'), { app: `${b.host}/dockerhub` });
    t.same(JSON.parse(r.annotations['mirrorgate.io/original-images'] ?? '{}'), { app: 'nginx:1.25' });
    t.same(r.secrets, [{ name: 'mirror-pull' }]);
    t.same(r.response.warnings, [`mirrorgate: container "app": served by target 2 of 2, ${b.host}/dockerhub; earlier targets absent or unreachable`]);
  });

  t.test('an index on the first mirror without amd64 does not count: the second serves', async (t) => {
    const r = await admit('redis:7');
    t.equal(r.image, `${b.host}/dockerhub/library/redis:7@${redisOnB}`);
  });

  t.test('tenant blue: its own mirror and pull secret (scoped beats unscoped)', async (t) => {
    const r = await admit('nginx:1.25', { namespace: 'blue' });
    t.equal(r.image, `${blue.host}/dockerhub/library/nginx:1.25`, 'no pin: that rule does not ask for one');
    t.same(r.secrets, [{ name: 'blue-mirror-pull' }]);
  });

  t.test('quay: rewritten for team-a, not for the operator\'s pods nor for other teams, whom the policy denies', async (t) => {
    t.equal((await admit('quay.io/prometheus/node-exporter:v1')).image, `${a.host}/quay/prometheus/node-exporter:v1`);
    const operator = await admit('quay.io/prometheus/node-exporter:v1', { labels: { 'app.kubernetes.io/name': 'cloudnative-pg' } });
    t.equal(operator.response.allowed, false);
    t.match(operator.response.status.message, 'is not from an allowed registry');
    const other = await admit('quay.io/prometheus/node-exporter:v1', { namespace: 'team-c' });
    t.equal(other.response.allowed, false);
    t.ok(exporterOnA.startsWith('sha256:'));
  });

  t.test('exclusions: never rewritten, still judged by the policy', async (t) => {
    const operator = await admit('cloudnative-pg/postgresql:16');
    t.equal(operator.image, undefined);
    t.equal(operator.response.allowed, false, 'docker.io is not allowed: an excluded image does not escape the policy');
    const agent = await admit('ghcr.io/acme/mirror-agent:1');
    t.equal(agent.response.allowed, true);
    t.equal(agent.image, undefined);
  });
});
