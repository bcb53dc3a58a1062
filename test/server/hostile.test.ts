/**
 * Slow, stuck and greedy clients against the real TLS listener, and SIGTERM under load
 * against the real CLI process. Nothing here waits a fixed time: every test waits for
 * an event (a socket closed, a process exited, a response) and bounds it generously.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { serve, type Running } from '../../src/serve.js';
import { LogSink, review } from '../support/app.js';
import { exited, startCli } from '../support/cli.js';
import { getResponse, postJson } from '../support/http.js';
import { SERVE_TEST_CONFIG, serveOptions, tempDir as tempFolder } from '../support/serve.js';

const CONFIG = SERVE_TEST_CONFIG;

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await tempFolder(t, 'mg-hostile-');
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  return dir;
}

async function start(t: { teardown(fn: () => unknown): void }): Promise<{ running: Running; ca: string }> {
  const dir = await tempDir(t);
  const running = await serve(serveOptions(dir, { logDestination: new LogSink() }));
  t.teardown(() => running.shutdown('test over'));
  return { running, ca: await readFile(join(dir, 'certs', 'ca.crt'), 'utf8') };
}

/** Open a TLS connection and send the headers of a POST with `length` body bytes, and `first` of them. */
function partialPost(url: string, ca: string, path: string, length: number, first: string): Promise<{ socket: TLSSocket; closed: Promise<string> }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u.hostname, port: Number(u.port), ca, servername: 'localhost' }, () => {
      socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n${first}`);
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      const closed = new Promise<string>((res) => socket.once('close', () => res(answer)));
      socket.on('error', () => undefined);
      resolve({ socket, closed });
    });
    socket.once('error', reject);
  });
}

t.test('a body that stops after one byte is closed at its own ?timeout=', async (t) => {
  const { running, ca } = await start(t);
  const started = Date.now();
  const { closed } = await partialPost(running.url, ca, '/mutate?timeout=1s', 5000, '{');
  const answer = await closed;
  const elapsed = Date.now() - started;
  t.equal(answer, '', 'no answer: the connection is closed');
  t.ok(elapsed >= 900 && elapsed < 10_000, `closed after ${elapsed} ms (deadline 1 s)`);
  const metrics = await getResponse(`${running.metricsUrl}/metrics`);
  t.match(metrics.body, /mirrorgate_requests_refused_total\{reason="deadline"\} 1/);
  // The webhook keeps serving.
  const ok = await postJson(`${running.url}/mutate?timeout=10s`, ca, review().body);
  t.equal(ok.status, 200);
});

t.test('bodies in flight are bounded: beyond the budget a request is refused at once', async (t) => {
  const { running, ca } = await start(t);
  // Two clients each announce 7 MiB and send one byte: 14 of the 16 MiB budget held.
  const held = [await partialPost(running.url, ca, '/mutate?timeout=30s', 7 * 1024 * 1024, '{'), await partialPost(running.url, ca, '/mutate?timeout=30s', 7 * 1024 * 1024, '{')];
  t.teardown(() => held.forEach((h) => h.socket.destroy()));
  // A third 7 MiB body would exceed it: 503 before a byte of its body is read.
  const third = await partialPost(running.url, ca, '/mutate?timeout=30s', 7 * 1024 * 1024, '{');
  const answer = await third.closed;
  t.match(answer, /^HTTP\/1.1 503/, 'refused with 503');
  t.match(answer, /connection: close/i);
  t.match(answer, /bytes of request bodies in flight/);
  // An ordinary review still fits beside the held bytes.
  const small = await postJson(`${running.url}/mutate?timeout=10s`, ca, review().body);
  t.equal(small.status, 200, 'a normal review is still answered');
  // Once the held bodies go, their bytes are given back: a full-size body passes again.
  for (const h of held) h.socket.destroy();
  await Promise.all(held.map((h) => h.closed));
  // The server sees the closes a moment after the client does: ask until it has.
  let big = { status: 0 };
  for (let i = 0; i < 200 && big.status !== 200; i++) {
    big = await postJson(`${running.url}/mutate?timeout=10s`, ca, { ...review().body, padding: 'x'.repeat(7 * 1024 * 1024) }).catch(() => ({ status: 0 }));
  }
  t.equal(big.status, 200, 'budget released');
  const metrics = await getResponse(`${running.metricsUrl}/metrics`);
  t.match(metrics.body, /mirrorgate_requests_refused_total\{reason="budget"\} [1-9]/);
});

function cliArgs(dir: string, extra: string[]): string[] {
  return ['serve', '--config', join(dir, 'config.yaml'), '--no-kube', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--certs-dir', join(dir, 'certs'), ...extra];
}

t.test('SIGTERM with a stuck client connected: exit 0 within the drain deadline', async (t) => {
  const dir = await tempDir(t);
  const { child, url } = await startCli(cliArgs(dir, ['--shutdown-delay', '200ms', '--drain-timeout', '1s']));
  t.teardown(() => child.kill('SIGKILL'));
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  // Headers and one byte of a body, then nothing, with the longest deadline there is.
  const stuck = await partialPost(url, ca, '/mutate?timeout=30s', 4000, '{');
  t.teardown(() => stuck.socket.destroy());
  const started = Date.now();
  child.kill('SIGTERM');
  const { code } = await exited(child);
  const elapsed = Date.now() - started;
  t.equal(code, 0, 'exit code 0');
  // 0.2 s delay + 1 s drain deadline + 1 s grace after the cut + a busy machine.
  t.ok(elapsed < 10_000, `exited ${elapsed} ms after SIGTERM`);
  await stuck.closed;
});

/**
 * The API server keeps its pooled keep-alive connections to a pod after the pod left
 * the endpoints, and opens new ones only to pods in the endpoints. So: keep-alive clients
 * go on using their connection until an answer closes it; new-connection clients stop
 * once readiness has failed (the endpoints update), as kube-proxy would make them.
 */
t.test('SIGTERM under load: every request sent is answered, keep-alive and new connections', async (t) => {
  const dir = await tempDir(t);
  const { child, url } = await startCli(cliArgs(dir, ['--shutdown-delay', '1500ms', '--drain-timeout', '5s']));
  t.teardown(() => child.kill('SIGKILL'));
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  const u = new URL(url);
  let endpointsGone = false;
  let sigtermSent = false;
  const counts = { ok: 0, failed: 0, closeAnswers: 0, errors: [] as string[] };

  const once = (agent: Agent | undefined): Promise<{ closing: boolean }> =>
    new Promise((resolve) => {
      const body = JSON.stringify(review().body);
      const req = httpsRequest(
        { hostname: u.hostname, port: u.port, path: '/mutate?timeout=10s', method: 'POST', ca, agent: agent ?? false, servername: 'localhost', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('end', () => {
            const closing = res.headers.connection === 'close';
            if (closing && sigtermSent) counts.closeAnswers++;
            if (res.statusCode === 200) counts.ok++;
            else {
              counts.failed++;
              counts.errors.push(`status ${res.statusCode}`);
            }
            resolve({ closing });
          });
        },
      );
      req.on('error', (err) => {
        counts.failed++;
        counts.errors.push(err.message);
        resolve({ closing: true });
      });
      req.end(body);
    });

  const keepAlive = async (): Promise<void> => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (;;) {
        const { closing } = await once(agent);
        // The connection is gone; a new one goes only to pods still in the endpoints.
        if (closing && endpointsGone) return;
      }
    } finally {
      agent.destroy();
    }
  };
  const newConnections = async (): Promise<void> => {
    while (!endpointsGone) await once(undefined);
  };
  const watchReadiness = async (): Promise<void> => {
    while (!endpointsGone) {
      const r = await getResponse(`${url.replace(/\/mutate$/, '')}/readyz`, ca).catch(() => ({ status: 0 }));
      if (sigtermSent && r.status !== 200) endpointsGone = true;
    }
  };

  const load = [...Array.from({ length: 3 }, keepAlive), ...Array.from({ length: 3 }, newConnections), watchReadiness()];
  // Load first, then SIGTERM while it runs.
  while (counts.ok < 200) await once(undefined);
  sigtermSent = true;
  child.kill('SIGTERM');
  await Promise.all(load);
  const { code } = await exited(child);
  t.equal(code, 0, 'exit code 0');
  t.equal(counts.failed, 0, `no request failed (${counts.errors.slice(0, 5).join('; ')})`);
  t.ok(counts.ok > 200, `${counts.ok} answered`);
  t.ok(counts.closeAnswers >= 3, `answers during the drain carried Connection: close (${counts.closeAnswers})`);
});
