import t from 'tap';
import { compileExclude, compileRules, decideRewrite, type RuleInput, type RuleSet, type ScopeContext } from '../../src/core/rules.js';

function ruleSet(rules: RuleInput[]): RuleSet {
  const r = compileRules(rules);
  if (!r.ok) throw new Error(r.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
  return r.ruleSet;
}

const standard = ruleSet([
  { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
  { from: 'gcr.io', to: 'mirror.example.com/gcr' },
  { from: 'gcr.io/google-samples', to: 'us-docker.pkg.dev/acme-prod/gcr-samples' },
  { from: 'quay.io/prometheus', to: 'mirror.example.com/prom' },
  { from: '*.example.org', to: 'mirror.example.com/example-org' },
  { from: 'localhost:5000', to: 'mirror.example.com/local' },
  { from: 'docker.io/library/busybox', to: 'mirror.example.com/bb' },
]);

const D = 'sha256:' + 'a'.repeat(64);

const cases: { name: string; image: string; expect: string | { kind: 'unchanged' | 'invalid'; reason?: string } }[] = [
  { name: 'official image, tag kept', image: 'nginx:1.14.2', expect: 'mirror.example.com/dockerhub/library/nginx:1.14.2' },
  { name: 'official image, no tag stays no tag', image: 'nginx', expect: 'mirror.example.com/dockerhub/library/nginx' },
  { name: 'docker.io prefix', image: 'docker.io/library/nginx:1', expect: 'mirror.example.com/dockerhub/library/nginx:1' },
  { name: 'index.docker.io is docker.io', image: 'index.docker.io/bitnami/redis:7', expect: 'mirror.example.com/dockerhub/bitnami/redis:7' },
  { name: 'uppercase host matches case-insensitively', image: 'Docker.IO/library/nginx:1', expect: 'mirror.example.com/dockerhub/library/nginx:1' },
  // The host is compared case-insensitively, but which image is meant does not change:
  // `DOCKER.IO/nginx` is repository `nginx` (no `library/`), as distribution reads it.
  { name: 'uppercase Docker Hub spelling keeps its repository', image: 'DOCKER.IO/nginx:1', expect: 'mirror.example.com/dockerhub/nginx:1' },
  { name: 'uppercase host matches a path rule', image: 'DOCKER.IO/library/busybox:1', expect: 'mirror.example.com/bb:1' },
  // The legacy name in capitals is still Docker Hub's host (repository `nginx`, as written).
  { name: 'uppercase legacy Docker Hub host matches the docker.io rule', image: 'INDEX.DOCKER.IO/nginx:2', expect: 'mirror.example.com/dockerhub/nginx:2' },
  { name: 'mixed-case legacy Docker Hub host matches a path rule', image: 'Index.Docker.IO/library/busybox:1', expect: 'mirror.example.com/bb:1' },
  { name: 'user image on Docker Hub', image: 'bitnami/redis:7.2', expect: 'mirror.example.com/dockerhub/bitnami/redis:7.2' },
  { name: 'digest kept byte for byte', image: `nginx@${D}`, expect: `mirror.example.com/dockerhub/library/nginx@${D}` },
  { name: 'tag and digest kept', image: `nginx:1.25@${D}`, expect: `mirror.example.com/dockerhub/library/nginx:1.25@${D}` },
  { name: 'tag case kept', image: 'nginx:Latest-RC1', expect: 'mirror.example.com/dockerhub/library/nginx:Latest-RC1' },
  { name: 'longest match wins', image: 'gcr.io/google-samples/hello-app:1.0', expect: 'us-docker.pkg.dev/acme-prod/gcr-samples/hello-app:1.0' },
  { name: 'shorter rule for other paths', image: 'gcr.io/distroless/static:nonroot', expect: 'mirror.example.com/gcr/distroless/static:nonroot' },
  { name: 'whole components only', image: 'gcr.io/google-samples-evil/app:1', expect: 'mirror.example.com/gcr/google-samples-evil/app:1' },
  { name: 'path prefix rule', image: 'quay.io/prometheus/node-exporter:v1', expect: 'mirror.example.com/prom/node-exporter:v1' },
  { name: 'path prefix rule does not match siblings', image: 'quay.io/prometheus-operator/x:v1', expect: { kind: 'unchanged', reason: 'no-rule' } },
  { name: 'registry without rule', image: 'quay.io/coreos/etcd:v3', expect: { kind: 'unchanged', reason: 'no-rule' } },
  { name: 'wildcard subdomain', image: 'registry.example.org/team/app:1', expect: 'mirror.example.com/example-org/team/app:1' },
  { name: 'wildcard deep subdomain', image: 'a.b.example.org/app:1', expect: 'mirror.example.com/example-org/app:1' },
  { name: 'wildcard never the apex', image: 'example.org/app:1', expect: { kind: 'unchanged', reason: 'no-rule' } },
  { name: 'wildcard never a look-alike suffix', image: 'example.org.evil.io/app:1', expect: { kind: 'unchanged', reason: 'no-rule' } },
  { name: 'look-alike of docker.io is not docker.io', image: 'docker.io.evil.com/library/nginx:1', expect: { kind: 'unchanged', reason: 'no-rule' } },
  { name: 'host with port', image: 'localhost:5000/app:dev', expect: 'mirror.example.com/local/app:dev' },
  { name: 'port is part of the host', image: 'localhost:5001/app:dev', expect: { kind: 'unchanged', reason: 'no-rule' } },
  { name: 'full repository rule beats registry rule', image: 'busybox:1.36', expect: 'mirror.example.com/bb:1.36' },
  { name: 'full repository rule, nested below it', image: 'docker.io/library/busybox/extra:1', expect: 'mirror.example.com/bb/extra:1' },
  { name: 'already on a target: idempotent', image: 'mirror.example.com/dockerhub/library/nginx:1.14.2', expect: { kind: 'unchanged', reason: 'on-target' } },
  { name: 'already on an Artifact Registry target', image: 'us-docker.pkg.dev/acme-prod/gcr-samples/hello-app:1.0', expect: { kind: 'unchanged', reason: 'on-target' } },
  { name: 'invalid reference never rewritten', image: 'Nginx:1', expect: { kind: 'invalid' } },
  { name: 'empty reference invalid', image: '', expect: { kind: 'invalid' } },
  { name: 'url is invalid', image: 'https://docker.io/nginx', expect: { kind: 'invalid' } },
];

t.test('decideRewrite', async (t) => {
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const d = decideRewrite(standard, c.image);
      if (typeof c.expect === 'string') {
        t.equal(d.kind, 'rewrite', `${c.image} is rewritten`);
        if (d.kind === 'rewrite') t.equal(d.rewritten, c.expect);
        // Idempotent: the result is left alone by a second pass.
        const again = decideRewrite(standard, c.expect);
        t.equal(again.kind, 'unchanged', 'second pass changes nothing');
      } else {
        t.equal(d.kind, c.expect.kind);
        if (c.expect.reason && d.kind === 'unchanged') t.equal(d.reason, c.expect.reason);
        if (d.kind === 'invalid') t.match(d.reason, c.image === '' ? /./ : c.image, 'reason quotes the reference');
      }
    });
  }
});

