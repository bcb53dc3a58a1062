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
import { buildFlatPatternIndex, FlatPatternIndex, StringTableBuilder, writeFlatIndex } from './pattern-index.js';
import { parseReference, type ImageReference } from './reference.js';
import { parseSelector, selectorMatches, type LabelSelector } from './selector.js';

export interface RuleInput {
  readonly from: string;
  /** One target, or targets in order of preference (several need `verify`). */
  readonly to: string | readonly string[];
  readonly verify?: boolean | undefined;
  readonly copyOnMiss?: boolean | undefined;
  /** Write `target:tag@digest` with the digest the mirror answered (needs `verify`). */
  readonly pinDigest?: boolean | undefined;
  /** Only pods in these namespaces (names). */
  readonly namespaces?: readonly string[] | undefined;
  /** Only pods in namespaces whose labels match (a label selector, as written). */
  readonly namespaceSelector?: unknown;
  /** Only pods whose labels match (a label selector, as written). */
  readonly podSelector?: unknown;
  /** Image patterns (as `from`) this rule never rewrites. */
  readonly exclude?: readonly string[] | undefined;
}

/** Where a rule applies; every part that is set must hold. */
export interface RuleScope {
  readonly namespaces: readonly string[] | undefined;
  readonly namespaceSelector: LabelSelector | undefined;
  readonly podSelector: LabelSelector | undefined;
  /** A stable text form: two rules for one `from` must differ in it. */
  readonly canonical: string;
}

/** What scoping reads of an admission. */
export interface ScopeContext {
  readonly namespace: string;
  /** The namespace's labels from the namespace cache; undefined when not known. */
  readonly namespaceLabels: Readonly<Record<string, string>> | undefined;
  readonly podLabels: Readonly<Record<string, string>>;
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
  /** Rewrites name the digest the mirror answered, after the tag. */
  readonly pinDigest: boolean;
  /** Undefined: every pod. */
  readonly scope: RuleScope | undefined;
  /** Images this rule leaves alone. */
  readonly exclude: readonly RegistryPattern[];
}

export interface RuleSet {
  readonly rules: readonly Rule[];
  /** Images no rule rewrites (top-level `exclude`). */
  readonly exclude?: readonly RegistryPattern[] | undefined;
}

/** A namespace name: an RFC 1123 label. */
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Compile `exclude` patterns (wildcards allowed, as in `from`). */
export function compileExclude(patterns: readonly string[], path: string): { patterns: RegistryPattern[]; problems: Problem[] } {
  const out: RegistryPattern[] = [];
  const problems: Problem[] = [];
  patterns.forEach((source, i) => {
    const p = parsePattern(source, true);
    if (p.ok) out.push(p.pattern);
    else problems.push({ path: `${path}[${i}]`, message: p.reason });
  });
  return { patterns: out, problems };
}

/** What a scope is written with (rules; pull secrets take the namespace parts). */
export interface ScopeInput {
  readonly namespaces?: readonly string[] | undefined;
  readonly namespaceSelector?: unknown;
  readonly podSelector?: unknown;
}

/** Compile a scope; undefined when nothing limits it. Problems are added to `problems`. */
export function compileScope(input: ScopeInput, at: string, problems: Problem[]): RuleScope | undefined {
  const { namespaces, namespaceSelector, podSelector } = input;
  if (namespaces === undefined && namespaceSelector === undefined && podSelector === undefined) return undefined;
  let names: string[] | undefined;
  if (namespaces !== undefined) {
    names = [];
    if (namespaces.length === 0) problems.push({ path: `${at}.namespaces`, message: 'lists no namespace (remove it to apply the rule everywhere)' });
    namespaces.forEach((n, i) => {
      if (NAMESPACE.test(n)) names?.push(n);
      else problems.push({ path: `${at}.namespaces[${i}]`, message: `"${n}" is not a namespace name` });
    });
    names.sort();
  }
  const selector = (raw: unknown, key: string): LabelSelector | undefined => {
    if (raw === undefined) return undefined;
    const r = parseSelector(raw, `${at}.${key}`);
    if (r.ok) return r.selector;
    problems.push(...r.problems);
    return undefined;
  };
  const ns = selector(namespaceSelector, 'namespaceSelector');
  const pod = selector(podSelector, 'podSelector');
  const canonical = `names=${names?.join(',') ?? '*'} ns={${ns?.canonical ?? ''}} pod={${pod?.canonical ?? ''}}`;
  return { namespaces: names, namespaceSelector: ns, podSelector: pod, canonical };
}

/** Does the rule apply to this admission? Scoped rules never apply without a context. */
export function inScope(rule: Rule, ctx: ScopeContext | undefined): boolean {
  return scopeAdmits(rule.scope, ctx);
}

