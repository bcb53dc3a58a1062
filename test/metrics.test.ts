/**
 * The rewrite and violation series name a registry as rules, policy and the report
 * compare it: a host in capitals, or index.docker.io, is not a series of its own.
 */
import t from 'tap';
import { createMetrics } from '../src/metrics.js';

t.test('rewrites and violations fold host case and index.docker.io into one series', async (t) => {
  const m = createMetrics({ defaultMetrics: false });
  m.countRewrite('DOCKER.IO', 'Mirror.Example.com', 'enforce');
  m.countRewrite('docker.io', 'mirror.example.com', 'enforce');
  m.countRewrite('index.docker.io', 'mirror.example.com', 'enforce');
  m.countViolation('Evil.Example.NET', 'enforce');
  m.countViolation('evil.example.net', 'enforce');
  const text = await m.registry.metrics();
  const rewrites = text.split('\n').filter((l) => l.startsWith('mirrorgate_image_rewrites_total{'));
  t.same(rewrites, ['mirrorgate_image_rewrites_total{source_registry="docker.io",target_registry="mirror.example.com",mode="enforce"} 3']);
  const violations = text.split('\n').filter((l) => l.startsWith('mirrorgate_policy_violations_total{'));
  t.same(violations, ['mirrorgate_policy_violations_total{registry="evil.example.net",mode="enforce"} 2']);
});

t.test('admission counts are kept as numbers and added when collected: each scrape sees every count once', async (t) => {
  const m = createMetrics({ defaultMetrics: false });
  const value = async (name: string, labels: Record<string, string>): Promise<number | undefined> => {
    const v = (await m.registry.getSingleMetric(name)?.get())?.values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
    return v?.value;
  };
  for (let i = 0; i < 3; i++) m.countAdmission('create', 'patched', 0.001);
  m.countInvalid('other');
  m.countRewrite('quay.io', 'mirror.example.com', 'audit');
  t.equal(await value('mirrorgate_admission_requests_total', { operation: 'create', result: 'patched' }), 3);
  t.equal(await value('mirrorgate_admission_requests_total', { operation: 'other', result: 'invalid' }), 1);
  t.equal(await value('mirrorgate_image_rewrites_total', { source_registry: 'quay.io', target_registry: 'mirror.example.com', mode: 'audit' }), 1);
  // A second collect adds nothing that was not counted since.
  t.equal(await value('mirrorgate_admission_requests_total', { operation: 'create', result: 'patched' }), 3);
  m.countAdmission('create', 'patched', 0.001);
  t.match(await m.registry.metrics(), /mirrorgate_admission_requests_total\{operation="create",result="patched"\} 4/);
  t.match(await m.registry.metrics(), /mirrorgate_admission_duration_seconds_count 4/);
});

t.test('registries beyond the label cap count under other, however many spellings arrive', async (t) => {
  const m = createMetrics({ defaultMetrics: false, maxRegistries: 3 });
  // 2,000 distinct source names: more than the counts keep by name (1,000), all counted.
  for (let i = 0; i < 2000; i++) m.countRewrite(`r${i}.example.com`, 'mirror.example.com', 'enforce');
  const text = await m.registry.metrics();
  const series = [...text.matchAll(/^mirrorgate_image_rewrites_total\{source_registry="([^"]+)"[^}]*\} (\d+)$/gm)].map((x) => [x[1], Number(x[2])] as const);
  // The cap admits the first three names seen (r0, the target, r1); the rest are other.
  t.same(Object.fromEntries(series), { 'r0.example.com': 1, 'r1.example.com': 1, other: 1998 });
});