t.test('target that would exceed the name length is not rewritten', async (t) => {
  const rs = ruleSet([{ from: 'docker.io', to: `mirror.example.com/${'x'.repeat(200)}` }]);
  const d = decideRewrite(rs, `docker.io/${'a'.repeat(60)}/b:1`);
  t.equal(d.kind, 'unchanged');
  if (d.kind === 'unchanged') {
    t.equal(d.reason, 'target-invalid');
    t.ok(d.detail, 'says why');
  }
});

t.test('rule targeting a full repository keeps tag', async (t) => {
  const rs = ruleSet([{ from: 'docker.io/library/nginx', to: 'mirror.example.com/nginx' }]);
  const d = decideRewrite(rs, 'nginx:1.25');
  t.equal(d.kind === 'rewrite' ? d.rewritten : d.kind, 'mirror.example.com/nginx:1.25');
});

const bad: { name: string; rules: RuleInput[]; path: string; message: RegExp }[] = [
  { name: 'from not a host', rules: [{ from: 'not a host', to: 'm.example.com' }], path: 'rules[0].from', message: /whitespace/ },
  { name: 'from is a URL', rules: [{ from: 'https://docker.io', to: 'm.example.com' }], path: 'rules[0].from', message: /URL/ },
  { name: 'to with wildcard', rules: [{ from: 'docker.io', to: '*.example.com' }], path: 'rules[0].to', message: /wildcard/ },
  { name: 'to with uppercase path', rules: [{ from: 'docker.io', to: 'm.example.com/Docker' }], path: 'rules[0].to', message: /repository path/ },
  { name: 'to with trailing slash', rules: [{ from: 'docker.io', to: 'm.example.com/' }], path: 'rules[0].to', message: /end with/ },
  { name: 'to with a tag', rules: [{ from: 'docker.io', to: 'm.example.com/x:1' }], path: 'rules[0].to', message: /repository path/ },
  { name: 'star in the middle', rules: [{ from: 'a.*.com', to: 'm.example.com' }], path: 'rules[0].from', message: /first label/ },
  { name: 'duplicate from', rules: [{ from: 'docker.io', to: 'a.example.com' }, { from: 'index.docker.io', to: 'b.example.com' }], path: 'rules[1].from', message: /duplicates rules\[0\]/ },
  { name: 'loop: target is a from', rules: [{ from: 'docker.io', to: 'mirror.example.com' }, { from: 'mirror.example.com', to: 'other.example.com' }], path: 'rules[0].to', message: /rewritten again/ },
  { name: 'loop: rewrite into own source', rules: [{ from: 'docker.io', to: 'docker.io/mirror' }], path: 'rules[0].to', message: /rewritten again/ },
  { name: 'loop: wildcard from covers target', rules: [{ from: '*.example.com', to: 'mirror.example.com' }], path: 'rules[0].to', message: /rewritten again/ },
  { name: 'loop: from below a target prefix', rules: [{ from: 'docker.io', to: 'm.example.com' }, { from: 'm.example.com/x', to: 'n.example.com' }], path: 'rules[0].to', message: /rewritten again/ },
  { name: 'to host that reads as a Docker Hub path', rules: [{ from: 'docker.io', to: 'mirror/dockerhub' }], path: 'rules[0].to', message: /Docker Hub path/ },
  { name: 'several targets without verify', rules: [{ from: 'docker.io', to: ['a.example.com', 'b.example.com'] }], path: 'rules[0].to', message: /need verify: true/ },
  { name: 'empty target list', rules: [{ from: 'docker.io', to: [], verify: true }], path: 'rules[0].to', message: /no target/ },
  { name: 'too many targets', rules: [{ from: 'docker.io', to: Array.from({ length: 9 }, (_, i) => `m${i}.example.com`), verify: true }], path: 'rules[0].to', message: /at most 8/ },
  { name: 'a bad second target is named by position', rules: [{ from: 'docker.io', to: ['a.example.com', 'b.example.com/Up'], verify: true }], path: 'rules[0].to[1]', message: /repository path/ },
  { name: 'the same target twice', rules: [{ from: 'docker.io', to: ['a.example.com/x', 'A.example.com/x'], verify: true }], path: 'rules[0].to[1]', message: /duplicates rules\[0\].to\[0\]/ },
  {
    name: 'loop: a second target is another rule\'s from',
    rules: [{ from: 'docker.io', to: ['a.example.com', 'quay.io/hub'], verify: true }, { from: 'quay.io', to: 'a.example.com/quay' }],
    path: 'rules[0].to[1]',
    message: /overlaps rules\[1\].from "quay.io"/,
  },
  { name: 'same from, same scope', rules: [{ from: 'docker.io', to: 'a.example.com', namespaces: ['x'] }, { from: 'docker.io', to: 'b.example.com', namespaces: ['x'] }], path: 'rules[1].from', message: /duplicates rules\[0\].from "docker.io" with the same scope/ },
  { name: 'bad namespace name', rules: [{ from: 'docker.io', to: 'a.example.com', namespaces: ['Team_A'] }], path: 'rules[0].namespaces[0]', message: /not a namespace name/ },
  { name: 'empty namespaces', rules: [{ from: 'docker.io', to: 'a.example.com', namespaces: [] }], path: 'rules[0].namespaces', message: /lists no namespace/ },
  { name: 'bad namespaceSelector', rules: [{ from: 'docker.io', to: 'a.example.com', namespaceSelector: { matchLabels: { t: 1 } } }], path: 'rules[0].namespaceSelector.matchLabels["t"]', message: /label value/ },
  { name: 'bad podSelector', rules: [{ from: 'docker.io', to: 'a.example.com', podSelector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }], path: 'rules[0].podSelector.matchExpressions[0].values', message: /at least one/ },
  { name: 'exclude not a pattern', rules: [{ from: 'docker.io', to: 'a.example.com', exclude: ['docker.io/Up'] }], path: 'rules[0].exclude[0]', message: /repository path/ },
  { name: 'exclude outside from', rules: [{ from: 'docker.io', to: 'a.example.com', exclude: ['quay.io/x'] }], path: 'rules[0].exclude[0]', message: /not below from "docker.io": it would never apply/ },
  { name: 'copyOnMiss without verify', rules: [{ from: 'docker.io', to: 'm.example.com', copyOnMiss: true }], path: 'rules[0].copyOnMiss', message: /verify/ },
];

