/**
 * The background report: an in-memory record of admission decisions keyed by source
 * registry, the host as rules and policy compare it (`normaliseRegistryHost`: DNS is
 * case-insensitive, so `DOCKER.IO/evil` and `docker.io/library/nginx` are pulled from one
 * registry and counted in one row); each image is kept as written, which is what the
 * runtime pulls. It answers "which registries and images still come from outside, what was
 * rewritten, what would be (audit), what was denied, what is missing from the mirror".
 *
 * Memory is bounded whatever the traffic: at most `maxRegistries` entries (the rest are
 * counted under `other`), each with at most `maxImages` images, `maxImages` missing
 * images and `maxNamespaces` namespaces (overflow counted). Every kept string is bounded
 * too: valid references are at most 1,024 characters, invalid ones are kept cut to 256
 * (with `…(N chars)`), namespaces to 63, and all the lists together keep at most
 * `maxChars` characters (2 Mi by default; past it new values are only counted as
 * overflow). Per-image usage (namespaces, workloads, admission time buckets, what
 * verification said; see usage.ts) has a budget of its own, `maxUsageChars`, so that it
 * never crowds out the copy list; the hourly trend (trend.ts) keeps at most 168 points.
 * So the report stays within a few megabytes whatever the traffic, typically kilobytes.
 */
import { isRewrite, type ContainerDecision, type Mode } from '../core/pod.js';
import { formatReference, normaliseRegistryHost, parseReference } from '../core/reference.js';
import { clip } from '../core/text.js';
import type { Workload } from '../core/workload.js';
import { countTrend, mergeTrend, sanitiseTrend, type TrendPoint } from './trend.js';
import { addNamespace, addWorkload, compactBuckets, countAdmission, emptyUsage, mergeUsage, minuteOf, sanitiseUsage, USAGE_COST, type ImageUsage } from './usage.js';

export type { ImageUsage } from './usage.js';
export type { TrendPoint } from './trend.js';

/**
 * Version of the report's JSON shape (`GET /report`, `mirrorgate report --output json`, the
 * ConfigMap), described by schemas/report.schema.json. Raised when a field changes meaning
 * or goes; new optional fields keep it.
 */
export const REPORT_SCHEMA_VERSION = 2;

/** Characters kept of an invalid reference (then `…(N chars)`). */
export const MAX_INVALID_KEPT = 256;
/** Characters kept of a namespace name (valid ones have at most 63). */
export const MAX_NAMESPACE_KEPT = 63;

/** Images are reported fully qualified (`docker.io/library/nginx:1.14.2`), as copy tools want them. */
function qualified(image: string): string {
  const p = parseReference(image);
  return p.ok ? formatReference(p.ref) : image;
}

export interface RegistryEntry {
  /** Rewrite target prefix of the rule for this registry, when there is one. */
  target: string | undefined;
  rewritten: number;
  /** Every target prefix of the rules for this registry, in order (a rule may list several mirrors). */
  targets: string[];
  /** Rewrites (made or, in audit, that would be) per target prefix that served them; with several targets, which one. */
  served: Record<string, number>;
  wouldRewrite: number;
  denied: number;
  /** Kept as they are although a rule matches: opted out, missing from the mirror, mirror unreachable. */
  skipped: number;
  /** Pulled as they are: no rule for them (or already on a mirror). */
  unchanged: number;
  images: string[];
  imagesOverflow: number;
  /** Images a verified rule found missing from the mirror: the copy list. */
  missing: string[];
  missingOverflow: number;
  namespaces: string[];
  namespacesOverflow: number;
  /**
   * Images a rule would send to the mirror that are still pulled from here (audit mode,
   * missing from the mirror, mirror unreachable, opted out), with their rewrite target:
   * the copy list. An image leaves it once it is rewritten.
   */
  pending: Record<string, string>;
  pendingOverflow: number;
  /**
   * Per image kept in `images`: the namespaces and workloads that used it, admissions in
   * time buckets (last hour, last day), last seen, and what verification said of it.
   */
  usage: Record<string, ImageUsage>;
  copied: number;
  copyFailed: number;
  firstSeen: string;
  lastSeen: string;
}

