import t from 'tap';
import { patchOf, review, testApp } from '../support/app.js';

const json = { 'content-type': 'application/json' };

t.test('CREATE: patched answer with the uid, minimal operations', async (t) => {
  const { app, logs, metrics } = testApp();
  const { uid, body } = review();
  const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: body });
  t.equal(res.statusCode, 200);
  const out = res.json();
  t.equal(out.apiVersion, 'admission.k8s.io/v1');
  t.equal(out.kind, 'AdmissionReview');
  t.equal(out.response.uid, uid);
  t.equal(out.response.allowed, true);
  t.equal(out.response.patchType, 'JSONPatch');
  t.same(patchOf(out.response), [
    { op: 'replace', path: '/spec/containers/0/image', value: 'mirror.example.com/dockerhub/library/nginx:1.14.2' },
    { op: 'add', path: '/metadata/annotations', value: { 'mirrorgate.io/original-images': '{"web":"nginx:1.14.2"}' } },
    { op: 'add', path: '/spec/imagePullSecrets', value: [{ name: 'mirror-pull' }] },
  ]);
  const line = logs.find('admission')[0];
  t.match(line, { uid, namespace: 'team-a', operation: 'CREATE', decision: 'patched', rewrites: 1 });
  t.type(line?.durationMs, 'number');
  const text = await metrics.registry.metrics();
  t.match(text, /mirrorgate_admission_requests_total\{operation="create",result="patched"\} 1/);
  t.match(text, /mirrorgate_image_rewrites_total\{source_registry="docker.io",target_registry="mirror.example.com",mode="enforce"\} 1/);
  t.match(text, /mirrorgate_admission_duration_seconds_count 1/);
});

t.test('no change: allowed without patch or patchType', async (t) => {
  const { app } = testApp();
  const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'a', image: 'registry.k8s.io/pause:3.9' }] } } });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
  t.same(out.response, { uid: out.response.uid, allowed: true });
});

t.test('denied by policy with a message naming container, image and the allowed list', async (t) => {
  const { app, metrics } = testApp();
  const { uid, body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'x', image: 'docker.io.evil.com/library/nginx:1' }] } } });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
  t.equal(out.response.uid, uid);
  t.equal(out.response.allowed, false);
  t.equal(out.response.status.code, 403);
  t.match(out.response.status.message, 'container "x": "docker.io.evil.com/library/nginx:1" is not from an allowed registry (allowed: mirror.example.com, registry.k8s.io)');
  t.equal(out.response.patch, undefined);
  t.match(await metrics.registry.metrics(), /mirrorgate_policy_violations_total\{registry="docker.io.evil.com",mode="enforce"\} 1/);
});

t.test('audit mode: warnings and audit annotations, no patch, no denial', async (t) => {
  const { app, metrics } = testApp({ ...testAppConfig(), mode: 'audit' });
  const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'web', image: 'nginx:1.14.2' }, { name: 'x', image: 'evil.io/x:1' }] } } });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
  t.equal(out.response.allowed, true);
  t.equal(out.response.patch, undefined);
  t.equal(out.response.patchType, undefined);
  t.same(out.response.warnings, [
    'mirrorgate: container "web": nginx:1.14.2 would be rewritten to mirror.example.com/dockerhub/library/nginx:1.14.2',
    'mirrorgate: container "x": "evil.io/x:1" is not from an allowed registry (allowed: mirror.example.com, registry.k8s.io)',
  ]);
  t.same(Object.keys(out.response.auditAnnotations).sort(), ['violations', 'would-rewrite'], 'plain keys, no prefix');
  const text = await metrics.registry.metrics();
  t.match(text, /mirrorgate_image_rewrites_total\{source_registry="docker.io",target_registry="mirror.example.com",mode="audit"\} 1/);
  t.match(text, /mirrorgate_policy_violations_total\{registry="evil.io",mode="audit"\} 1/);
});

t.test('namespace audit override in an enforcing cluster', async (t) => {
  const { app } = testApp(undefined, { namespaces: { mode: (ns) => (ns === 'trial' ? 'audit' : undefined), labels: () => undefined } });
  const { body } = review({ namespace: 'trial', object: { metadata: {}, spec: { containers: [{ name: 'x', image: 'evil.io/x:1' }] } } });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
  t.equal(out.response.allowed, true);
  t.ok(out.response.warnings.length > 0);
});

