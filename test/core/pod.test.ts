import fjp from 'fast-json-patch';
import t from 'tap';
import { compilePolicy } from '../../src/core/policy.js';
import { compilePullSecrets } from '../../src/core/pull-secrets.js';
import { compileRules } from '../../src/core/rules.js';
import { planPod, readPod, type PlanInput, type Settings, MAX_WARNINGS } from '../../src/core/pod.js';

const { applyPatch, deepClone } = fjp;

function settings(opts: { policy?: string[]; secrets?: { name: string; registries: string[] }[]; verify?: boolean } = {}): Settings {
  const rules = compileRules([
    { from: 'docker.io', to: 'mirror.example.com/dockerhub', verify: opts.verify },
    { from: 'quay.io', to: 'mirror.example.com/quay' },
    { from: 'gcr.io', to: 'europe-docker.pkg.dev/acme/gcr' },
  ]);
  if (!rules.ok) throw new Error('rules');
  const policy = opts.policy ? compilePolicy(opts.policy) : undefined;
  if (policy && !policy.ok) throw new Error('policy');
  const secrets = compilePullSecrets(opts.secrets ?? []);
  if (!secrets.ok) throw new Error('secrets');
  return { ruleSet: rules.ruleSet, policy: policy?.policy, pullSecrets: secrets.pullSecrets };
}

type Pod = Record<string, any>;

function pod(spec: Pod, metadata: Pod = { generateName: 'web-', namespace: 'team-a' }): Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec };
}

function plan(p: Pod, s: Settings, extra: Partial<Omit<PlanInput, 'pod' | 'oldPod'>> & { old?: Pod } = {}) {
  const view = readPod(p);
  if (!view.ok) throw new Error(view.error);
  const oldView = extra.old ? readPod(extra.old) : undefined;
  if (oldView && !oldView.ok) throw new Error(oldView.error);
  return planPod(
    { operation: extra.operation ?? 'CREATE', subResource: extra.subResource ?? '', pod: view.pod, oldPod: oldView?.ok ? oldView.pod : undefined, mode: extra.mode ?? 'enforce' },
    s,
  );
}

/** Apply the plan's patch (RFC 6902, as the API server does) and return the result. */
function applied(p: Pod, ops: fjp.Operation[]): Pod {
  return applyPatch(deepClone(p), ops, true, false).newDocument;
}

t.test('CREATE rewrites every container list with minimal operations', async (t) => {
  const p = pod({
    initContainers: [{ name: 'init', image: 'busybox:1.36', restartPolicy: 'Always', futureField: { x: 1 } }],
    containers: [
      { name: 'web', image: 'nginx:1.14.2', env: [{ name: 'A', value: '1' }] },
      { name: 'ok', image: 'registry.k8s.io/pause:3.9' },
    ],
  });
  const r = plan(p, settings());
  t.same(r.operations.slice(0, 2), [
    { op: 'replace', path: '/spec/initContainers/0/image', value: 'mirror.example.com/dockerhub/library/busybox:1.36' },
    { op: 'replace', path: '/spec/containers/0/image', value: 'mirror.example.com/dockerhub/library/nginx:1.14.2' },
  ]);
  const out = applied(p, r.operations);
  t.equal(out.spec.initContainers[0].restartPolicy, 'Always', 'native sidecar field survives');
  t.same(out.spec.initContainers[0].futureField, { x: 1 }, 'unknown fields survive');
  t.same(out.spec.containers[0].env, [{ name: 'A', value: '1' }]);
  t.same(JSON.parse(out.metadata.annotations['mirrorgate.io/original-images']), { init: 'busybox:1.36', web: 'nginx:1.14.2' });
  const again = plan(out, settings());
  t.same(again.operations, [], 'second pass over the patched pod changes nothing');
});

