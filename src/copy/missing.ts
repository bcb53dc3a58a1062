/**
 * The copy list from a running instance: `GET <url>/report` (DESIGN §2 "Background
 * report"), whose registry entries carry `missing`, the images a verified rule found
 * missing from the mirror (fully qualified source references).
 */
import http from 'node:http';
import https from 'node:https';

/** Images missing from the mirror, and how many the report could not list (bounded lists). */
export interface MissingList {
  images: string[];
  overflow: number;
}

const MAX_REPORT_BYTES = 32 << 20;

/**
 * Fetch `<baseUrl>/report` and collect `registries.*.missing` (deduplicated, in report
 * order) and the sum of `registries.*.missingOverflow`.
 *
 * @throws Error naming the URL when the instance cannot be reached, answers other than
 *   200, or the body is not a report.
 */
export async function fetchMissing(baseUrl: string, opts: { timeoutMs?: number } = {}): Promise<MissingList> {
  let url: URL;
  try {
    url = new URL('report', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  } catch {
    throw new Error(`--url: not a URL: ${baseUrl}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--url: http or https only: ${baseUrl}`);
  const body = await get(url, opts.timeoutMs ?? 10_000);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new Error(`${url.href}: not JSON`);
  }
  const registries = isRecord(parsed) ? parsed.registries : undefined;
  if (!isRecord(registries)) throw new Error(`${url.href}: not a mirrorgate report (no "registries")`);
  const seen = new Set<string>();
  let overflow = 0;
  for (const entry of Object.values(registries)) {
    if (!isRecord(entry)) continue;
    if (Array.isArray(entry.missing)) for (const m of entry.missing) if (typeof m === 'string' && m !== '') seen.add(m);
    if (typeof entry.missingOverflow === 'number' && entry.missingOverflow > 0) overflow += entry.missingOverflow;
  }
  return { images: [...seen], overflow };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function get(url: URL, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).get(url, { headers: { accept: 'application/json' }, timeout: timeoutMs }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`${url.href}: HTTP ${res.statusCode ?? 0}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_REPORT_BYTES) {
          res.destroy(new Error(`${url.href}: report larger than ${MAX_REPORT_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${url.href}: no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(`${url.href}: ${err.code ?? err.message}`, { cause: err })));
  });
}
