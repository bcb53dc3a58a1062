/// <reference lib="dom" />
/**
 * /report.html as a person uses it: Debian's chromium, driven by playwright-core, opens the
 * page of a running `serve()` (its metrics server listening on 127.0.0.1) after real
 * admissions through /mutate, and filters, sorts, searches and uses the per-namespace view.
 * Screenshots go to artifacts/ (ignored by git).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import t from 'tap';
import { serve, type Running } from '../../src/serve.js';
import { review } from '../support/app.js';
import { serveOptions } from '../support/serve.js';

const CONFIG = `mode: audit
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
  - from: quay.io
    to: mirror.example.com/quay
  - from: ghcr.io
    to: mirror.example.com/ghcr
policy:
  allowedRegistries: [mirror.example.com, backup.example.com, registry.k8s.io]
report:
  flushSeconds: 3600
`;

const ARTIFACTS = join(process.cwd(), 'artifacts', 'browser');

async function admit(running: Running, images: string[], namespace: string): Promise<void> {
  const object = { apiVersion: 'v1', kind: 'Pod', metadata: { generateName: 'web-' }, spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } };
  const res = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ object, namespace }).body });
  if (res.statusCode !== 200) throw new Error(`admission: HTTP ${res.statusCode}`);
}

async function visibleImages(page: Page): Promise<string[]> {
  return page.$$eval('#work tbody tr:not([hidden])', (rows) => rows.map((r) => (r as HTMLElement).dataset.image ?? ''));
}

t.test('the report page in a real browser: filter, sort, search, per-namespace view', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mg-browser-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const running = await serve(serveOptions(dir));
  t.teardown(() => running.shutdown('test over'));
  const long = `docker.io/library/nginx:1.25@sha256:${'ab'.repeat(32)}`;
  await admit(running, ['nginx:1.14.2', 'redis:7', 'registry.k8s.io/pause:3.9'], 'team-a');
  await admit(running, ['quay.io/acme/app:1', long], 'team-b');
  await admit(running, ['ghcr.io/org/tool:2', 'evil.io/x:1'], 'team-c');

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
  t.same([...all].sort(), ['docker.io/library/nginx:1.14.2', long, 'docker.io/library/redis:7', 'evil.io/x:1', 'ghcr.io/org/tool:2', 'quay.io/acme/app:1'].sort(), 'every image that would be pulled from outside; not the allowed registry');
  t.equal(await page.textContent('#shown'), '6');
  t.match(await page.textContent('body'), /would be rewritten/);
  t.notMatch(await page.textContent('body'), /\bstill pulled from here/, 'audit: the flag says "would"');
  const quayTargets = await page.$eval('#work tr[data-image="quay.io/acme/app:1"] td:nth-child(2)', (td) => td.textContent ?? '');
  t.match(quayTargets, /mirror\.example\.com\/quay\/acme\/app:1/, 'the target shown');

  const width = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  t.ok(width.scroll <= width.client, `no horizontal scroll at 1280 px (${width.scroll} <= ${width.client})`);

  await page.selectOption('#f-registry', 'docker.io');
  t.same((await visibleImages(page)).sort(), ['docker.io/library/nginx:1.14.2', long, 'docker.io/library/redis:7'].sort(), 'the registry filter narrows the rows');
  await page.selectOption('#f-registry', '');
  await page.selectOption('#f-state', 'no-rule');
  t.same(await visibleImages(page), ['evil.io/x:1'], 'the state filter narrows the rows');
  await page.selectOption('#f-state', '');

  await page.click('#work th[data-key="image"] button');
  t.same(await visibleImages(page), [...all].sort(), 'sorted by image, ascending');
  await page.click('#work th[data-key="image"] button');
  t.same(await visibleImages(page), [...all].sort().reverse(), 'then descending');
  t.equal(await page.getAttribute('#work th[data-key="image"]', 'aria-sort'), 'descending');

  await page.fill('#f-search', 'tool');
  t.same(await visibleImages(page), ['ghcr.io/org/tool:2'], 'search finds an image');
  await page.screenshot({ path: join(ARTIFACTS, 'report-search.png') });
  await page.fill('#f-search', '');

  // Namespaces are kept per source registry (not yet per image): team-c alone used ghcr.io and evil.io.
  await page.click('#namespaces a[data-ns="team-c"]');
  t.same(await visibleImages(page), ['ghcr.io/org/tool:2', 'evil.io/x:1'], 'the per-namespace view filters to that namespace');
  t.equal(await page.inputValue('#f-namespace'), 'team-c');
  await page.screenshot({ path: join(ARTIFACTS, 'report-namespace.png') });

  const when = await page.textContent('#work tbody tr time');
  t.match(when, /ago|now|second|minute/, `times are local and relative (${when ?? ''})`);
  t.same(problems, [], 'no console errors and no CSP violations');
});
