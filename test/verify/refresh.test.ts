/**
 * Refresh instead of expiry, end to end through POST /mutate against a real registry
 * (Debian's docker-registry): a manifest deleted through the distribution API is seen by
 * the background refresh within `refreshSeconds`, with admissions answered from the cache
 * meanwhile; a moved tag is re-pinned; idle answers are dropped, not re-checked; a registry
 * that stops answering leaves the cached answer until it expires; at most
 * MAX_REFRESHES_PER_REGISTRY refreshes are in flight per registry. The verifier's clock and
 * refresh timers are fake timers the test moves; registry I/O is real.
 */
import http from 'node:http';
import type net from 'node:net';
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { RegistryClient } from '../../src/registry/client.js';
import { MAX_REFRESHES_PER_REGISTRY, RegistryVerifier } from '../../src/verify/verifier.js';
import { Verification } from '../../src/verify/setup.js';
import { LogSink, patchOf, review, testApp } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { deleteManifest, pushImage, pushIndex, startRegistry } from '../support/registry.js';

const json = { 'content-type': 'application/json' };
const REFRESH_S = 60;

async function webhook(raw: Record<string, unknown>, clock: FakeTimers) {
  const { app, metrics, log, logs } = testApp(raw, { verifier: { verify: (targets, budgetMs, opts) => verification.verifier.verify(targets, budgetMs, opts) } });
  const verification = await Verification.start(validateConfig(raw), { metrics, log, now: () => clock.now(), timers: clock });
  return {
    verification,
    logs,
    async admit(image: string) {
      const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'web', image }] } } });
      const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: body });
      const response = res.json().response as Record<string, any>;
      const patch = (patchOf(response) ?? []) as Record<string, any>[];
      return { response, image: patch.find((o) => o.path === '/spec/containers/0/image')?.value as string | undefined, text: await metrics.registry.metrics() };
    },
    async metric(name: string, labels: string): Promise<number> {
      const m = new RegExp(`^${name}\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(await metrics.registry.metrics());
      return m ? Number(m[1]) : 0;
    },
  };
}

t.test('a deletion in the mirror is seen within refreshSeconds, without a check on the admission path', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const digest = await pushIndex(reg, 'hub/library/nginx', '1.25');
  const clock = new FakeTimers();
  const raw = {
    rules: [{ from: 'docker.io', to: `${reg.host}/hub`, verify: true }],
    registries: { [reg.host]: { insecure: true } },
    verification: { refreshSeconds: REFRESH_S, platforms: 'off' },
  };
  const w = await webhook(raw, clock);
  t.teardown(() => w.verification.close());
  const mirror = `${reg.host}/hub/library/nginx:1.25`;
  const checks = (result: string) => w.metric('mirrorgate_registry_checks_total', `registry="${reg.host}",result="${result}"`);
  const refreshes = (result: string) => w.metric('mirrorgate_registry_refreshes_total', `registry="${reg.host}",result="${result}"`);

  t.equal((await w.admit('nginx:1.25')).image, mirror, 'present: rewritten');
  t.equal(await checks('present'), 1);
  clock.advance(1000);
  t.equal((await w.admit('nginx:1.25')).image, mirror, 'in use: answered from the cache');
  t.equal(await checks('present'), 1, 'no registry request for it');

  await deleteManifest(reg, 'hub/library/nginx', digest);
  // Until the refresh, admissions are answered from the cache: the deletion costs them nothing.
  clock.advance(15_000);
  await w.verification.refreshesSettled();
  t.equal((await w.admit('nginx:1.25')).image, mirror, 'before the refresh is due, the cached answer serves');
  t.equal(await checks('absent'), 0, 'no request on the admission path');
  // The refresh runs on the first tick (every quarter period) once the answer is half the
  // period old: here the tick at 30 s. The clock stops there: the check's own deadline is
  // on the same timers, and must not pass before the registry has answered.
  clock.advance(30_000 - 16_000);
  await w.verification.refreshesSettled();
  t.equal(await refreshes('absent'), 1, 'the refresh found it gone');
  t.equal(await checks('absent'), 1, 'one registry request: the refresh');
  const gone = w.logs.find('mirror no longer holds a cached image (background refresh); admissions keep the original from now on');
  t.equal(gone.length, 1, 'and the log says why');
  t.match(gone[0], { level: 'warn', target: mirror, registry: reg.host, digest });

  const after = await w.admit('nginx:1.25');
  t.equal(after.image, undefined, 'the next admission is not rewritten');
  t.same(after.response.warnings, ['mirrorgate: container "web": nginx:1.25 is not in the mirror yet; kept']);
  t.equal(await checks('absent'), 1, 'answered from the refreshed cache entry');
});

t.test('a moved tag: the refresh learns the new digest, and pinDigest pins it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const first = await pushImage(reg, 'hub/library/app', '1', { content: 'build 1' });
  const clock = new FakeTimers();
  const raw = {
    rules: [{ from: 'docker.io', to: `${reg.host}/hub`, verify: true, pinDigest: true }],
    registries: { [reg.host]: { insecure: true } },
    verification: { refreshSeconds: REFRESH_S, platforms: 'off' },
  };
  const w = await webhook(raw, clock);
  t.teardown(() => w.verification.close());
  t.equal((await w.admit('app:1')).image, `${reg.host}/hub/library/app:1@${first}`);
  const second = await pushImage(reg, 'hub/library/app', '1', { content: 'build 2' });
  t.not(second, first);
  clock.advance(1000);
  t.equal((await w.admit('app:1')).image, `${reg.host}/hub/library/app:1@${first}`, 'cached: the digest verified before');
  clock.advance(29_000); // to the tick at 30 s
  await w.verification.refreshesSettled();
  t.equal(await w.metric('mirrorgate_registry_refreshes_total', `registry="${reg.host}",result="changed"`), 1);
  t.match(w.logs.find('tag moved in the mirror (background refresh); the new digest answers from now on')[0], { was: first, now: second });
  t.equal((await w.admit('app:1')).image, `${reg.host}/hub/library/app:1@${second}`, 'the next admission pins what the mirror holds now');
});

t.test('idle answers are dropped, not refreshed; a silent registry keeps the answer until it expires', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  await pushImage(reg, 'hub/library/idle', '1');
  await pushImage(reg, 'hub/library/busy', '1');
  const clock = new FakeTimers();
  const raw = {
    rules: [{ from: 'docker.io', to: `${reg.host}/hub`, verify: true }],
    registries: { [reg.host]: { insecure: true } },
    verification: { refreshSeconds: REFRESH_S, cacheSeconds: { present: 300, absent: 30 }, platforms: 'off' },
  };
  const w = await webhook(raw, clock);
  t.teardown(() => w.verification.close());
  const present = () => w.metric('mirrorgate_registry_checks_total', `registry="${reg.host}",result="present"`);
  await w.admit('idle:1');
  await w.admit('busy:1');
  clock.advance(1000);
  await w.admit('busy:1');
  t.equal(await present(), 2);
  clock.advance(29_000); // to the tick at 30 s
  await w.verification.refreshesSettled();
  t.equal(await present(), 3, 'only the image in use was re-checked');
  t.equal(await w.metric('mirrorgate_registry_refreshes_total', `registry="${reg.host}",result="present"`), 1);
  t.equal((await w.admit('idle:1')).image, `${reg.host}/hub/library/idle:1`);
  t.equal(await present(), 4, 'the idle image is asked again on its next admission');

  // The registry stops answering: refreshes fail, the cached answer stands until it expires.
  clock.advance(1000);
  await w.admit('busy:1');
  await reg.stop();
  clock.advance(29_000); // to the tick at 60 s: busy:1 was checked at 30 s
  await w.verification.refreshesSettled();
  t.ok((await w.metric('mirrorgate_registry_refreshes_total', `registry="${reg.host}",result="error"`)) >= 1, 'the refresh got no answer');
  t.equal((await w.admit('busy:1')).image, `${reg.host}/hub/library/busy:1`, 'the cached answer still serves');
  clock.advance(300_000);
  const expired = await w.admit('busy:1');
  t.equal(expired.image, undefined, 'once expired, the registry is asked, and cannot answer');
  t.match(expired.response.warnings?.[0], 'mirror unreachable; kept busy:1');
});

t.test('refreshes in flight to one registry stay within their share of its cap', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const images = Array.from({ length: MAX_REFRESHES_PER_REGISTRY * 3 }, (_, i) => `img${i}`);
  for (const name of images) await pushImage(reg, `hub/library/${name}`, '1');
  // A forwarding proxy that holds each manifest request until released, counting how many wait at once.
  const upstream = Number(reg.host.split(':')[1]);
  let waiting = 0;
  let most = 0;
  let hold = false;
  const held: (() => void)[] = [];
  const proxy = http.createServer((req, res) => {
    const forward = (): void => {
      const up = http.request({ host: '127.0.0.1', port: upstream, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.writeHead(502).end());
      req.pipe(up);
    };
    if (!hold || !(req.url ?? '').includes('/manifests/')) return forward();
    waiting++;
    most = Math.max(most, waiting);
    held.push(() => {
      waiting--;
      forward();
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => (proxy.closeAllConnections(), proxy.close(() => resolve()))));
  const host = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
  const clock = new FakeTimers();
  const log = createLogger({ level: 'debug', destination: new LogSink() });
  const metrics = createMetrics({ defaultMetrics: false });
  const client = new RegistryClient({ log });
  t.teardown(() => client.close());
  const verifier = new RegistryVerifier({
    client,
    metrics,
    log,
    now: () => clock.now(),
    timers: clock,
    settings: { timeoutMs: 10_000, cacheSeconds: { present: 3600, absent: 30 }, refreshSeconds: REFRESH_S, onUnreachable: 'original', platforms: 'off' },
    endpoints: new Map([[host, { host, insecure: true }]]),
  });
  t.teardown(() => verifier.close());
  const targets = images.map((n) => `${host}/hub/library/${n}:1`);
  // In two halves: one admission starts at most MAX_CHECKS_PER_ADMISSION checks.
  const halves = [targets.slice(0, targets.length / 2), targets.slice(targets.length / 2)];
  for (const half of halves) {
    const first = await verifier.verify(half, 10_000);
    t.ok([...first.outcomes.values()].every((o) => o === 'present'));
  }
  clock.advance(1000);
  for (const half of halves) await verifier.verify(half, 10_000); // in use
  hold = true;
  clock.advance(29_000); // to the tick at 30 s
  // Release held requests one at a time as they arrive, until all refreshes are done.
  const settled = verifier.refreshesSettled();
  let done = false;
  void settled.then(() => (done = true));
  while (!done) {
    const next = held.shift();
    if (next) next();
    else await new Promise<void>((resolve) => setImmediate(resolve));
  }
  t.equal(most, MAX_REFRESHES_PER_REGISTRY, `at most ${MAX_REFRESHES_PER_REGISTRY} at once, and that many when there is work`);
  const refreshed = (await metrics.registryRefreshes.get()).values.find((v) => v.labels.result === 'present')?.value;
  t.equal(refreshed, images.length, 'every answer in use was refreshed');
});
