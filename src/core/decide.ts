/**
 * Decide one image: which rule rewrites it (if any), what it becomes, and what the
 * registry policy says of what would run. The one place admission (per container),
 * `mirrorgate rewrite` and `mirrorgate scan` ask, so they cannot disagree on the rule or
 * the policy for an image. Pod planning adds what only a pod has (which containers are
 * in scope, opt-out by annotation, registry answers for verified rules, audit mode);
 * outside a pod an image is decided as enforce mode would, with nothing verified. Pure.
 */
import { judgeImage, judgeRef, type Policy, type PolicyVerdict } from './policy.js';
import { parseReference, type ImageReference } from './reference.js';
import { decideRewrite, type Candidate, type RewriteDecision, type Rule, type RuleSet, type ScopeContext } from './rules.js';
import { clip } from './text.js';

export type Mode = 'enforce' | 'audit';

/** What a registry check said about a rewrite target (see verification). */
export type VerifyOutcome = 'present' | 'absent' | 'unreachable';

/** How a rule's verified rewrite falls back when the mirror cannot answer. */
export type OnUnreachable = 'original' | 'rewrite' | 'deny';

export interface VerifyAnswers {
  /** Outcome per rewritten reference (the target string). Missing means not checked. */
  readonly outcomes: ReadonlyMap<string, VerifyOutcome>;
  readonly onUnreachable: OnUnreachable;
  /** For 'absent' answers about an image that is there without some platforms: which ones. */
  readonly missing?: ReadonlyMap<string, string> | undefined;
  /** The manifest digest of each 'present' answer (what a pin names). */
  readonly digests?: ReadonlyMap<string, string> | undefined;
  /** 'unreachable' answers whose cause was mirrorgate's own registry credentials (a refused exchange). */
  readonly credentialsRefused?: ReadonlySet<string> | undefined;
}

export type ContainerAction =
  | 'rewritten' // enforce: the image is patched
  | 'would-rewrite' // audit: it would be
  | 'missing' // a verified rule found the target absent: original kept
  | 'unverified' // the mirror could not be asked: original kept (onUnreachable: original)
  | 'unchanged' // no rule, already on a target, or no image
  | 'opted-out' // the pod's rewrite annotation is "false"
  | 'invalid'; // the reference does not parse

/** A rewrite made (enforce) or that would be made (audit): the one predicate for both. */
export function isRewrite(d: { readonly action: ContainerAction }): boolean {
  return d.action === 'rewritten' || d.action === 'would-rewrite';
}

export interface DecideSettings {
  readonly ruleSet: RuleSet;
  readonly policy: Policy | undefined;
}

/** What a pod says about all of its containers; one object per pod, not per container. */
export interface DecideOptions {
  /** Rule scoping by namespace and labels; undefined: only unscoped rules apply. */
  readonly ctx: ScopeContext | undefined;
  readonly mode: Mode;
  /** The pod's rewrite annotation is "false": a rule's image is kept as it is. */
  readonly optedOut: boolean;
  /** The registries' answers for verified rules; undefined: not asked yet. */
  readonly verify: VerifyAnswers | undefined;
}

export interface ImageDecision<C = undefined> {
  /** What the decision is for (pod planning's container), carried as it is. */
  readonly container: C;
  readonly rewrite: RewriteDecision;
  readonly action: ContainerAction;
  /** The image as given. */
  readonly original: string;
  /** The image that would run in enforce mode: `original` unless rewritten. */
  readonly final: string;
  /** Normalised registry of the original image ('invalid' when it does not parse). */
  readonly sourceRegistry: string;
  /** The original image parsed, when it parses. */
  readonly sourceRef: ImageReference | undefined;
  /** The rewrite target parsed (with the pin), when there is one. */
  readonly targetRef: ImageReference | undefined;
  readonly rule: Rule | undefined;
  /** The rewrite target, also for would-rewrite/opted-out/missing/unverified. */
  readonly target: string | undefined;
  /** Which of the rule's targets `target` is on (0: the first); undefined unless the rule applies. */
  readonly targetIndex: number | undefined;
  /** `pinDigest`: the digest the mirror answered, appended to `target` in `final` (enforce). */
  readonly pinnedDigest: string | undefined;
  /** `pinDigest`: why the rewrite carries no digest (no verified answer, no or a bad digest). */
  readonly pinSkipped: string | undefined;
  /** A verified rule's targets the registries must be asked about first; undefined when none. */
  readonly toVerify: readonly Candidate[] | undefined;
  /** onUnreachable: deny: why the image cannot be admitted (without the container's name). */
  readonly unreachableDenial: string | undefined;
  /** The policy's verdict on what would run (audit: the would-be target); undefined without a policy. */
  readonly verdict: PolicyVerdict | undefined;
  /** The verdict's message when it rejects, with what verification found; undefined when allowed. */
  readonly violation: string | undefined;
  readonly violationRegistry: string | undefined;
}

