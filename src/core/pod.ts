/**
 * Pod mutation planning: given a pod as received and the compiled settings, decide
 * which containers are in scope, ask decide.ts what each one's image becomes and what
 * policy says of it, which pull secrets are added, and build the minimal JSONPatch.
 * Pure: no I/O, no clock, no logger.
 */
import type { Operation } from 'fast-json-patch';
import { escapePointer, isObject, type JsonObject } from './json.js';
import type { Policy } from './policy.js';
import { secretsNeeded, type PullSecret } from './pull-secrets.js';
import { MAX_REFERENCE_LENGTH, parseReference, type ImageReference } from './reference.js';
import { clip, quoteClipped } from './text.js';
import { planIdentity, type IdentitySettings, type ServiceAccountInfo } from './identity/wiring.js';
import type { RuleSet, ScopeContext } from './rules.js';
import { decideContainerImage, isRewrite, type DecideOptions, type ImageDecision, type Mode, type VerifyAnswers } from './decide.js';
import { formatPlatform, podPlatforms, type Platform } from './platforms.js';

export const ANNOTATION_REWRITE = 'mirrorgate.io/rewrite';
export const ANNOTATION_ORIGINAL_IMAGES = 'mirrorgate.io/original-images';
/** Container name → the target prefix that served it, for rewrites by rules with several targets. */
export const ANNOTATION_SERVED_BY = 'mirrorgate.io/served-by';
export const ANNOTATION_MIRROR_POD = 'kubernetes.io/config.mirror';

export { isRewrite, type ContainerAction, type Mode, type OnUnreachable, type VerifyAnswers, type VerifyOutcome } from './decide.js';
export type ContainerList = 'initContainers' | 'containers' | 'ephemeralContainers';
const LISTS: readonly ContainerList[] = ['initContainers', 'containers', 'ephemeralContainers'];

export interface ContainerView {
  readonly list: ContainerList;
  readonly index: number;
  readonly name: string;
  /** undefined when the container has no image field. */
  readonly image: string | undefined;
}

/** The parts of a Pod that planning reads, checked for type. */
export interface PodView {
  /** False only for an object with no metadata at all (never from the API server). */
  readonly hasMetadata: boolean;
  readonly annotations: Readonly<Record<string, string>> | undefined;
  /** metadata.labels (rule scoping by podSelector). */
  readonly labels?: Readonly<Record<string, string>> | undefined;
  /** spec.nodeSelector (which platforms the pod can run on). */
  readonly nodeSelector?: Readonly<Record<string, string>> | undefined;
  readonly containers: readonly ContainerView[];
  /** Names in spec.imagePullSecrets; undefined when the field is absent. */
  readonly imagePullSecrets: readonly string[] | undefined;
}

/**
 * Read a Pod object, checking the type of every field planning touches. A wrong type
 * is a malformed request (the API server never sends one), reported by path.
 */
