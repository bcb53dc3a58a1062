/**
 * Rewrite rules: `from` a third-party registry (optionally a repository prefix) `to`
 * a mirror host[:port] with an optional path prefix. Pure: compiled once when the
 * config loads, applied on every admission.
 */
import {
  formatPattern,
  matchLength,
  parsePattern,
  patternsOverlap,
  specificity,
  type RegistryPattern,
} from './patterns.js';
import { parseReference, type ImageReference } from './reference.js';

export interface RuleInput {
  readonly from: string;
  /** One target, or targets in order of preference (several need `verify`). */
  readonly to: string | readonly string[];
  readonly verify?: boolean | undefined;
  readonly copyOnMiss?: boolean | undefined;
}

/** One rewrite target of a rule. */
export interface RuleTarget {
  /** The target as a pattern (exact host, path prefix), for idempotence checks. */
  readonly to: RegistryPattern;
  /** `host[:port][/prefix]` as it is prepended to the remaining path. */
  readonly target: string;
}

/** At most this many targets per rule: each is a registry request per uncached image. */
export const MAX_TARGETS = 8;

export interface Rule {
  readonly index: number;
  readonly from: RegistryPattern;
  /** The first target's pattern (the primary mirror). */
  readonly to: RegistryPattern;
  /** The first target's prefix. */
  readonly target: string;
  /** Every target in order of preference (the first is `to` / `target`). */
  readonly targets: readonly RuleTarget[];
  readonly verify: boolean;
  readonly copyOnMiss: boolean;
}

export interface RuleSet {
  readonly rules: readonly Rule[];
}

export interface Problem {
  readonly path: string;
  readonly message: string;
}

export type CompileResult = { ok: true; ruleSet: RuleSet } | { ok: false; problems: Problem[] };

/**
 * Compile and validate rules. Reports every problem by config path
 * (`rules[2].to: ...`): bad patterns, duplicate `from`, wildcard targets, and loops
 * (a target that a `from` would match again, which would make rewriting non-idempotent).
 */