/** Does a scope admit this admission? No scope admits all; a scope admits nothing without a context. */
export function scopeAdmits(scope: RuleScope | undefined, ctx: ScopeContext | undefined): boolean {
  if (scope === undefined) return true;
  if (ctx === undefined) return false;
  if (scope.namespaces !== undefined && !scope.namespaces.includes(ctx.namespace)) return false;
  if (scope.namespaceSelector !== undefined) {
    // Labels not known (no namespace cache, or not synced yet): the rule does not apply.
    if (ctx.namespaceLabels === undefined || !selectorMatches(scope.namespaceSelector, ctx.namespaceLabels)) return false;
  }
  if (scope.podSelector !== undefined && !selectorMatches(scope.podSelector, ctx.podLabels)) return false;
  return true;
}

function excluded(patterns: readonly RegistryPattern[] | undefined, ref: ImageReference): boolean {
  if (patterns === undefined) return false;
  for (const p of patterns) if (matchLength(p, ref.registry, ref.repository) >= 0) return true;
  return false;
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
    if (input.pinDigest === true && input.verify !== true) {
      problems.push({ path: `${at}.pinDigest`, message: 'needs verify: true (the pin is the digest the mirror answered)' });
    }
    const scope = compileScope(input, at, problems);
    const exclude = compileExclude(input.exclude ?? [], `${at}.exclude`);
    problems.push(...exclude.problems);
    if (from.ok) {
      exclude.patterns.forEach((p, k) => {
        // An exclusion outside the rule's own images is a typo: it would never apply.
        if (!patternsOverlap(from.pattern, p)) problems.push({ path: `${at}.exclude[${k}]`, message: `"${p.source}" is not below from "${from.pattern.source}": it would never apply` });
      });
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
        pinDigest: input.pinDigest === true,
        scope,
        exclude: exclude.patterns,
      });
    }
  });
  // One rule per `from` and scope: two with the same would leave the choice to file order.
  const seen = new Map<string, Rule>();
  for (const r of rules) {
    const key = `${formatPattern(r.from)}\0${r.scope?.canonical ?? ''}`;
    const earlier = seen.get(key);
    if (earlier === undefined) seen.set(key, r);
    else {
      const what = r.scope === undefined ? '' : ' with the same scope';
      problems.push({ path: `${basePath}[${r.index}].from`, message: `duplicates rules[${earlier.index}].from "${earlier.from.source}"${what}` });
    }
  }
  // A target that some `from` matches again would make rewriting non-idempotent. The
  // index finds the candidates per target, so this is O(n log n), not a pass over every
  // pair (20,000 rules would be 400 million checks).
  const froms = buildFlatPatternIndex(rules.map((r, i) => [r.from, i] as const));
  for (const a of rules) {
    const hits: { b: Rule; k: number }[] = [];
    a.targets.forEach((t, k) => {
      for (const at of froms.overlapping(t.to)) {
        const b = rules[at] as Rule;
        if (patternsOverlap(t.to, b.from)) hits.push({ b, k });
      }
    });
    hits.sort((x, y) => x.b.index - y.b.index || x.k - y.k);
    for (const { b, k } of hits) {
      const t = a.targets[k] as (typeof a.targets)[number];
      problems.push({
        path: a.targets.length === 1 ? `${basePath}[${a.index}].to` : `${basePath}[${a.index}].to[${k}]`,
        message: `"${t.to.source}" overlaps rules[${b.index}].from "${b.from.source}": rewritten images would be rewritten again`,
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
      readonly reason: 'no-rule' | 'on-target' | 'target-invalid' | 'excluded';
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

/**
 * Find the rule for a parsed reference among those in scope: the most specific `from`
 * wins; for the same `from`, a scoped rule beats an unscoped one; then file order.
 */
export function findRule(ruleSet: RuleSet, ref: ImageReference, ctx?: ScopeContext): { rule: Rule; matched: number } | undefined {
  let best: { rule: Rule; matched: number; score: number } | undefined;
  const rules = ruleSet.rules;
  // Only the rules the index says could match, in file order (ties go to the first).
  const candidates = indexOf(rules)
    .froms.candidates(ref.registry, ref.repository)
    .map((at) => rules[at] as Rule)
    .sort((a, b) => a.index - b.index);
  for (const rule of candidates) {
    const matched = matchLength(rule.from, ref.registry, ref.repository);
    if (matched < 0 || !inScope(rule, ctx)) continue;
    const score = specificity(rule.from, matched) * 2 + (rule.scope === undefined ? 0 : 1);
    if (best === undefined || score > best.score) best = { rule, matched, score };
  }
  return best && { rule: best.rule, matched: best.matched };
}

/**
 * The lookup index of a rule list: `froms` answers positions in the list, `targets`
 * position * MAX_TARGETS + the target's position in the rule.
 */
interface RuleIndexes {
  readonly froms: FlatPatternIndex;
  readonly targets: FlatPatternIndex;
}

/** One per rule list (a config load); rule lists are never mutated. */
const indexes = new WeakMap<readonly Rule[], RuleIndexes>();

/** The index of a rule list: adopted with it (a reload), or built on first use. */
function indexOf(rules: readonly Rule[]): RuleIndexes {
  let built = indexes.get(rules);
  if (built === undefined) {
    built = readIndex(buildRuleIndex(rules));
    indexes.set(rules, built);
  }
  return built;
}

/**
 * A rule list's lookup index, and optionally the rules themselves, as integers and one
 * string table: what a worker thread builds and hands over (the integers' buffer is
 * transferred, not copied), so that the thread answering admissions adopts it without
 * building anything.
 */
export interface RuleIndexData {
  readonly ints: Int32Array;
  readonly strings: string;
}

/** Layout version, first in `ints`. */
const FORMAT = 1;
// Positions in the header of `ints`.
const H_STRINGS = 1; // count of strings, then where their starts are
const H_FROMS = 3;
const H_TARGETS = 4;
const H_RULES = 5; // count of rules, then where their records' positions are
const HEADER = 7;

const VERIFY = 1;
const COPY_ON_MISS = 2;
const PIN_DIGEST = 4;
const SCOPED = 8;

/**
 * Build a rule list's index as {@link RuleIndexData}: a {@link writeFlatIndex} tree of the
 * `from`s and one of the targets. With `withRules`, the rules are written too, for
 * {@link RuleTableReader} to make again elsewhere: all but their scopes, which the reader
 * is given. Pure; O(n log n).
 */
export function buildRuleIndex(rules: readonly Rule[], withRules = false): RuleIndexData {
  const table = new StringTableBuilder();
  const out: number[] = new Array<number>(HEADER).fill(0);
  out[0] = FORMAT;
  if (withRules) {
    // First, so that a reader going through the rules in order meets the strings in order.
    out[H_RULES] = rules.length;
    const at = out.length;
    out[H_RULES + 1] = at;
    for (let i = 0; i < rules.length; i++) out.push(0);
    const pattern = (p: RegistryPattern): void => {
      out.push(table.id(p.source), table.id(p.host), p.wildcard ? 1 : 0, p.path.length);
      for (const c of p.path) out.push(table.id(c));
    };
    rules.forEach((r, i) => {
      out[at + i] = out.length;
      const flags = (r.verify ? VERIFY : 0) | (r.copyOnMiss ? COPY_ON_MISS : 0) | (r.pinDigest ? PIN_DIGEST : 0) | (r.scope === undefined ? 0 : SCOPED);
      out.push(r.index, flags);
      pattern(r.from);
      out.push(r.targets.length);
      for (const t of r.targets) {
        pattern(t.to);
        out.push(table.id(t.target));
      }
      out.push(r.exclude.length);
      for (const p of r.exclude) pattern(p);
    });
  }
  out[H_FROMS] = writeFlatIndex(
    rules.map((r, i) => [r.from, i] as const),
    table,
    out,
  );
  out[H_TARGETS] = writeFlatIndex(
    rules.flatMap((r, i) => r.targets.map((t, k) => [t.to, i * MAX_TARGETS + k] as const)),
    table,
    out,
  );
  const { strings, starts } = table.finish();
  out[H_STRINGS] = starts.length - 1;
  out[H_STRINGS + 1] = out.length;
  for (const s of starts) out.push(s);
  return { ints: Int32Array.from(out), strings };
}

function readIndex(data: RuleIndexData): RuleIndexes {
  const { ints, strings } = data;
  if (ints[0] !== FORMAT) throw new Error(`rule index: format ${ints[0] ?? '(none)'}, expected ${FORMAT}`);
  const starts = ints[H_STRINGS + 1] as number;
  return {
    froms: new FlatPatternIndex(ints, strings, starts, ints[H_FROMS] as number),
    targets: new FlatPatternIndex(ints, strings, starts, ints[H_TARGETS] as number),
  };
}

/**
 * Make `data` (from {@link buildRuleIndex} of the same rules, in order) the index of
 * `rules`, without building it again: lookups read it as it is.
 */
export function adoptRuleIndex(rules: readonly Rule[], data: RuleIndexData): void {
  indexes.set(rules, readIndex(data));
}

const NO_PATH: readonly string[] = Object.freeze([]);
const NO_PATTERNS: readonly RegistryPattern[] = Object.freeze([]);

/**
 * Makes the rules written by `buildRuleIndex(rules, true)` again, frozen, a range at a
 * time (a reload adopts them in slices between admissions). Each distinct string of the
 * table becomes one string, shared by every rule that has it.
 */
export class RuleTableReader {
  readonly #ints: Int32Array;
  readonly #strings: string;
  readonly #starts: number;
  readonly #cache: (string | undefined)[] = [];
  #pos = 0;

  constructor(readonly data: RuleIndexData) {
    this.#ints = data.ints;
    this.#strings = data.strings;
    if (this.#ints[0] !== FORMAT) throw new Error(`rule table: format ${this.#ints[0] ?? '(none)'}, expected ${FORMAT}`);
    this.#starts = this.#int(H_STRINGS + 1);
  }

  /** How many rules the table holds. */
  get size(): number {
    return this.#int(H_RULES);
  }

  #int(i: number): number {
    return this.#ints[i] as number;
  }

  #next(): number {
    return this.#int(this.#pos++);
  }

  #string(): string {
    const id = this.#next();
    let s = this.#cache[id];
    if (s === undefined) {
      s = this.#strings.slice(this.#int(this.#starts + id), this.#int(this.#starts + id + 1));
      this.#cache[id] = s;
    }
    return s;
  }

  #pattern(): RegistryPattern {
    const source = this.#string();
    const host = this.#string();
    const wildcard = this.#next() === 1;
    const n = this.#next();
    let path = NO_PATH;
    if (n > 0) {
      // Sized at once: an array grown by push keeps room for 16 more.
      const list = new Array<string>(n);
      for (let i = 0; i < n; i++) list[i] = this.#string();
      path = Object.freeze(list);
    }
    return Object.freeze({ source, host, wildcard, path });
  }

  /**
   * Rules `start` to `end` (excluded), frozen. `scopeOf(i)` gives rule i's scope, for the
   * rules that had one.
   */
  rules(start: number, end: number, scopeOf: (i: number) => RuleScope | undefined): Rule[] {
    const out: Rule[] = [];
    const records = this.#int(H_RULES + 1);
    for (let i = start; i < end && i < this.size; i++) {
      this.#pos = this.#int(records + i);
      const index = this.#next();
      const flags = this.#next();
      const from = this.#pattern();
      const targets = new Array<RuleTarget>(this.#next());
      for (let k = 0; k < targets.length; k++) {
        const to = this.#pattern();
        targets[k] = Object.freeze({ to, target: this.#string() });
      }
      let exclude = NO_PATTERNS;
      const excludes = this.#next();
      if (excludes > 0) {
        const list = new Array<RegistryPattern>(excludes);
        for (let k = 0; k < excludes; k++) list[k] = this.#pattern();
        exclude = Object.freeze(list);
      }
      const scope = (flags & SCOPED) === 0 ? undefined : scopeOf(i);
      if ((flags & SCOPED) !== 0 && scope === undefined) throw new Error(`rule table: rules[${index}] has a scope, and none was given`);
      const first = targets[0] as RuleTarget;
      out.push(
        Object.freeze({
          index,
          from,
          to: first.to,
          target: first.target,
          targets: Object.freeze(targets),
          verify: (flags & VERIFY) !== 0,
          copyOnMiss: (flags & COPY_ON_MISS) !== 0,
          pinDigest: (flags & PIN_DIGEST) !== 0,
          scope,
          exclude,
        }),
      );
    }
    return out;
  }
}

/** Is the reference already on some rule's target (so rewriting it again is wrong)? */
export function onAnyTarget(ruleSet: RuleSet, ref: ImageReference): boolean {
  const rules = ruleSet.rules;
  for (const v of indexOf(rules).targets.candidates(ref.registry, ref.repository)) {
    const rule = rules[Math.floor(v / MAX_TARGETS)] as Rule;
    const to = (rule.targets[v % MAX_TARGETS] as RuleTarget).to;
    if (matchLength(to, ref.registry, ref.repository) >= 0) return true;
  }
  return false;
}

/**
 * Decide what happens to one image reference under the rules, for a pod in `ctx` (scoped
 * rules apply only with a context that they admit).
 */
export function decideRewrite(ruleSet: RuleSet, image: string, ctx?: ScopeContext): RewriteDecision {
  const parsed = parseReference(image);
  if (!parsed.ok) return { kind: 'invalid', image, reason: parsed.reason };
  const ref = parsed.ref;
  if (onAnyTarget(ruleSet, ref)) return { kind: 'unchanged', image, ref, reason: 'on-target' };
  if (excluded(ruleSet.exclude, ref)) return { kind: 'unchanged', image, ref, reason: 'excluded' };
  const found = findRule(ruleSet, ref, ctx);
  if (found === undefined) return { kind: 'unchanged', image, ref, reason: 'no-rule' };
  // The winning rule's exclusions leave the image alone; a less specific rule does not take over.
  if (excluded(found.rule.exclude, ref)) return { kind: 'unchanged', image, ref, reason: 'excluded', detail: `rules[${found.rule.index}].exclude` };
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
