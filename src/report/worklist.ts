/**
 * The worklist: the images still pulled from outside (in audit: that would be), with their
 * targets and state, and the share of admitted images already served from the mirror or an
 * allowed registry. Pure functions of the report and what the config says about registries.
 */
import type { RegistrySettings } from '../config/schema.js';
import { normaliseRegistryHost } from '../core/reference.js';
import type { CopyTool } from './format.js';
import type { Report, RegistryEntry } from './rewrites.js';
import { recentCounts } from './usage.js';

/** What the page knows beyond the report: the policy and the registries' settings. */
export interface ReportContext {
  /** True when the policy allows pulls from this registry as they are (not migration work). */
  readonly allowed?: ((registry: string) => boolean) | undefined;
  readonly registries?: Readonly<Record<string, RegistrySettings>> | undefined;
  /** Copy tool for the commands shown (gcrane by default). */
  readonly tool?: CopyTool | undefined;
}

export type WorkState = 'missing' | 'would-rewrite' | 'kept' | 'no-rule';

export interface WorkItem {
  readonly image: string;
  readonly registry: string;
  /** Rewrite targets, primary first; empty when no rule covers the registry. */
  readonly targets: readonly string[];
  readonly state: WorkState;
  /** The namespaces that used this image; those of its registry when the image has no usage record (`perImage` false). */
  readonly namespaces: readonly string[];
  /** Workloads that used it, `namespace/Kind/name` (a ReplicaSet's pods count under their Deployment). */
  readonly workloads: readonly string[];
  /** Namespaces and workloads not listed. */
  readonly usedByOverflow: number;
  /** True when namespaces, workloads, counts and last seen are this image's own. */
  readonly perImage: boolean;
  /** Admissions that used it in the last hour (to 5 minutes) and day (to the hour), as of the report. */
  readonly lastHour: number;
  readonly lastDay: number;
  /** Whether the mirror holds it, from verification: undefined when not checked. */
  readonly inMirror: boolean | undefined;
  readonly lastSeen: string;
}

/** Hosts of every target prefix in the report: pulls from there are already from the mirror. */
export function mirrorHosts(report: Report): Set<string> {
  const hosts = new Set<string>();
  for (const e of Object.values(report.registries)) {
    for (const t of [e.target, ...(e.targets ?? []), ...Object.keys(e.served)]) if (t) hosts.add(normaliseRegistryHost(t.split('/')[0] ?? t));
  }
  return hosts;
}

export function targetsOf(e: RegistryEntry): string[] {
  const out: string[] = [];
  for (const t of [e.target, ...(e.targets ?? []), ...Object.keys(e.served)]) if (t !== undefined && !out.includes(t)) out.push(t);
  return out;
}

/** Admissions of images with no rule that were pulled as they are (denied ones were not, in enforce). */
function pulledAsIs(e: RegistryEntry, mode: Report['mode']): number {
  return Math.max(0, e.unchanged - (mode === 'enforce' ? e.denied : 0));
}

/** Is this registry's traffic migration work (pulled from outside, not allowed, not a mirror)? */
export function isOutside(registry: string, e: RegistryEntry, mirrors: Set<string>, ctx: ReportContext, mode: Report['mode'] = 'enforce'): boolean {
  if (mirrors.has(registry)) return false;
  // In enforce mode a denied pod ran nothing: its images were never pulled from here.
  if (e.target === undefined) return pulledAsIs(e, mode) > 0 && !(ctx.allowed?.(registry) ?? false);
  return e.wouldRewrite > 0 || e.skipped > 0 || Object.keys(e.pending).length > 0;
}

/** The worklist: every image still pulled from outside (in audit: that would be rewritten). */
export function workItems(report: Report, ctx: ReportContext = {}): WorkItem[] {
  const mirrors = mirrorHosts(report);
  const items: WorkItem[] = [];
  for (const [registry, e] of Object.entries(report.registries)) {
    if (!isOutside(registry, e, mirrors, ctx, report.mode)) continue;
    const targets = targetsOf(e);
    const missing = new Set(e.missing);
    const used = (image: string): Omit<WorkItem, 'image' | 'registry' | 'targets' | 'state'> => {
      const u = e.usage[image];
      if (u === undefined) return { namespaces: e.namespaces, workloads: [], usedByOverflow: e.namespacesOverflow, perImage: false, lastHour: 0, lastDay: 0, inMirror: undefined, lastSeen: e.lastSeen };
      const { lastHour, lastDay } = recentCounts(u, report.generatedAt || new Date());
      const inMirror = missing.has(image) ? false : u.mirror === undefined ? undefined : u.mirror === 'present';
      return { namespaces: u.namespaces, workloads: u.workloads, usedByOverflow: u.overflow, perImage: true, lastHour, lastDay, inMirror, lastSeen: u.lastSeen };
    };
    if (e.target === undefined) {
      for (const image of e.images) items.push({ image, registry, targets, state: 'no-rule', ...used(image) });
      continue;
    }
    for (const [image, target] of Object.entries(e.pending)) {
      const state: WorkState = missing.has(image) ? 'missing' : report.mode === 'audit' ? 'would-rewrite' : 'kept';
      const ordered = [target, ...targets.filter((t) => !target.startsWith(`${t}/`))];
      items.push({ image, registry, targets: ordered, state, ...used(image) });
    }
  }
  return items.sort((a, b) => a.image.localeCompare(b.image));
}

/** Share of admitted images served from the mirror or an allowed registry. */
export function progress(report: Report, ctx: ReportContext = {}): { done: number; total: number } {
  const mirrors = mirrorHosts(report);
  let done = 0;
  let total = 0;
  for (const [registry, e] of Object.entries(report.registries)) {
    const asIs = pulledAsIs(e, report.mode);
    total += e.rewritten + e.wouldRewrite + e.skipped + asIs;
    done += e.rewritten;
    if (mirrors.has(registry) || (e.target === undefined && (ctx.allowed?.(registry) ?? false))) done += asIs;
  }
  return { done, total };
}

