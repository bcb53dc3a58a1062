/**
 * Golden admission fixtures (test/fixtures/admission/*.json): each review is sent
 * through the real route, the answer compared with `expect`, and the patched pod sent
 * again to check that the API server's reinvocation changes nothing.
 */
import fjp from 'fast-json-patch';
import { readdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { patchOf, testApp } from '../support/app.js';

const dir = new URL('../fixtures/admission/', import.meta.url);
const config = {
  rules: [
    { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
    { from: 'quay.io', to: 'mirror.example.com/quay' },
    { from: 'ghcr.io', to: 'mirror.example.com/ghcr' },
  ],
  policy: { allowedRegistries: ['mirror.example.com', 'registry.k8s.io'] },
  pullSecrets: [{ name: 'mirror-pull', registries: ['mirror.example.com'] }],
};

interface Fixture {
  description: string;
  config?: unknown;
  review: { request: { uid: string; object: unknown } };
  expect: { allowed: boolean; patch?: unknown[] | null; warnings?: string[]; message?: string; auditAnnotations?: string[] };
}

const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
t.ok(files.length >= 6, 'fixtures are there');

for (const file of files) {
  t.test(file, async (t) => {
    const fx = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as Fixture;
    t.comment(fx.description);
    const { app } = testApp(fx.config ?? config);
    const send = async (review: unknown) =>
      (await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(review) })).json().response;
    const response = await send(fx.review);
    t.equal(response.uid, fx.review.request.uid);
    t.equal(response.allowed, fx.expect.allowed);
    if (fx.expect.patch !== undefined) t.same(patchOf(response) ?? null, fx.expect.patch, 'patch');
    if (fx.expect.patch === null) t.equal(response.patchType, undefined, 'no patchType without a patch');
    if (fx.expect.warnings !== undefined) t.same(response.warnings ?? [], fx.expect.warnings, 'warnings');
    if (fx.expect.message !== undefined) t.equal(response.status?.message, fx.expect.message, 'message');
    if (fx.expect.auditAnnotations !== undefined) t.same(Object.keys(response.auditAnnotations ?? {}).sort(), fx.expect.auditAnnotations, 'audit annotation keys');
    const ops = patchOf(response);
    if (ops) {
      const patched = fjp.applyPatch(structuredClone(fx.review.request.object), ops as fjp.Operation[], true, false).newDocument;
      const again = structuredClone<{ request: { object: unknown; uid: string } }>(fx.review);
      again.request.object = patched;
      again.request.uid = `${fx.review.request.uid}-again`;
      const second = await send(again);
      t.equal(second.allowed, true);
      t.equal(second.patch, undefined, 'second pass over the patched pod changes nothing');
    }
  });
}
