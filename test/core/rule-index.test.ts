/**
 * The rule index a reload's worker builds (integers and one string table) and the thread
 * answering admissions adopts, against the index built where the rules are: for a varied
 * rule table, the rules made again from the table are the same rules, and every image is
 * decided the same, and as a pass over every rule (no index) decides it.
 */
import t from 'tap';
import { buildFlatPatternIndex, FlatPatternIndex, StringTableBuilder, writeFlatIndex } from '../../src/core/pattern-index.js';
import { matchLength, parsePattern, patternsOverlap, specificity, type RegistryPattern } from '../../src/core/patterns.js';
import { parseReference } from '../../src/core/reference.js';
import {
  adoptRuleIndex,
  buildRuleIndex,
  compileRules,
  decideRewrite,
  inScope,
  RuleTableReader,
  type Rule,
  type RuleIndexData,
  type RuleInput,
  type RuleSet,
  type ScopeContext,
} from '../../src/core/rules.js';

const TABLE: RuleInput[] = [
  { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
  { from: 'docker.io/library/busybox', to: 'mirror.example.com/bb' },
  { from: 'docker.io/library', to: 'mirror.example.com/official', exclude: ['docker.io/library/alpine'] },
  // The same `from` twice: the scoped one beats the unscoped one where it applies.
  { from: 'quay.io', to: 'mirror.example.com/quay' },
  { from: 'quay.io', to: 'mirror.example.com/quay-a', namespaces: ['team-a'] },
  { from: 'quay.io', to: 'mirror.example.com/quay-web', podSelector: { matchLabels: { app: 'web' } } },
  { from: 'quay.io/prometheus', to: 'mirror.example.com/prom' },
  { from: 'quay.io/prometheus/node-exporter', to: 'mirror.example.com/node-exporter' },
  // Wildcards, nested, beside an exact host under them.
  { from: '*.example.org', to: 'mirror.example.com/example-org' },
  { from: '*.eu.example.org', to: 'mirror.example.com/eu-example-org' },
  { from: 'registry.eu.example.org/team', to: 'mirror.example.com/eu-team' },
  { from: '*.gcr.io', to: 'mirror.example.com/gcr', namespaceSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['prod'] }] } },
  { from: 'gcr.io', to: 'mirror.example.com/gcr-root' },
  { from: 'gcr.io/google-samples', to: ['us-docker.pkg.dev/acme-prod/gcr-samples', 'backup.example.com/gcr-samples'], verify: true, copyOnMiss: true, pinDigest: true },
  // Hosts with ports, a host and its prefix-sharing neighbours (keys that sort next to each other).
  { from: 'localhost:5000', to: 'mirror.example.com/local' },
  { from: 'localhost:5001', to: 'mirror.example.com/local-1' },
  { from: 'ghcr.io/acme', to: 'mirror.example.com/acme' },
  { from: 'ghcr.io/acme-tools', to: 'mirror.example.com/acme-tools' },
  { from: 'ghcr.io/acm', to: 'mirror.example.com/acm' },
  { from: 'GHCR.io/acme-legacy', to: 'mirror.example.com/acme-legacy' },
  { from: 'index.docker.io/bitnami', to: 'mirror.example.com/bitnami' },
  { from: 'registry.k8s.io', to: 'mirror.example.com/k8s', exclude: ['registry.k8s.io/pause', 'registry.k8s.io/e2e-test-images'] },
];

const IMAGES = [
  'nginx:1.25',
  'busybox',
  'alpine:3',
  'docker.io/library/busybox:1',
  'Docker.IO/library/busybox:1',
  'INDEX.DOCKER.IO/nginx:2',
  'bitnami/redis:7',
  'index.docker.io/bitnami/redis:7',
  'quay.io/coreos/etcd:3',
  'quay.io/prometheus/prometheus:2',
  'quay.io/prometheus/node-exporter:1',
  'quay.io/prometheus/node-exporter-extra:1',
  'a.example.org/x:1',
  'a.b.example.org/x/y:1',
  'example.org/x:1',
  'x.eu.example.org/y:1',
  'registry.eu.example.org/team/app:1',
  'registry.eu.example.org/other/app:1',
  'eu.gcr.io/p/i:1',
  'gcr.io/p/i:1',
  'gcr.io/google-samples/hello-app:1.0',
  'localhost:5000/app:1',
  'localhost:5001/app:1',
  'localhost:5002/app:1',
  'ghcr.io/acme/app:1',
  'ghcr.io/acme-tools/app:1',
  'ghcr.io/acm/app:1',
  'ghcr.io/ac/app:1',
  'ghcr.io/acme-legacy/app:1',
  'registry.k8s.io/pause:3.9',
  'registry.k8s.io/kube-proxy:v1.30.0',
  // On a target already: left alone.
  'mirror.example.com/dockerhub/library/nginx:1',
  'backup.example.com/gcr-samples/hello-app:1',
  'mirror.example.com/other/app:1',
  'not a reference',
];

