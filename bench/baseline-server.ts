/**
 * The benchmark's baseline: the least a webhook can do. A plain `node:https` server that
 * reads the body, parses the AdmissionReview and answers `allowed` with no patch, with
 * the same TLS certificate, listen address and keep-alive as mirrorgate. What mirrorgate
 * costs on top of this is what the bench reports.
 *
 * Only `node:` modules, so the harness (`servers.ts`) can transpile this file and run it with plain `node`
 * (no loader in the measured process). Run directly:
 * `node baseline-server.mjs --port P --host 127.0.0.1 --cert tls.crt --key tls.key`;
 * it prints one JSON line `{"msg":"listening","port":P}` when ready.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

/** Same body limit as mirrorgate (UPDATE reviews carry two pods). */
const BODY_LIMIT = 8 * 1024 * 1024;

export interface BaselineOptions {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method === 'GET' && (path === '/readyz' || path === '/healthz')) {
    send(res, 200, { status: 'ready' });
    return;
  }
  if (req.method !== 'POST' || path !== '/mutate') {
    send(res, 404, { error: 'Not Found' });
    return;
  }
  const chunks: Buffer[] = [];
  let length = 0;
  let tooLarge = false;
  req.on('data', (chunk: Buffer) => {
    length += chunk.length;
    if (length > BODY_LIMIT) tooLarge = true;
    else chunks.push(chunk);
  });
  req.on('end', () => {
    if (tooLarge) {
      send(res, 413, { error: 'Payload Too Large' });
      return;
    }
    let uid: unknown;
    try {
      const review = JSON.parse(Buffer.concat(chunks, length).toString('utf8')) as { apiVersion?: unknown; kind?: unknown; request?: { uid?: unknown } };
      if (review.kind === 'AdmissionReview' && review.apiVersion === 'admission.k8s.io/v1') uid = review.request?.uid;
    } catch {
      uid = undefined;
    }
    if (typeof uid !== 'string' || uid === '') {
      send(res, 400, { error: 'Bad Request', message: 'expected an admission.k8s.io/v1 AdmissionReview with request.uid' });
      return;
    }
    send(res, 200, { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, allowed: true } });
  });
}

/** Start the baseline server; resolves once it listens. */
export function startBaseline(opts: BaselineOptions): Promise<{ server: Server; port: number }> {
  const server = createServer({ cert: opts.cert, key: opts.key, minVersion: 'TLSv1.2' }, onRequest);
  // As mirrorgate: keep connections longer than the API server's idle timeout would reuse them.
  server.keepAliveTimeout = 65_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve({ server, port: (server.address() as AddressInfo).port });
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' }, cert: { type: 'string' }, key: { type: 'string' } },
  });
  if (values.cert === undefined || values.key === undefined) throw new Error('--cert FILE and --key FILE are required');
  const { server, port } = await startBaseline({ cert: readFileSync(values.cert), key: readFileSync(values.key), host: values.host, port: Number(values.port) });
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port })}\n`);
  const stop = (): void => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`baseline-server: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
