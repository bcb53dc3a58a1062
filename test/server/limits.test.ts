/**
 * The receive deadline of src/server/limits.ts with a fake timer, against the real
 * listener on 127.0.0.1: which deadline each request gets, that a request not received
 * when it fires is closed (and counted), and that a request received in time clears it.
 * The timer is the test's: nothing here depends on how fast the machine is.
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { buildServer } from '../../src/server/app.js';
import { DEFAULT_RECEIVE_MS, MAX_RECEIVE_MS } from '../../src/server/limits.js';
import { EXAMPLE, LogSink, review } from '../support/app.js';
import { makeTestPki } from '../support/certs.js';

interface FakeTimer {
  readonly ms: number;
  readonly fire: () => void;
  cleared: boolean;
}

async function start(t: { teardown(fn: () => unknown): void }) {
  const timers: FakeTimer[] = [];
  const waiting: ((timer: FakeTimer) => void)[] = [];
  const setTimer = (fire: () => void, ms: number): { clear(): void } => {
    const timer: FakeTimer = { ms, fire, cleared: false };
    timers.push(timer);
    waiting.shift()?.(timer);
    return { clear: () => (timer.cleared = true) };
  };
  /** The next deadline set (or one set already and not yet taken). */
  let taken = 0;
  const nextTimer = (): Promise<FakeTimer> => {
    const ready = timers[taken];
    if (ready !== undefined) {
      taken++;
      return Promise.resolve(ready);
    }
    return new Promise((resolve) =>
      waiting.push((timer) => {
        taken++;
        resolve(timer);
      }),
    );
  };
  const metrics = createMetrics({ defaultMetrics: false });
  const config = validateConfig(EXAMPLE);
  const app = buildServer({
    config: { current: () => config },
    metrics,
    log: createLogger({ level: 'error', destination: new LogSink() }),
    now: () => performance.now(),
    readiness: { notReadyReasons: () => [], degraded: () => [] },
    setTimer,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { app, metrics, port, nextTimer };
}

/** Headers of a POST with a `length`-byte body, then `body`; resolves the socket and its close. */
function send(port: number, path: string, length: number, body: string): Promise<{ socket: Socket; closed: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString('utf8')));
      const closed = new Promise<string>((res) => socket.once('close', () => res(answer)));
      socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n${body}`);
      resolve({ socket, closed });
    });
    socket.once('error', reject);
  });
}

t.test('each request gets its own ?timeout= as its receive deadline, bounded', async (t) => {
  const { port, nextTimer } = await start(t);
  const cases: [string, number][] = [
    ['/mutate?timeout=2s', 2000],
    ['/mutate?timeout=500ms', 500],
    ['/mutate', DEFAULT_RECEIVE_MS],
    ['/mutate?timeout=nonsense', DEFAULT_RECEIVE_MS],
    ['/mutate?timeout=90s', MAX_RECEIVE_MS],
  ];
  for (const [path, ms] of cases) {
    const { socket } = await send(port, path, 100, '{');
    t.teardown(() => socket.destroy());
    t.equal((await nextTimer()).ms, ms, path);
  }
});

t.test('a request not received when its deadline fires is closed and counted; the server goes on', async (t) => {
  const { port, metrics, nextTimer } = await start(t);
  const { closed } = await send(port, '/mutate?timeout=2s', 5000, '{');
  const timer = await nextTimer();
  timer.fire();
  t.equal(await closed, '', 'closed without an answer');
  t.match(await metrics.registry.metrics(), /mirrorgate_requests_refused_total\{reason="deadline"\} 1/);

  // A request received in time: its deadline is cleared and firing it late changes nothing.
  const body = JSON.stringify(review().body);
  const ok = await send(port, '/mutate?timeout=2s', Buffer.byteLength(body), body);
  const second = await nextTimer();
  ok.socket.end();
  const answer = await ok.closed;
  t.match(answer, /^HTTP\/1.1 200/, 'answered');
  t.ok(second.cleared, 'its deadline was cleared once the body was in');
  second.fire();
  t.match(await metrics.registry.metrics(), /mirrorgate_requests_refused_total\{reason="deadline"\} 1/, 'not counted again');
});

t.test('headers that do not arrive within their deadline: 408 and the connection closed', async (t) => {
  // Node enforces it on its own clock (checked every second); a short deadline keeps the test short.
  const pki = makeTestPki();
  const config = validateConfig(EXAMPLE);
  const app = buildServer({
    config: { current: () => config },
    metrics: createMetrics({ defaultMetrics: false }),
    log: createLogger({ level: 'error', destination: new LogSink() }),
    now: () => performance.now(),
    readiness: { notReadyReasons: () => [], degraded: () => [] },
    https: { key: pki.key, cert: pki.cert },
    headersTimeoutMs: 1000,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  t.equal(app.server.headersTimeout, 1000);
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const answer = await new Promise<string>((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: pki.caCert, servername: 'localhost' }, () => {
      // Half the headers, then nothing.
      socket.write('POST /mutate HTTP/1.1\r\nHost: localhost\r\n');
    });
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('utf8')));
    socket.once('close', () => resolve(text));
    // The server closes right after its 408: the client may see a reset instead of the answer.
    socket.on('error', () => undefined);
  });
  t.ok(answer === '' || /^HTTP\/1.1 408/.test(answer), `closed${answer === '' ? '' : ' after a 408 Request Timeout'}`);
});
