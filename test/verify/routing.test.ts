/**
 * Routing end to end through POST /mutate against real registries (Debian's
 * docker-registry): ordered targets, where the first target that holds the image serves.
 */
import net from 'node:net';
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { Verification } from '../../src/verify/setup.js';
import { patchOf, review, testApp } from '../support/app.js';
import { pushImage, startRegistry } from '../support/registry.js';

const json = { 'content-type': 'application/json' };

/** A loopback port with nothing listening: connections are refused at once. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

interface Admitted {
  response: Record<string, any>;
  patch: Record<string, any>[];
  metrics: string;
}

/** One admission of a pod with `image` under `raw`, with a verifier on real registries. */
async function admit(raw: Record<string, unknown>, image: string, podExtra: Record<string, unknown> = {}): Promise<Admitted> {
  const { app, metrics, log } = testApp(raw, { verifier: { verify: (targets, budgetMs) => verification.verifier.verify(targets, budgetMs) } });
  const verification = await Verification.start(validateConfig(raw), { metrics, log, now: () => performance.now() });
  const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'web', image }] }, ...podExtra } });
  const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: body });
  verification.close();
  const response = res.json().response as Record<string, any>;
  return { response, patch: (patchOf(response) ?? []) as Record<string, any>[], metrics: await metrics.registry.metrics() };
}

function imageOf(a: Admitted): string | undefined {
  return a.patch.find((o) => o.path === '/spec/containers/0/image')?.value;
}

function annotations(a: Admitted): Record<string, string> {
  return a.patch.find((o) => o.path === '/metadata/annotations')?.value ?? {};
}

t.test('ordered targets: the first target holding the image serves', async (t) => {
  const [first, second] = await Promise.all([startRegistry(), startRegistry()]);
  t.teardown(() => Promise.all([first.stop(), second.stop()]));
  const down = `127.0.0.1:${await closedPort()}`;
  // nginx:1.14.2 is on both; redis:7 only on the second; busybox:1.36 on neither.
  await pushImage(first, 'hub/library/nginx', '1.14.2');
  await pushImage(second, 'hub/library/nginx', '1.14.2');
  await pushImage(second, 'hub/library/redis', '7');
  const config = (to: string[]) => ({
    rules: [{ from: 'docker.io', to: to.map((h) => `${h}/hub`), verify: true }],
    registries: Object.fromEntries(to.map((h) => [h, { insecure: true }])),
  });

  t.test('both hold it: the first wins, no warning', async (t) => {
    const a = await admit(config([first.host, second.host]), 'nginx:1.14.2');
    t.equal(imageOf(a), `${first.host}/hub/library/nginx:1.14.2`);
    t.equal(a.response.warnings, undefined);
    t.same(JSON.parse(annotations(a)['mirrorgate.io/served-by'] ?? '{}'), { web: `${first.host}/hub` });
    t.match(a.metrics, `mirrorgate_image_rewrites_total{source_registry="docker.io",target_registry="${first.host}",mode="enforce"} 1`);
  });

  t.test('only the second holds it: the second serves, and the answer says so', async (t) => {
    const a = await admit(config([first.host, second.host]), 'redis:7');
    t.equal(imageOf(a), `${second.host}/hub/library/redis:7`);
    t.same(a.response.warnings, [`mirrorgate: container "web": served by target 2 of 2, ${second.host}/hub; earlier targets absent or unreachable`]);
    t.same(JSON.parse(annotations(a)['mirrorgate.io/served-by'] ?? '{}'), { web: `${second.host}/hub` });
    t.same(JSON.parse(annotations(a)['mirrorgate.io/original-images'] ?? '{}'), { web: 'redis:7' }, 'the original is recorded');
    t.match(a.metrics, `mirrorgate_image_rewrites_total{source_registry="docker.io",target_registry="${second.host}",mode="enforce"} 1`);
    t.match(a.metrics, `mirrorgate_registry_checks_total{registry="${first.host}",result="absent"} 1`);
    t.match(a.metrics, `mirrorgate_registry_checks_total{registry="${second.host}",result="present"} 1`);
  });

  t.test('the first is down: the second serves within the same budget', async (t) => {
    const a = await admit(config([down, second.host]), 'nginx:1.14.2');
    t.equal(imageOf(a), `${second.host}/hub/library/nginx:1.14.2`);
    t.match(a.response.warnings?.[0], 'served by target 2 of 2');
  });

  t.test('none holds it: the original stays', async (t) => {
    const a = await admit(config([first.host, second.host]), 'busybox:1.36');
    t.equal(imageOf(a), undefined, 'no image change');
    t.same(a.response.warnings, ['mirrorgate: container "web": busybox:1.36 is not in any of the 2 mirrors yet; kept']);
  });

  t.test('audit names the target it would use', async (t) => {
    const a = await admit({ ...config([first.host, second.host]), mode: 'audit' }, 'redis:7');
    t.equal(a.response.patch, undefined);
    t.match(a.response.warnings.join('\n'), `would be rewritten to ${second.host}/hub/library/redis:7`);
  });
});