export function compileRules(inputs: readonly RuleInput[], basePath = 'rules', fileIndexes?: readonly number[]): CompileResult {
  const problems: Problem[] = [];
  const rules: Rule[] = [];
  inputs.forEach((input, i) => {
    // Positions in the config file, when some entries were left out before compiling.
    const index = fileIndexes?.[i] ?? i;
    const at = `${basePath}[${index}]`;
    const from = parsePattern(input.from, true);
    if (!from.ok) problems.push({ path: `${at}.from`, message: from.reason });
    const list = typeof input.to === 'string' ? [input.to] : input.to;
    const targets: RuleTarget[] = [];
    let targetsOk = true;
    if (list.length === 0) {
      problems.push({ path: `${at}.to`, message: 'lists no target' });
      targetsOk = false;
    } else if (list.length > MAX_TARGETS) {
      problems.push({ path: `${at}.to`, message: `lists ${list.length} targets; at most ${MAX_TARGETS}` });
      targetsOk = false;
    } else if (list.length > 1 && input.verify !== true) {
      // Without a check nothing tells the targets apart: the first would always win.
      problems.push({ path: `${at}.to`, message: 'several targets need verify: true (the first that holds the image wins)' });
    }
    list.forEach((source, j) => {
      const toPath = typeof input.to === 'string' ? `${at}.to` : `${at}.to[${j}]`;
      const to = parsePattern(source, false);
      if (!to.ok) {
        problems.push({ path: toPath, message: to.reason });
        targetsOk = false;
      } else if (!/[.:]/.test(to.pattern.host) && to.pattern.host !== 'localhost') {
        // `mirror/dockerhub/...` would be read back as a Docker Hub path by every runtime.
        problems.push({ path: toPath, message: `"${source}": the host must contain "." or ":" or be localhost, or runtimes read it as a Docker Hub path` });
        targetsOk = false;
      } else {
        const target = formatPattern(to.pattern);
        const same = targets.findIndex((x) => x.target === target);
        if (same !== -1) problems.push({ path: toPath, message: `duplicates ${at}.to[${same}] "${targets[same]?.to.source ?? ''}"` });
        targets.push({ to: to.pattern, target });
      }
    });
    if (input.copyOnMiss === true && input.verify !== true) {
      problems.push({ path: `${at}.copyOnMiss`, message: 'needs verify: true (a copy is queued when verification finds the image missing)' });
    }
    const first = targets[0];
    if (from.ok && targetsOk && first !== undefined) {
      rules.push({
        index,
        from: from.pattern,
        to: first.to,
        target: first.target,
        targets,
        verify: input.verify === true,
        copyOnMiss: input.copyOnMiss === true,
      });
    }
  });
  for (let i = 0; i < rules.length; i++) {
    const a = rules[i] as Rule;
    for (let j = 0; j < rules.length; j++) {
      const b = rules[j] as Rule;
      if (i < j && formatPattern(a.from) === formatPattern(b.from)) {
        problems.push({ path: `${basePath}[${b.index}].from`, message: `duplicates rules[${a.index}].from "${a.from.source}"` });
      }
      a.targets.forEach((t, k) => {
        if (!patternsOverlap(t.to, b.from)) return;
        problems.push({
          path: a.targets.length === 1 ? `${basePath}[${a.index}].to` : `${basePath}[${a.index}].to[${k}]`,
          message: `"${t.to.source}" overlaps rules[${b.index}].from "${b.from.source}": rewritten images would be rewritten again`,
        });
      });
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, ruleSet: { rules } };
}

export type RewriteDecision =
  /** The reference does not parse; it is never rewritten. */
  | { readonly kind: 'invalid'; readonly image: string; readonly reason: string }
  /** Nothing to do: no rule matches, or the image is already on a rule's target. */
  | {
      readonly kind: 'unchanged';
      readonly image: string;
      readonly ref: ImageReference;
      readonly reason: 'no-rule' | 'on-target' | 'target-invalid';
      readonly detail?: string;
    }
  | {
      readonly kind: 'rewrite';
      readonly image: string;
      readonly ref: ImageReference;
      readonly rule: Rule;
      /** The new reference: target + remaining path + original tag/digest, byte for byte. */
      readonly rewritten: string;
      readonly rewrittenRef: ImageReference;
      /** The reference on each of the rule's targets, in order (the first is `rewritten`). */
      readonly candidates: readonly Candidate[];
    };

/** The image as it would be on one of a rule's targets. */
export interface Candidate {
  /** Position in the rule's `to` list. */
  readonly index: number;
  readonly rewritten: string;
  readonly ref: ImageReference;
}

/** Find the most specific rule for a parsed reference, if any. */
export function findRule(ruleSet: RuleSet, ref: ImageReference): { rule: Rule; matched: number } | undefined {
  let best: { rule: Rule; matched: number; score: number } | undefined;
  for (const rule of ruleSet.rules) {
    const matched = matchLength(rule.from, ref.registry, ref.repository);
    if (matched < 0) continue;
    const score = specificity(rule.from, matched);
    if (best === undefined || score > best.score) best = { rule, matched, score };
  }
  return best && { rule: best.rule, matched: best.matched };
}

/** Is the reference already on some rule's target (so rewriting it again is wrong)? */
export function onAnyTarget(ruleSet: RuleSet, ref: ImageReference): boolean {
  for (const rule of ruleSet.rules) {
    for (const t of rule.targets) if (matchLength(t.to, ref.registry, ref.repository) >= 0) return true;
  }
  return false;
}

/** Decide what happens to one image reference under the rules. */
export function decideRewrite(ruleSet: RuleSet, image: string): RewriteDecision {
  const parsed = parseReference(image);
  if (!parsed.ok) return { kind: 'invalid', image, reason: parsed.reason };
  const ref = parsed.ref;
  if (onAnyTarget(ruleSet, ref)) return { kind: 'unchanged', image, ref, reason: 'on-target' };
  const found = findRule(ruleSet, ref);
  if (found === undefined) return { kind: 'unchanged', image, ref, reason: 'no-rule' };
  const remaining = remainingPath(ref.repository, found.matched);
  const candidates: Candidate[] = [];
  for (let index = 0; index < found.rule.targets.length; index++) {
    const target = (found.rule.targets[index] as RuleTarget).target;
    const rewritten = (remaining === '' ? target : `${target}/${remaining}`) + ref.suffix;
    const check = parseReference(rewritten);
    if (!check.ok) return { kind: 'unchanged', image, ref, reason: 'target-invalid', detail: check.reason };
    candidates.push({ index, rewritten, ref: check.ref });
  }
  const first = candidates[0] as Candidate;
  return { kind: 'rewrite', image, ref, rule: found.rule, rewritten: first.rewritten, rewrittenRef: first.ref, candidates };
}

function remainingPath(repository: string, matchedComponents: number): string {
  let pos = 0;
  for (let i = 0; i < matchedComponents; i++) {
    const slash = repository.indexOf('/', pos);
    if (slash === -1) return '';
    pos = slash + 1;
  }
  return repository.slice(pos);
}