export function readPod(object: unknown, at = 'request.object'): { ok: true; pod: PodView } | { ok: false; error: string } {
  if (!isObject(object)) return { ok: false, error: `${at}: must be an object` };
  const metadata = object.metadata;
  if (metadata !== undefined && !isObject(metadata)) return { ok: false, error: `${at}.metadata: must be an object` };
  let annotations: Record<string, string> | undefined;
  const rawAnnotations = metadata?.annotations;
  if (rawAnnotations !== undefined && rawAnnotations !== null) {
    if (!isObject(rawAnnotations)) return { ok: false, error: `${at}.metadata.annotations: must be an object` };
    for (const [k, v] of Object.entries(rawAnnotations)) {
      if (typeof v !== 'string') return { ok: false, error: `${at}.metadata.annotations["${k}"]: must be a string` };
    }
    annotations = rawAnnotations as Record<string, string>;
  }
  const labels = stringMap(metadata?.labels, `${at}.metadata.labels`);
  if (typeof labels === 'string') return { ok: false, error: labels };
  const spec = object.spec;
  if (spec !== undefined && !isObject(spec)) return { ok: false, error: `${at}.spec: must be an object` };
  const nodeSelector = stringMap(spec?.nodeSelector, `${at}.spec.nodeSelector`);
  if (typeof nodeSelector === 'string') return { ok: false, error: nodeSelector };
  const containers: ContainerView[] = [];
  for (const list of LISTS) {
    const raw = spec?.[list];
    if (raw === undefined || raw === null) continue;
    if (!Array.isArray(raw)) return { ok: false, error: `${at}.spec.${list}: must be an array` };
    for (let index = 0; index < raw.length; index++) {
      const c: unknown = raw[index];
      if (!isObject(c)) return { ok: false, error: `${at}.spec.${list}[${index}]: must be an object` };
      const name = c.name ?? '';
      if (typeof name !== 'string') return { ok: false, error: `${at}.spec.${list}[${index}].name: must be a string` };
      const image = c.image;
      if (image !== undefined && image !== null && typeof image !== 'string') {
        return { ok: false, error: `${at}.spec.${list}[${index}].image: must be a string` };
      }
      containers.push({ list, index, name, image: typeof image === 'string' ? image : undefined });
    }
  }
  let imagePullSecrets: string[] | undefined;
  const rawSecrets = spec?.imagePullSecrets;
  if (rawSecrets !== undefined && rawSecrets !== null) {
    if (!Array.isArray(rawSecrets)) return { ok: false, error: `${at}.spec.imagePullSecrets: must be an array` };
    imagePullSecrets = [];
    for (let i = 0; i < rawSecrets.length; i++) {
      const s: unknown = rawSecrets[i];
      if (!isObject(s)) return { ok: false, error: `${at}.spec.imagePullSecrets[${i}]: must be an object` };
      if (typeof s.name === 'string') imagePullSecrets.push(s.name);
    }
  }
  return { ok: true, pod: { hasMetadata: metadata !== undefined, annotations, labels, nodeSelector, containers, imagePullSecrets } };
}

/** A map of strings (labels, nodeSelector), undefined when absent, or the error naming the field. */
function stringMap(raw: unknown, at: string): Record<string, string> | undefined | string {
  if (raw === undefined || raw === null) return undefined;
  if (!isObject(raw)) return `${at}: must be an object`;
  for (const [k, v] of Object.entries(raw)) if (typeof v !== 'string') return `${at}["${k}"]: must be a string`;
  return raw as Record<string, string>;
}

export interface Settings {
  readonly ruleSet: RuleSet;
  readonly policy: Policy | undefined;
  readonly pullSecrets: readonly PullSecret[];
}

/** Workload Identity wiring for a CREATE: what the ServiceAccount cache said. */
export interface IdentityInput {
  readonly settings: IdentitySettings;
  /** 'unknown': not in the cache and the direct lookup failed too. */
  readonly lookup: 'found' | 'unknown';
  readonly serviceAccount: ServiceAccountInfo | undefined;
  /** What an unknown ServiceAccount means: admit without wiring (with a warning), or deny. */
  readonly onUnknown: 'admit' | 'deny';
  /** An identity annotation upstream rejects: deny (default), or admit with a warning. */
  readonly onInvalid?: 'deny' | 'warn' | undefined;
}

export interface PlanInput {
  readonly operation: 'CREATE' | 'UPDATE';
  /** '' for the pod itself, 'ephemeralcontainers' for `kubectl debug`. */
  readonly subResource: string;
  readonly pod: PodView;
  readonly oldPod: PodView | undefined;
  readonly mode: Mode;
  /** The Pod as received (identity wiring reads env, mounts and volumes from it). */
  readonly raw?: JsonObject | undefined;
  /** Only for CREATE, when identity wiring is on and the webhook can read ServiceAccounts. */
  readonly identity?: IdentityInput | undefined;
  /** The request's namespace (rule scoping). */
  readonly namespace?: string | undefined;
  /** That namespace's labels from the namespace cache; undefined when not known. */
  readonly namespaceLabels?: Readonly<Record<string, string>> | undefined;
  /** Platforms pods may run on (configured, or the nodes'); narrowed per pod by its nodeSelector. */
  readonly platforms?: readonly Platform[] | undefined;
}

/** One container's image as decideContainerImage decided it, with the container it is for. */
export type ContainerDecision = ImageDecision<ContainerView>;

