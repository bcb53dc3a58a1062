/**
 * Routing end to end through POST /mutate against real registries (Debian's
 * docker-registry): ordered targets, where the first target that holds the image serves;
 * platform-aware checks, with platforms configured or from the node cache.
 */
import net from 'node:net';
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { loadKubeClient } from '../../src/kube/client.js';
import { NodeCache } from '../../src/kube/nodes.js';
import { createLogger } from '../../src/logger.js';
import type { MutateDeps } from '../../src/server/mutate-route.js';
import { Verification } from '../../src/verify/setup.js';
import { LogSink, patchOf, review, testApp } from '../support/app.js';
import { realKubeTestOptions, startRealKube } from '../support/kube-apiserver.js';
import { eventually } from '../support/real-cluster.js';
import { pushImage, pushIndex, startRegistry } from '../support/registry.js';

// One test here starts a real etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

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

/** A webhook with a verifier on real registries; admissions share its cache. */
async function webhook(raw: Record<string, unknown>, extra: Partial<MutateDeps> = {}) {
  const { app, metrics, log } = testApp(raw, { ...extra, verifier: { verify: (targets, budgetMs, opts) => verification.verifier.verify(targets, budgetMs, opts) } });
  const verification = await Verification.start(validateConfig(raw), { metrics, log, now: () => performance.now() });
  return {
    verification,
    metrics,
    async admit(image: string, spec: Record<string, unknown> = {}): Promise<Admitted> {
      const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'web', image }], ...spec } } });
      const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: body });
      const response = res.json().response as Record<string, any>;
      return { response, patch: (patchOf(response) ?? []) as Record<string, any>[], metrics: await metrics.registry.metrics() };
    },
  };
}

/** One admission of a pod with `image` under `raw`, with a verifier on real registries. */
async function admit(raw: Record<string, unknown>, image: string, spec: Record<string, unknown> = {}): Promise<Admitted> {
  const w = await webhook(raw);
  try {
    return await w.admit(image, spec);
  } finally {
    w.verification.close();
  }
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

t.test('platform-aware checks: an index counts only with every platform the pod can run on', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  await pushIndex(reg, 'hub/library/armonly', '1', { platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }] });
  await pushIndex(reg, 'hub/library/both', '1');
  await pushImage(reg, 'hub/library/single', '1', { platform: { os: 'linux', architecture: 'amd64' } });
  const at = (rest: string): string => `${reg.host}/hub/library/${rest}`;
  const config = (platforms?: unknown) => ({
    rules: [{ from: 'docker.io', to: `${reg.host}/hub`, verify: true }],
    registries: { [reg.host]: { insecure: true } },
    ...(platforms === undefined ? {} : { verification: { platforms } }),
  });
  const amd = { nodeSelector: { 'kubernetes.io/arch': 'amd64' } };
  const arm = { nodeSelector: { 'kubernetes.io/arch': 'arm64' } };

  t.test('configured platforms, narrowed by the nodeSelector', async (t) => {
    const w = await webhook(config(['linux/amd64', 'linux/arm64']));
    t.teardown(() => w.verification.close());
    const cases: { image: string; spec?: Record<string, unknown>; rewritten: boolean; warning?: string }[] = [
      { image: 'both:1', rewritten: true },
      { image: 'armonly:1', rewritten: false, warning: 'mirrorgate: container "web": armonly:1 is not in the mirror yet for linux/amd64; kept' },
      { image: 'armonly:1', spec: arm, rewritten: true },
      { image: 'armonly:1', spec: amd, rewritten: false },
      { image: 'single:1', rewritten: false, warning: 'mirrorgate: container "web": single:1 is not in the mirror yet for linux/arm64; kept' },
      { image: 'single:1', spec: amd, rewritten: true },
      { image: 'single:1', spec: { nodeSelector: { 'kubernetes.io/os': 'windows', 'kubernetes.io/arch': 'amd64' } }, rewritten: false },
    ];
    for (const c of cases) {
      const a = await w.admit(c.image, c.spec);
      t.equal(imageOf(a), c.rewritten ? at(c.image) : undefined, `${c.image} ${JSON.stringify(c.spec ?? {})}`);
      if (c.warning) t.same(a.response.warnings, [c.warning]);
    }
    // Each image was asked once: the cache keeps its platforms and answers every platform set.
    t.match((await w.admit('both:1')).metrics, `mirrorgate_registry_checks_total{registry="${reg.host}",result="present"} 3`);
  });

  t.test('off: any manifest counts, as before', async (t) => {
    t.equal(imageOf(await admit(config('off'), 'armonly:1')), at('armonly:1'));
  });

  // The node cache against the real API server (nodes created as the kubelets would register them).
  t.test("nodes: the platforms of the cluster's nodes, from the node cache", realKubeTestOptions(), async (t) => {
    const kube = await startRealKube();
    t.teardown(() => kube.stop());
    const node = (name: string, arch: string) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': arch } } });
    await kube.must('POST', '/api/v1/nodes', node('a1', 'arm64'));
    await kube.must('POST', '/api/v1/nodes', node('x1', 'amd64'));
    const client = loadKubeClient({ file: kube.adminKubeconfig });
    const nodes = new NodeCache({ core: client.core, watch: client.watch, log: createLogger({ destination: new LogSink() }), backoff: { initialMs: 20, maxMs: 100 }, resyncMs: 0 }).start();
    t.teardown(() => nodes.stop());
    t.equal(await nodes.waitForSync(30_000), true, 'nodes are listed and watched');
    const w = await webhook(config(), { nodes });
    t.teardown(() => w.verification.close());
    const kept = await w.admit('armonly:1');
    t.equal(imageOf(kept), undefined, 'an amd64 node exists: the arm64-only index is not enough');
    t.match(kept.response.warnings?.[0], 'for linux/amd64');
    await kube.must('DELETE', '/api/v1/nodes/x1');
    await eventually('amd64 node gone', async () => nodes.platforms().length === 1);
    t.equal(imageOf(await w.admit('armonly:1')), at('armonly:1'), 'only arm64 nodes left: rewritten');
    t.equal(imageOf(await w.admit('single:1')), undefined, 'an amd64-only image is no use now');
  });

});