t.test('a pod that needs no change gets no operations', async (t) => {
  const r = plan(pod({ containers: [{ name: 'a', image: 'registry.k8s.io/pause:3.9' }] }), settings());
  t.same(r.operations, []);
  t.same(r.warnings, []);
  t.equal(r.denial, undefined);
});

t.test('annotation key is escaped and existing annotations kept', async (t) => {
  const p = pod({ containers: [{ name: 'a', image: 'nginx' }] }, { name: 'x', annotations: { 'team/owner': 'a~b' } });
  const r = plan(p, settings());
  t.ok(r.operations.some((o) => o.path === '/metadata/annotations/mirrorgate.io~1original-images'));
  const out = applied(p, r.operations);
  t.equal(out.metadata.annotations['team/owner'], 'a~b');
});

t.test('reinvocation merges a new container into the original-images record', async (t) => {
  const first = pod({ containers: [{ name: 'a', image: 'nginx' }] });
  const out1 = applied(first, plan(first, settings()).operations);
  // A later webhook adds a sidecar; the API server calls us again.
  out1.spec.containers.push({ name: 'side', image: 'quay.io/x/side:1' });
  const r2 = plan(out1, settings());
  const out2 = applied(out1, r2.operations);
  t.same(JSON.parse(out2.metadata.annotations['mirrorgate.io/original-images']), { a: 'nginx', side: 'quay.io/x/side:1' });
  t.equal(out2.spec.containers[1].image, 'mirror.example.com/quay/x/side:1');
});

t.test('opt-out annotation skips rewriting but never policy', async (t) => {
  const p = pod({ containers: [{ name: 'a', image: 'nginx:1' }] }, { name: 'x', annotations: { 'mirrorgate.io/rewrite': 'false' } });
  const noPolicy = plan(p, settings());
  t.same(noPolicy.operations, []);
  t.equal(noPolicy.decisions[0]?.action, 'opted-out');
  const withPolicy = plan(p, settings({ policy: ['mirror.example.com'] }));
  t.match(withPolicy.denial, /container "a": "nginx:1" is not from an allowed registry \(allowed: mirror.example.com\)/);
});

t.test('static mirror pods are left alone', async (t) => {
  const p = pod({ containers: [{ name: 'a', image: 'evil.io/x:1' }] }, { name: 'x', annotations: { 'kubernetes.io/config.mirror': 'abc' } });
  const r = plan(p, settings({ policy: ['mirror.example.com'] }));
  t.same(r.operations, []);
  t.equal(r.denial, undefined);
  t.match(r.skipped, /mirror pod/);
});

t.test('policy: one bad container denies the pod, message names each', async (t) => {
  const p = pod({
    containers: [
      { name: 'web', image: 'nginx:1' },
      { name: 'bad', image: 'docker.io.evil.com/library/nginx:1' },
      { name: 'worse', image: 'Not Valid' },
    ],
  });
  const r = plan(p, settings({ policy: ['mirror.example.com', '*.pkg.dev'] }));
  t.same(r.operations, [], 'a denied pod gets no patch');
  t.match(r.denial, /container "bad": "docker.io.evil.com\/library\/nginx:1" is not from an allowed registry/);
  t.match(r.denial, /container "worse": invalid image reference "Not Valid"/);
  t.notMatch(r.denial, /container "web"/, 'the rewritten container is fine');
  t.ok(r.auditAnnotations.violations);
});

t.test('policy judged on the final image: rewritten images pass', async (t) => {
  const r = plan(pod({ containers: [{ name: 'a', image: 'gcr.io/distroless/static:nonroot' }] }), settings({ policy: ['*.pkg.dev'] }));
  t.equal(r.denial, undefined);
  t.equal((r.operations[0] as { value?: unknown } | undefined)?.value, 'europe-docker.pkg.dev/acme/gcr/distroless/static:nonroot');
});

t.test('invalid reference without policy is left alone', async (t) => {
  const r = plan(pod({ containers: [{ name: 'a', image: 'nginx:' }] }), settings());
  t.same(r.operations, []);
  t.equal(r.decisions[0]?.action, 'invalid');
});