export interface Plan {
  /** Why the whole pod was left alone, when it was. */
  readonly skipped: string | undefined;
  readonly decisions: readonly ContainerDecision[];
  readonly operations: Operation[];
  readonly warnings: string[];
  readonly auditAnnotations: Record<string, string>;
  /** Enforce mode: the denial message when any final image violates policy. */
  readonly denial: string | undefined;
  /** Target references of verified rules to check before finishing the plan. */
  readonly toVerify: readonly string[];
  /** The platforms those targets must hold (`os/arch[/variant]`); empty: any manifest. */
  readonly platforms?: readonly string[] | undefined;
  /** Pull secrets the operations add to the pod, by name (what replication must provide). */
  readonly addedPullSecrets?: readonly string[] | undefined;
}

/** Warnings beyond this many are summarised in one line (the API server drops some when there are many). */
export const MAX_WARNINGS = 8;

/**
 * Which containers this request may change, and so which are judged:
 * - CREATE: all of them;
 * - UPDATE of the pod: only init/regular containers whose image changed (the rest of
 *   the spec is immutable, and patching an unchanged image would restart the container);
 * - UPDATE of `ephemeralcontainers`: only new or changed ephemeral containers.
 */
export function containersInScope(input: PlanInput): ContainerView[] {
  const { operation, subResource, pod, oldPod } = input;
  if (operation === 'CREATE') return pod.containers.filter((c) => c.image !== undefined);
  const wantList = (c: ContainerView): boolean =>
    subResource === 'ephemeralcontainers' ? c.list === 'ephemeralContainers' : c.list !== 'ephemeralContainers';
  const before = new Map<string, string | undefined>();
  for (const c of oldPod?.containers ?? []) if (wantList(c)) before.set(`${c.list}/${c.name}`, c.image);
  return pod.containers.filter(
    (c) => wantList(c) && c.image !== undefined && (!before.has(`${c.list}/${c.name}`) || before.get(`${c.list}/${c.name}`) !== c.image),
  );
}

/**
 * Plan a pod. Call once without `verify` to learn `toVerify`; when it is non-empty,
 * ask the registries and call again with the answers. Both calls are pure.
 */
export function planPod(input: PlanInput, settings: Settings, verify?: VerifyAnswers): Plan {
  const plan = planPodOnce(input, settings, verify);
  if (plan.toVerify.length === 0 || input.platforms === undefined || input.platforms.length === 0) return plan;
  return { ...plan, platforms: podPlatforms(input.platforms, input.pod.nodeSelector).map(formatPlatform) };
}