t.test('compileRules rejects', async (t) => {
  for (const c of bad) {
    t.test(c.name, async (t) => {
      const r = compileRules(c.rules);
      t.equal(r.ok, false);
      if (!r.ok) {
        const p = r.problems.find((p) => p.path === c.path);
        t.ok(p, `problem at ${c.path}: ${JSON.stringify(r.problems)}`);
        if (p) t.match(p.message, c.message);
      }
    });
  }
});

t.test('non-overlapping targets under one host compile', async (t) => {
  const r = compileRules([
    { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
    { from: 'quay.io', to: 'mirror.example.com/quay' },
  ]);
  t.equal(r.ok, true);
});

t.test('ordered targets: every target is a candidate, in order, and none is rewritten again', async (t) => {
  const rs = ruleSet([{ from: 'docker.io', to: ['a.example.com/hub', 'b.example.com:5000/hub'], verify: true }]);
  t.equal(rs.rules[0]?.targets.length, 2);
  t.equal(rs.rules[0]?.target, 'a.example.com/hub', 'the first is the primary');
  const d = decideRewrite(rs, 'nginx:1.14.2');
  t.equal(d.kind, 'rewrite');
  if (d.kind !== 'rewrite') return;
  t.equal(d.rewritten, 'a.example.com/hub/library/nginx:1.14.2');
  t.same(
    d.candidates.map((c) => [c.index, c.rewritten, c.ref.registry]),
    [
      [0, 'a.example.com/hub/library/nginx:1.14.2', 'a.example.com'],
      [1, 'b.example.com:5000/hub/library/nginx:1.14.2', 'b.example.com:5000'],
    ],
  );
  for (const c of d.candidates) t.equal(decideRewrite(rs, c.rewritten).kind, 'unchanged', `${c.rewritten} is left alone`);
  const single = ruleSet([{ from: 'docker.io', to: 'a.example.com' }]);
  t.same(single.rules[0]?.targets.map((x) => x.target), ['a.example.com'], 'a string to is a list of one');
});

t.test('scoping: names, namespace and pod selectors; specificity first, then scope, then file order', async (t) => {
  const rs = ruleSet([
    { from: 'docker.io', to: 'global.example.com/hub' },
    { from: 'docker.io', to: 'team-a.example.com/hub', namespaces: ['team-a'] },
    { from: 'docker.io', to: 'tenant.example.com/hub', namespaceSelector: { matchLabels: { tenant: 'blue' } } },
    { from: 'docker.io/library', to: 'lib.example.com/hub' },
    { from: 'quay.io', to: 'quay-mirror.example.com', podSelector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['registry'] }] } },
  ]);
  const ctx = (namespace: string, nsLabels?: Record<string, string>, pod: Record<string, string> = {}): ScopeContext => ({ namespace, namespaceLabels: nsLabels, podLabels: pod });
  const target = (image: string, c?: ScopeContext): string | undefined => {
    const d = decideRewrite(rs, image, c);
    return d.kind === 'rewrite' ? d.rewritten : undefined;
  };
  t.equal(target('bitnami/redis:7', ctx('other', {})), 'global.example.com/hub/bitnami/redis:7', 'unscoped rule elsewhere');
  t.equal(target('bitnami/redis:7', ctx('team-a', {})), 'team-a.example.com/hub/bitnami/redis:7', 'a scoped rule beats an unscoped one for the same from');
  t.equal(target('bitnami/redis:7', ctx('x', { tenant: 'blue' })), 'tenant.example.com/hub/bitnami/redis:7', 'namespace selector');
  t.equal(target('bitnami/redis:7', ctx('x', undefined)), 'global.example.com/hub/bitnami/redis:7', 'labels unknown: the selector rule does not apply');
  t.equal(target('bitnami/redis:7', ctx('team-a', { tenant: 'blue' })), 'team-a.example.com/hub/bitnami/redis:7', 'two scoped rules both apply: file order');
  t.equal(target('nginx:1', ctx('team-a', {})), 'lib.example.com/hub/nginx:1', 'a more specific from beats a scoped rule');
  t.equal(target('quay.io/x/y:1', ctx('n', {}, { app: 'web' })), 'quay-mirror.example.com/x/y:1', 'pod selector holds');
  t.equal(target('quay.io/x/y:1', ctx('n', {}, { app: 'registry' })), undefined, 'pod selector excludes the mirror itself');
  t.equal(target('bitnami/redis:7'), 'global.example.com/hub/bitnami/redis:7', 'no context: only unscoped rules');
  t.equal(target('quay.io/x/y:1'), undefined, 'no context: a scoped rule never applies');
});

