/**
 * `pinDigest: true` end to end through POST /mutate against real registries (Debian's
 * docker-registry), with multi-arch indexes pushed through the distribution API: the
 * rewrite names the digest the mirror answered (for an index, the index digest), by HEAD
 * and by the platform-aware GET; the original-images annotation keeps the tag; audit says
 * what it would pin; no pin without a verified answer.
 */
import net from 'node:net';
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { Verification } from '../../src/verify/setup.js';
import { patchOf, review, testApp } from '../support/app.js';
import { pushImage, pushIndex, startRegistry } from '../support/registry.js';

const json = { 'content-type': 'application/json' };

async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

async function admit(raw: Record<string, unknown>, image: string) {
  const { app, metrics, log } = testApp(raw, { verifier: { verify: (targets, budgetMs, opts) => verification.verifier.verify(targets, budgetMs, opts) } });
  const verification = await Verification.start(validateConfig(raw), { metrics, log, now: () => performance.now() });
  try {
    const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'web', image }] } } });
    const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: body });
    const response = res.json().response as Record<string, any>;
    const patch = (patchOf(response) ?? []) as Record<string, any>[];
    const annotations = (patch.find((o) => o.path === '/metadata/annotations')?.value ?? {}) as Record<string, string>;
    return { response, image: patch.find((o) => o.path === '/spec/containers/0/image')?.value as string | undefined, annotations };
  } finally {
    verification.close();
  }
}

t.test('pinDigest against a real registry', async (t) => {
  const [a, b] = await Promise.all([startRegistry(), startRegistry()]);
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  const index = await pushIndex(a, 'hub/library/nginx', '1.25');
  const list = await pushIndex(a, 'hub/library/redis', '7', { format: 'docker' });
  const onB = await pushIndex(b, 'hub/library/redis', '7', { content: 'another build' });
  const single = await pushImage(a, 'hub/library/busybox', '1.36');
  const rule = (to: string | string[]) => ({ from: 'docker.io', to, verify: true, pinDigest: true });
  const config = (platforms: unknown, to: string | string[] = `${a.host}/hub`, extra: Record<string, unknown> = {}) => ({
    rules: [rule(to)],
    registries: { [a.host]: { insecure: true }, [b.host]: { insecure: true } },
    verification: { platforms },
    ...extra,
  });

  for (const platforms of ['off', ['linux/amd64', 'linux/arm64']]) {
    t.test(`platforms ${JSON.stringify(platforms)} (${platforms === 'off' ? 'HEAD' : 'GET'}): the index digest is pinned`, async (t) => {
      const r = await admit(config(platforms), 'nginx:1.25');
      t.equal(r.image, `${a.host}/hub/library/nginx:1.25@${index}`);
      t.same(JSON.parse(r.annotations['mirrorgate.io/original-images'] ?? '{}'), { web: 'nginx:1.25' }, 'the original keeps its tag');
      t.equal(r.response.warnings, undefined);
      t.same(JSON.parse(r.response.auditAnnotations?.rewritten ?? '{}'), { web: `${a.host}/hub/library/nginx:1.25@${index}` });
      t.equal((await admit(config(platforms), 'redis:7')).image, `${a.host}/hub/library/redis:7@${list}`, 'a Docker manifest list too');
      t.equal((await admit(config(platforms === 'off' ? 'off' : ['linux/amd64']), 'busybox:1.36')).image, `${a.host}/hub/library/busybox:1.36@${single}`, 'a single image: its manifest digest');
    });
  }

  t.test('an image named by digest is left pinned as it is', async (t) => {
    t.equal((await admit(config('off'), `nginx:1.25@${index}`)).image, `${a.host}/hub/library/nginx:1.25@${index}`);
  });

  t.test('the target that served is the one pinned', async (t) => {
    const r = await admit(config('off', [`${a.host}/hub2`, `${b.host}/hub`]), 'redis:7');
    t.equal(r.image, `${b.host}/hub/library/redis:7@${onB}`);
    t.not(onB, list);
  });

  t.test('audit says what it would pin, and patches nothing', async (t) => {
    const r = await admit(config('off', `${a.host}/hub`, { mode: 'audit' }), 'nginx:1.25');
    t.equal(r.response.patch, undefined);
    t.same(r.response.warnings, [`mirrorgate: container "web": nginx:1.25 would be rewritten to ${a.host}/hub/library/nginx:1.25@${index}`]);
    t.same(JSON.parse(r.response.auditAnnotations?.['would-rewrite'] ?? '{}'), { web: `${a.host}/hub/library/nginx:1.25@${index}` });
  });

  t.test('never pins without a verified answer', async (t) => {
    const down = `127.0.0.1:${await closedPort()}`;
    const raw = { rules: [rule(`${down}/hub`)], registries: { [down]: { insecure: true } }, verification: { platforms: 'off', onUnreachable: 'rewrite' } };
    const r = await admit(raw, 'nginx:1.25');
    t.equal(r.image, `${down}/hub/library/nginx:1.25`, 'onUnreachable rewrite: rewritten, with no digest');
    t.same(r.response.warnings, ['mirrorgate: container "web": not pinned to a digest: the mirror could not be asked (onUnreachable: rewrite)']);
    const absent = await admit(config('off'), 'nginx:1.26');
    t.equal(absent.image, undefined, 'absent: the original stays');
    t.same(absent.response.warnings, ['mirrorgate: container "web": nginx:1.26 is not in the mirror yet; kept']);
  });
});