t.test('audit: never patches or denies; warns and annotates', async (t) => {
  const p = pod({ containers: [{ name: 'web', image: 'nginx:1.14.2' }, { name: 'x', image: 'evil.io/x:1' }] });
  const r = plan(p, settings({ policy: ['mirror.example.com'], secrets: [{ name: 'mirror-pull', registries: ['mirror.example.com'] }] }), { mode: 'audit' });
  t.same(r.operations, []);
  t.equal(r.denial, undefined);
  t.same(r.warnings, [
    'mirrorgate: container "web": nginx:1.14.2 would be rewritten to mirror.example.com/dockerhub/library/nginx:1.14.2',
    'mirrorgate: container "x": "evil.io/x:1" is not from an allowed registry (allowed: mirror.example.com)',
  ]);
  t.same(JSON.parse(r.auditAnnotations['would-rewrite'] ?? '{}'), { web: 'mirror.example.com/dockerhub/library/nginx:1.14.2' });
  t.same(JSON.parse(r.auditAnnotations.violations ?? '[]')[0].container, 'x');
  for (const w of r.warnings) t.ok(w.length < 256, 'warning stays under the API server truncation limit');
});

t.test('audit: policy judged on the would-be image (rewritten ones pass)', async (t) => {
  const r = plan(pod({ containers: [{ name: 'web', image: 'nginx:1' }] }), settings({ policy: ['mirror.example.com'] }), { mode: 'audit' });
  t.equal(r.auditAnnotations.violations, undefined);
});

t.test('audit: many warnings are summarised', async (t) => {
  const containers = Array.from({ length: 20 }, (_, i) => ({ name: `c${i}`, image: `nginx:${i}` }));
  const r = plan(pod({ containers }), settings(), { mode: 'audit' });
  t.equal(r.warnings.length, MAX_WARNINGS);
  t.match(r.warnings.at(-1), /and 13 more/);
});

t.test('pull secrets', async (t) => {
  const s = settings({
    secrets: [
      { name: 'mirror-pull', registries: ['mirror.example.com'] },
      { name: 'ar-pull', registries: ['*.pkg.dev'] },
      { name: 'unused', registries: ['other.example.com'] },
    ],
  });
  t.test('added when a final image uses the registry', async (t) => {
    const p = pod({ containers: [{ name: 'a', image: 'nginx' }] });
    const r = plan(p, s);
    t.same(applied(p, r.operations).spec.imagePullSecrets, [{ name: 'mirror-pull' }]);
    t.same(r.addedPullSecrets, ['mirror-pull'], 'the plan names what it added');
  });
  t.test('appended to existing entries, never duplicated', async (t) => {
    const p = pod({ imagePullSecrets: [{ name: 'team' }, { name: 'mirror-pull' }], containers: [{ name: 'a', image: 'nginx' }, { name: 'b', image: 'gcr.io/x/y:1' }] });
    const r = plan(p, s);
    t.same(applied(p, r.operations).spec.imagePullSecrets, [{ name: 'team' }, { name: 'mirror-pull' }, { name: 'ar-pull' }]);
    t.same(r.addedPullSecrets, ['ar-pull'], 'only the one it added');
  });
  t.test('needed by an image already on the mirror', async (t) => {
    const p = pod({ containers: [{ name: 'a', image: 'mirror.example.com/dockerhub/library/nginx:1' }] });
    const r = plan(p, s);
    t.same(r.operations, [{ op: 'add', path: '/spec/imagePullSecrets', value: [{ name: 'mirror-pull' }] }]);
  });
  t.test('never on UPDATE (immutable)', async (t) => {
    const old = pod({ containers: [{ name: 'a', image: 'registry.k8s.io/x:1' }] });
    const p = pod({ containers: [{ name: 'a', image: 'nginx:2' }] });
    const r = plan(p, s, { operation: 'UPDATE', old });
    t.same(r.operations, [{ op: 'replace', path: '/spec/containers/0/image', value: 'mirror.example.com/dockerhub/library/nginx:2' }]);
  });
});