const CONTEXTS: (ScopeContext | undefined)[] = [
  undefined,
  { namespace: 'team-a', namespaceLabels: { tier: 'prod' }, podLabels: { app: 'web' } },
  { namespace: 'team-b', namespaceLabels: { tier: 'dev' }, podLabels: {} },
  { namespace: 'team-c', namespaceLabels: undefined, podLabels: { app: 'web' } },
];

function compiled(inputs: readonly RuleInput[]): RuleSet {
  const r = compileRules(inputs);
  if (!r.ok) throw new Error(r.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
  return r.ruleSet;
}

/** As a worker hands it over: the integers' buffer transferred, the rules made again from the table. */
function adopted(rules: readonly Rule[]): readonly Rule[] {
  const built = buildRuleIndex(rules, true);
  const data = structuredClone<RuleIndexData>(built, { transfer: [built.ints.buffer] });
  const scopes = new Map(structuredClone(rules.flatMap((r, i) => (r.scope === undefined ? [] : [[i, r.scope] as const]))));
  const reader = new RuleTableReader(data);
  const made: Rule[] = [];
  // Parts of a few rules, as a reload adopts them.
  for (let i = 0; i < reader.size; i += 3) made.push(...reader.rules(i, i + 3, (k) => scopes.get(k)));
  Object.freeze(made);
  adoptRuleIndex(made, data);
  return made;
}

/** What the rule choice is without any index: every rule tried. */
function bruteForce(rules: readonly Rule[], image: string, ctx: ScopeContext | undefined): number | undefined {
  const parsed = parseReference(image);
  if (!parsed.ok) return undefined;
  let best: { index: number; score: number } | undefined;
  for (const rule of rules) {
    const matched = matchLength(rule.from, parsed.ref.registry, parsed.ref.repository);
    if (matched < 0 || !inScope(rule, ctx)) continue;
    const score = specificity(rule.from, matched) * 2 + (rule.scope === undefined ? 0 : 1);
    if (best === undefined || score > best.score) best = { index: rule.index, score };
  }
  return best?.index;
}

t.test('the rules made again from the table are the rules, frozen', async (t) => {
  const direct = compiled(TABLE).rules;
  const made = adopted(direct);
  t.strictSame(made, direct);
  t.ok(made.every((r) => Object.isFrozen(r) && Object.isFrozen(r.from) && Object.isFrozen(r.from.path) && Object.isFrozen(r.targets) && r.targets.every((x) => Object.isFrozen(x))));
  t.ok(made.every((r) => r.to === r.targets[0]?.to && r.target === r.targets[0]?.target), 'the first target is `to`, as compiled');
});

t.test('the adopted index decides every image as the index built directly', async (t) => {
  const direct = compiled(TABLE);
  const adoptedSet: RuleSet = { rules: adopted(direct.rules) };
  const kinds = new Map<string, number>();
  for (const ctx of CONTEXTS) {
    for (const image of IMAGES) {
      const a = decideRewrite(adoptedSet, image, ctx);
      const d = decideRewrite(direct, image, ctx);
      const name = `${image} in ${ctx?.namespace ?? '(no context)'}`;
      t.strictSame(a, d, name);
      const key = d.kind === 'unchanged' ? d.reason : d.kind;
      kinds.set(key, (kinds.get(key) ?? 0) + 1);
      if (d.kind === 'rewrite') t.equal(d.rule.index, bruteForce(direct.rules, image, ctx), `${name}: the rule a pass over every rule picks`);
    }
  }
  // The table reaches every kind of decision.
  for (const kind of ['rewrite', 'on-target', 'excluded', 'no-rule', 'invalid']) t.ok((kinds.get(kind) ?? 0) > 0, kind);
  t.ok((kinds.get('rewrite') ?? 0) > 80, 'most images are rewritten');
});

t.test('a rule table in file order other than its positions, and rules left out', async (t) => {
  // Indexes as the config file numbers them when entries were left out before compiling.
  const r = compileRules(TABLE, 'rules', TABLE.map((_, i) => i * 2 + 1));
  if (!r.ok) throw new Error('does not compile');
  const adoptedSet: RuleSet = { rules: adopted(r.ruleSet.rules) };
  for (const image of IMAGES) t.strictSame(decideRewrite(adoptedSet, image, CONTEXTS[1]), decideRewrite(r.ruleSet, image, CONTEXTS[1]), image);
});

const INDEXED = [
  'docker.io', 'docker.io/library', 'docker.io/library/busybox', 'index.docker.io/bitnami', 'DOCKER.IO/x',
  '*.example.org', '*.eu.example.org', '*.example.org/team', 'registry.eu.example.org', 'registry.eu.example.org/a/b/c',
  'ghcr.io/acm', 'ghcr.io/acme', 'ghcr.io/acme-tools', 'ghcr.io/acme/x', 'ghcr.io', 'localhost:5000', 'localhost:5000/a',
  // The same pattern twice: both values.
  'quay.io/p', 'quay.io/p',
].map((s) => {
  const p = parsePattern(s, true);
  if (!p.ok) throw new Error(p.reason);
  return p.pattern;
});

const ascending = (a: number, b: number): number => a - b;

t.test('the flat index answers exactly the patterns that match, each as often as it was written', async (t) => {
  // Written with a table and starts of its own, as buildRuleIndex lays them out among other data.
  const table = new StringTableBuilder();
  const out: number[] = [0, 0, 0];
  const at = writeFlatIndex(INDEXED.map((p, i) => [p, i] as [RegistryPattern, number]), table, out);
  const { strings, starts } = table.finish();
  const startsAt = out.length;
  out.push(...starts);
  const flat = new FlatPatternIndex(Int32Array.from(out), strings, startsAt, at);
  const alone = buildFlatPatternIndex(INDEXED.map((p, i) => [p, i] as const));
  const lookups: [string, string][] = [
    ['docker.io', 'library/busybox'], ['index.docker.io', 'library/nginx'], ['Docker.IO', 'x/y'], ['docker.io', ''],
    ['a.example.org', 'x'], ['a.example.org', 'team/x'], ['x.eu.example.org', 'y'], ['registry.eu.example.org', 'a/b/c/d'], ['registry.eu.example.org', 'a/b'],
    ['example.org', 'x'], ['ghcr.io', 'acme/x/y'], ['ghcr.io', 'acme-tools'], ['ghcr.io', 'acm'], ['ghcr.io', 'ac'], ['ghcr.io', 'acmez'],
    ['localhost:5000', 'a/b'], ['localhost:5001', 'a'], ['quay.io', 'p/q'], ['quay.io', ''], ['nowhere.example.com', 'x'], ['ghcr.io', 'acme//x'],
  ];
  let found = 0;
  for (const [registry, repository] of lookups) {
    const expected = INDEXED.flatMap((p, i) => (matchLength(p, registry, repository) >= 0 ? [i] : []));
    found += expected.length;
    t.strictSame(flat.candidates(registry, repository).sort(ascending), expected, `${registry} ${repository}`);
    t.strictSame(alone.candidates(registry, repository).sort(ascending), expected, `${registry} ${repository}, built alone`);
  }
  t.ok(found > 30, 'the lookups find patterns');
});

t.test('the flat index answers exactly the patterns that overlap an exact-host pattern', async (t) => {
  const flat = buildFlatPatternIndex(INDEXED.map((p, i) => [p, i] as const));
  const queries = [
    'docker.io', 'index.docker.io/library', 'Docker.IO/library/busybox/x', 'docker.io/librar', 'a.example.org', 'a.example.org/team/x/y',
    'example.org', 'registry.eu.example.org/a', 'registry.eu.example.org/a/b/c/d', 'ghcr.io/acme', 'ghcr.io/ac', 'localhost:5000',
    'localhost:5001/a', 'quay.io', 'quay.io/p/q', 'nowhere.example.com/x',
  ];
  let found = 0;
  for (const q of queries) {
    const p = parsePattern(q, false);
    if (!p.ok) throw new Error(p.reason);
    const expected = INDEXED.flatMap((x, i) => (patternsOverlap(p.pattern, x) ? [i] : []));
    found += expected.length;
    t.strictSame(flat.overlapping(p.pattern).sort(ascending), expected, q);
  }
  t.ok(found > 20, 'the queries overlap patterns');
});

t.test('a table of another format is refused', async (t) => {
  const data = buildRuleIndex(compiled(TABLE).rules, true);
  const ints = data.ints.slice();
  ints[0] = 99;
  t.throws(() => new RuleTableReader({ ints, strings: data.strings }), /format 99, expected 1/);
  const scoped = compiled(TABLE).rules;
  const reader = new RuleTableReader(buildRuleIndex(scoped, true));
  t.throws(() => reader.rules(0, scoped.length, () => undefined), /has a scope, and none was given/);
});
