/**
 * The copy list from a running instance: `GET <url>/report` (README, "The
 * report"), whose registry entries carry `missing`, the images a verified rule found
 * missing from the mirror (fully qualified source references).
 */
import { fetchReport } from '../report/fetch.js';
import type { Report } from '../report/rewrites.js';

/** Images missing from the mirror, and how many the report could not list (bounded lists). */
export interface MissingList {
  images: string[];
  overflow: number;
}

/** Collect `registries.*.missing` (deduplicated, in report order) and the overflow counts. */
export function missingFrom(report: Report): MissingList {
  const seen = new Set<string>();
  let overflow = 0;
  for (const entry of Object.values(report.registries)) {
    for (const m of entry.missing) if (m !== '') seen.add(m);
    overflow += entry.missingOverflow;
  }
  return { images: [...seen], overflow };
}

/**
 * Fetch `<baseUrl>/report` from a running instance and collect its missing images.
 *
 * @throws Error naming the URL when the instance cannot be reached, answers other than
 *   200, or the body is not a report.
 */
export async function fetchMissing(baseUrl: string, opts: { timeoutMs?: number } = {}): Promise<MissingList> {
  return missingFrom(await fetchReport(baseUrl, opts));
}