t.test('UPDATE touches only changed images', async (t) => {
  const old = pod({ initContainers: [{ name: 'i', image: 'busybox:1' }], containers: [{ name: 'a', image: 'nginx:1' }, { name: 'b', image: 'redis:7' }] }, { name: 'p', annotations: {} });
  const p = deepClone(old);
  p.spec.containers[1].image = 'redis:7.2';
  p.metadata.labels = { changed: 'yes' };
  const r = plan(p, settings({ policy: ['mirror.example.com'] }), { operation: 'UPDATE', old });
  t.same(r.operations, [{ op: 'replace', path: '/spec/containers/1/image', value: 'mirror.example.com/dockerhub/library/redis:7.2' }], 'only the changed image, no annotation');
  t.equal(r.denial, undefined, 'unchanged third-party images of an old pod are not denied');
});

t.test('UPDATE cannot bypass policy', async (t) => {
  const old = pod({ containers: [{ name: 'a', image: 'mirror.example.com/x:1' }] }, { name: 'p' });
  const p = deepClone(old);
  p.spec.containers[0].image = 'evil.io/x:1';
  const r = plan(p, settings({ policy: ['mirror.example.com'] }), { operation: 'UPDATE', old });
  t.match(r.denial, /container "a": "evil.io\/x:1" is not from an allowed registry/);
});

t.test('ephemeralcontainers subresource: only new ephemeral containers', async (t) => {
  const old = pod({ containers: [{ name: 'a', image: 'nginx:1' }], ephemeralContainers: [{ name: 'dbg1', image: 'busybox' }] }, { name: 'p' });
  const p = deepClone(old);
  p.spec.ephemeralContainers.push({ name: 'dbg2', image: 'nicolaka/netshoot:v0.13', targetContainerName: 'a' });
  const r = plan(p, settings(), { operation: 'UPDATE', subResource: 'ephemeralcontainers', old });
  t.same(r.operations, [{ op: 'replace', path: '/spec/ephemeralContainers/1/image', value: 'mirror.example.com/dockerhub/nicolaka/netshoot:v0.13' }]);
  const denied = plan(
    { ...p, spec: { ...p.spec, ephemeralContainers: [...old.spec.ephemeralContainers, { name: 'dbg2', image: 'evil.io/shell:1' }] } },
    settings({ policy: ['mirror.example.com'] }),
    { operation: 'UPDATE', subResource: 'ephemeralcontainers', old },
  );
  t.match(denied.denial, /container "dbg2": "evil.io\/shell:1"/, 'kubectl debug cannot bypass policy');
});

t.test('verified rules wait for answers, then keep originals that are missing', async (t) => {
  const s = settings({ verify: true, policy: ['mirror.example.com', 'docker.io'] });
  const p = pod({ containers: [{ name: 'a', image: 'nginx:1' }, { name: 'b', image: 'redis:7' }] });
  const view = readPod(p);
  if (!view.ok) throw new Error(view.error);
  const input: PlanInput = { operation: 'CREATE', subResource: '', pod: view.pod, oldPod: undefined, mode: 'enforce' };
  const first = planPod(input, s);
  t.same(first.toVerify, ['mirror.example.com/dockerhub/library/nginx:1', 'mirror.example.com/dockerhub/library/redis:7']);
  t.same(first.operations, [], 'no patch before the answers');
  const second = planPod(input, s, {
    outcomes: new Map([
      ['mirror.example.com/dockerhub/library/nginx:1', 'present'],
      ['mirror.example.com/dockerhub/library/redis:7', 'absent'],
    ]),
    onUnreachable: 'original',
  });
  t.same(second.toVerify, []);
  t.equal(applied(p, second.operations).spec.containers[1].image, 'redis:7', 'missing image keeps the original');
  t.equal(applied(p, second.operations).spec.containers[0].image, 'mirror.example.com/dockerhub/library/nginx:1');
  t.match(second.warnings[0], /redis:7 is not in the mirror yet/);
  const strict = planPod(input, settings({ verify: true, policy: ['mirror.example.com'] }), {
    outcomes: new Map([
      ['mirror.example.com/dockerhub/library/nginx:1', 'present'],
      ['mirror.example.com/dockerhub/library/redis:7', 'absent'],
    ]),
    onUnreachable: 'original',
  });
  t.match(strict.denial, /"redis:7" is not from an allowed registry.*not in the mirror yet/, 'fallback to a disallowed registry is denied, saying why');
});

