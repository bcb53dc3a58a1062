/**
 * decideContainerImage: one container's image, table-driven over rule, mode, opt-out,
 * registry answers, pin and policy; and decideImage (rewrite, scan) decides the same
 * inputs the same way when nothing is verified or opted out.
 */
import t from 'tap';
import { decideContainerImage, decideImage, type ContainerAction, type DecideOptions, type Mode, type OnUnreachable, type VerifyOutcome } from '../../src/core/decide.js';
import { compilePolicy } from '../../src/core/policy.js';
import { compileRules } from '../../src/core/rules.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const compiledRules = compileRules([
  { from: 'docker.io', to: 'mirror.example.com/hub' },
  { from: 'quay.io', to: ['a.example.com/quay', 'b.example.com/quay'], verify: true },
  { from: 'ghcr.io', to: 'a.example.com/ghcr', verify: true, pinDigest: true },
  { from: 'gcr.io', to: 'other.example.com/gcr' },
  { from: 'k8s.gcr.io', to: 'other.example.com/k8s', verify: true, pinDigest: true },
]);
const compiledPolicy = compilePolicy(['mirror.example.com', 'a.example.com', 'b.example.com', 'registry.k8s.io']);
if (!compiledRules.ok || !compiledPolicy.ok) throw new Error('the fixture compiles');
const ruleSet = compiledRules.ruleSet;
const policy = compiledPolicy.policy;

const QA = 'a.example.com/quay/org/app:1';
const QB = 'b.example.com/quay/org/app:1';
const GA = 'a.example.com/ghcr/org/app:1';
const KO = 'other.example.com/k8s/app:1';

interface Case {
  name: string;
  image: string;
  mode?: Mode;
  optedOut?: boolean;
  outcomes?: Record<string, VerifyOutcome>;
  onUnreachable?: OnUnreachable;
  digests?: Record<string, string>;
  missing?: Record<string, string>;
  refused?: string[];
  withPolicy?: boolean;
  action: ContainerAction;
  final: string;
  target?: string;
  targetIndex?: number;
  toVerify?: string[];
  pinnedDigest?: string;
  pinSkipped?: string;
  denial?: string;
  /** undefined: no policy; true: allowed; a string: the violation message. */
  policy?: true | string;
  /** Whether decideImage must decide it the same (no verify answers, no opt-out, enforce). */
  sameOutside?: boolean;
}

const notAllowed = (image: string): string =>
  `"${image}" is not from an allowed registry (allowed: mirror.example.com, a.example.com, b.example.com, registry.k8s.io)`;