export interface Report {
  /** {@link REPORT_SCHEMA_VERSION}. */
  schemaVersion: number;
  generatedAt: string;
  mode: Mode;
  registries: Record<string, RegistryEntry>;
  /** Hourly progress, oldest first, at most seven days. */
  trend: TrendPoint[];
}

export interface ReportLimits {
  readonly maxRegistries: number;
  readonly maxImages: number;
  readonly maxNamespaces: number;
  /** Characters of images, targets and namespaces kept in all, whatever the entry counts. */
  readonly maxChars: number;
  /**
   * Characters of per-image usage kept in all (namespaces, workloads, and a fixed charge for
   * each image's counters and time buckets). A budget of its own, so that usage never
   * starves the copy list.
   */
  readonly maxUsageChars: number;
}

export const DEFAULT_LIMITS: ReportLimits = { maxRegistries: 200, maxImages: 100, maxNamespaces: 100, maxChars: 2 * 1024 * 1024, maxUsageChars: 1024 * 1024 };
export const OTHER = 'other';

function emptyEntry(at: string): RegistryEntry {
  return {
    target: undefined,
    targets: [],
    rewritten: 0,
    served: {},
    wouldRewrite: 0,
    denied: 0,
    skipped: 0,
    unchanged: 0,
    images: [],
    imagesOverflow: 0,
    missing: [],
    missingOverflow: 0,
    namespaces: [],
    namespacesOverflow: 0,
    pending: {},
    pendingOverflow: 0,
    usage: {},
    copied: 0,
    copyFailed: 0,
    firstSeen: at,
    lastSeen: at,
  };
}

/** Target prefixes counted per entry at most (a rule has at most 8; a few rules may share a source). */
const MAX_SERVED = 32;

function addServed(e: RegistryEntry, target: string, n: number, budget?: ByteBudget): void {
  if (e.served[target] === undefined && (Object.keys(e.served).length >= MAX_SERVED || !fits(budget, target.length))) return;
  e.served[target] = (e.served[target] ?? 0) + n;
}

function addTarget(e: RegistryEntry, target: string, budget?: ByteBudget): void {
  if (!e.targets.includes(target) && e.targets.length < MAX_SERVED && fits(budget, target.length)) e.targets.push(target);
}

/** Characters kept across all of a report's lists; past it new values are only counted. */
export interface ByteBudget {
  used: number;
  readonly max: number;
}

function fits(budget: ByteBudget | undefined, chars: number): boolean {
  if (budget === undefined) return true;
  if (budget.used + chars > budget.max) return false;
  budget.used += chars;
  return true;
}

function addPending(e: RegistryEntry, image: string, target: string, max: number, budget?: ByteBudget): number {
  if (e.pending[image] !== undefined) return 0;
  if (Object.keys(e.pending).length >= max) return 1;
  if (!fits(budget, image.length + target.length)) return 1;
  e.pending[image] = target;
  return 0;
}

/** Add to a bounded list of distinct values; returns the overflow increment (0 or 1). */
function addBounded(list: string[], index: Set<string> | undefined, value: string, max: number, budget?: ByteBudget): number {
  if (index ? index.has(value) : list.includes(value)) return 0;
  if (list.length >= max) return 1;
  if (!fits(budget, value.length)) return 1;
  list.push(value);
  index?.add(value);
  return 0;
}

export class ReportCache {
  readonly #entries = new Map<string, RegistryEntry>();
  /** Per-entry lookup sets so that adding an image stays O(1). */
  readonly #imageSets = new Map<string, Set<string>>();
  readonly #limits: ReportLimits;
  readonly #budget: ByteBudget;
  readonly #usageBudget: ByteBudget;
  #mode: Mode;
  #version = 0;
  #trend: TrendPoint[] = [];
  readonly #servedAsIsFn: ((registry: string) => boolean) | undefined;

