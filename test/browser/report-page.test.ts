/// <reference lib="dom" />
/**
 * /report.html as a person uses it: Debian's chromium, driven by playwright-core, opens the
 * page of a running `serve()` (its metrics server listening on 127.0.0.1) after real
 * admissions through /mutate (pods of Deployments, with the ownerReferences and
 * pod-template-hash label the ReplicaSet controller sets), and filters, sorts, searches,
 * reads the workloads and admission counts per image, the trend, and uses the
 * per-namespace view. Screenshots go to artifacts/ (ignored by git).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import t from 'tap';
import { serve, type Running } from '../../src/serve.js';
import { review } from '../support/app.js';
import { pushImage, startRegistry } from '../support/registry.js';
import { serveOptions } from '../support/serve.js';

/** quay.io goes to a real registry on loopback (plain HTTP), checked before each rewrite. */
const config = (mirror: string): string => `mode: audit
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
  - from: quay.io
    to: ${mirror}/quay
    verify: true
  - from: ghcr.io
    to: mirror.example.com/ghcr
registries:
  "${mirror}":
    insecure: true
policy:
  allowedRegistries: [mirror.example.com, ${mirror}, registry.k8s.io]
report:
  flushSeconds: 3600
`;

const ARTIFACTS = join(process.cwd(), 'artifacts', 'browser');

