/**
 * RegistryVerifier against a real registry (Debian's docker-registry): answers, caching
 * with an injected clock, one request for many concurrent admissions, a stopped registry,
 * a registry that never answers, and the circuit breaker.
 */
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import type { VerificationSettings } from '../../src/config/schema.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { RegistryClient, type RegistryEndpoint } from '../../src/registry/client.js';
import { MAX_CHECKS_PER_ADMISSION, MAX_IN_FLIGHT_PER_REGISTRY, RegistryVerifier } from '../../src/verify/verifier.js';
import { LogSink } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { waitFor } from '../support/wait.js';
import { pushImage, pushIndex, startRegistry, type TestRegistry } from '../support/registry.js';

const SETTINGS: VerificationSettings = { timeoutMs: 2000, cacheSeconds: { present: 3600, absent: 30 }, refreshSeconds: 0, onUnreachable: 'original', platforms: 'off' };

/** An HTTP proxy in front of the registry that counts manifest requests and can delay answers. */
/** Forwards to the registry after `delayMs`, or once `hold` resolves when given (requests held in flight). */
async function countingProxy(upstreamPort: number, delayMs = 0, hold?: Promise<void>): Promise<{ host: string; manifestRequests: () => number; stop: () => Promise<void> }> {
  let manifests = 0;
  const server = http.createServer((req, res) => {
    if ((req.url ?? '').includes('/manifests/')) manifests++;
    const after = (fn: () => void): unknown => (hold ? hold.then(fn) : setTimeout(fn, delayMs));
    after(() => {
      const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.writeHead(502).end());
      req.pipe(up);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    manifestRequests: () => manifests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function portOf(reg: TestRegistry): number {
  return Number(reg.host.split(':')[1]);
}

interface Rig {
  verifier: RegistryVerifier;
  metrics: Metrics;
  logs: LogSink;
  clock: { ms: number };
  client: RegistryClient;
}

function rig(endpoints: RegistryEndpoint[], settings: Partial<VerificationSettings> = {}, extra: { maxCacheEntries?: number; timers?: FakeTimers } = {}): Rig {
  const logs = new LogSink();
  const log = createLogger({ level: 'debug', destination: logs });
  const metrics = createMetrics({ defaultMetrics: false });
  const clock = { ms: 1_000_000 };
  const client = new RegistryClient({ log });
  const verifier = new RegistryVerifier({
    client,
    metrics,
    log,
    now: () => clock.ms,
    settings: { ...SETTINGS, ...settings },
    endpoints: new Map(endpoints.map((e) => [e.host, e])),
    maxCacheEntries: extra.maxCacheEntries,
    timers: extra.timers,
  });
  return { verifier, metrics, logs, clock, client };
}

async function checks(metrics: Metrics, registry: string, result: string): Promise<number> {
  const m = await metrics.registryChecks.get();
  return m.values.find((v) => v.labels.registry === registry && v.labels.result === result)?.value ?? 0;
}

t.test('against a running registry', async (t) => {
  const reg = await startRegistry();
  const proxy = await countingProxy(portOf(reg));
  t.teardown(async () => {
    await proxy.stop();
    await reg.stop();
  });
  const digest = await pushImage(reg, 'dockerhub/library/nginx', '1.14.2');
  await pushIndex(reg, 'dockerhub/library/multi', 'v1');
  await pushImage(reg, 'dockerhub/library/oci', 'latest', { format: 'oci' });
  const at = (rest: string): string => `${proxy.host}/dockerhub/library/${rest}`;
  const endpoint: RegistryEndpoint = { host: proxy.host, insecure: true };

  t.test('answers: present by tag and by digest, index, no tag means latest, absent', async (t) => {
    const { verifier, metrics, client } = rig([endpoint]);
    t.teardown(() => client.close());
    const cases: { target: string; want: string }[] = [
      { target: at('nginx:1.14.2'), want: 'present' },
      { target: at(`nginx@${digest}`), want: 'present' },
      { target: at(`nginx:1.14.2@${digest}`), want: 'present' },
      { target: at('multi:v1'), want: 'present' },
      { target: at('oci'), want: 'present' },
      { target: at('nginx:1.15'), want: 'absent' },
      { target: at(`nginx@sha256:${'0'.repeat(64)}`), want: 'absent' },
      { target: at('never-pushed:1'), want: 'absent' },
    ];
    const answers = await verifier.verify(cases.map((c) => c.target), 5000);
    for (const c of cases) t.equal(answers.outcomes.get(c.target), c.want, c.target);
    t.equal(answers.onUnreachable, 'original');
    t.equal(await checks(metrics, proxy.host, 'present'), 5);
    t.equal(await checks(metrics, proxy.host, 'absent'), 3);
    t.equal(await checks(metrics, proxy.host, 'error'), 0, 'pre-set to zero');
    t.equal((await metrics.registryCheckDuration.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value, 8);
  });

  t.test('cached answers are not asked again; an absent answer expires and a later push is seen', async (t) => {
    const { verifier, clock, client } = rig([endpoint]);
    t.teardown(() => client.close());
    const present = at('nginx:1.14.2');
    const later = at('later:1');
    const before = proxy.manifestRequests();
    t.same([...(await verifier.verify([present, later], 5000)).outcomes], [[present, 'present'], [later, 'absent']]);
    t.equal(proxy.manifestRequests() - before, 2);

    await pushImage(reg, 'dockerhub/library/later', '1');
    clock.ms += 29_000;
    t.same([...(await verifier.verify([present, later], 5000)).outcomes], [[present, 'present'], [later, 'absent']], 'still cached');
    t.equal(proxy.manifestRequests() - before, 2, 'no new request');

    clock.ms += 2_000; // 31 s: past cacheSeconds.absent
    t.equal((await verifier.verify([later], 5000)).outcomes.get(later), 'present', 'the absent answer expired');
    t.equal(proxy.manifestRequests() - before, 3);

    clock.ms += 3_600_000; // past cacheSeconds.present
    await verifier.verify([present], 5000);
    t.equal(proxy.manifestRequests() - before, 4, 'the present answer expired too');
  });

  t.test('one admission with 300 distinct images sends at most MAX_CHECKS_PER_ADMISSION registry requests', async (t) => {
    const { verifier, client, logs } = rig([endpoint]);
    t.teardown(() => client.close());
    const before = proxy.manifestRequests();
    const targets = Array.from({ length: 300 }, (_, i) => at(`amplifier-${i}:1`));
    const answers = await verifier.verify(targets, 5000);
    t.equal(proxy.manifestRequests() - before, MAX_CHECKS_PER_ADMISSION, 'capped per admission');
    const unreachable = [...answers.outcomes.values()].filter((o) => o === 'unreachable').length;
    t.equal(unreachable, 300 - MAX_CHECKS_PER_ADMISSION, 'the rest follow onUnreachable');
    t.equal(logs.find('registry checks over the per-admission cap; the rest count as unreachable').length, 1);
    t.ok(verifier.cacheSize <= MAX_CHECKS_PER_ADMISSION, 'what was not asked is not cached');
  });

  t.test('registry requests in flight are capped per registry', async (t) => {
    const slow = await countingProxy(portOf(reg), 300);
    t.teardown(() => slow.stop());
    const { verifier, client } = rig([{ host: slow.host, insecure: true }]);
    t.teardown(() => client.close());
    // Many admissions at once, each within its own cap: in flight stays at the registry cap.
    const batches = Array.from({ length: 4 }, (_, b) => Array.from({ length: 16 }, (_, i) => `${slow.host}/dockerhub/library/flight-${b}-${i}:1`));
    const all = await Promise.all(batches.map((targets) => verifier.verify(targets, 5000)));
    t.equal(slow.manifestRequests(), MAX_IN_FLIGHT_PER_REGISTRY, 'never more than the per-registry cap at once');
    const answered = all.flatMap((a) => [...a.outcomes.values()]);
    t.equal(answered.filter((o) => o === 'unreachable').length, 64 - MAX_IN_FLIGHT_PER_REGISTRY);
  });

  t.test('cacheSeconds 0 caches nothing', async (t) => {
    const { verifier, client } = rig([endpoint], { cacheSeconds: { present: 0, absent: 0 } });
    t.teardown(() => client.close());
    const before = proxy.manifestRequests();
    await verifier.verify([at('nginx:1.14.2')], 5000);
    await verifier.verify([at('nginx:1.14.2')], 5000);
    t.equal(proxy.manifestRequests() - before, 2);
    t.equal(verifier.cacheSize, 0);
  });

  t.test('the cache is bounded; least recently used answers go first', async (t) => {
    const { verifier, client } = rig([endpoint], {}, { maxCacheEntries: 2 });
    t.teardown(() => client.close());
    const [a, b, c] = [at('nginx:1.14.2'), at('multi:v1'), at('oci')];
    await verifier.verify([a], 5000);
    await verifier.verify([b], 5000);
    await verifier.verify([a], 5000); // a is now the most recent
    await verifier.verify([c], 5000); // evicts b
    t.equal(verifier.cacheSize, 2);
    const before = proxy.manifestRequests();
    await verifier.verify([a, c], 5000);
    t.equal(proxy.manifestRequests() - before, 0, 'a and c cached');
    await verifier.verify([b], 5000);
    t.equal(proxy.manifestRequests() - before, 1, 'b was evicted');
  });

  t.test('many concurrent admissions for one image cause one registry request', async (t) => {
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slow = await countingProxy(portOf(reg), 0, held);
    t.teardown(() => slow.stop());
    const { verifier, metrics, client } = rig([{ host: slow.host, insecure: true }]);
    t.teardown(() => client.close());
    const target = `${slow.host}/dockerhub/library/nginx:1.14.2`;
    const first = Array.from({ length: 40 }, () => verifier.verify([target], 5000));
    // More admissions while the request is in flight: it reached the registry and is held there.
    await waitFor('the HEAD at the registry', () => slow.manifestRequests() === 1);
    const second = Array.from({ length: 40 }, () => verifier.verify([target, target], 5000));
    release();
    const all = await Promise.all([...first, ...second]);
    t.ok(all.every((a) => a.outcomes.get(target) === 'present'), 'all answered present');
    t.equal(slow.manifestRequests(), 1, 'one HEAD at the registry');
    t.equal(await checks(metrics, slow.host, 'present'), 1, 'one check counted');
  });

  t.test('a budget shorter than the registry: unreachable now, the late answer serves the next admission', async (t) => {
    const slow = await countingProxy(portOf(reg), 300);
    t.teardown(() => slow.stop());
    const { verifier, client } = rig([{ host: slow.host, insecure: true }]);
    t.teardown(() => client.close());
    const target = `${slow.host}/dockerhub/library/nginx:1.14.2`;
    t.equal((await verifier.verify([target], 20)).outcomes.get(target), 'unreachable', 'over the ?timeout= budget');
    t.equal((await verifier.verify([target], 5000)).outcomes.get(target), 'present', 'joins the request still in flight');
    t.equal((await verifier.verify([target], 0)).outcomes.get(target), 'present', 'then cached: answered even with no budget');
    t.equal(slow.manifestRequests(), 1);
  });
});

t.test('registry stopped: cached answers used, others unreachable within the budget, then checks pause', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  await pushImage(reg, 'dockerhub/library/nginx', '1.14.2');
  const { verifier, metrics, logs, clock, client } = rig([{ host: reg.host, insecure: true }], { timeoutMs: 1000 });
  t.teardown(() => client.close());
  const cached = `${reg.host}/dockerhub/library/nginx:1.14.2`;
  const absent = `${reg.host}/dockerhub/library/gone:1`;
  t.same([...(await verifier.verify([cached, absent], 5000)).outcomes], [[cached, 'present'], [absent, 'absent']]);
  await reg.stop();

  const others = [1, 2, 3].map((i) => `${reg.host}/dockerhub/library/other:${i}`);
  const answers = await verifier.verify([cached, absent, ...others], 5000);
  t.equal(answers.outcomes.get(cached), 'present', 'cached present answer used');
  t.equal(answers.outcomes.get(absent), 'absent', 'cached absent answer used');
  for (const o of others) t.equal(answers.outcomes.get(o), 'unreachable', o);
  t.equal(await checks(metrics, reg.host, 'error'), 3);
  t.equal(logs.find('registry keeps failing; checks paused, answering unreachable').length, 1, 'the circuit opened after 3 errors');

  const more = `${reg.host}/dockerhub/library/other:4`;
  t.equal((await verifier.verify([more], 5000)).outcomes.get(more), 'unreachable');
  t.equal(await checks(metrics, reg.host, 'error'), 3, 'not asked while paused');

  clock.ms += 1001; // the first pause is 1 s
  t.equal((await verifier.verify([more, `${more}0`], 5000)).outcomes.get(more), 'unreachable');
  t.equal(await checks(metrics, reg.host, 'error'), 4, 'one probe after the pause; the other target was not asked');
  clock.ms += 1001;
  await verifier.verify([more], 5000);
  t.equal(await checks(metrics, reg.host, 'error'), 4, 'the pause doubled to 2 s');
  clock.ms += 1000;
  await verifier.verify([more], 5000);
  t.equal(await checks(metrics, reg.host, 'error'), 5);
});

t.test('a registry that accepts and never answers: unreachable by the deadline; the circuit spares later admissions', async (t) => {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const hole = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        hole.close(() => resolve());
      }),
  );
  const host = `127.0.0.1:${(hole.address() as net.AddressInfo).port}`;
  // The deadlines run on fake timers: they pass when the test says, not on a busy machine's clock.
  const timers = new FakeTimers();
  const { verifier, metrics, client } = rig([{ host, insecure: true }], { timeoutMs: 150, onUnreachable: 'deny' }, { timers });
  t.teardown(() => client.close());
  const targets = [1, 2, 3].map((i) => `${host}/mirror/app:${i}`);
  let settled = false;
  const pending = verifier.verify(targets, 10_000).finally(() => (settled = true));
  // Three request deadlines (timeoutMs) and the admission's own (the smaller of timeoutMs and its budget).
  await waitFor('the checks and the admission to start their deadlines', () => timers.delays.length === 4);
  t.same(timers.delays, [150, 150, 150, 150]);
  await waitFor('the checks to reach the registry', () => connections > 0);
  t.equal(settled, false, 'no answer before the deadline');
  timers.advance(150);
  const answers = await pending;
  t.same([...answers.outcomes.values()], ['unreachable', 'unreachable', 'unreachable']);
  t.equal(answers.onUnreachable, 'deny');
  // The requests were cut by timeoutMs (the admission's deadline also ended then).
  await waitFor('the cut requests to be counted', async () => (await checks(metrics, host, 'error')) === 3);
  const seen = connections;
  t.equal((await verifier.verify([`${host}/mirror/app:4`], 10_000)).outcomes.get(`${host}/mirror/app:4`), 'unreachable');
  t.equal(connections, seen, 'no new connection while the circuit is open');
});

t.test('configure(): a changed endpoint drops its cached answers', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  await pushImage(reg, 'mirror/app', '1');
  const endpoint = { host: reg.host, insecure: true };
  const { verifier, client } = rig([endpoint]);
  t.teardown(() => client.close());
  const target = `${reg.host}/mirror/app:1`;
  await verifier.verify([target], 5000);
  t.equal(verifier.cacheSize, 1);
  verifier.configure({ ...SETTINGS, onUnreachable: 'rewrite' }, new Map([[reg.host, { ...endpoint }]]));
  t.equal(verifier.cacheSize, 1, 'same endpoint: cache kept');
  t.equal((await verifier.verify([], 5000)).onUnreachable, 'rewrite', 'new settings in force');
  verifier.configure(SETTINGS, new Map([[reg.host, { ...endpoint, auth: { username: 'u', password: 'p' } }]]));
  t.equal(verifier.cacheSize, 0, 'credentials changed: cache dropped');
});