t.test('dryRun gets the same answer but leaves no trace in rewrite metrics', async (t) => {
  const { app, metrics } = testApp();
  const { body } = review({ dryRun: true });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
  t.equal(out.response.patchType, 'JSONPatch');
  t.notMatch(await metrics.registry.metrics(), /mirrorgate_image_rewrites_total\{/);
});

t.test('controller-made pods without name or namespace use the request namespace', async (t) => {
  const { app, logs } = testApp();
  const { body } = review({ namespace: 'team-b', object: { spec: { containers: [{ name: 'web', image: 'nginx' }] } } });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
  t.equal(out.response.allowed, true);
  t.same(patchOf(out.response)?.[1], { op: 'add', path: '/metadata', value: { annotations: { 'mirrorgate.io/original-images': '{"web":"nginx"}' } } });
  t.equal(logs.find('admission')[0]?.namespace, 'team-b');
});

t.test('other kinds and operations are allowed untouched', async (t) => {
  const { app } = testApp();
  const cases = [
    review({ kind: { group: 'apps', version: 'v1', kind: 'Deployment' }, resource: 'deployments' }),
    review({ operation: 'DELETE', object: null as unknown as undefined }),
    review({ operation: 'CONNECT', subResource: 'exec' }),
    review({ operation: 'UPDATE', subResource: 'status' }),
  ];
  for (const c of cases) {
    const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: c.body })).json();
    t.same(out.response, { uid: c.uid, allowed: true });
  }
});

const malformed: { name: string; payload: string | Buffer; headers?: Record<string, string>; status: number; message: RegExp }[] = [
  { name: 'malformed JSON', payload: '{"apiVersion":', status: 400, message: /malformed JSON/ },
  { name: 'empty body', payload: '', status: 400, message: /empty body|body/i },
  { name: 'not an AdmissionReview', payload: JSON.stringify({ hello: 'world' }), status: 400, message: /kind must be "AdmissionReview"/ },
  { name: 'v1beta1 review', payload: JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: {} }), status: 400, message: /admissionReviewVersions/ },
  { name: 'array body', payload: '[]', status: 400, message: /JSON object/ },
  { name: 'missing uid', payload: JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { kind: {} } }), status: 400, message: /request.uid/ },
  { name: 'uid of the wrong type', payload: JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 5 } }), status: 400, message: /request.uid/ },
  { name: 'deeply nested JSON', payload: '['.repeat(100_000) + ']'.repeat(100_000), status: 400, message: /nested deeper than 100/ },
  { name: 'deeply nested with a uid too long to answer', payload: JSON.stringify({ request: { uid: 'u'.repeat(257), x: nest(150) } }), status: 400, message: /nested deeper/ },
  { name: 'malformed JSON with a uid too long to answer', payload: `{"request":{"uid":"${'u'.repeat(257)}",`, status: 400, message: /malformed JSON/ },
  { name: 'malformed JSON with a uid below request.object only', payload: '{"request":{"object":{"uid":"abc"},', status: 400, message: /malformed JSON/ },
  { name: 'wrong content type', payload: 'x', headers: { 'content-type': 'text/plain' }, status: 415, message: /application\/json/ },
  { name: 'over 8 MiB', payload: Buffer.alloc(8 * 1024 * 1024 + 10, 0x20), status: 413, message: /larger than/ },
];

function nest(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

t.test('bad input: 4xx with a message, never 500, and the next request is served', async (t) => {
  const { app } = testApp();
  for (const c of malformed) {
    t.test(c.name, async (t) => {
      const res = await app.inject({ method: 'POST', url: '/mutate', headers: c.headers ?? json, payload: c.payload });
      t.equal(res.statusCode, c.status, res.body.slice(0, 200));
      t.match(res.json().message, c.message);
      const next = review();
      const ok = await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: next.body });
      t.equal(ok.json().response.uid, next.uid, 'next good request served');
    });
  }
});