t.test('ordered targets: the first that holds the image serves; the original stays when none does', async (t) => {
  const rules = compileRules([{ from: 'docker.io', to: ['a.example.com/hub', 'b.example.com/hub'], verify: true }]);
  if (!rules.ok) throw new Error('rules');
  const s: Settings = { ruleSet: rules.ruleSet, policy: undefined, pullSecrets: [] };
  const p = pod({ containers: [{ name: 'web', image: 'nginx:1' }] });
  const view = readPod(p);
  if (!view.ok) throw new Error(view.error);
  const A = 'a.example.com/hub/library/nginx:1';
  const B = 'b.example.com/hub/library/nginx:1';
  const input: PlanInput = { operation: 'CREATE', subResource: '', pod: view.pod, oldPod: undefined, mode: 'enforce' };
  t.same(planPod(input, s).toVerify, [A, B], 'every target is asked at once');
  type O = 'present' | 'absent' | 'unreachable';
  const answer = (a: O, b: O, onUnreachable: 'original' | 'rewrite' | 'deny' = 'original') =>
    planPod(input, s, { outcomes: new Map([[A, a], [B, b]]), onUnreachable });
  const cases: { a: O; b: O; on?: 'original' | 'rewrite' | 'deny'; image: string; served?: string; warn?: RegExp; denied?: boolean; index?: number }[] = [
    { a: 'present', b: 'present', image: A },
    { a: 'present', b: 'unreachable', image: A },
    { a: 'absent', b: 'present', image: B, served: 'b.example.com/hub', warn: /served by target 2 of 2, b.example.com\/hub/ },
    { a: 'unreachable', b: 'present', image: B, served: 'b.example.com/hub', warn: /served by target 2 of 2/ },
    { a: 'absent', b: 'absent', image: 'nginx:1', warn: /nginx:1 is not in any of the 2 mirrors yet; kept/ },
    { a: 'absent', b: 'unreachable', image: 'nginx:1', warn: /mirror unreachable; kept nginx:1/, index: 1 },
    { a: 'absent', b: 'unreachable', on: 'rewrite', image: B, served: 'b.example.com/hub', warn: /served by target 2 of 2/ },
    { a: 'absent', b: 'unreachable', on: 'deny', image: 'nginx:1', denied: true },
  ];
  for (const c of cases) {
    t.test(`${c.a} + ${c.b}${c.on ? ` (onUnreachable: ${c.on})` : ''}`, async (t) => {
      const r = answer(c.a, c.b, c.on);
      t.same(r.toVerify, []);
      if (c.denied) {
        t.match(r.denial, `cannot verify that ${B} is in the mirror`, 'names the target that could not be asked');
        return;
      }
      const out = applied(p, r.operations);
      t.equal(out.spec.containers[0].image, c.image);
      const served = out.metadata.annotations?.['mirrorgate.io/served-by'];
      if (c.image === 'nginx:1') t.equal(served, undefined, 'nothing served');
      else t.same(JSON.parse(served), { web: c.served ?? 'a.example.com/hub' }, 'served-by names the target');
      if (c.image !== 'nginx:1') t.same(JSON.parse(out.metadata.annotations['mirrorgate.io/original-images']), { web: 'nginx:1' }, 'the original is kept');
      if (c.warn) t.match(r.warnings.join('\n'), c.warn);
      else t.same(r.warnings, []);
      t.equal(r.decisions[0]?.targetIndex, c.index ?? (c.image === B ? 1 : 0), 'the target used (or that a fallback would use)');
    });
  }
  t.test('audit names the target it would use', async (t) => {
    const r = planPod({ ...input, mode: 'audit' }, s, { outcomes: new Map([[A, 'absent'], [B, 'present']]), onUnreachable: 'original' });
    t.match(r.warnings.join('\n'), `would be rewritten to ${B}`);
    t.same(JSON.parse(r.auditAnnotations['would-rewrite'] ?? '{}'), { web: B });
  });
});