function planPodOnce(input: PlanInput, settings: Settings, verify?: VerifyAnswers): Plan {
  const { pod, mode, operation } = input;
  const annotations = pod.annotations ?? {};
  if (annotations[ANNOTATION_MIRROR_POD] !== undefined) {
    return emptyPlan('static mirror pod (kubernetes.io/config.mirror): left alone');
  }
  const optedOut = (annotations[ANNOTATION_REWRITE] ?? '').toLowerCase() === 'false';
  const scope = containersInScope(input);
  const decisions: ContainerDecision[] = [];
  const toVerify: string[] = [];
  const unreachableDenials: string[] = [];

  const ctx: ScopeContext = { namespace: input.namespace ?? '', namespaceLabels: input.namespaceLabels, podLabels: pod.labels ?? {} };
  // The same for every container: one object per pod.
  const opts: DecideOptions = { ctx, mode, optedOut, verify };
  for (const container of scope) {
    const d = decideContainerImage(settings, container.image as string, opts, container);
    decisions.push(d);
    if (d.toVerify !== undefined) for (const c of d.toVerify) if (!toVerify.includes(c.rewritten)) toVerify.push(c.rewritten);
    if (d.unreachableDenial !== undefined) unreachableDenials.push(`${containerLabel(container.name)}: ${d.unreachableDenial}`);
  }

  const warnings: string[] = [];
  const auditAnnotations: Record<string, string> = {};
  const operations: Operation[] = [];
  const violations = decisions.filter((d) => d.violation !== undefined);
  const rewrites = decisions.filter(isRewrite);

  for (const d of decisions) {
    const n = d.rule?.targets.length ?? 1;
    if (d.action === 'missing') {
      // The platforms the (first) mirror copy lacks, when it is there for others only.
      const lacks = d.target === undefined ? undefined : verify?.missing?.get(d.target);
      const what = lacks === undefined ? '' : ` for ${lacks}`;
      warnings.push(`mirrorgate: ${containerLabel(d.container.name)}: ${d.original ?? ''} is not in ${n > 1 ? `any of the ${n} mirrors` : 'the mirror'} yet${what}; kept`);
    }
    if (isRewrite(d) && (d.targetIndex ?? 0) > 0 && d.rule !== undefined) {
      // A fallback served: say which, and that the ones before it did not hold the image.
      const i = d.targetIndex ?? 0;
      warnings.push(`mirrorgate: ${containerLabel(d.container.name)}: served by target ${i + 1} of ${n}, ${d.rule.targets[i]?.target ?? ''}; earlier targets absent or unreachable`);
    }
    if (d.action === 'unverified') {
      const refused = d.target !== undefined && verify?.credentialsRefused?.has(d.target) === true;
      warnings.push(`mirrorgate: ${containerLabel(d.container.name)}: ${refused ? 'mirror refused mirrorgate\'s credentials (see its log)' : 'mirror unreachable'}; kept ${d.original ?? ''}`);
    }
    if (d.pinSkipped !== undefined && (d.action === 'rewritten' || d.action === 'would-rewrite')) {
      warnings.push(`mirrorgate: ${containerLabel(d.container.name)}: ${mode === 'audit' ? 'would not pin' : 'not pinned'} to a digest: ${d.pinSkipped}`);
    }
  }

  if (mode === 'audit') {
    for (const d of rewrites) warnings.push(`mirrorgate: ${containerLabel(d.container.name)}: ${d.original ?? ''} would be rewritten to ${wouldBe(d)}`);
    for (const d of violations) warnings.push(`mirrorgate: ${containerLabel(d.container.name)}: ${d.violation ?? ''}`);
    for (const m of unreachableDenials) warnings.push(`mirrorgate: would deny: ${m}`);
    if (rewrites.length > 0) auditAnnotations['would-rewrite'] = JSON.stringify(Object.fromEntries(rewrites.map((d) => [clip(d.container.name, MAX_NAME_QUOTED), wouldBe(d)])));
    const wiring = identityPlan(input);
    if (wiring.applied.length > 0) {
      auditAnnotations['would-wire'] = wiring.applied.join(',');
      warnings.push(`mirrorgate: would wire workload identity: ${wiring.applied.join(', ')}`);
    }
    if (wiring.unknown !== undefined) warnings.push(wiring.unknown);
    for (const p of wiring.problems) warnings.push(input.identity?.onInvalid === 'warn' ? `mirrorgate: ${p}` : `mirrorgate: would deny: ${p}`);
    if (violations.length > 0 || unreachableDenials.length > 0) {
      auditAnnotations.violations = JSON.stringify([
        ...violations.map((d) => ({ container: clip(d.container.name, MAX_NAME_QUOTED), image: d.final === undefined ? undefined : clip(d.final, MAX_REFERENCE_LENGTH), reason: d.violation })),
        ...unreachableDenials.map((m) => ({ reason: m })),
      ]);
    }
    return {
      skipped: undefined,
      decisions,
      operations,
      warnings: summarise(warnings),
      auditAnnotations,
      denial: undefined,
      toVerify,
    };
  }

  // Enforce.
  const wiring = identityPlan(input);
  const problems = [
    ...violations.map((d) => `${containerLabel(d.container.name)}: ${d.violation ?? ''}`),
    ...unreachableDenials,
  ];
  if (problems.length > MAX_DENIAL_PROBLEMS) {
    // A pod with thousands of bad containers gets a message a person can read.
    const more = problems.length - (MAX_DENIAL_PROBLEMS - 1);
    problems.splice(MAX_DENIAL_PROBLEMS - 1, problems.length, `and ${more} more (see the audit annotations)`);
  }
  if (wiring.unknown !== undefined && input.identity?.onUnknown === 'deny') {
    problems.push(`${wiring.unknown.replace(/^mirrorgate: /, '')} (identity.onUnknownServiceAccount: deny; retry once it exists)`);
  }
  const denyInvalid = input.identity?.onInvalid !== 'warn';
  if (denyInvalid && wiring.problems.length > 0) {
    problems.push(`workload identity: ${wiring.problems.join('; ')} (identity.onInvalidAnnotation: deny)`);
  }
  if (problems.length > 0) {
    if (violations.length > 0) auditAnnotations.violations = JSON.stringify(violations.map((d) => ({ container: clip(d.container.name, MAX_NAME_QUOTED), image: d.final === undefined ? undefined : clip(d.final, MAX_REFERENCE_LENGTH), reason: d.violation })));
    return {
      skipped: undefined,
      decisions,
      operations: [],
      warnings: summarise(warnings),
      auditAnnotations,
      denial: `mirrorgate: denied: ${problems.join('; ')}`,
      toVerify,
    };
  }
  if (toVerify.length > 0) {
    // Not final until the registries have answered: build no patch yet.
    return { skipped: undefined, decisions, operations, warnings: summarise(warnings), auditAnnotations, denial: undefined, toVerify };
  }

  for (const d of rewrites) {
    operations.push({ op: 'replace', path: `/spec/${d.container.list}/${d.container.index}/image`, value: d.final });
  }
  if (rewrites.length > 0) {
    auditAnnotations.rewritten = JSON.stringify(Object.fromEntries(rewrites.map((d) => [d.container.name, d.final])));
  }
  let addedPullSecrets: string[] = [];
  if (operation === 'CREATE') {
    const annotations: Record<string, string> = { ...wiring.annotations };
    if (rewrites.length > 0) annotations[ANNOTATION_ORIGINAL_IMAGES] = originalImagesValue(pod, rewrites);
    const multi = rewrites.filter((d) => (d.rule?.targets.length ?? 1) > 1);
    if (multi.length > 0) annotations[ANNOTATION_SERVED_BY] = servedByValue(pod, multi);
    operations.push(...annotationOps(pod, annotations));
    const secrets = pullSecretsToAdd(pod, decisions, settings.pullSecrets, ctx);
    operations.push(...pullSecretOps(pod, secrets));
    addedPullSecrets = secrets;
    operations.push(...wiring.operations);
    warnings.push(...wiring.warnings);
    for (const p of wiring.problems) warnings.push(`mirrorgate: ${p}`);
    if (wiring.unknown !== undefined) warnings.push(wiring.unknown);
    if (wiring.applied.length > 0) auditAnnotations.wired = wiring.applied.join(',');
  }
  return { skipped: undefined, decisions, operations, warnings: summarise(warnings), auditAnnotations, denial: undefined, toVerify, addedPullSecrets };
}

