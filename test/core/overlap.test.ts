/**
 * The compiler's loop check: a rule's target that some rule's `from` overlaps (the
 * rewritten image would be rewritten again) is refused, with the target's path and the
 * `from` it meets. Each case lists every problem compileRules reports, in order, so both
 * a loop the check misses and one it invents fail here.
 */
import t from 'tap';
import { compileRules, type RuleInput } from '../../src/core/rules.js';

const again = ': rewritten images would be rewritten again';

const cases: { name: string; rules: RuleInput[]; basePath?: string; fileIndexes?: number[]; expect: string[] }[] = [
  // Hosts.
  { name: 'distinct hosts', rules: [{ from: 'docker.io', to: 'mirror.example.com' }, { from: 'quay.io', to: 'mirror.example.com/quay' }], expect: [] },
  {
    name: 'a target is another rule\'s from',
    rules: [{ from: 'docker.io', to: 'mirror.example.com' }, { from: 'mirror.example.com', to: 'other.example.com' }],
    expect: [`rules[0].to: "mirror.example.com" overlaps rules[1].from "mirror.example.com"${again}`],
  },
  {
    name: 'a rule into its own source',
    rules: [{ from: 'docker.io', to: 'docker.io/mirror' }],
    expect: [`rules[0].to: "docker.io/mirror" overlaps rules[0].from "docker.io"${again}`],
  },
  {
    name: 'a chain: each target the next from',
    rules: [{ from: 'a.example.com', to: 'b.example.com' }, { from: 'b.example.com', to: 'c.example.com' }, { from: 'c.example.com', to: 'a.example.com/x' }],
    expect: [
      `rules[0].to: "b.example.com" overlaps rules[1].from "b.example.com"${again}`,
      `rules[1].to: "c.example.com" overlaps rules[2].from "c.example.com"${again}`,
      `rules[2].to: "a.example.com/x" overlaps rules[0].from "a.example.com"${again}`,
    ],
  },
  { name: 'a host that is a prefix of another is another host', rules: [{ from: 'mirror.example.co', to: 'mirror.example.com' }], expect: [] },
  // Ports.
  { name: 'a port makes another host: target with a port', rules: [{ from: 'mirror.example.com', to: 'mirror.example.com:5000/x' }], expect: [] },
  { name: 'a port makes another host: from with a port', rules: [{ from: 'mirror.example.com:5000', to: 'mirror.example.com/x' }], expect: [] },
  { name: 'other ports on one host', rules: [{ from: 'localhost:5000', to: 'localhost:5001' }, { from: 'localhost:5002', to: 'localhost:5003' }], expect: [] },
  {
    name: 'the same port',
    rules: [{ from: 'docker.io', to: 'localhost:5000/hub' }, { from: 'localhost:5000', to: 'mirror.example.com/local' }],
    expect: [`rules[0].to: "localhost:5000/hub" overlaps rules[1].from "localhost:5000"${again}`],
  },
  // Case.
  {
    name: 'hosts compare case-insensitively (target upper)',
    rules: [{ from: 'docker.io', to: 'Mirror.Example.com/hub' }, { from: 'mirror.example.com', to: 'other.example.com' }],
    expect: [`rules[0].to: "Mirror.Example.com/hub" overlaps rules[1].from "mirror.example.com"${again}`],
  },
  {
    name: 'hosts compare case-insensitively (from upper)',
    rules: [{ from: 'docker.io', to: 'mirror.example.com/hub' }, { from: 'MIRROR.example.COM/hub', to: 'other.example.com' }],
    expect: [`rules[0].to: "mirror.example.com/hub" overlaps rules[1].from "MIRROR.example.COM/hub"${again}`],
  },
  // Docker Hub's names.
  {
    name: 'index.docker.io is docker.io (target)',
    rules: [{ from: 'quay.io', to: 'index.docker.io/mirror' }, { from: 'docker.io', to: 'mirror.example.com' }],
    expect: [`rules[0].to: "index.docker.io/mirror" overlaps rules[1].from "docker.io"${again}`],
  },
  {
    name: 'index.docker.io is docker.io (from), in capitals',
    rules: [{ from: 'quay.io', to: 'docker.io/mirror/quay' }, { from: 'INDEX.DOCKER.IO/mirror', to: 'mirror.example.com' }],
    expect: [`rules[0].to: "docker.io/mirror/quay" overlaps rules[1].from "INDEX.DOCKER.IO/mirror"${again}`],
  },
  { name: 'docker.io under another path', rules: [{ from: 'quay.io', to: 'index.docker.io/mirror' }, { from: 'docker.io/library', to: 'mirror.example.com' }], expect: [] },
  { name: 'registry-1.docker.io is not docker.io for patterns', rules: [{ from: 'docker.io', to: 'registry-1.docker.io/mirror' }], expect: [] },
  // Path prefixes, whole components only.
  {
    name: 'a from above the target path',
    rules: [{ from: 'docker.io', to: 'm.example.com/a/b' }, { from: 'm.example.com/a', to: 'n.example.com' }],
    expect: [`rules[0].to: "m.example.com/a/b" overlaps rules[1].from "m.example.com/a"${again}`],
  },
  {
    name: 'a from below the target path',
    rules: [{ from: 'docker.io', to: 'm.example.com/a' }, { from: 'm.example.com/a/b/c', to: 'n.example.com' }],
    expect: [`rules[0].to: "m.example.com/a" overlaps rules[1].from "m.example.com/a/b/c"${again}`],
  },
  {
    name: 'a from below a whole-host target',
    rules: [{ from: 'docker.io', to: 'm.example.com' }, { from: 'm.example.com/x', to: 'n.example.com' }],
    expect: [`rules[0].to: "m.example.com" overlaps rules[1].from "m.example.com/x"${again}`],
  },
  {
    name: 'the same path',
    rules: [{ from: 'docker.io', to: 'm.example.com/a' }, { from: 'm.example.com/a', to: 'n.example.com' }],
    expect: [`rules[0].to: "m.example.com/a" overlaps rules[1].from "m.example.com/a"${again}`],
  },
  { name: 'sibling paths', rules: [{ from: 'docker.io', to: 'm.example.com/a/b' }, { from: 'm.example.com/a/c', to: 'n.example.com' }], expect: [] },
  { name: 'a component that only starts the same', rules: [{ from: 'docker.io', to: 'm.example.com/ab' }, { from: 'm.example.com/a', to: 'n.example.com' }], expect: [] },
  { name: 'a from component longer than the target\'s', rules: [{ from: 'docker.io', to: 'm.example.com/a' }, { from: 'm.example.com/ab/c', to: 'n.example.com' }], expect: [] },
  {
    name: 'several froms above and below one target, in rule order',
    rules: [
      { from: 'm.example.com/a/b/c', to: 'x.example.com' },
      { from: 'docker.io', to: 'm.example.com/a/b' },
      { from: 'm.example.com', to: 'y.example.com' },
      { from: 'm.example.com/a/b/d/e', to: 'z.example.com' },
      { from: 'm.example.com/a/c', to: 'w.example.com' },
      { from: 'm.example.com/a', to: 'v.example.com' },
    ],
    expect: [
      `rules[1].to: "m.example.com/a/b" overlaps rules[0].from "m.example.com/a/b/c"${again}`,
      `rules[1].to: "m.example.com/a/b" overlaps rules[2].from "m.example.com"${again}`,
      `rules[1].to: "m.example.com/a/b" overlaps rules[3].from "m.example.com/a/b/d/e"${again}`,
      `rules[1].to: "m.example.com/a/b" overlaps rules[5].from "m.example.com/a"${again}`,
    ],
  },
  // Wildcards.
  {
    name: 'a wildcard from covers its own target',
    rules: [{ from: '*.example.com', to: 'mirror.example.com' }],
    expect: [`rules[0].to: "mirror.example.com" overlaps rules[0].from "*.example.com"${again}`],
  },
  {
    name: 'a wildcard from covers a deeper subdomain',
    rules: [{ from: 'docker.io', to: 'a.b.c.example.com/hub' }, { from: '*.example.com', to: 'mirror.example.org' }],
    expect: [`rules[0].to: "a.b.c.example.com/hub" overlaps rules[1].from "*.example.com"${again}`],
  },
  { name: 'a wildcard never covers its apex', rules: [{ from: '*.example.com', to: 'example.com/mirror' }], expect: [] },
  { name: 'a wildcard never covers a look-alike', rules: [{ from: '*.example.com', to: 'example.com.evil.io' }, { from: 'docker.io', to: 'xexample.com' }], expect: [] },
  { name: 'a wildcard never covers a host with a port', rules: [{ from: '*.example.com', to: 'mirror.example.com:5000' }], expect: [] },
  {
    name: 'a wildcard with a path above the target path',
    rules: [{ from: 'docker.io', to: 'm.example.com/team/hub' }, { from: '*.example.com/team', to: 'mirror.example.org' }],
    expect: [`rules[0].to: "m.example.com/team/hub" overlaps rules[1].from "*.example.com/team"${again}`],
  },
  {
    name: 'a wildcard with a path below the target path',
    rules: [{ from: 'docker.io', to: 'm.example.com' }, { from: '*.example.com/team/x', to: 'mirror.example.org' }],
    expect: [`rules[0].to: "m.example.com" overlaps rules[1].from "*.example.com/team/x"${again}`],
  },
  { name: 'a wildcard with another path', rules: [{ from: 'docker.io', to: 'm.example.com/hub' }, { from: '*.example.com/team', to: 'mirror.example.org' }], expect: [] },
  {
    name: 'nested wildcards both cover a target, and an exact host beside them does not',
    rules: [
      { from: '*.example.com', to: 'mirror.example.org/a' },
      { from: 'docker.io', to: 'r.eu.example.com/hub' },
      { from: '*.eu.example.com', to: 'mirror.example.org/b' },
      { from: 'eu.example.com', to: 'mirror.example.org/c' },
      { from: '*.us.example.com', to: 'mirror.example.org/d' },
    ],
    expect: [
      `rules[1].to: "r.eu.example.com/hub" overlaps rules[0].from "*.example.com"${again}`,
      `rules[1].to: "r.eu.example.com/hub" overlaps rules[2].from "*.eu.example.com"${again}`,
    ],
  },
  {
    name: 'a nested wildcard covers only its own subdomains',
    rules: [{ from: '*.eu.example.com', to: 'us.example.com/eu' }, { from: 'docker.io', to: 'eu.example.com/hub' }],
    expect: [],
  },
  // Scopes and exclusions do not make a loop safe: the check looks at every from.
  {
    name: 'scoped rules in other namespaces still overlap',
    rules: [
      { from: 'docker.io', to: 'm.example.com/hub', namespaces: ['a'] },
      { from: 'm.example.com', to: 'n.example.com', namespaces: ['b'] },
      { from: 'm.example.com', to: 'o.example.com', podSelector: { matchLabels: { app: 'web' } } },
    ],
    expect: [
      `rules[0].to: "m.example.com/hub" overlaps rules[1].from "m.example.com"${again}`,
      `rules[0].to: "m.example.com/hub" overlaps rules[2].from "m.example.com"${again}`,
    ],
  },
  {
    name: 'a from that excludes the target still overlaps',
    rules: [{ from: 'docker.io', to: 'm.example.com/hub' }, { from: 'm.example.com', to: 'n.example.com', exclude: ['m.example.com/hub'] }],
    expect: [`rules[0].to: "m.example.com/hub" overlaps rules[1].from "m.example.com"${again}`],
  },
  {
    name: 'a top rule that excludes its own target still overlaps',
    rules: [{ from: 'docker.io', to: 'docker.io/mirror', exclude: ['docker.io/mirror'] }],
    expect: [`rules[0].to: "docker.io/mirror" overlaps rules[0].from "docker.io"${again}`],
  },
  // Several targets.
  {
    name: 'a second target is another rule\'s from',
    rules: [{ from: 'docker.io', to: ['a.example.com', 'quay.io/hub'], verify: true }, { from: 'quay.io', to: 'a.example.com/quay' }],
    expect: [`rules[0].to[1]: "quay.io/hub" overlaps rules[1].from "quay.io"${again}`],
  },
  {
    name: 'several targets meeting several froms: by rule, then by target',
    rules: [
      { from: 'docker.io', to: ['c.example.com/x', 'b.example.com', 'a.example.com/y'], verify: true },
      { from: 'a.example.com', to: 'z.example.com/a' },
      { from: '*.example.com', to: 'mirror.example.org' },
      { from: 'b.example.com/q', to: 'z.example.com/b' },
    ],
    expect: [
      `rules[0].to[2]: "a.example.com/y" overlaps rules[1].from "a.example.com"${again}`,
      `rules[0].to[0]: "c.example.com/x" overlaps rules[2].from "*.example.com"${again}`,
      `rules[0].to[1]: "b.example.com" overlaps rules[2].from "*.example.com"${again}`,
      `rules[0].to[2]: "a.example.com/y" overlaps rules[2].from "*.example.com"${again}`,
      `rules[0].to[1]: "b.example.com" overlaps rules[3].from "b.example.com/q"${again}`,
      `rules[1].to: "z.example.com/a" overlaps rules[2].from "*.example.com"${again}`,
      `rules[3].to: "z.example.com/b" overlaps rules[2].from "*.example.com"${again}`,
    ],
  },
  { name: 'several targets, none met', rules: [{ from: 'docker.io', to: ['a.example.com/hub', 'b.example.com:5000/hub'], verify: true }, { from: 'a.example.com/quay', to: 'c.example.com' }], expect: [] },
  // Positions as the file numbers them, and rules that did not compile.
  {
    name: 'paths name the file positions',
    rules: [{ from: 'docker.io', to: 'm.example.com' }, { from: 'm.example.com/x', to: ['n.example.com', 'docker.io/x'], verify: true }],
    basePath: 'spec.rules',
    fileIndexes: [3, 7],
    expect: [
      `spec.rules[3].to: "m.example.com" overlaps rules[7].from "m.example.com/x"${again}`,
      `spec.rules[7].to[1]: "docker.io/x" overlaps rules[3].from "docker.io"${again}`,
    ],
  },
  {
    name: 'a rule whose from does not parse is no from to overlap',
    rules: [{ from: 'docker.io', to: 'm.example.com' }, { from: 'm.example.com/Up', to: 'n.example.com' }],
    expect: ['rules[1].from: "m.example.com/Up": "Up" is not a repository path (lowercase components separated by "/")'],
  },
  {
    name: 'a rule with a bad target checks none of its targets',
    rules: [{ from: 'docker.io', to: ['quay.io/hub', 'b.example.com/Up'], verify: true }, { from: 'quay.io', to: 'c.example.com' }],
    expect: ['rules[0].to[1]: "b.example.com/Up": "Up" is not a repository path (lowercase components separated by "/")'],
  },
];