t.test('a review with a readable uid is always answered with it: allowed false, code 400', async (t) => {
  const { app, metrics } = testApp();
  const cases = [
    { name: 'containers of the wrong type', ...review({ object: { spec: { containers: { name: 'x' } } } }), message: /request.object.spec.containers: must be an array/ },
    { name: 'a malformed kind', ...review({ kind: 'Pod' as never }), message: /request.kind must be/ },
    { name: 'an oldObject that is not an object', ...review({ operation: 'UPDATE', oldObject: 'x' }), message: /request.oldObject must be an object/ },
    { name: 'JSON nested deeper than 100 levels inside the pod', ...review({ object: { metadata: {}, spec: { x: nest(150) } } }), message: /nested deeper than 100/ },
  ];
  // Bodies that are not JSON at all, but carry the uid before they break.
  const cut = review();
  const unclosed = review();
  const bodies: { name: string; uid: string; payload: string; message: RegExp }[] = [
    ...cases.map((c) => ({ name: c.name, uid: c.uid, payload: JSON.stringify(c.body), message: c.message })),
    { name: 'a review cut off in the middle of the pod', uid: cut.uid, payload: JSON.stringify(cut.body).slice(0, -40), message: /malformed JSON/ },
    { name: 'a review with garbage after the uid', uid: unclosed.uid, payload: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"${unclosed.uid}","object":{"spec":}}}`, message: /malformed JSON/ },
  ];
  for (const c of bodies) {
    const uid = c.uid;
    const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: c.payload });
    t.equal(res.statusCode, 200, c.name);
    const out = res.json();
    t.equal(out.kind, 'AdmissionReview', c.name);
    t.equal(out.response.uid, uid, `${c.name}: the request's uid`);
    t.equal(out.response.allowed, false, c.name);
    t.equal(out.response.status.code, 400, c.name);
    t.equal(out.response.status.reason, 'BadRequest', c.name);
    t.match(out.response.status.message, c.message, c.name);
  }
  t.match(await metrics.registry.metrics(), /mirrorgate_admission_requests_total\{operation="(create|other)",result="invalid"\} \d/);
});

t.test('hostile sizes are repeated only cut, with their length', async (t) => {
  const { app, logs } = testApp();
  const name = 'n'.repeat(2 * 1024 * 1024);
  const namespace = 's'.repeat(1024 * 1024);
  const image = `M001${'Y'.repeat(1024 * 1024)}`;
  const { uid, body } = review({ namespace, object: { metadata: {}, spec: { containers: [{ name, image }] } } });
  const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', headers: json, payload: JSON.stringify(body) });
  t.ok(res.body.length < 8 * 1024, `the answer is ${res.body.length} bytes`);
  const out = res.json();
  t.equal(out.response.uid, uid);
  t.equal(out.response.allowed, false);
  t.match(out.response.status.message, /container "n{253}"…\(2097152 chars\)/, 'container name cut with its length');
  t.match(out.response.status.message, /…\(1048580 chars\)/, 'image cut with its length');
  const line = JSON.stringify(logs.find('admission')[0]);
  t.ok(line.length < 8 * 1024, `the admission line is ${line.length} bytes`);
  t.match(line, /…\(1048576 chars\)/, 'namespace cut in the log line');
});

t.test('a denied pod rewrote nothing: no rewrite counted for its other containers', async (t) => {
  const { app, metrics } = testApp();
  const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'ok', image: 'nginx:1' }, { name: 'bad', image: 'evil.example.net/x:1' }] } } });
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload: JSON.stringify(body) })).json();
  t.equal(out.response.allowed, false);
  const text = await metrics.registry.metrics();
  t.notMatch(text, /mirrorgate_image_rewrites_total\{source_registry="docker.io"[^}]*\} [1-9]/, 'nothing counted as rewritten');
  t.match(text, /mirrorgate_policy_violations_total\{registry="evil.example.net",mode="enforce"\} 1/);
});

