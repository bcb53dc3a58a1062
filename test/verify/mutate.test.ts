/**
 * End to end through POST /mutate with a real registry as the mirror: present, absent,
 * unreachable (each onUnreachable), and the policy's denial when the fallback is not allowed.
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

async function admit(host: string, extra: Record<string, unknown>, image = 'nginx:1.14.2', url = '/mutate?timeout=10s') {
  const raw = {
    rules: [{ from: 'docker.io', to: `${host}/dockerhub`, verify: true }],
    registries: { [host]: { insecure: true } },
    ...extra,
  };
  // The verifier shares the app's metrics and log, so it is made after the app.
  const { app, metrics, log } = testApp(raw, { verifier: { verify: (targets, budgetMs) => verification.verifier.verify(targets, budgetMs) } });
  const verification = await Verification.start(validateConfig(raw), { metrics, log, now: () => performance.now() });
  const { uid, body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'web', image }] } } });
  const res = await app.inject({ method: 'POST', url, headers: json, payload: body });
  verification.close();
  const out = res.json();
  return { uid, response: out.response, metrics };
}

t.test('with a running mirror', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  await pushImage(reg, 'dockerhub/library/nginx', '1.14.2');
  const mirror = `${reg.host}/dockerhub/library/nginx:1.14.2`;

  t.test('present: rewritten', async (t) => {
    const { uid, response, metrics } = await admit(reg.host, {});
    t.equal(response.uid, uid);
    const text = await metrics.registry.metrics();
    t.match(text, new RegExp(`mirrorgate_registry_checks_total\\{registry="${reg.host}",result="present"\\} 1`));
    t.match(text, new RegExp(`mirrorgate_registry_checks_total\\{registry="${reg.host}",result="absent"\\} 0`), 'pre-set to zero');
    t.match(text, /mirrorgate_registry_check_duration_seconds_count 1/);
    t.equal(response.allowed, true);
    t.same(patchOf(response)?.[0], { op: 'replace', path: '/spec/containers/0/image', value: mirror });
    t.equal(response.warnings, undefined);
  });

  t.test('absent: the original is kept, with a warning', async (t) => {
    const { response } = await admit(reg.host, {}, 'nginx:1.15');
    t.equal(response.allowed, true);
    t.notOk(JSON.stringify(patchOf(response) ?? []).includes('/image'), 'no image change');
    t.same(response.warnings, ['mirrorgate: container "web": nginx:1.15 is not in the mirror yet; kept']);
  });

  t.test('absent under a policy that does not allow the original: denied, saying it is not in the mirror yet', async (t) => {
    const { response } = await admit(reg.host, { policy: { allowedRegistries: [reg.host] } }, 'nginx:1.15');
    t.equal(response.allowed, false);
    t.match(response.status.message, 'container "web"');
    t.match(response.status.message, `its mirror copy ${reg.host}/dockerhub/library/nginx:1.15 is not in the mirror yet`);
  });

  t.test('present under the same policy: admitted with the mirror image', async (t) => {
    const { response } = await admit(reg.host, { policy: { allowedRegistries: [reg.host] } });
    t.equal(response.allowed, true);
    t.same(patchOf(response)?.[0], { op: 'replace', path: '/spec/containers/0/image', value: mirror });
  });
});

t.test('unreachable mirror: onUnreachable decides', async (t) => {
  const host = `127.0.0.1:${await closedPort()}`;
  const target = `${host}/dockerhub/library/nginx:1.14.2`;

  t.test('original (default): kept, with a warning', async (t) => {
    const { response, metrics } = await admit(host, {});
    t.equal(response.allowed, true);
    t.equal(response.patch, undefined);
    t.same(response.warnings, ['mirrorgate: container "web": mirror unreachable; kept nginx:1.14.2']);
    t.match(await metrics.registry.metrics(), /mirrorgate_admission_requests_total\{operation="create",result="allowed"\} 1/);
  });

  t.test('rewrite: rewritten anyway', async (t) => {
    const { response } = await admit(host, { verification: { onUnreachable: 'rewrite' } });
    t.equal(response.allowed, true);
    t.same(patchOf(response)?.[0], { op: 'replace', path: '/spec/containers/0/image', value: target });
  });

  t.test('deny: denied, saying the mirror could not be checked', async (t) => {
    const { response } = await admit(host, { verification: { onUnreachable: 'deny' } });
    t.equal(response.allowed, false);
    t.match(response.status.message, `container "web": cannot verify that ${target} is in the mirror (registry unreachable)`);
  });

  t.test('original under a policy that does not allow the original: denied', async (t) => {
    const { response } = await admit(host, { policy: { allowedRegistries: [host] } });
    t.equal(response.allowed, false);
    t.match(response.status.message, `the mirror could not be checked for ${target}`);
  });
});

t.test('a mirror that never answers: the ?timeout= budget bounds the wait', async (t) => {
  const sockets = new Set<net.Socket>();
  const hole = net.createServer((s) => {
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
  // timeoutMs allows 30 s; the API server's ?timeout=1s leaves 750 ms.
  const { response } = await admit(host, { verification: { timeoutMs: 30000 } }, 'nginx:1.14.2', '/mutate?timeout=1s');
  t.equal(response.allowed, true);
  t.same(response.warnings, ['mirrorgate: container "web": mirror unreachable; kept nginx:1.14.2']);
});
