/**
 * Copy on miss end to end: `serve()` in-process (no cluster), two real registries on
 * 127.0.0.1 (the upstream source, behind a loopback proxy that can hold its blobs back,
 * and the mirror), Pod reviews over HTTPS to /mutate. The admission keeps the original
 * at once, the copy happens in the background (checked by digest, like an operator
 * would), later pods get the mirror once the absent answer expires, the report counts
 * the copy, and a dry run queues nothing.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { serve } from '../../src/serve.js';
import { patchOf, review } from '../support/app.js';
import { getText, metricSample, postJson } from '../support/http.js';
import { waitFor } from '../support/wait.js';
import { pushImage, startRegistry } from '../support/registry.js';
import { serveOptions } from '../support/serve.js';
import { headDigest, pollDigest, startProxy } from './support.js';

interface Answer {
  uid: string;
  allowed: boolean;
  patch?: string;
  warnings?: string[];
}

interface ReportEntry {
  rewritten: number;
  skipped: number;
  copied: number;
  copyFailed: number;
  missing: string[];
}

t.test('copy on miss through /mutate between two real registries', async (t) => {
  const [source, mirror] = await Promise.all([startRegistry(), startRegistry()]);
  t.teardown(() => Promise.all([source.stop(), mirror.stop()]));
  // The upstream as the webhook sees it: the source registry behind a proxy that holds
  // blob downloads until released, so the test can tell the admission from the copy.
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const upstream = await startProxy(source.url, {
    body: (req, up, res) => {
      if (req.method !== 'GET' || !(req.url ?? '').includes('/blobs/')) return false;
      void gate.then(() => up.pipe(res));
      return true;
    },
  });
  t.teardown(() => upstream.stop());

  const digest = await pushImage(source, 'library/app', '1.0');
  await pushImage(source, 'library/app', '2.0', { content: 'second' });
  const digest3 = await pushImage(source, 'library/app', '3.0', { content: 'third' });
  const pinned = await pushImage(source, 'library/pinned', undefined, { content: 'by digest only' });

  const dir = await mkdtemp(join(tmpdir(), 'mg-copy-on-miss-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const configPath = join(dir, 'config.yaml');
  await writeFile(
    configPath,
    `mode: enforce
rules:
  - from: ${upstream.host}
    to: ${mirror.host}/x
    verify: true
    copyOnMiss: true
registries:
  "${upstream.host}": {insecure: true}
  "${mirror.host}": {insecure: true}
verification:
  timeoutMs: 2000
  cacheSeconds: {present: 60, absent: 1}
`,
  );
  const running = await serve(serveOptions(dir, { configPath }));
  t.teardown(() => running.shutdown('test over'));
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  const agent = new Agent({ keepAlive: true, ca });
  t.teardown(() => agent.destroy());

  const admit = async (image: string, dryRun = false): Promise<Answer> => {
    const { uid, body } = review({ namespace: 'team-a', dryRun, object: { metadata: { generateName: 'app-' }, spec: { containers: [{ name: 'app', image }] } } });
    const res = await postJson<{ response: Answer }>(`${running.url}/mutate?timeout=10s`, ca, body, agent);
    if (res.status !== 200 || res.json.response.uid !== uid) throw new Error(`unexpected answer ${res.status} ${JSON.stringify(res.json)}`);
    return res.json.response;
  };
  const metric = async (series: string): Promise<number> => metricSample(await getText(`${running.metricsUrl}/metrics`), series);
  const report = async (): Promise<ReportEntry | undefined> =>
    (JSON.parse(await getText(`${running.metricsUrl}/report`)) as { registries: Record<string, ReportEntry> }).registries[upstream.host];

  const image = `${upstream.host}/library/app:1.0`;
  const target = `${mirror.host}/x/library/app:1.0`;

  await t.test('missing: the original is kept at once, the copy runs in the background', async (t) => {
    const first = await admit(image);
    t.equal(first.allowed, true);
    t.notOk(JSON.stringify(patchOf(first) ?? []).includes('/image'), 'the pod keeps its original reference');
    t.match(first.warnings?.join('\n'), new RegExp(`${image.replace(/[.]/g, '\\.')} is not in the mirror yet`));
    // The answer came while the copy is still held at the source's blobs.
    t.equal(await headDigest(mirror, 'x/library/app', '1.0'), undefined, 'not copied yet when the answer came');
    t.equal(await metric('mirrorgate_copies_total{result="success"}'), 0);

    release();
    const copied = await waitFor('the copy in the mirror', () => pollDigest(mirror, 'x/library/app', '1.0'), 10_000);
    t.equal(copied, digest, 'mirror digest equals the source digest');
    t.equal(await headDigest(mirror, 'x/library/app', digest), digest, 'also by digest');
    await waitFor('copy counted', async () => (await metric('mirrorgate_copies_total{result="success"}')) === 1);
    t.ok((await metric('mirrorgate_copy_bytes_total')) > 0, 'mirrorgate_copy_bytes_total counts the blobs sent');
  });

  await t.test('once the absent answer expires, later pods get the mirror', async (t) => {
    // A pod admitted while "absent" is still cached keeps its original and must not copy again.
    const early = await admit(image);
    t.equal(early.allowed, true);
    let rewritten: Answer | undefined;
    await waitFor(
      'a rewrite to the mirror',
      async () => {
        const a = await admit(image);
        if (a.patch !== undefined && JSON.stringify(patchOf(a)).includes(target)) rewritten = a;
        else await new Promise((r) => setTimeout(r, 200));
        return rewritten !== undefined;
      },
      5000,
    );
    t.same((patchOf(rewritten ?? {}) ?? [])[0], { op: 'replace', path: '/spec/containers/0/image', value: target });
    t.equal(await metric('mirrorgate_copies_total{result="success"}'), 1, 'copied once');

    const entry = await report();
    t.equal(entry?.copied, 1, 'report: copied 1');
    t.equal(entry?.copyFailed, 0);
    t.notOk(entry?.missing.includes(image), 'report: no longer missing');
    t.ok((entry?.rewritten ?? 0) >= 1);
  });

  await t.test('a dry run queues nothing', async (t) => {
    const dry = await admit(`${upstream.host}/library/app:2.0`, true);
    t.equal(dry.allowed, true);
    t.match(dry.warnings?.join('\n'), /is not in the mirror yet/, 'same answer as without dryRun');
    // A real admission of another missing image: once its copy is done, a queued dry-run
    // copy would have started too (the queue runs two at once, in order).
    await admit(`${upstream.host}/library/app:3.0`);
    t.equal(await waitFor('the second copy', () => pollDigest(mirror, 'x/library/app', '3.0'), 10_000), digest3);
    t.equal(await headDigest(mirror, 'x/library/app', '2.0'), undefined, 'the dry-run image was not copied');
    t.notOk(upstream.requests.some((r) => r.path.endsWith('/manifests/2.0')), 'the source was never asked for it');
    t.notOk((await report())?.missing.includes(`${upstream.host}/library/app:2.0`), 'no trace in the report');
  });

  await t.test('a reference by digest only is copied by digest', async (t) => {
    const byDigest = `${upstream.host}/library/pinned@${pinned}`;
    const first = await admit(byDigest);
    t.match(first.warnings?.join('\n'), /is not in the mirror yet/);
    t.equal(await waitFor('the pinned copy', () => pollDigest(mirror, 'x/library/pinned', pinned), 10_000), pinned);
    t.ok(upstream.requests.some((r) => r.path === `/v2/library/pinned/manifests/${pinned}`), 'read from the source through its configured host');
  });
});