  /**
   * `servedAsIs` says whether an image pulled as it is (no rule) comes from the mirror or a
   * registry the policy allows, for the trend; without it, a registry counts when it is
   * the host of a rule target seen in the report.
   */
  constructor(
    private readonly now: () => Date,
    mode: Mode,
    limits: Partial<ReportLimits> = {},
    servedAsIs?: (registry: string) => boolean,
  ) {
    this.#limits = { ...DEFAULT_LIMITS, ...limits };
    this.#budget = { used: 0, max: this.#limits.maxChars };
    this.#usageBudget = { used: 0, max: this.#limits.maxUsageChars };
    this.#mode = mode;
    this.#servedAsIsFn = servedAsIs;
  }

  #servedAsIs(registry: string | undefined): boolean {
    if (registry === undefined) return false;
    if (this.#servedAsIsFn !== undefined) return this.#servedAsIsFn(registry);
    for (const e of this.#entries.values()) for (const t of [e.target, ...e.targets]) if (t !== undefined && (t.split('/')[0] ?? t) === registry) return true;
    return false;
  }

  /** Changes on every recorded event: lets the persister skip unchanged flushes. */
  get version(): number {
    return this.#version;
  }

  setMode(mode: Mode): void {
    this.#mode = mode;
  }

  #entry(registry: string, at: string): RegistryEntry {
    let key = registry;
    let e = this.#entries.get(key);
    if (e === undefined) {
      if (this.#entries.size >= this.#limits.maxRegistries - 1 && key !== OTHER) key = OTHER;
      e = this.#entries.get(key);
      if (e === undefined) {
        e = emptyEntry(at);
        this.#entries.set(key, e);
        this.#imageSets.set(key, new Set());
      }
    }
    e.lastSeen = at;
    return e;
  }

  /** Remove a value from a kept list, giving its characters back to the budget. */
  #unlist(list: string[], value: string): void {
    const i = list.indexOf(value);
    if (i === -1) return;
    list.splice(i, 1);
    this.#budget.used -= value.length;
  }

