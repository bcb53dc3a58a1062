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