t.test('an excluded image is still judged by the policy; scoped pull secrets only where they apply', async (t) => {
  const rules = compileRules([{ from: 'docker.io', to: 'mirror.example.com/hub', exclude: ['docker.io/library/registry'] }]);
  const policy = compilePolicy(['mirror.example.com']);
  const secrets = compilePullSecrets([{ name: 'team-a-pull', registries: ['mirror.example.com'], namespaces: ['team-a'] }]);
  if (!rules.ok || !policy.ok || !secrets.ok) throw new Error('config');
  const s: Settings = { ruleSet: rules.ruleSet, policy: policy.policy, pullSecrets: secrets.pullSecrets };
  const denied = plan(pod({ containers: [{ name: 'reg', image: 'registry:2' }] }), s);
  t.match(denied.denial, /container "reg": "registry:2" is not from an allowed registry/);
  t.equal(denied.decisions[0]?.action, 'unchanged');
  const view = readPod(pod({ containers: [{ name: 'web', image: 'nginx:1' }] }));
  if (!view.ok) throw new Error(view.error);
  const base: PlanInput = { operation: 'CREATE', subResource: '', pod: view.pod, oldPod: undefined, mode: 'enforce' };
  const inA = planPod({ ...base, namespace: 'team-a' }, s);
  t.ok(inA.operations.some((o) => o.path === '/spec/imagePullSecrets'), 'team-a gets its secret');
  const inB = planPod({ ...base, namespace: 'team-b' }, s);
  t.notOk(inB.operations.some((o) => o.path === '/spec/imagePullSecrets'), 'team-b does not');
});

const malformed: { name: string; object: unknown; error: RegExp }[] = [
  { name: 'not an object', object: 'pod', error: /request.object: must be an object/ },
  { name: 'containers not an array', object: { spec: { containers: 'nginx' } }, error: /spec.containers: must be an array/ },
  { name: 'container not an object', object: { spec: { containers: [1] } }, error: /spec.containers\[0\]: must be an object/ },
  { name: 'image not a string', object: { spec: { containers: [{ name: 'a', image: 5 }] } }, error: /spec.containers\[0\].image: must be a string/ },
  { name: 'name not a string', object: { spec: { containers: [{ name: {}, image: 'x' }] } }, error: /name: must be a string/ },
  { name: 'annotations not strings', object: { metadata: { annotations: { a: 1 } }, spec: {} }, error: /annotations\["a"\]: must be a string/ },
  { name: 'metadata not an object', object: { metadata: [], spec: {} }, error: /metadata: must be an object/ },
  { name: 'imagePullSecrets not an array', object: { spec: { imagePullSecrets: {} } }, error: /imagePullSecrets: must be an array/ },
];

t.test('readPod reports wrong field types by path', async (t) => {
  for (const c of malformed) {
    t.test(c.name, async (t) => {
      const r = readPod(c.object);
      t.equal(r.ok, false);
      if (!r.ok) t.match(r.error, c.error);
    });
  }
});