const cases: Case[] = [
  { name: 'no rule: unchanged, allowed', image: 'registry.k8s.io/pause:3.9', action: 'unchanged', final: 'registry.k8s.io/pause:3.9', policy: true, sameOutside: true },
  { name: 'no rule: unchanged, denied', image: 'example.org/app:1', action: 'unchanged', final: 'example.org/app:1', policy: notAllowed('example.org/app:1'), sameOutside: true },
  { name: 'no rule, no policy', image: 'example.org/app:1', withPolicy: false, action: 'unchanged', final: 'example.org/app:1', sameOutside: true },
  { name: 'rule, enforce: rewritten', image: 'nginx:1.25', action: 'rewritten', final: 'mirror.example.com/hub/library/nginx:1.25', target: 'mirror.example.com/hub/library/nginx:1.25', targetIndex: 0, policy: true, sameOutside: true },
  { name: 'rule, audit: would-rewrite to what enforce would make', image: 'nginx:1.25', mode: 'audit', action: 'would-rewrite', final: 'mirror.example.com/hub/library/nginx:1.25', target: 'mirror.example.com/hub/library/nginx:1.25', targetIndex: 0, policy: true },
  { name: 'rule to a registry policy denies: enforce judges the target', image: 'gcr.io/p/app:1', action: 'rewritten', final: 'other.example.com/gcr/p/app:1', targetIndex: 0, policy: notAllowed('other.example.com/gcr/p/app:1'), sameOutside: true },
  { name: 'audit judges the would-be target, not the original', image: 'gcr.io/p/app:1', mode: 'audit', action: 'would-rewrite', final: 'other.example.com/gcr/p/app:1', target: 'other.example.com/gcr/p/app:1', policy: notAllowed('other.example.com/gcr/p/app:1') },
  { name: 'audit: an allowed target passes although the original would not', image: 'nginx:1.25', mode: 'audit', action: 'would-rewrite', final: 'mirror.example.com/hub/library/nginx:1.25', policy: true },
  { name: 'opted out: original kept and judged', image: 'nginx:1.25', optedOut: true, action: 'opted-out', final: 'nginx:1.25', target: 'mirror.example.com/hub/library/nginx:1.25', policy: notAllowed('nginx:1.25') },
  { name: 'invalid reference', image: 'Not A Reference', action: 'invalid', final: 'Not A Reference', policy: 'invalid image reference "Not A Reference": contains whitespace', sameOutside: true },
  { name: 'verify, not asked yet: both targets to ask', image: 'quay.io/org/app:1', action: 'rewritten', final: QA, targetIndex: 0, toVerify: [QA, QB], policy: true, sameOutside: true },
  { name: 'verify: present on target 1', image: 'quay.io/org/app:1', outcomes: { [QA]: 'present', [QB]: 'present' }, action: 'rewritten', final: QA, target: QA, targetIndex: 0, policy: true },
  { name: 'verify: present only on target 2', image: 'quay.io/org/app:1', outcomes: { [QA]: 'absent', [QB]: 'present' }, action: 'rewritten', final: QB, target: QB, targetIndex: 1, policy: true },
  { name: 'verify: unreachable first, present second: the second serves', image: 'quay.io/org/app:1', outcomes: { [QA]: 'unreachable', [QB]: 'present' }, action: 'rewritten', final: QB, targetIndex: 1, policy: true },
  { name: 'verify: absent everywhere: missing, original kept', image: 'quay.io/org/app:1', outcomes: { [QA]: 'absent', [QB]: 'absent' }, action: 'missing', final: 'quay.io/org/app:1', target: QA, targetIndex: 0, policy: `${notAllowed('quay.io/org/app:1')}; its mirror copy ${QA} is not in the mirror yet` },
  { name: 'verify: absent for some platforms: the suffix says which', image: 'quay.io/org/app:1', outcomes: { [QA]: 'absent', [QB]: 'absent' }, missing: { [QA]: 'linux/arm64' }, action: 'missing', final: 'quay.io/org/app:1', policy: `${notAllowed('quay.io/org/app:1')}; its mirror copy ${QA} is not in the mirror yet for linux/arm64` },
  { name: 'verify: absent everywhere, audit: missing too', image: 'quay.io/org/app:1', mode: 'audit', outcomes: { [QA]: 'absent', [QB]: 'absent' }, action: 'missing', final: 'quay.io/org/app:1', policy: `${notAllowed('quay.io/org/app:1')}; its mirror copy ${QA} is not in the mirror yet` },
  { name: 'verify: unreachable, onUnreachable original: unverified', image: 'quay.io/org/app:1', outcomes: { [QA]: 'absent', [QB]: 'unreachable' }, onUnreachable: 'original', action: 'unverified', final: 'quay.io/org/app:1', target: QB, targetIndex: 1, policy: `${notAllowed('quay.io/org/app:1')}; the mirror could not be checked for ${QB}` },
  { name: 'verify: unreachable, onUnreachable rewrite: the unreachable target', image: 'quay.io/org/app:1', outcomes: { [QA]: 'unreachable', [QB]: 'unreachable' }, onUnreachable: 'rewrite', action: 'rewritten', final: QA, targetIndex: 0, policy: true },
  { name: 'verify: unreachable, onUnreachable deny', image: 'quay.io/org/app:1', outcomes: { [QA]: 'absent', [QB]: 'unreachable' }, onUnreachable: 'deny', action: 'rewritten', final: QB, targetIndex: 1, denial: `cannot verify that ${QB} is in the mirror (registry unreachable)`, policy: true },
  { name: 'verify: credentials refused, deny says so', image: 'quay.io/org/app:1', outcomes: { [QA]: 'unreachable', [QB]: 'unreachable' }, onUnreachable: 'deny', refused: [QA], action: 'rewritten', final: QA, denial: `cannot verify that ${QA} is in the mirror (registry credentials refused)`, policy: true },
  { name: 'verify: credentials refused on another target: unreachable', image: 'quay.io/org/app:1', outcomes: { [QA]: 'unreachable', [QB]: 'unreachable' }, onUnreachable: 'deny', refused: [QB], action: 'rewritten', final: QA, denial: `cannot verify that ${QA} is in the mirror (registry unreachable)`, policy: true },
  { name: 'pinDigest with a digest: pinned', image: 'ghcr.io/org/app:1', outcomes: { [GA]: 'present' }, digests: { [GA]: D1 }, action: 'rewritten', final: `${GA}@${D1}`, target: GA, pinnedDigest: D1, policy: true },
  { name: 'pinDigest, audit: would-rewrite to the pinned target', image: 'ghcr.io/org/app:1', mode: 'audit', outcomes: { [GA]: 'present' }, digests: { [GA]: D1 }, action: 'would-rewrite', final: `${GA}@${D1}`, target: GA, pinnedDigest: D1, policy: true },
  { name: 'pinDigest, enforce, denied: the message names the pinned image', image: 'k8s.gcr.io/app:1', outcomes: { [KO]: 'present' }, digests: { [KO]: D1 }, action: 'rewritten', final: `${KO}@${D1}`, pinnedDigest: D1, policy: notAllowed(`${KO}@${D1}`) },
  { name: 'pinDigest, audit, denied: the message names the would-be target', image: 'k8s.gcr.io/app:1', mode: 'audit', outcomes: { [KO]: 'present' }, digests: { [KO]: D1 }, action: 'would-rewrite', final: `${KO}@${D1}`, pinnedDigest: D1, policy: notAllowed(KO) },
  { name: 'pinDigest without a digest: not pinned, and why', image: 'ghcr.io/org/app:1', outcomes: { [GA]: 'present' }, action: 'rewritten', final: GA, pinSkipped: 'the mirror answered no digest', policy: true },
  { name: 'pinDigest, onUnreachable rewrite: nothing to pin', image: 'ghcr.io/org/app:1', outcomes: { [GA]: 'unreachable' }, onUnreachable: 'rewrite', action: 'rewritten', final: GA, pinSkipped: 'the mirror could not be asked (onUnreachable: rewrite)', policy: true },
];