/** A pod as the ReplicaSet of Deployment `deployment` creates it. */
async function admit(running: Running, images: string[], namespace: string, deployment = 'web'): Promise<void> {
  const hash = '5d7f8c9b4';
  const metadata = {
    generateName: `${deployment}-${hash}-`,
    labels: { app: deployment, 'pod-template-hash': hash },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${deployment}-${hash}`, uid: `uid-${deployment}`, controller: true, blockOwnerDeletion: true }],
  };
  const object = { apiVersion: 'v1', kind: 'Pod', metadata, spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } };
  const res = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ object, namespace }).body });
  if (res.statusCode !== 200) throw new Error(`admission: HTTP ${res.statusCode}`);
}

async function visibleImages(page: Page): Promise<string[]> {
  return page.$$eval('#work tbody tr:not([hidden])', (rows) => rows.map((r) => (r as HTMLElement).dataset.image ?? ''));
}

async function cell(page: Page, image: string, column: number): Promise<string> {
  return page.$eval(`#work tr[data-image="${image}"] td:nth-child(${column})`, (td) => (td as HTMLElement).innerText);
}

t.test('the report page in a real browser: filter, sort, search, workloads, admissions, trend, per-namespace view', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mg-browser-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const mirror = await startRegistry();
  t.teardown(() => mirror.stop());
  await pushImage(mirror, 'quay/acme/app', '1');
  await writeFile(join(dir, 'config.yaml'), config(mirror.host));
  const running = await serve(serveOptions(dir));
  t.teardown(() => running.shutdown('test over'));
  const long = `docker.io/library/nginx:1.25@sha256:${'ab'.repeat(32)}`;
  await admit(running, ['nginx:1.14.2', 'redis:7', 'registry.k8s.io/pause:3.9'], 'team-a');
  await admit(running, ['nginx:1.14.2'], 'team-a', 'api');
  await admit(running, ['nginx:1.14.2', 'redis:7'], 'team-a', 'api');
  await admit(running, ['quay.io/acme/app:1', long, 'quay.io/acme/absent:1'], 'team-b', 'shop');
  await admit(running, ['ghcr.io/org/tool:2', 'evil.io/x:1'], 'team-c', 'tools');

  const address = running.metricsApp.server.address() as AddressInfo;
  t.equal(address.address, '127.0.0.1');
  const url = `http://127.0.0.1:${address.port}/report.html`;

  const profile = await mkdtemp(join(tmpdir(), 'mg-chromium-'));
  t.teardown(() => rm(profile, { recursive: true, force: true }));
  // A fresh profile (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
  });
  t.teardown(() => context.close());
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  const res = await page.goto(url);
  t.equal(res?.status(), 200);
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'report-full.png'), fullPage: true });

  const all = await visibleImages(page);
  t.same([...all].sort(), ['docker.io/library/nginx:1.14.2', long, 'docker.io/library/redis:7', 'evil.io/x:1', 'ghcr.io/org/tool:2', 'quay.io/acme/absent:1', 'quay.io/acme/app:1'].sort(), 'every image that would be pulled from outside; not the allowed registry');
  t.equal(await page.textContent('#shown'), '7');
  t.match(await page.textContent('body'), /would be rewritten/);
  t.notMatch(await page.textContent('body'), /\bstill pulled from here/, 'audit: the flag says "would"');
  const quayTargets = await page.$eval('#work tr[data-image="quay.io/acme/app:1"] td:nth-child(2)', (td) => td.textContent ?? '');
  t.match(quayTargets, `${mirror.host}/quay/acme/app:1`, 'the target shown');

  // Whether the mirror holds it, from verification against the real registry.
  t.match(await cell(page, 'quay.io/acme/app:1', 3), /in the mirror: no copy needed/, 'verified present');
  t.equal(await cell(page, 'quay.io/acme/app:1', 7), 'none needed', 'no copy command for an image the mirror holds');
  t.match(await cell(page, 'quay.io/acme/absent:1', 3), /missing from the mirror: copy it\s+not in the mirror/, 'verified absent');
  t.equal(await cell(page, 'quay.io/acme/absent:1', 7), `gcrane cp --insecure quay.io/acme/absent:1 ${mirror.host}/quay/acme/absent:1`, 'its copy command, plain HTTP as registries.<host> says');
  t.match(await cell(page, 'docker.io/library/redis:7', 3), /mirror not checked/, 'a rule without verify says so');

  // Per image: the workloads (the ReplicaSet read as its Deployment) and the admissions.
  const nginx = 'docker.io/library/nginx:1.14.2';
  const usedBy = await cell(page, nginx, 4);
  t.match(usedBy, /team-a/);
  t.match(usedBy, /Deployment web \(team-a\)/, 'the Deployment, not its ReplicaSet');
  t.match(usedBy, /Deployment api \(team-a\)/);
  t.notMatch(usedBy, /5d7f8c9b4|ReplicaSet/, 'no ReplicaSet name');
  t.match(await cell(page, 'quay.io/acme/app:1', 4), /Deployment shop \(team-b\)/);
  t.notMatch(await cell(page, 'quay.io/acme/app:1', 4), /team-a/, 'namespaces are per image, not per registry');
  t.match(await cell(page, nginx, 5), /^3\s*\/ h\s+3\s*\/ day$/, 'three admissions in the last hour and day');
  t.match(await cell(page, 'docker.io/library/redis:7', 5), /^2\s*\/ h\s+2\s*\/ day$/);
  t.match(await cell(page, 'evil.io/x:1', 5), /^1\s*\/ h\s+1\s*\/ day$/);

  // The trend: one point for this hour, 11 images admitted, the allowed pause image done.
  const points = await page.$$eval('#trend-chart circle.pt', (cs) => cs.map((c) => ({ done: c.getAttribute('data-done'), total: c.getAttribute('data-total'), title: c.textContent })));
  t.same(points.map((p) => [p.done, p.total]), [['1', '11']], 'one hourly point: 1 of 11 admitted images (the allowed pause) served from the mirror or an allowed registry');
  t.match(points[0]?.title ?? '', /9% of 11 images/);
  t.equal(await page.textContent('#pct'), '9', 'progress now: audit rewrites nothing');
  t.equal(await page.textContent('#would-pct'), '81.8', 'and what enforce would serve: 8 rewrites and the allowed image of 11');
  const chart = await page.$eval('#trend-chart', (svg) => {
    const r = svg.getBoundingClientRect();
    return { width: r.width, height: r.height, right: r.right };
  });
  t.ok(chart.width > 300 && chart.height > 50 && chart.right <= 1280, `the chart is drawn within the page (${Math.round(chart.width)}x${Math.round(chart.height)})`);
  await page.locator('#progress').screenshot({ path: join(ARTIFACTS, 'report-trend.png') });

  const width = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  t.ok(width.scroll <= width.client, `no horizontal scroll at 1280 px (${width.scroll} <= ${width.client})`);

  await page.selectOption('#f-registry', 'docker.io');
  t.same((await visibleImages(page)).sort(), ['docker.io/library/nginx:1.14.2', long, 'docker.io/library/redis:7'].sort(), 'the registry filter narrows the rows');
  await page.selectOption('#f-registry', '');
  await page.selectOption('#f-state', 'missing');
  t.same(await visibleImages(page), ['quay.io/acme/absent:1'], 'the state filter shows what to copy');
  await page.selectOption('#f-state', 'no-rule');
  t.same(await visibleImages(page), ['evil.io/x:1'], 'the state filter narrows the rows');
  await page.selectOption('#f-state', '');

  await page.click('#work th[data-key="image"] button');
  t.same(await visibleImages(page), [...all].sort(), 'sorted by image, ascending');
  await page.click('#work th[data-key="image"] button');
  t.same(await visibleImages(page), [...all].sort().reverse(), 'then descending');
  t.equal(await page.getAttribute('#work th[data-key="image"]', 'aria-sort'), 'descending');

  // By admissions: numeric order, not text order.
  await page.click('#work th[data-key="day"] button');
  const byDay = await page.$$eval('#work tbody tr:not([hidden])', (rows) => rows.map((r) => Number((r as HTMLElement).dataset.day)));
  t.same(byDay, [...byDay].sort((a, b) => a - b), `sorted by admissions, ascending (${byDay.join(',')})`);
  t.equal((await visibleImages(page)).at(-1), nginx, 'the most used image last');
  await page.click('#work th[data-key="day"] button');
  t.equal((await visibleImages(page))[0], nginx, 'then first');

  await page.fill('#f-search', 'tool:2');
  t.same(await visibleImages(page), ['ghcr.io/org/tool:2'], 'search finds an image');
  await page.screenshot({ path: join(ARTIFACTS, 'report-search.png') });
  await page.fill('#f-search', 'shop');
  t.same((await visibleImages(page)).sort(), [long, 'quay.io/acme/absent:1', 'quay.io/acme/app:1'], 'search finds the images of a workload');
  await page.fill('#f-search', '');

  // Namespaces are kept per source registry (not yet per image): team-c alone used ghcr.io and evil.io.
  await page.click('#namespaces a[data-ns="team-c"]');
  t.same(await visibleImages(page), ['ghcr.io/org/tool:2', 'evil.io/x:1'], 'the per-namespace view filters to that namespace');
  t.equal(await page.inputValue('#f-namespace'), 'team-c');
  await page.screenshot({ path: join(ARTIFACTS, 'report-namespace.png') });

  const when = await page.$eval('#work tbody tr time', (el) => ({ text: el.textContent ?? '', iso: el.getAttribute('datetime') ?? '', title: el.getAttribute('title') ?? '', local: new Date(el.getAttribute('datetime') ?? '').toLocaleString() }));
  t.ok(when.text.startsWith(when.local), `times are local (${when.text})`);
  t.match(when.text, /\((now|\d+ seconds? ago|\d+ minutes? ago)\)$/, 'and relative');
  t.equal(when.title, new Date(when.iso).toISOString(), 'the exact UTC time on hover');
  t.same(problems, [], 'no console errors and no CSP violations');
});