t.test('a 3 MiB UPDATE review is accepted', async (t) => {
  const { app } = testApp();
  const containers = Array.from({ length: 40 }, (_, i) => ({
    name: `c${i}`,
    image: 'registry.k8s.io/pause:3.9',
    env: Array.from({ length: 200 }, (_, j) => ({ name: `VAR_${j}`, value: 'x'.repeat(160) })),
  }));
  const old = { metadata: { name: 'big' }, spec: { containers } };
  const object = structuredClone(old);
  object.spec.containers[3]!.image = 'nginx:1.25';
  const { uid, body } = review({ operation: 'UPDATE', object, oldObject: old });
  const payload = JSON.stringify(body);
  t.ok(payload.length > 2.5 * 1024 * 1024, `body is ${payload.length} bytes`);
  const out = (await app.inject({ method: 'POST', url: '/mutate', headers: json, payload })).json();
  t.equal(out.response.uid, uid);
  t.same(patchOf(out.response), [{ op: 'replace', path: '/spec/containers/3/image', value: 'mirror.example.com/dockerhub/library/nginx:1.25' }]);
});

t.test('internal error answers a well-formed review per failurePolicy', async (t) => {
  for (const failurePolicy of ['Ignore', 'Fail'] as const) {
    t.test(failurePolicy, async (t) => {
      const broken = testApp({ ...testAppConfig(), failurePolicy }, {
        namespaces: { mode: () => { throw new Error('namespace lookup exploded'); }, labels: () => undefined },
      });
      const { uid, body } = review();
      const out = (await broken.app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
      t.equal(out.response.uid, uid);
      t.equal(out.response.allowed, failurePolicy === 'Ignore');
      if (failurePolicy === 'Fail') t.match(out.response.status.message, /internal error/);
      else t.match(out.response.warnings[0], /internal error/);
      // The error came before the core labelled the operation.
      t.match(await broken.metrics.registry.metrics(), /mirrorgate_admission_requests_total\{operation="other",result="error"\} 1/);
      t.equal(broken.logs.find('internal error during admission').length, 1, 'logged why');
    });
  }
});

t.test('observers run after the answer is fixed: a failing one is logged and counted, never changes the answer', async (t) => {
  const seen: string[] = [];
  for (const failurePolicy of ['Ignore', 'Fail'] as const) {
    const app = testApp({ ...testAppConfig(), failurePolicy }, {
      observers: [
        { name: 'report', observe: () => { throw new Error('report exploded'); } },
        { name: 'copy-on-miss', observe: ({ request }) => { seen.push(request.uid); } },
      ],
    });
    const { uid, body } = review();
    const out = (await app.app.inject({ method: 'POST', url: '/mutate', headers: json, payload: body })).json();
    t.equal(out.response.uid, uid);
    t.equal(out.response.allowed, true, `${failurePolicy}: the decided answer stands`);
    t.match(patchOf(out.response), [{ op: 'replace', path: '/spec/containers/0/image', value: 'mirror.example.com/dockerhub/library/nginx:1.14.2' }], `${failurePolicy}: with its patch`);
    t.equal(out.response.warnings, undefined, 'no internal-error warning');
    t.equal(seen.at(-1), uid, 'the next observer still ran');
    const text = await app.metrics.registry.metrics();
    t.match(text, /mirrorgate_admission_requests_total\{operation="create",result="patched"\} 1/);
    t.match(text, /mirrorgate_observer_failures_total\{observer="report"\} 1/);
    t.match(text, /mirrorgate_image_rewrites_total\{[^}]*\} 1/, 'metrics recorded');
    const failed = app.logs.find('admission observer failed; the answer stands');
    t.equal(failed.length, 1);
    t.equal(failed[0]?.observer, 'report');
    t.equal(failed[0]?.uid, uid, 'logged with the request ids');
    t.equal(app.logs.find('internal error during admission').length, 0);
  }
});

t.test('health and readiness', async (t) => {
  let reasons: string[] = [];
  const { app } = testApp(undefined, { ready: () => reasons });
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
  reasons = ['shutting down'];
  const res = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(res.statusCode, 503);
  t.same(res.json().reasons, ['shutting down']);
  t.equal((await app.inject({ method: 'GET', url: '/nope' })).statusCode, 404);
});

function testAppConfig(): Record<string, unknown> {
  return {
    rules: [
      { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
      { from: 'quay.io', to: 'mirror.example.com/quay' },
    ],
    policy: { allowedRegistries: ['mirror.example.com', 'registry.k8s.io'] },
  };
}
