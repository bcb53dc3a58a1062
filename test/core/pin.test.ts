/**
 * `pinDigest: true`: a verified rewrite names the digest the mirror answered, after the tag;
 * never without a verified answer. Table-driven over the planner (pure).
 */
import fjp from 'fast-json-patch';
import t from 'tap';
import { compileRules } from '../../src/core/rules.js';
import { planPod, readPod, type OnUnreachable, type PlanInput, type Settings, type VerifyOutcome } from '../../src/core/pod.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

function settings(to: string | string[] = 'mirror.example.com/hub', pinDigest = true): Settings {
  const rules = compileRules([{ from: 'docker.io', to, verify: true, pinDigest }]);
  if (!rules.ok) throw new Error(JSON.stringify(rules.problems));
  return { ruleSet: rules.ruleSet, policy: undefined, pullSecrets: [] };
}

function input(image: string, mode: 'enforce' | 'audit' = 'enforce'): PlanInput {
  const view = readPod({ metadata: {}, spec: { containers: [{ name: 'web', image }] } });
  if (!view.ok) throw new Error(view.error);
  return { operation: 'CREATE', subResource: '', pod: view.pod, oldPod: undefined, mode };
}

function imageAfter(image: string, ops: fjp.Operation[]): { image: string; annotations: Record<string, string> } {
  const out = fjp.applyPatch({ metadata: {}, spec: { containers: [{ name: 'web', image }] } }, fjp.deepClone(ops), true, false).newDocument as Record<string, any>;
  return { image: out.spec.containers[0].image, annotations: out.metadata.annotations ?? {} };
}

t.test('rules: pinDigest needs verify', async (t) => {
  const r = compileRules([{ from: 'docker.io', to: 'mirror.example.com/hub', pinDigest: true }]);
  t.notOk(r.ok);
  if (!r.ok) t.same(r.problems, [{ path: 'rules[0].pinDigest', message: 'needs verify: true (the pin is the digest the mirror answered)' }]);
  const ok = compileRules([{ from: 'docker.io', to: 'mirror.example.com/hub', verify: true, pinDigest: true }]);
  t.equal(ok.ok && ok.ruleSet.rules[0]?.pinDigest, true);
});

interface Case {
  name: string;
  image: string;
  to?: string[];
  outcomes: Record<string, VerifyOutcome>;
  digests?: Record<string, string>;
  onUnreachable?: OnUnreachable;
  pinDigest?: boolean;
  /** The image after the patch. */
  expect: string;
  warning?: string;
}

const M = 'mirror.example.com/hub/library/nginx';
const B = 'b.example.com/hub/library/nginx';
const cases: Case[] = [
  { name: 'present with a digest: pinned after the tag', image: 'nginx:1.25', outcomes: { [`${M}:1.25`]: 'present' }, digests: { [`${M}:1.25`]: D1 }, expect: `${M}:1.25@${D1}` },
  { name: 'no tag: the digest follows the name', image: 'nginx', outcomes: { [M]: 'present' }, digests: { [M]: D1 }, expect: `${M}@${D1}` },
  { name: 'already by digest: left as it is', image: `nginx:1.25@${D2}`, outcomes: { [`${M}:1.25@${D2}`]: 'present' }, digests: { [`${M}:1.25@${D2}`]: D2 }, expect: `${M}:1.25@${D2}` },
  { name: 'pinDigest off: the tag only', image: 'nginx:1.25', pinDigest: false, outcomes: { [`${M}:1.25`]: 'present' }, digests: { [`${M}:1.25`]: D1 }, expect: `${M}:1.25` },
  {
    name: 'the second target served: its own digest',
    image: 'nginx:1.25',
    to: ['mirror.example.com/hub', 'b.example.com/hub'],
    outcomes: { [`${M}:1.25`]: 'absent', [`${B}:1.25`]: 'present' },
    digests: { [`${B}:1.25`]: D2 },
    expect: `${B}:1.25@${D2}`,
    warning: 'served by target 2 of 2',
  },
  {
    name: 'present without a digest: rewritten, not pinned, and said so',
    image: 'nginx:1.25',
    outcomes: { [`${M}:1.25`]: 'present' },
    expect: `${M}:1.25`,
    warning: 'mirrorgate: container "web": not pinned to a digest: the mirror answered no digest',
  },
  {
    name: 'a digest that is not one: not pinned',
    image: 'nginx:1.25',
    outcomes: { [`${M}:1.25`]: 'present' },
    digests: { [`${M}:1.25`]: 'sha256:nothex' },
    expect: `${M}:1.25`,
    warning: 'not pinned to a digest: the mirror answered a digest that is not valid (sha256:nothex)',
  },
  {
    name: 'unreachable with onUnreachable rewrite: rewritten unpinned',
    image: 'nginx:1.25',
    outcomes: { [`${M}:1.25`]: 'unreachable' },
    onUnreachable: 'rewrite',
    expect: `${M}:1.25`,
    warning: 'not pinned to a digest: the mirror could not be asked (onUnreachable: rewrite)',
  },
  { name: 'absent: the original stays, nothing pinned', image: 'nginx:1.25', outcomes: { [`${M}:1.25`]: 'absent' }, digests: { [`${M}:1.25`]: D1 }, expect: 'nginx:1.25', warning: 'is not in the mirror yet' },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const s = settings(c.to, c.pinDigest ?? true);
    const answers = { outcomes: new Map(Object.entries(c.outcomes)), onUnreachable: c.onUnreachable ?? 'original', digests: new Map(Object.entries(c.digests ?? {})) };
    const r = planPod(input(c.image), s, answers);
    const after = imageAfter(c.image, r.operations);
    t.equal(after.image, c.expect);
    if (c.expect !== c.image) t.same(JSON.parse(after.annotations['mirrorgate.io/original-images'] ?? '{}'), { web: c.image }, 'the original keeps its tag');
    if (c.warning) t.match(r.warnings.join('\n'), c.warning);
    else t.same(r.warnings, []);
    if (c.expect !== c.image) t.same(JSON.parse(r.auditAnnotations.rewritten ?? '{}'), { web: c.expect });
    // Audit says exactly what enforce would do.
    const audit = planPod(input(c.image, 'audit'), s, answers);
    t.same(audit.operations, []);
    if (c.expect !== c.image) {
      t.match(audit.warnings.join('\n'), `nginx would be rewritten to ${c.expect}`.replace('nginx', c.image));
      t.same(JSON.parse(audit.auditAnnotations['would-rewrite'] ?? '{}'), { web: c.expect });
    }
    if (c.warning?.includes('not pinned')) t.match(audit.warnings.join('\n'), c.warning.replace(/.*not pinned/, 'would not pin'));
  });
}

t.test('a pinned image is on the target: a reinvocation leaves it alone', async (t) => {
  const pinned = `${M}:1.25@${D1}`;
  const r = planPod(input(pinned), settings(), undefined);
  t.same(r.toVerify, [], 'nothing to ask');
  t.same(r.operations, []);
});