/** What audit mode says an image would become: the target, with the pin enforce mode would add. */
function wouldBe(d: ContainerDecision): string {
  const target = d.target ?? '';
  return d.pinnedDigest === undefined ? target : `${target}@${d.pinnedDigest}`;
}

function emptyPlan(skipped: string): Plan {
  return { skipped, decisions: [], operations: [], warnings: [], auditAnnotations: {}, denial: undefined, toVerify: [] };
}

/** Problems listed in a denial message; the rest are counted. */
const MAX_DENIAL_PROBLEMS = 8;

/** `container "name"`, the name JSON-quoted and cut: pods reach us before validation. */
function containerLabel(name: string): string {
  return `container ${quoteClipped(name, MAX_NAME_QUOTED)}`;
}
/** Kubernetes names are at most 253 characters; longer ones are cut where repeated. */
const MAX_NAME_QUOTED = 253;

function summarise(warnings: string[]): string[] {
  if (warnings.length <= MAX_WARNINGS) return warnings;
  const shown = warnings.slice(0, MAX_WARNINGS - 1);
  shown.push(`mirrorgate: and ${warnings.length - shown.length} more (see the audit annotations and the report)`);
  return shown;
}

/** Identity wiring for a CREATE, or nothing; `unknown` is the warning for an unknown ServiceAccount. */
function identityPlan(input: PlanInput): { operations: Operation[]; annotations: Record<string, string>; warnings: string[]; problems: string[]; applied: string[]; unknown: string | undefined } {
  const none = { operations: [], annotations: {}, warnings: [], problems: [], applied: [], unknown: undefined };
  const id = input.identity;
  if (id === undefined || input.operation !== 'CREATE' || input.subResource !== '' || input.raw === undefined) return none;
  if (id.lookup === 'unknown') {
    const who = id.serviceAccount ? `${id.serviceAccount.namespace}/${id.serviceAccount.name}` : 'the pod\'s';
    return { ...none, unknown: `mirrorgate: service account ${who} is not known yet; workload identity not wired` };
  }
  const plan = planIdentity(input.raw, id.serviceAccount, id.settings);
  return { ...plan, unknown: undefined };
}