t.test('loop check: every problem, in order', async (t) => {
  for (const c of cases) {
    const r = compileRules(c.rules, c.basePath, c.fileIndexes);
    const got = r.ok ? [] : r.problems.map((p) => `${p.path}: ${p.message}`);
    t.strictSame(got, c.expect, c.name);
    t.equal(r.ok, c.expect.length === 0, `${c.name}: compiles exactly when nothing is wrong`);
  }
  t.ok(cases.filter((c) => c.expect.length === 0).length >= 10 && cases.filter((c) => c.expect.length > 0).length >= 10, 'both outcomes are covered');
});

t.test('the loop check scales: 20,000 rules, one loop among them, found', async (t) => {
  const rules: RuleInput[] = [];
  for (let i = 0; i < 20_000; i++) rules.push({ from: i % 10 === 0 ? `quay.io/team-${i}` : `registry-${i}.example.com`, to: `mirror.example.com/r${i}` });
  rules.push({ from: 'docker.io', to: 'quay.io/team-120/hub' });
  rules.push({ from: '*.mirror.example.com', to: 'x.example.org' });
  const r = compileRules(rules);
  t.strictSame(r.ok ? [] : r.problems.map((p) => `${p.path}: ${p.message}`), [
    `rules[20000].to: "quay.io/team-120/hub" overlaps rules[120].from "quay.io/team-120"${again}`,
  ]);
});