const OUTSIDE_A_POD: DecideOptions = { ctx: undefined, mode: 'enforce', optedOut: false, verify: undefined };

/** One image outside a pod (`mirrorgate rewrite`, `mirrorgate scan`): as enforce mode decides it, nothing verified. */
export function decideImage(settings: DecideSettings, image: string, ctx?: ScopeContext): ImageDecision {
  return decideContainerImage(settings, image, ctx === undefined ? OUTSIDE_A_POD : { ...OUTSIDE_A_POD, ctx }, undefined);
}

/**
 * Decide one container's image. A verified rule's target is the first in order whose
 * registry answer is 'present' (all are asked at once); none present and none unreachable
 * keeps the original ('missing'); otherwise the first unreachable one falls back as
 * `verify.onUnreachable` says. Without answers yet, `toVerify` names what to ask.
 * Runs for every container of every admission: one object per call, no closures.
 */
export function decideContainerImage<C>(settings: DecideSettings, image: string, opts: DecideOptions, container: C): ImageDecision<C> {
  const rewrite = decideRewrite(settings.ruleSet, image, opts.ctx);
  let action: ContainerAction;
  let sourceRegistry = 'invalid';
  let sourceRef: ImageReference | undefined;
  let targetRef: ImageReference | undefined;
  let rule: Rule | undefined;
  let target: string | undefined;
  let targetIndex: number | undefined;
  let pin: PinResult | undefined;
  let toVerify: readonly Candidate[] | undefined;
  let unreachableDenial: string | undefined;
  let final = image;
  if (rewrite.kind === 'invalid') action = 'invalid';
  else if (rewrite.kind === 'unchanged') {
    action = 'unchanged';
    sourceRegistry = rewrite.ref.registry;
    sourceRef = rewrite.ref;
  } else if (opts.optedOut) {
    action = 'opted-out';
    sourceRegistry = rewrite.ref.registry;
    sourceRef = rewrite.ref;
    rule = rewrite.rule;
    target = rewrite.rewritten;
    targetRef = rewrite.rewrittenRef;
  } else {
    action = opts.mode === 'audit' ? 'would-rewrite' : 'rewritten';
    sourceRegistry = rewrite.ref.registry;
    sourceRef = rewrite.ref;
    rule = rewrite.rule;
    const candidates = rewrite.candidates;
    let chosen = candidates[0] as Candidate;
    if (rule.verify) {
      const verify = opts.verify;
      let present = -1;
      let unreachable = -1;
      let unknown = false;
      for (let i = 0; i < candidates.length; i++) {
        const outcome = verify?.outcomes.get((candidates[i] as Candidate).rewritten);
        if (outcome === undefined) {
          unknown = true;
          break;
        }
        if (outcome === 'present') {
          if (present === -1) present = i;
        } else if (outcome === 'unreachable' && unreachable === -1) unreachable = i;
      }
      if (unknown) toVerify = candidates;
      else if (present !== -1) {
        chosen = candidates[present] as Candidate;
        if (rule.pinDigest) pin = pinTo(chosen, verify?.digests?.get(chosen.rewritten));
      } else if (unreachable === -1) action = 'missing';
      else {
        // No target holds it; the first that could not be asked is the one a fallback uses.
        chosen = candidates[unreachable] as Candidate;
        const fallback = verify?.onUnreachable ?? 'original';
        // A pin names what the mirror answered; without an answer there is nothing to pin.
        if (rule.pinDigest && fallback === 'rewrite') pin = { skipped: 'the mirror could not be asked (onUnreachable: rewrite)' };
        if (fallback === 'original') action = 'unverified';
        else if (fallback === 'deny') {
          const why = verify?.credentialsRefused?.has(chosen.rewritten) === true ? 'registry credentials refused' : 'registry unreachable';
          unreachableDenial = `cannot verify that ${chosen.rewritten} is in the mirror (${why})`;
        }
      }
    }
    target = chosen.rewritten;
    targetIndex = chosen.index;
    const pinned = pin !== undefined && 'digest' in pin ? pin : undefined;
    targetRef = pinned?.ref ?? chosen.ref;
    if (action !== 'missing' && action !== 'unverified') final = pinned?.image ?? target;
  }

  // Policy is judged on what would run after this webhook: in audit mode that is the
  // image as it would be in enforce mode, so the report shows the real gap.
  let verdict: PolicyVerdict | undefined;
  let violation: string | undefined;
  let violationRegistry: string | undefined;
  if (settings.policy !== undefined) {
    const rewritten = action === 'rewritten' || action === 'would-rewrite';
    const judged = action === 'would-rewrite' ? (target as string) : final;
    const judgedRef = rewritten ? targetRef : sourceRef;
    verdict = judgedRef ? judgeRef(settings.policy, judgedRef, judged) : judgeImage(settings.policy, judged);
    if (!verdict.allowed) {
      violation = verdict.message;
      violationRegistry = verdict.registry;
      if (action === 'missing') {
        const lacks = target === undefined ? undefined : opts.verify?.missing?.get(target);
        violation = `${violation}; its mirror copy ${target ?? ''} is not in the mirror yet${lacks === undefined ? '' : ` for ${lacks}`}`;
      } else if (action === 'unverified') violation = `${violation}; the mirror could not be checked for ${target ?? ''}`;
    }
  }
  return {
    container,
    rewrite,
    action,
    original: image,
    final,
    sourceRegistry,
    sourceRef,
    targetRef,
    rule,
    target,
    targetIndex,
    pinnedDigest: pin !== undefined && 'digest' in pin ? pin.digest : undefined,
    pinSkipped: pin !== undefined && 'skipped' in pin ? pin.skipped : undefined,
    toVerify,
    unreachableDenial,
    verdict,
    violation,
    violationRegistry,
  };
}

