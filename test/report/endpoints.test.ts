/**
 * GET /report and GET /report.html of a running `serve()`: what admissions through
 * /mutate leave in the report (and what dryRun requests do not), a page with no external
 * asset and every value escaped, and with the Kubernetes API the merged view over
 * replicas and the final flush on shutdown.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { REPORT_CONFIGMAP } from '../../src/kube/report-store.js';
import type { Report } from '../../src/report/rewrites.js';
import { serve, type Running, type ServeOptions } from '../../src/serve.js';
import { review } from '../support/app.js';
import { realKubeTestOptions, startRealKube } from '../support/kube-apiserver.js';
import { eventually } from '../support/real-cluster.js';
import { serveOptions } from '../support/serve.js';

// One test here starts a real etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

const CONFIG = `mode: enforce
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
  - from: quay.io
    to: mirror.example.com/quay
policy:
  allowedRegistries: [mirror.example.com, registry.k8s.io]
report:
  flushSeconds: 3600
`;

async function start(t: Test, extra: Partial<ServeOptions> = {}): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-report-endpoints-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const running = await serve(serveOptions(dir, extra));
  t.teardown(() => running.shutdown('test over'));
  return running;
}

function pod(...images: string[]): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { generateName: 'web-' }, spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } };
}

async function admit(running: Running, images: string[], namespace = 'team-a', dryRun = false): Promise<{ allowed: boolean; patch?: string }> {
  const res = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ object: pod(...images), namespace, dryRun }).body });
  return res.json<{ response: { allowed: boolean; patch?: string } }>().response;
}

async function getReport(running: Running): Promise<Report> {
  const res = await running.metricsApp.inject({ method: 'GET', url: '/report' });
  if (res.statusCode !== 200) throw new Error(`GET /report: ${res.statusCode}`);
  return res.json<Report>();
}

t.test('GET /report: counts by source registry, as the README shows them; dryRun leaves no trace', async (t) => {
  const running = await start(t);
  t.same((await getReport(running)).registries, {}, 'empty at first');

  t.type((await admit(running, ['nginx:1.14.2'])).patch, 'string');
  await admit(running, ['nginx:1.14.2', 'quay.io/acme/app:2'], 'team-b');
  t.equal((await admit(running, ['evil.io/x:1'])).allowed, false, 'denied');
  await admit(running, ['registry.k8s.io/pause:3.9']);
  // dryRun: the same answer, no trace in the report.
  t.type((await admit(running, ['redis:7'], 'team-dry', true)).patch, 'string', 'dryRun: patched as usual');
  t.equal((await admit(running, ['ghcr.io/dry/run:1'], 'team-dry', true)).allowed, false, 'dryRun: denied as usual');

  const report = await getReport(running);
  t.match(report, { mode: 'enforce', generatedAt: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/ });
  t.same(Object.keys(report.registries), ['docker.io', 'evil.io', 'quay.io', 'registry.k8s.io']);
  const docker = report.registries['docker.io'];
  t.match(docker, {
    target: 'mirror.example.com/dockerhub',
    rewritten: 2,
    wouldRewrite: 0,
    denied: 0,
    skipped: 0,
    images: ['docker.io/library/nginx:1.14.2'],
    imagesOverflow: 0,
    namespaces: ['team-a', 'team-b'],
  });
  t.ok(docker && Date.parse(docker.firstSeen) <= Date.parse(docker.lastSeen), 'first and last seen are times');
  t.match(report.registries['quay.io'], { target: 'mirror.example.com/quay', rewritten: 1, namespaces: ['team-b'] });
  t.match(report.registries['evil.io'], { denied: 1, rewritten: 0, images: ['evil.io/x:1'] });
  t.match(report.registries['registry.k8s.io'], { denied: 0, unchanged: 1 });
  t.notOk(report.registries['ghcr.io'], 'dryRun registry absent');
  t.notMatch(JSON.stringify(report), /redis|team-dry/, 'dryRun images and namespaces absent');

  const res = await running.metricsApp.inject({ method: 'GET', url: '/report' });
  t.match(res.headers['content-type'], /application\/json/);
  t.equal(res.headers['cache-control'], 'no-store');
});

t.test('GET /report.html: self-contained, every value escaped', async (t) => {
  const running = await start(t);
  await admit(running, ['nginx:1.14.2']);
  // Not a valid reference: kept (and denied) as written, so it reaches the page verbatim.
  await admit(running, ['evil.io/"><script>alert(1)</script>:1'], 'team-x');
  const res = await running.metricsApp.inject({ method: 'GET', url: '/report.html' });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/html; charset=utf-8/);
  const csp = String(res.headers['content-security-policy']);
  t.match(csp, /default-src 'none'/);
  t.notMatch(csp, /unsafe-inline|unsafe-eval/, 'no inline script or style without the nonce');
  const nonce = /script-src 'nonce-([A-Za-z0-9+/=]+)'/.exec(csp)?.[1];
  t.ok(nonce, 'scripts only by nonce');
  const html = res.body;
  t.match(html, /^<!doctype html>/);
  t.match(html, 'docker.io/library/nginx:1.14.2');
  t.match(html, 'mirror.example.com/dockerhub');
  t.match(html, 'team-a');
  const scripts = [...html.matchAll(/<script\b[^>]*>/gi)].map((m) => m[0]);
  t.same(scripts, [`<script nonce="${nonce ?? ''}">`], 'one script element, carrying the response nonce; none injected');
  t.same([...html.matchAll(/<style\b[^>]*>/gi)].map((m) => m[0]), [`<style nonce="${nonce ?? ''}">`]);
  t.notMatch(html, /\son[a-z]+\s*=/i, 'no inline event handler');
  const other = (await running.metricsApp.inject({ method: 'GET', url: '/report.html' })).headers['content-security-policy'];
  t.not(other, csp, 'a fresh nonce per response');
  t.match(html, '&lt;script&gt;alert(1)&lt;/script&gt;', 'the hostile image is shown escaped');
  t.match(html, '&quot;&gt;', 'quotes escaped too');
  t.notMatch(html, /https?:\/\//, 'no external URL');
  t.notMatch(html, /\bsrc\s*=|@import|url\(/i, 'no asset loaded at all');
  const links = new Set([...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1]));
  t.ok(links.has('report') && links.has('report.csv'), 'links to its own exports');
  t.same([...links].filter((l) => l !== '#work' && l !== 'report' && l !== 'report.csv'), [], 'and to nothing else but itself');
});

// Against the real API server (this file's other tests need no cluster).
t.test('with the Kubernetes API: /report is the merged view, shutdown flushes the final counts', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'mirrorgate' } });
  // Another replica has written its counts a moment ago.
  const otherReport = {
    generatedAt: new Date().toISOString(),
    mode: 'enforce',
    registries: {
      'docker.io': { target: 'mirror.example.com/dockerhub', rewritten: 5, wouldRewrite: 0, denied: 0, skipped: 0, unchanged: 0, images: ['docker.io/library/busybox:1'], imagesOverflow: 0, missing: [], missingOverflow: 0, namespaces: ['team-z'], namespacesOverflow: 0, pending: {}, pendingOverflow: 0, copied: 0, copyFailed: 0, firstSeen: '2026-01-01T00:00:00.000Z', lastSeen: new Date().toISOString() },
    },
  };
  await kube.must('POST', '/api/v1/namespaces/mirrorgate/configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: REPORT_CONFIGMAP, namespace: 'mirrorgate' }, data: { 'pod-b': JSON.stringify({ updatedAt: new Date().toISOString(), report: otherReport }) } });

  const running = await start(t, { noKube: false, kubeconfig: kube.adminKubeconfig, replica: 'pod-a' });
  await admit(running, ['nginx:1.14.2']);
  await admit(running, ['nginx:1.14.2', 'quay.io/acme/app:2'], 'team-b');

  const merged = await getReport(running);
  t.match(merged.registries['docker.io'], { rewritten: 7, firstSeen: '2026-01-01T00:00:00.000Z' });
  t.same(new Set(merged.registries['docker.io']?.images), new Set(['docker.io/library/busybox:1', 'docker.io/library/nginx:1.14.2']));
  t.same(new Set(merged.registries['docker.io']?.namespaces), new Set(['team-a', 'team-b', 'team-z']));
  t.match(merged.registries['quay.io'], { rewritten: 1 });
  const html = (await running.metricsApp.inject({ method: 'GET', url: '/report.html' })).body;
  t.match(html, 'docker.io/library/busybox:1', 'the page shows the merged view too');

  await admit(running, ['nginx:1.14.2']);
  await running.shutdown('SIGTERM');
  const data = ((await kube.must<{ data?: Record<string, string> }>('GET', `/api/v1/namespaces/mirrorgate/configmaps/${REPORT_CONFIGMAP}`)).data ?? {});
  t.same(Object.keys(data).sort(), ['pod-a', 'pod-b']);
  const mine = JSON.parse(data['pod-a'] ?? '{}') as { report: Report };
  t.match(mine.report.registries['docker.io'], { rewritten: 3, namespaces: ['team-a', 'team-b'] });
  t.match(mine.report.registries['quay.io'], { rewritten: 1 });
  t.equal((JSON.parse(data['pod-b'] ?? '{}') as { report: Report }).report.registries['docker.io']?.rewritten, 5, 'the other key is left alone');

  // A restart with the same replica name continues from the flushed counts.
  const again = await start(t, { noKube: false, kubeconfig: kube.adminKubeconfig, replica: 'pod-a' });
  await eventually('reloaded', async () => (await getReport(again)).registries['docker.io']?.rewritten === 8);
  t.pass('merged view after the restart: 3 + 5');
});
