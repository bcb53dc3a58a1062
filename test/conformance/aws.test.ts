/**
 * aws/amazon-eks-pod-identity-webhook's own pkg/handler tests, converted by
 * scripts/conformance/aws into test/conformance/aws-eks-pod-identity-webhook.json, run
 * as admissions through mirrorgate's real /mutate route. The ServiceAccount carries the
 * annotations the upstream test gives its FakeServiceAccountCache (upstream's tests use
 * an in-memory cache too, so the lookup here is the same kind of in-memory source) and the
 * webhook flags become mirrorgate's identity.aws settings.
 *
 * Compared on the final pod: mirrorgate's patch applied to the pod as kube-apiserver does
 * (RFC 6902) must give exactly the pod upstream's expected patch gives. Cases listed in
 * aws-eks-pod-identity-webhook.differences.json must differ (each is in the README's
 * compatibility table, which this test checks names it); every other case must agree.
 */
import fjp from 'fast-json-patch';
import { readFileSync } from 'node:fs';
import t from 'tap';
import type { ServiceAccountInfo } from '../../src/core/identity/wiring.js';
import { patchOf, testApp } from '../support/app.js';

interface Case {
  id: string;
  file: string;
  test: string;
  line?: number;
  pod?: Record<string, unknown>;
  namespace?: string;
  serviceAccount: { namespace: string; name: string; annotations: Record<string, string> } | null;
  webhook: { region?: string; mountPath?: string; containerCredentials?: Record<string, string> };
  contentType?: string;
  body?: string;
  expect: { answer: 'patched' | 'unchanged' | 'denied' | 'httpError'; expectedPod?: unknown; message?: string; text?: string };
}
interface Fixture {
  upstream: { repository: string; commit: string; tag: string };
  cases: Case[];
}

const fixture = JSON.parse(readFileSync(new URL('./aws-eks-pod-identity-webhook.json', import.meta.url), 'utf8')) as Fixture;
const differences = JSON.parse(readFileSync(new URL('./aws-eks-pod-identity-webhook.differences.json', import.meta.url), 'utf8')) as Record<string, string>;
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

// The userInfo of upstream's getValidReview (handler_test.go).
const USER = { username: 'kubernetes-admin', uid: 'aws-iam-authenticator:111122223333:AROAR2TG44V5CLZCFPOQZ', groups: ['system:authenticated', 'system:masters'] };

type Outcome =
  | { answer: 'patched' | 'unchanged'; pod: unknown; patch: unknown[] | undefined }
  | { answer: 'denied'; message: string }
  | { answer: 'httpError'; status: number };

async function admit(c: Case): Promise<Outcome> {
  // mirrorgate has no setting for upstream's --mount-path, nor EKS Pod Identity associations
  // (--watch-container-credentials): those cases run with what mirrorgate has.
  const config = { identity: { aws: c.webhook.region === undefined ? {} : { region: c.webhook.region } } };
  const sa = c.serviceAccount;
  const serviceAccounts = {
    get: async (namespace: string, name: string): Promise<ServiceAccountInfo | undefined> =>
      sa !== null && sa.namespace === namespace && sa.name === name ? { namespace, name, annotations: sa.annotations } : undefined,
  };
  const { app } = testApp(config, { serviceAccounts });
  let payload: string;
  if (c.pod !== undefined) {
    payload = JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid: '918ef1dc-928f-4525-99ef-988389f263c3',
        kind: { group: '', version: 'v1', kind: 'Pod' },
        resource: { group: '', version: 'v1', resource: 'pods' },
        namespace: c.namespace ?? 'default',
        operation: 'CREATE',
        userInfo: USER,
        object: c.pod,
        oldObject: null,
        dryRun: false,
      },
    });
  } else payload = c.body ?? '';
  const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: { 'content-type': c.contentType ?? 'application/json' }, payload });
  await app.close();
  if (res.statusCode !== 200) return { answer: 'httpError', status: res.statusCode };
  const response = res.json<{ response: { allowed: boolean; patch?: string; status?: { message?: string } } }>().response;
  if (!response.allowed) return { answer: 'denied', message: response.status?.message ?? '' };
  const patch = patchOf(response);
  if (patch === undefined) return { answer: 'unchanged', pod: c.pod, patch };
  // validate=true: every operation must be valid RFC 6902 against this pod.
  const pod = fjp.applyPatch(structuredClone(c.pod), patch as fjp.Operation[], true, false).newDocument;
  return { answer: 'patched', pod, patch };
}