t.test('exclude: per rule and everywhere, the same matching as from', async (t) => {
  const rs0 = ruleSet([
    { from: 'docker.io', to: 'mirror.example.com/hub', exclude: ['docker.io/cloudnative-pg', 'docker.io/library/registry'] },
    { from: '*.example.org', to: 'mirror.example.com/org' },
  ]);
  const top = compileExclude(['*.internal.example.org', 'docker.io/zalando/postgres-operator'], 'exclude');
  t.same(top.problems, []);
  const rs: RuleSet = { ...rs0, exclude: top.patterns };
  const cases: [string, string][] = [
    ['docker.io/cloudnative-pg/postgresql:16', 'excluded'],
    // One component on Docker Hub is library/…: not below docker.io/cloudnative-pg.
    ['docker.io/cloudnative-pg:1', 'rewrite'],
    ['docker.io/cloudnative-pgx/app:1', 'rewrite'],
    ['registry:2', 'excluded'],
    ['registry-ui:2', 'rewrite'],
    ['a.internal.example.org/x:1', 'excluded'],
    ['internal.example.org/x:1', 'rewrite'],
    ['zalando/postgres-operator:v1.10', 'excluded'],
    ['zalando/spilo-15:3', 'rewrite'],
  ];
  for (const [image, want] of cases) {
    const d = decideRewrite(rs, image);
    t.equal(d.kind === 'unchanged' ? d.reason : d.kind, want, image);
  }
  const d = decideRewrite(rs, 'registry:2');
  if (d.kind === 'unchanged') t.equal(d.detail, 'rules[0].exclude', 'says which exclusion');
});