  #unpend(e: RegistryEntry, image: string): void {
    const target = e.pending[image];
    if (target === undefined) return;
    delete e.pending[image];
    this.#budget.used -= image.length + target.length;
  }

  /**
   * Record the decisions of one admission (never called for dryRun requests). A denied
   * pod (`denied`) ran nothing and rewrote nothing: only its violations are counted.
   */
  record(decisions: readonly ContainerDecision[], namespace: string, denied = false, workload?: Workload): void {
    if (denied) decisions = decisions.filter((d) => d.violation !== undefined);
    if (decisions.length === 0) return;
    const date = this.now();
    const at = this.#iso(date);
    const seen = new Set<string>();
    let trendDone = 0;
    let trendTotal = 0;
    const { maxImages, maxNamespaces } = this.#limits;
    // Namespaces are at most 63 characters once validated; a review sent directly can carry any.
    namespace = clip(namespace, MAX_NAMESPACE_KEPT);
    for (const d of decisions) {
      if (d.original === undefined || d.sourceRegistry === undefined) continue;
      // An invalid reference can be of any size: it is kept cut, with its length.
      const image = d.sourceRef ? formatReference(d.sourceRef) : clip(d.original, MAX_INVALID_KEPT);
      const registry = normaliseRegistryHost(d.sourceRegistry);
      const e = this.#entry(registry, at);
      const key = this.#entries.get(registry) === e ? registry : OTHER;
      if (d.rule !== undefined) {
        // One primary target per entry (entries are bounded by maxRegistries): charged, and always kept.
        if (e.target !== d.rule.target) {
          fits(this.#budget, d.rule.target.length);
          e.target = d.rule.target;
        }
        for (const t of d.rule.targets) addTarget(e, t.target, this.#budget);
      }
      if (d.rule !== undefined && isRewrite(d)) {
        addServed(e, d.rule.targets[d.targetIndex ?? 0]?.target ?? d.rule.target, 1, this.#budget);
      }
      // Progress over time, as the page measures it: a denied pod ran nothing.
      if (!denied) {
        trendTotal++;
        if (d.action === 'rewritten') trendDone++;
        else if ((d.action === 'unchanged' || d.action === 'invalid') && d.violation === undefined && this.#servedAsIs(d.sourceRegistry)) trendDone++;
      }
      switch (d.action) {
        case 'rewritten': {
          e.rewritten++;
          // Now served by the mirror: pods admitted between the copy and the expiry of the
          // cached "absent" answer put it back on the copy list; it is done.
          this.#unlist(e.missing, image);
          break;
        }
        case 'would-rewrite':
          e.wouldRewrite++;
          break;
        case 'missing':
          e.skipped++;
          e.missingOverflow += addBounded(e.missing, undefined, image, maxImages, this.#budget);
          break;
        case 'opted-out':
        case 'unverified':
          e.skipped++;
          break;
        case 'unchanged':
        case 'invalid':
          e.unchanged++;
          break;
      }
      if (d.violation !== undefined) e.denied++;
      if (d.target !== undefined) {
        if (d.action === 'rewritten') this.#unpend(e, image);
        else if (d.action !== 'unchanged' && d.action !== 'invalid') e.pendingOverflow += addPending(e, image, d.target, maxImages, this.#budget);
      }
      e.imagesOverflow += addBounded(e.images, this.#imageSets.get(key), image, maxImages, this.#budget);
      if (namespace !== '') e.namespacesOverflow += addBounded(e.namespaces, undefined, namespace, maxNamespaces, this.#budget);
      const usage = this.#usage(e, key, image, at);
      if (usage !== undefined) {
        // An image twice in one pod is one admission of it.
        const once = `${key}\n${image}`;
        if (!seen.has(once)) {
          seen.add(once);
          countAdmission(usage, date);
          usage.lastSeen = at;
          if (namespace !== '') addNamespace(usage, namespace, this.#charge);
          if (workload !== undefined) addWorkload(usage, `${namespace}/${workload.kind}/${workload.name}`, this.#charge);
        }
        // What verification said of its target: rules with verify check before rewriting.
        if (d.rule?.verify === true) {
          if (d.action === 'missing') this.#checked(usage, 'absent', at);
          else if (d.action === 'rewritten' || d.action === 'would-rewrite') this.#checked(usage, 'present', at);
        }
      }
    }
    this.#trend = countTrend(this.#trend, date, trendDone, trendTotal);
    this.#version++;
  }

  readonly #charge = (chars: number): boolean => fits(this.#usageBudget, chars);

  #isoMs = Number.NaN;
  #isoText = '';

  /** `date.toISOString()`, made once per millisecond: admissions of the same one share it. */
  #iso(date: Date): string {
    const ms = date.getTime();
    if (ms !== this.#isoMs) {
      this.#isoText = date.toISOString();
      this.#isoMs = ms;
    }
    return this.#isoText;
  }

  #checked(u: ImageUsage, mirror: 'present' | 'absent', at: string): void {
    u.mirror = mirror;
    u.checkedAt = at;
  }

  /** The usage record of an image kept in the entry's list (created within the budget), if any. */
  #usage(e: RegistryEntry, key: string, image: string, at: string): ImageUsage | undefined {
    const u = e.usage[image];
    if (u !== undefined) return u;
    if (!(this.#imageSets.get(key)?.has(image) ?? false)) return undefined;
    if (!fits(this.#usageBudget, USAGE_COST + image.length)) return undefined;
    return (e.usage[image] = emptyUsage(at));
  }

  /** Record the outcome of a background copy into the mirror. */
  recordCopy(sourceRegistry: string, original: string, ok: boolean): void {
    const image = qualified(original);
    const e = this.#entry(normaliseRegistryHost(sourceRegistry), this.now().toISOString());
    if (ok) {
      e.copied++;
      this.#unlist(e.missing, image);
      this.#unpend(e, image);
      const u = e.usage[image];
      if (u !== undefined) this.#checked(u, 'present', this.now().toISOString());
    } else e.copyFailed++;
    this.#version++;
  }

  /** Restore counts persisted by an earlier run of this replica (or adopted from a gone one). */
  absorb(report: Report): void {
    for (const [written, incoming] of Object.entries(report.registries)) {
      // A report kept by an older version may name one registry in several spellings.
      const registry = written === OTHER ? OTHER : normaliseRegistryHost(written);
      const known = this.#entries.get(registry);
      // #entry stamps lastSeen with the time given: older stored counts must not move it back.
      const e = this.#entry(registry, known === undefined || incoming.lastSeen > known.lastSeen ? incoming.lastSeen : known.lastSeen);
      const key = this.#entries.get(registry) === e ? registry : OTHER;
      mergeEntry(e, incoming, this.#limits, this.#imageSets.get(key), { lists: this.#budget, usage: this.#usageBudget }, minuteOf(this.now()));
    }
    this.#trend = mergeTrend([this.#trend, report.trend], this.now());
    this.#version++;
  }

  snapshot(): Report {
    const now = this.now();
    const minute = minuteOf(now);
    const registries: Record<string, RegistryEntry> = {};
    for (const [k, e] of [...this.#entries.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      const copy = structuredClone(e);
      for (const u of Object.values(copy.usage)) u.recent = compactBuckets(u.recent, minute);
      registries[k] = copy;
    }
    return { schemaVersion: REPORT_SCHEMA_VERSION, generatedAt: now.toISOString(), mode: this.#mode, registries, trend: mergeTrend([this.#trend], now) };
  }
}

/** `nowMinute` ages the time buckets; undefined keeps them as they are (reading a stored report). */
function mergeEntry(
  into: RegistryEntry,
  from: RegistryEntry,
  limits: ReportLimits,
  imageSet: Set<string> | undefined,
  budgets: { readonly lists: ByteBudget; readonly usage: ByteBudget } | undefined,
  nowMinute: number | undefined,
): void {
  const budget = budgets?.lists;
  if (into.target === undefined && from.target !== undefined) {
    fits(budget, from.target.length);
    into.target = from.target;
  }
  for (const t of from.targets ?? []) addTarget(into, t, budget);
  into.rewritten += from.rewritten ?? 0;
  for (const [target, n] of Object.entries(from.served ?? {})) addServed(into, target, n, budget);
  into.wouldRewrite += from.wouldRewrite ?? 0;
  into.denied += from.denied ?? 0;
  into.skipped += from.skipped ?? 0;
  into.unchanged += from.unchanged ?? 0;
  into.copied += from.copied ?? 0;
  into.copyFailed += from.copyFailed ?? 0;
  into.imagesOverflow += from.imagesOverflow ?? 0;
  into.missingOverflow += from.missingOverflow ?? 0;
  into.namespacesOverflow += from.namespacesOverflow ?? 0;
  into.pendingOverflow += from.pendingOverflow ?? 0;
  for (const [image, target] of Object.entries(from.pending ?? {})) into.pendingOverflow += addPending(into, image, target, limits.maxImages, budget);
  for (const i of from.images ?? []) into.imagesOverflow += addBounded(into.images, imageSet, i, limits.maxImages, budget);
  for (const i of from.missing ?? []) into.missingOverflow += addBounded(into.missing, undefined, i, limits.maxImages, budget);
  for (const n of from.namespaces ?? []) into.namespacesOverflow += addBounded(into.namespaces, undefined, n, limits.maxNamespaces, budget);
  const charge = (chars: number): boolean => fits(budgets?.usage, chars);
  for (const [image, u] of Object.entries(from.usage ?? {})) {
    let mine = into.usage[image];
    if (mine === undefined) {
      // Usage is kept only for images kept in the list, within the budget.
      if (!(imageSet ? imageSet.has(image) : into.images.includes(image)) || !charge(USAGE_COST + image.length)) continue;
      mine = into.usage[image] = emptyUsage(u.firstSeen || into.firstSeen);
      mine.lastSeen = u.lastSeen;
    }
    mergeUsage(mine, u, nowMinute, charge);
  }
  if (from.firstSeen && from.firstSeen < into.firstSeen) into.firstSeen = from.firstSeen;
  if (from.lastSeen && from.lastSeen > into.lastSeen) into.lastSeen = from.lastSeen;
}

/** The merged view over replicas: counts summed, lists united (bounded), seen times widened. */
export function mergeReports(reports: readonly Report[], now: Date, limits: ReportLimits = DEFAULT_LIMITS): Report {
  const registries: Record<string, RegistryEntry> = {};
  // The first report is the live one where there is one: its mode is the current mode.
  const mode: Mode = reports[0]?.mode ?? 'enforce';
  const budgets = { lists: { used: 0, max: limits.maxChars }, usage: { used: 0, max: limits.maxUsageChars } };
  const minute = minuteOf(now);
  for (const r of reports) {
    for (const [written, e] of Object.entries(r.registries)) {
      // Replicas of an older version may name one registry in several spellings.
      const k = written === OTHER ? OTHER : normaliseRegistryHost(written);
      const into = (registries[k] ??= emptyEntry(e.firstSeen));
      mergeEntry(into, e, limits, undefined, budgets, minute);
    }
  }
  const sorted: Record<string, RegistryEntry> = {};
  for (const k of Object.keys(registries).sort()) sorted[k] = registries[k] as RegistryEntry;
  return {
    schemaVersion: REPORT_SCHEMA_VERSION,
    generatedAt: now.toISOString(),
    mode,
    registries: sorted,
    trend: mergeTrend(
      reports.map((r) => r.trend ?? []),
      now,
    ),
  };
}

/** Check the shape of a persisted or fetched report; throws an Error naming what is wrong. */
export function parseReport(text: string, source: string): Report {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source}: not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${source}: not a report object`);
  const r = raw as Partial<Report>;
  if (typeof r.registries !== 'object' || r.registries === null) throw new Error(`${source}: registries missing`);
  const registries: Record<string, RegistryEntry> = {};
  for (const [k, v] of Object.entries(r.registries)) {
    if (typeof v !== 'object' || v === null) throw new Error(`${source}: registries["${k}"] is not an object`);
    const e = emptyEntry(typeof v.firstSeen === 'string' ? v.firstSeen : new Date(0).toISOString());
    // Stored buckets are kept as they are here; they are folded and aged when merged or shown.
    mergeEntry(e, sanitise(v), DEFAULT_LIMITS, undefined, undefined, undefined);
    e.target = typeof v.target === 'string' ? v.target : undefined;
    registries[k] = e;
  }
  // Reports written before schemaVersion 2 have no trend and no per-image usage: read as empty.
  return {
    schemaVersion: REPORT_SCHEMA_VERSION,
    generatedAt: typeof r.generatedAt === 'string' ? r.generatedAt : '',
    mode: r.mode === 'audit' ? 'audit' : 'enforce',
    registries,
    trend: sanitiseTrend(r.trend),
  };
}

function sanitise(v: Partial<RegistryEntry>): RegistryEntry {
  const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? Math.floor(x) : 0);
  const strs = (x: unknown): string[] => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : []);
  const time = (x: unknown): string => (typeof x === 'string' ? x : '');
  return {
    target: typeof v.target === 'string' ? v.target : undefined,
    targets: strs(v.targets).slice(0, MAX_SERVED),
    rewritten: num(v.rewritten),
    served: Object.fromEntries(
      Object.entries(typeof v.served === 'object' && v.served !== null ? v.served : {})
        .filter((kv): kv is [string, number] => typeof kv[1] === 'number')
        .map(([k, n]) => [k, num(n)]),
    ),
    wouldRewrite: num(v.wouldRewrite),
    denied: num(v.denied),
    skipped: num(v.skipped),
    unchanged: num(v.unchanged),
    images: strs(v.images),
    imagesOverflow: num(v.imagesOverflow),
    missing: strs(v.missing),
    missingOverflow: num(v.missingOverflow),
    namespaces: strs(v.namespaces),
    namespacesOverflow: num(v.namespacesOverflow),
    pending: Object.fromEntries(
      Object.entries(typeof v.pending === 'object' && v.pending !== null ? v.pending : {}).filter(
        (kv): kv is [string, string] => typeof kv[1] === 'string',
      ),
    ),
    pendingOverflow: num(v.pendingOverflow),
    usage: Object.fromEntries(
      Object.entries(typeof v.usage === 'object' && v.usage !== null && !Array.isArray(v.usage) ? v.usage : {})
        .map(([k, u]) => [k, sanitiseUsage(u)] as const)
        .filter((kv): kv is [string, ImageUsage] => kv[1] !== undefined),
    ),
    copied: num(v.copied),
    copyFailed: num(v.copyFailed),
    firstSeen: time(v.firstSeen),
    lastSeen: time(v.lastSeen),
  };
}
