/**
 * The Grafana dashboard (charts/mirrorgate/dashboards/mirrorgate.json, shipped with the chart) queries only metrics this program
 * exports: every name in every expr is one the registry in src/metrics.ts serves (with the
 * `_bucket`/`_sum`/`_count` series of its histograms), and each required panel is there.
 */
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { createMetrics } from '../src/metrics.js';

interface Panel {
  title: string;
  targets?: { expr: string }[];
}

t.test('every dashboard expr references an exported metric', async (t) => {
  const dashboard = JSON.parse(await readFile('charts/mirrorgate/dashboards/mirrorgate.json', 'utf8')) as { panels: Panel[]; uid: string };
  const metrics = createMetrics();
  const exported = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    exported.add(m.name);
    if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(m.name + s);
  }
  const used = new Set<string>();
  for (const p of dashboard.panels) {
    t.ok((p.targets ?? []).length > 0, `${p.title}: has a query`);
    for (const target of p.targets ?? []) for (const name of target.expr.match(/\bmirrorgate_[a-z_]+/g) ?? []) used.add(name);
  }
  for (const name of used) t.ok(exported.has(name), `${name} is exported`);
  for (const required of ['mirrorgate_admission_requests_total', 'mirrorgate_admission_duration_seconds_bucket', 'mirrorgate_image_rewrites_total', 'mirrorgate_registry_checks_total', 'mirrorgate_copies_total', 'mirrorgate_certificate_expiry_timestamp_seconds']) {
    t.ok(used.has(required), `the dashboard shows ${required}`);
  }
  t.notOk(exported.has('mirrorgate_no_such_metric'), 'the check can fail');
});
