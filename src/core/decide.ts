/**
 * Decide one image outside a pod: which rule rewrites it (if any), what it becomes, and
 * what the registry policy says of the result. The one place `mirrorgate rewrite` and
 * `mirrorgate scan` ask, with the same rules and policy admission applies per container
 * (pod planning adds what only a pod has: scoping by namespace and labels, verification,
 * audit mode). Pure.
 */
import { judgeImage, judgeRef, type Policy, type PolicyVerdict } from './policy.js';
import { decideRewrite, type RewriteDecision, type Rule, type RuleSet, type ScopeContext } from './rules.js';

export interface ImageDecision {
  readonly rewrite: RewriteDecision;
  /** The image that would run: the rewrite target, or the image as it is. */
  readonly final: string;
  /** The policy's verdict on `final`; undefined without a policy. */
  readonly verdict: PolicyVerdict | undefined;
}

export function decideImage(settings: { readonly ruleSet: RuleSet; readonly policy: Policy | undefined }, image: string, ctx?: ScopeContext): ImageDecision {
  const rewrite = decideRewrite(settings.ruleSet, image, ctx);
  const final = rewrite.kind === 'rewrite' ? rewrite.rewritten : image;
  let verdict: PolicyVerdict | undefined;
  if (settings.policy !== undefined) {
    if (rewrite.kind === 'rewrite') verdict = judgeRef(settings.policy, rewrite.rewrittenRef, final);
    else if (rewrite.kind === 'unchanged') verdict = judgeRef(settings.policy, rewrite.ref, final);
    else verdict = judgeImage(settings.policy, final);
  }
  return { rewrite, final, verdict };
}

/** `rules[2] docker.io -> mirror.example.com/dockerhub[, ...]`, with ` (verify)` when asked and set. */
export function ruleLabel(rule: Rule, opts: { readonly verify?: boolean } = {}): string {
  return `rules[${rule.index}] ${rule.from.source} -> ${rule.targets.map((x) => x.to.source).join(', ')}${opts.verify && rule.verify ? ' (verify)' : ''}`;
}
