/** decideImage: the rule, the result and the policy verdict for one image, table-driven. */
import t from 'tap';
import { decideImage, ruleLabel } from '../../src/core/decide.js';
import { compilePolicy } from '../../src/core/policy.js';
import { compileRules } from '../../src/core/rules.js';

const compiledRules = compileRules([
  { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
  { from: 'quay.io', to: ['mirror.example.com/quay', 'backup.example.com/quay'], verify: true },
]);
const compiledPolicy = compilePolicy(['mirror.example.com', 'registry.k8s.io']);
if (!compiledRules.ok || !compiledPolicy.ok) throw new Error('the fixture compiles');
const rules = compiledRules.ruleSet;
const policy = compiledPolicy.policy;

t.test('decisions', async (t) => {
  const cases: { image: string; kind: string; final: string; allowed: boolean | undefined; withPolicy?: boolean }[] = [
    { image: 'nginx:1.25', kind: 'rewrite', final: 'mirror.example.com/dockerhub/library/nginx:1.25', allowed: true },
    { image: 'registry.k8s.io/pause:3.9', kind: 'unchanged', final: 'registry.k8s.io/pause:3.9', allowed: true },
    { image: 'ghcr.io/org/app:1', kind: 'unchanged', final: 'ghcr.io/org/app:1', allowed: false },
    { image: 'mirror.example.com/dockerhub/library/nginx:1', kind: 'unchanged', final: 'mirror.example.com/dockerhub/library/nginx:1', allowed: true },
    { image: 'Not A Reference', kind: 'invalid', final: 'Not A Reference', allowed: false },
    { image: 'ghcr.io/org/app:1', kind: 'unchanged', final: 'ghcr.io/org/app:1', allowed: undefined, withPolicy: false },
  ];
  for (const c of cases) {
    const d = decideImage({ ruleSet: rules, policy: c.withPolicy === false ? undefined : policy }, c.image);
    t.equal(d.rewrite.kind, c.kind, `${c.image}: ${c.kind}`);
    t.equal(d.final, c.final, `${c.image}: becomes ${c.final}`);
    t.equal(d.verdict?.allowed, c.allowed, `${c.image}: policy ${String(c.allowed)}`);
  }
});

t.test('ruleLabel names the rule as written, (verify) only when asked', async (t) => {
  const d = decideImage({ ruleSet: rules, policy: undefined }, 'quay.io/org/app:1');
  if (d.rewrite.kind !== 'rewrite') throw new Error('rewrite expected');
  t.equal(ruleLabel(d.rewrite.rule), 'rules[1] quay.io -> mirror.example.com/quay, backup.example.com/quay');
  t.equal(ruleLabel(d.rewrite.rule, { verify: true }), 'rules[1] quay.io -> mirror.example.com/quay, backup.example.com/quay (verify)');
});