function options(c: Case): DecideOptions {
  return {
    ctx: undefined,
    mode: c.mode ?? 'enforce',
    optedOut: c.optedOut ?? false,
    verify: c.outcomes === undefined
      ? undefined
      : {
          outcomes: new Map(Object.entries(c.outcomes)),
          onUnreachable: c.onUnreachable ?? 'original',
          digests: c.digests ? new Map(Object.entries(c.digests)) : undefined,
          missing: c.missing ? new Map(Object.entries(c.missing)) : undefined,
          credentialsRefused: c.refused ? new Set(c.refused) : undefined,
        },
  };
}

t.test('decideContainerImage', async (t) => {
  for (const c of cases) {
    const settings = { ruleSet, policy: c.withPolicy === false ? undefined : policy };
    const container = { name: c.name };
    const d = decideContainerImage(settings, c.image, options(c), container);
    t.equal(d.container, container, `${c.name}: carries its container`);
    t.equal(d.action, c.action, `${c.name}: ${c.action}`);
    t.equal(d.original, c.image, `${c.name}: original`);
    t.equal(d.final, c.final, `${c.name}: final ${c.final}`);
    if (c.target !== undefined) t.equal(d.target, c.target, `${c.name}: target`);
    if (c.targetIndex !== undefined) t.equal(d.targetIndex, c.targetIndex, `${c.name}: target index`);
    t.same(d.toVerify?.map((x) => x.rewritten), c.toVerify, `${c.name}: to verify`);
    t.equal(d.pinnedDigest, c.pinnedDigest, `${c.name}: pinned digest`);
    t.equal(d.pinSkipped, c.pinSkipped, `${c.name}: pin skipped`);
    t.equal(d.unreachableDenial, c.denial, `${c.name}: unreachable denial`);
    if (c.policy === undefined) {
      t.equal(d.verdict, undefined, `${c.name}: no verdict without a policy`);
      t.equal(d.violation, undefined, `${c.name}: no violation without a policy`);
    } else if (c.policy === true) {
      t.equal(d.verdict?.allowed, true, `${c.name}: allowed`);
      t.equal(d.violation, undefined, `${c.name}: no violation`);
    } else {
      t.equal(d.verdict?.allowed, false, `${c.name}: denied`);
      t.equal(d.violation, c.policy, `${c.name}: violation message`);
      t.ok(d.violationRegistry, `${c.name}: violation registry`);
    }
  }
});

t.test('decideImage (rewrite, scan) decides the same inputs the same way', async (t) => {
  const same = cases.filter((c) => c.sameOutside === true);
  t.ok(same.length >= 6, 'the table has cases outside a pod');
  for (const c of same) {
    const settings = { ruleSet, policy: c.withPolicy === false ? undefined : policy };
    const inPod = decideContainerImage(settings, c.image, options(c), undefined);
    const outside = decideImage(settings, c.image);
    t.strictSame(outside, inPod, `${c.name}: the same decision`);
    t.equal(outside.final, c.final, `${c.name}: final`);
    t.equal(outside.rewrite.kind, c.action === 'rewritten' ? 'rewrite' : c.action, `${c.name}: rewrite kind`);
  }
});
