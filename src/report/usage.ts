/**
 * Per image: who uses it and how often. Admissions are counted in time buckets keyed by
 * their start in minutes since the epoch: 5-minute buckets for the last hour, folded into
 * hourly buckets once older, dropped once older than a day. So "admissions in the last
 * hour" is exact to 5 minutes and "in the last day" to the hour, whatever the traffic, in
 * at most {@link MAX_BUCKETS} pairs. Buckets with the same key are summed when replicas'
 * reports are merged. Pure.
 */

/** Namespaces and workloads kept per image (the rest are counted in `overflow`). */
export const MAX_PER_IMAGE = 20;
/** 5-minute buckets of the last 65 minutes (13) and hourly ones of the last 25 hours. */
export const MAX_BUCKETS = 40;
/**
 * Characters charged to the report's budget for one image's usage besides its strings:
 * the counters and every bucket it may hold, so that the budget bounds the JSON.
 */
export const USAGE_COST = 120 + MAX_BUCKETS * 20;

const FINE = 5;
const HOUR = 60;
const DAY = 24 * HOUR;

export interface ImageUsage {
  /** Admissions (pods) that used the image, ever. */
  admissions: number;
  namespaces: string[];
  /** `namespace/Kind/name` of the pods' workloads (see core/workload). */
  workloads: string[];
  /** Namespaces and workloads not kept (past {@link MAX_PER_IMAGE}). */
  overflow: number;
  /** `[bucket start in minutes since the epoch, admissions]`, oldest first. */
  recent: [number, number][];
  /** What verification last said of the image's target: the mirror holds it or not; absent when never checked. */
  mirror?: 'present' | 'absent' | undefined;
  /** When verification said so (ISO 8601). */
  checkedAt?: string | undefined;
  firstSeen: string;
  lastSeen: string;
}

export function emptyUsage(at: string): ImageUsage {
  return { admissions: 0, namespaces: [], workloads: [], overflow: 0, recent: [], firstSeen: at, lastSeen: at };
}

export function minuteOf(date: Date | string): number {
  return Math.floor((typeof date === 'string' ? Date.parse(date) : date.getTime()) / 60_000);
}

/**
 * Fold buckets older than an hour into hourly ones, drop those older than a day; sorted.
 * Without `nowMinute` buckets are only summed by key (a stored report read as it is).
 */
export function compactBuckets(recent: readonly (readonly [number, number])[], nowMinute: number | undefined): [number, number][] {
  const byKey = new Map<number, number>();
  for (const [start, n] of recent) {
    if (!Number.isSafeInteger(start) || !(n > 0)) continue;
    if (nowMinute === undefined) {
      byKey.set(start, (byKey.get(start) ?? 0) + n);
      continue;
    }
    // Wholly older than an hour: its hour bucket.
    const key = start + FINE <= nowMinute - HOUR ? start - (((start % HOUR) + HOUR) % HOUR) : start;
    if (key + HOUR <= nowMinute - DAY) continue;
    if (key > nowMinute + HOUR) continue; // from a clock far ahead of ours (a little skew between replicas is kept)
    byKey.set(key, (byKey.get(key) ?? 0) + n);
  }
  const out = [...byKey.entries()].sort(([a], [b]) => a - b);
  return out.length > MAX_BUCKETS ? out.slice(out.length - MAX_BUCKETS) : out;
}

/** Count one admission now. */
export function countAdmission(u: ImageUsage, at: Date): void {
  const minute = minuteOf(at);
  const key = minute - (minute % FINE);
  const last = u.recent[u.recent.length - 1];
  u.admissions++;
  if (last !== undefined && last[0] === key) {
    last[1]++;
    return;
  }
  // A new bucket, at most once per 5 minutes per image: fold and drop the old ones now.
  u.recent.push([key, 1]);
  u.recent = compactBuckets(u.recent, minute);
}

/** Admissions in the last hour (to 5 minutes) and the last day (to the hour), as of `now`. */
export function recentCounts(u: ImageUsage | undefined, now: Date | string): { lastHour: number; lastDay: number } {
  if (u === undefined) return { lastHour: 0, lastDay: 0 };
  const nowMinute = minuteOf(now);
  let lastHour = 0;
  let lastDay = 0;
  for (const [start, n] of compactBuckets(u.recent, nowMinute)) {
    lastDay += n;
    // Unfolded 5-minute buckets of the last hour (the current one and the 11 before it).
    if (start > nowMinute - HOUR) lastHour += n;
  }
  return { lastHour, lastDay };
}

/** Add a distinct value to a bounded list; true when it is (or was already) there. */
function addTo(list: string[], value: string, charge: (chars: number) => boolean): boolean {
  if (list.includes(value)) return true;
  if (list.length >= MAX_PER_IMAGE || !charge(value.length)) return false;
  list.push(value);
  return true;
}

export function addNamespace(u: ImageUsage, namespace: string, charge: (chars: number) => boolean): void {
  if (!addTo(u.namespaces, namespace, charge)) u.overflow++;
}

export function addWorkload(u: ImageUsage, workload: string, charge: (chars: number) => boolean): void {
  if (!addTo(u.workloads, workload, charge)) u.overflow++;
}

/** Merge another replica's usage of the same image into `into`. */
export function mergeUsage(into: ImageUsage, from: ImageUsage, nowMinute: number | undefined, charge: (chars: number) => boolean): void {
  into.admissions += from.admissions;
  into.overflow += from.overflow;
  for (const n of from.namespaces) addNamespace(into, n, charge);
  for (const w of from.workloads) addWorkload(into, w, charge);
  into.recent = compactBuckets([...into.recent, ...from.recent], nowMinute);
  if (from.mirror !== undefined && (into.checkedAt === undefined || (from.checkedAt ?? '') > into.checkedAt)) {
    into.mirror = from.mirror;
    into.checkedAt = from.checkedAt;
  }
  if (from.firstSeen && from.firstSeen < into.firstSeen) into.firstSeen = from.firstSeen;
  if (from.lastSeen && from.lastSeen > into.lastSeen) into.lastSeen = from.lastSeen;
}

/** A stored usage checked value by value: what is not of the right type is dropped. */
export function sanitiseUsage(v: unknown): ImageUsage | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const x = v as Record<string, unknown>;
  const num = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.floor(n) : 0);
  const strs = (a: unknown): string[] => (Array.isArray(a) ? a.filter((s): s is string => typeof s === 'string').slice(0, MAX_PER_IMAGE) : []);
  const time = (s: unknown): string => (typeof s === 'string' ? s : '');
  const recent = (Array.isArray(x.recent) ? x.recent : [])
    .filter((p): p is [number, number] => Array.isArray(p) && p.length === 2 && Number.isSafeInteger(p[0]) && Number.isSafeInteger(p[1]) && (p[1] as number) > 0)
    .slice(-MAX_BUCKETS)
    .map(([a, b]) => [a, b] as [number, number]);
  const u: ImageUsage = {
    admissions: num(x.admissions),
    namespaces: strs(x.namespaces),
    workloads: strs(x.workloads),
    overflow: num(x.overflow),
    recent,
    firstSeen: time(x.firstSeen),
    lastSeen: time(x.lastSeen),
  };
  if (x.mirror === 'present' || x.mirror === 'absent') {
    u.mirror = x.mirror;
    u.checkedAt = time(x.checkedAt);
  }
  return u;
}