/** Annotations to set, as few operations as the pod's metadata allows. */
function annotationOps(pod: PodView, annotations: Readonly<Record<string, string>>): Operation[] {
  const entries = Object.entries(annotations).filter(([k, v]) => pod.annotations?.[k] !== v);
  if (entries.length === 0) return [];
  if (!pod.hasMetadata) return [{ op: 'add', path: '/metadata', value: { annotations: Object.fromEntries(entries) } }];
  if (pod.annotations === undefined) return [{ op: 'add', path: '/metadata/annotations', value: Object.fromEntries(entries) }];
  return entries.map(([k, v]) => ({ op: 'add', path: `/metadata/annotations/${escapePointer(k)}`, value: v }));
}

/**
 * Record the original references by container name. A reinvocation that rewrites a
 * container added by a later webhook merges into the existing record rather than
 * replacing it; a pass that rewrites nothing leaves it untouched (no operation).
 */
function originalImagesValue(pod: PodView, rewrites: readonly ContainerDecision[]): string {
  let record: Record<string, string> = {};
  const existing = pod.annotations?.[ANNOTATION_ORIGINAL_IMAGES];
  if (existing !== undefined) {
    try {
      const parsed: unknown = JSON.parse(existing);
      if (isObject(parsed)) {
        for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') record[k] = v;
      }
    } catch {
      record = {};
    }
  }
  for (const d of rewrites) if (record[d.container.name] === undefined) record[d.container.name] = d.original ?? '';
  return JSON.stringify(record);
}

/** Container name → the target prefix that served, merged over reinvocations like the originals. */
function servedByValue(pod: PodView, rewrites: readonly ContainerDecision[]): string {
  const record: Record<string, string> = {};
  const existing = pod.annotations?.[ANNOTATION_SERVED_BY];
  if (existing !== undefined) {
    try {
      const parsed: unknown = JSON.parse(existing);
      if (isObject(parsed)) for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') record[k] = v;
    } catch {
      // A mangled record is replaced by what this pass knows.
    }
  }
  for (const d of rewrites) record[d.container.name] ??= d.rule?.targets[d.targetIndex ?? 0]?.target ?? '';
  return JSON.stringify(record);
}

/** The pull secrets the pod needs and does not list yet. */
function pullSecretsToAdd(pod: PodView, decisions: readonly ContainerDecision[], pullSecrets: readonly PullSecret[], ctx: ScopeContext): string[] {
  if (pullSecrets.length === 0) return [];
  // Every image the pod will run, not only the ones in scope: a secret is needed as
  // long as any container pulls from its registry.
  const decided = new Map<ContainerView, ImageReference | undefined>();
  for (const d of decisions) decided.set(d.container, d.action === 'rewritten' ? d.targetRef : d.sourceRef);
  const refs: ImageReference[] = [];
  for (const c of pod.containers) {
    if (decided.has(c)) {
      const ref = decided.get(c);
      if (ref) refs.push(ref);
    } else if (c.image !== undefined) {
      // Out of scope (an UPDATE's unchanged containers): parsed as they are.
      const p = parseReference(c.image);
      if (p.ok) refs.push(p.ref);
    }
  }
  const needed = secretsNeeded(pullSecrets, refs, ctx);
  const have = new Set(pod.imagePullSecrets ?? []);
  return needed.filter((n) => !have.has(n));
}

function pullSecretOps(pod: PodView, missing: readonly string[]): Operation[] {
  if (missing.length === 0) return [];
  if (pod.imagePullSecrets === undefined) {
    return [{ op: 'add', path: '/spec/imagePullSecrets', value: missing.map((name) => ({ name })) }];
  }
  return missing.map((name) => ({ op: 'add', path: '/spec/imagePullSecrets/-', value: { name } }));
}