/** undefined when mirrorgate's answer gives upstream's result, else what differs. */
function compare(c: Case, got: Outcome): string | undefined {
  const want = c.expect;
  switch (want.answer) {
    case 'patched':
    case 'unchanged': {
      if (got.answer === 'denied') return `denied: ${got.message}`;
      if (got.answer === 'httpError') return `HTTP ${got.status}`;
      const expected = want.answer === 'patched' ? want.expectedPod : c.pod;
      return JSON.stringify(canonical(got.pod)) === JSON.stringify(canonical(expected)) ? undefined : `final pod differs:\n  got  ${JSON.stringify(got.pod)}\n  want ${JSON.stringify(expected)}`;
    }
    case 'denied':
      // Upstream answers allowed: false, so the API server refuses the pod whatever the
      // failurePolicy; an HTTP error is a failed call, which failurePolicy decides.
      return got.answer === 'denied' ? undefined : got.answer === 'httpError' ? `HTTP ${got.status} instead of a denial` : `admitted (${got.answer})`;
    case 'httpError':
      return got.answer === 'httpError' ? undefined : `answered as a review (${got.answer})`;
  }
}

/**
 * Object keys sorted (JSON gives key order no meaning), and spec.volumes sorted by name: the
 * API declares that list a map keyed by name (`+listType=map`, `+listMapKey=name`), so
 * upstream inserting its token volume first and mirrorgate appending it is the same pod.
 * Every other list keeps its order (env order matters for `$(VAR)` expansion).
 */
function canonical(v: unknown, path = ''): unknown {
  if (Array.isArray(v)) {
    const items = v.map((x, i) => canonical(x, `${path}/${i}`));
    if (path !== '/spec/volumes') return items;
    const nameOf = (x: unknown): string => (x !== null && typeof x === 'object' && typeof (x as { name?: unknown }).name === 'string' ? (x as { name: string }).name : '');
    return items.sort((a, b) => (nameOf(a) < nameOf(b) ? -1 : nameOf(a) > nameOf(b) ? 1 : 0));
  }
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k], `${path}/${k}`)]));
  }
  return v;
}

t.test(`${fixture.upstream.repository} ${fixture.upstream.tag} (${fixture.upstream.commit.slice(0, 12)})`, async (t) => {
  t.ok(fixture.cases.length >= 34, 'the whole converted table is here');
  let same = 0;
  let different = 0;
  for (const c of fixture.cases) {
    const got = await admit(c);
    const diff = compare(c, got);
    const documented = differences[c.id];
    const where = `${c.file} ${c.id}${c.line === undefined ? '' : ` (line ${c.line})`}`;
    if (documented === undefined) {
      t.equal(diff, undefined, where);
      if (diff === undefined) same++;
    } else {
      t.not(diff, undefined, `${where}: documented as different (${documented}), so it must differ`);
      if (diff !== undefined) different++;
    }
    if (got.answer === 'patched') {
      // kube-apiserver may call the webhook again on the patched pod: nothing more to do.
      const again = await admit({ ...c, pod: got.pod as Record<string, unknown> });
      t.equal(again.answer, 'unchanged', `${where}: a second pass over the patched pod changes nothing`);
    }
  }
  for (const id of Object.keys(differences)) {
    t.ok(fixture.cases.some((c) => c.id === id), `difference ${id} names a case`);
    // Named in the README as `containercredentials/rawPodSkip` or `TestModifierHandler/nilBody`.
    const name = id.replace(/^TestUpdatePodSpec\//, '').replace(/\.pod\.yaml$/, '');
    t.ok(readme.includes(`\`${name}\``), `README's compatibility table names ${name}`);
  }
  t.comment(`${fixture.cases.length} cases: ${same} same as upstream, ${different} documented differences`);
});
