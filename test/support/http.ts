/**
 * Small HTTP(S) clients for tests that talk to a listening `serve()`: node:http and
 * node:https only (undici is not a dependency), loopback URLs only.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type Agent } from 'node:https';

/**
 * POST `body` as JSON over HTTPS trusting only `ca`, with SNI `localhost` (the name the
 * created test certificates carry); resolves the status and the parsed JSON answer.
 * `T` describes the answer; it defaults to `any` for tests that read it loosely.
 */
export function postJson<T = any>(url: string, ca: string, body: unknown, agent?: Agent): Promise<{ status: number; json: T }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpsRequest(
      { hostname: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: 'POST', ca, agent, servername: 'localhost', headers: { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as T }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/**
 * GET over http or https (as the URL says; https trusts only `ca`, SNI `localhost`);
 * resolves the status and the body as text, whatever the status.
 */
export function getResponse(url: string, ca?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const opts = { hostname: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, ca, servername: 'localhost' };
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** GET as {@link getResponse} and resolve the body text only (the status is not checked). */
export async function getText(url: string, ca?: string): Promise<string> {
  return (await getResponse(url, ca)).body;
}

/** The value of one sample (`series` with its labels, as printed) in Prometheus text; 0 when absent. */
export function metricSample(text: string, series: string): number {
  for (const line of text.split('\n')) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return 0;
}
