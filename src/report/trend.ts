/**
 * Progress over time: per hour, how many container images were admitted (`total`) and how
 * many of them were served from the mirror or from a registry the policy allows (`done`),
 * the same measure as the page's progress bar. At most {@link TREND_HOURS} hourly buckets
 * (seven days) are kept; replicas' buckets for the same hour are summed, like the counts.
 * Pure.
 */

export const TREND_HOURS = 168;

export interface TrendPoint {
  /** Start of the hour, ISO 8601 UTC (`2026-11-22T10:00:00.000Z`). */
  hour: string;
  done: number;
  total: number;
}

const HOUR_MS = 3_600_000;

/** The last hour asked for and its text: every admission of an hour asks for the same one. */
let lastHour = Number.NaN;
let lastHourText = '';

export function hourOf(at: Date): string {
  const h = Math.floor(at.getTime() / HOUR_MS);
  if (h !== lastHour) {
    lastHourText = new Date(h * HOUR_MS).toISOString();
    lastHour = h;
  }
  return lastHourText;
}

/**
 * Sum points by hour, keep the {@link TREND_HOURS} hours up to `now` (older ones and any
 * from a clock well ahead of ours are dropped), oldest first.
 */
export function mergeTrend(lists: readonly (readonly TrendPoint[])[], now: Date): TrendPoint[] {
  const nowHour = Math.floor(now.getTime() / HOUR_MS);
  const by = new Map<number, TrendPoint>();
  for (const list of lists) {
    for (const p of list) {
      const ms = Date.parse(p.hour);
      if (!Number.isFinite(ms)) continue;
      const h = Math.floor(ms / HOUR_MS);
      // An hour ahead is kept (replicas' clocks differ a little around the hour); more is not.
      if (h > nowHour + 1 || h <= nowHour - TREND_HOURS) continue;
      const at = by.get(h) ?? { hour: new Date(h * HOUR_MS).toISOString(), done: 0, total: 0 };
      at.done += p.done;
      at.total += p.total;
      by.set(h, at);
    }
  }
  return [...by.entries()].sort(([a], [b]) => a - b).map(([, p]) => p);
}

/** Count `total` images of which `done` were served from the mirror or an allowed registry, now. */
export function countTrend(trend: TrendPoint[], now: Date, done: number, total: number): TrendPoint[] {
  if (total === 0) return trend;
  const hour = hourOf(now);
  const last = trend[trend.length - 1];
  if (last !== undefined && last.hour === hour) {
    last.done += done;
    last.total += total;
    return trend;
  }
  trend.push({ hour, done, total });
  return trend.length > TREND_HOURS ? mergeTrend([trend], now) : trend;
}

/** Stored points checked value by value. */
export function sanitiseTrend(v: unknown): TrendPoint[] {
  if (!Array.isArray(v)) return [];
  const out: TrendPoint[] = [];
  const num = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.floor(n) : 0);
  for (const p of v.slice(-TREND_HOURS * 2)) {
    if (typeof p !== 'object' || p === null) continue;
    const x = p as Record<string, unknown>;
    if (typeof x.hour !== 'string' || !Number.isFinite(Date.parse(x.hour))) continue;
    const total = num(x.total);
    out.push({ hour: new Date(Math.floor(Date.parse(x.hour) / HOUR_MS) * HOUR_MS).toISOString(), done: Math.min(num(x.done), total), total });
  }
  return out;
}