/** A pin to the digest the mirror answered, or why there is none. */
type PinResult = { readonly digest: string; readonly image: string; readonly ref: ImageReference } | { readonly skipped: string };

/**
 * `target/repo:tag@digest` for a verified target. A reference that already names a digest
 * is pinned as it is (undefined: nothing to add). The digest must be one the grammar
 * accepts: it goes into the pod spec.
 */
function pinTo(chosen: Candidate, digest: string | undefined): PinResult | undefined {
  if (chosen.ref.digest !== undefined) return undefined;
  if (digest === undefined) return { skipped: 'the mirror answered no digest' };
  const image = `${chosen.rewritten}@${digest}`;
  const parsed = parseReference(image);
  if (!parsed.ok || parsed.ref.digest !== digest) return { skipped: `the mirror answered a digest that is not valid (${clip(digest, 80)})` };
  return { digest, image, ref: parsed.ref };
}

/** `rules[2] docker.io -> mirror.example.com/dockerhub[, ...]`, with ` (verify)` when asked and set. */
export function ruleLabel(rule: Rule, opts: { readonly verify?: boolean } = {}): string {
  return `rules[${rule.index}] ${rule.from.source} -> ${rule.targets.map((x) => x.to.source).join(', ')}${opts.verify && rule.verify ? ' (verify)' : ''}`;
}
