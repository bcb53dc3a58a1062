/** Reading the report of a running instance: `GET <url>/report` on its metrics port. */
import http from 'node:http';
import https from 'node:https';
import { parseReport, type Report } from './rewrites.js';

const MAX_REPORT_BYTES = 32 << 20;

/**
 * Fetch and check `<baseUrl>/report`.
 *
 * @throws Error naming the URL when the instance cannot be reached, answers other than
 *   200, or the body is not a report.
 */
export async function fetchReport(baseUrl: string, opts: { timeoutMs?: number } = {}): Promise<Report> {
  let url: URL;
  try {
    url = new URL('report', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  } catch {
    throw new Error(`--url: not a URL: ${baseUrl}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--url: http or https only: ${baseUrl}`);
  const body = await get(url, opts.timeoutMs ?? 10_000);
  try {
    return parseReport(body, url.href);
  } catch (err) {
    const message = (err as Error).message.replace('registries missing', 'not a mirrorgate report (no "registries")');
    throw new Error(message, { cause: err });
  }
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
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot reach ${url.href}: ${err.code ?? err.message} (is mirrorgate running there, and is it its metrics port?)`, { cause: err })),
    );
  });
}
