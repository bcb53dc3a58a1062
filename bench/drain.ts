/**
 * The drain scenario of `npm run bench` (`--only drain`): SIGTERM to the built CLI under
 * steady load, several times, counting every request sent and how it ended. A failure
 * rate of 1 in a few thousand needs tens of thousands of requests across several
 * SIGTERMs to be shown absent, which is why this is a bench and not a unit test
 * (test/server/hostile.test.ts checks the same behaviour on a few hundred).
 *
 * The clients behave as the API server does in front of a pod that is going away:
 * - 4 clients open a new TLS connection for every request (as it does once its idle
 *   connections are closed), until readiness has failed: then the endpoints no longer
 *   list the pod and nothing new reaches it;
 * - 4 clients reuse one keep-alive connection each, and go on using it until an answer
 *   carries `Connection: close`; they reconnect only while the pod is still in the
 *   endpoints;
 * - a watcher asks GET /readyz every 100 ms, as a readiness probe would (a new
 *   connection each time); the first non-200 after SIGTERM removes the endpoints.
 * The server runs with `--shutdown-delay 1500ms --drain-timeout 5s`.
 */
import type { ChildProcess } from 'node:child_process';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { reviewMix } from './reviews.js';

/**
 * Load before SIGTERM, in each run: at least this long and at least this many requests
 * (so that 5 runs send well over 10,000 whatever the machine does), at most 60 s.
 */
export const DRAIN_LOAD_S = 3;
export const DRAIN_MIN_REQUESTS = 3000;
const DRAIN_MAX_LOAD_MS = 60_000;
export const DRAIN_SERVER_ARGS = ['--shutdown-delay', '1500ms', '--drain-timeout', '5s'] as const;
const CLIENTS_PER_KIND = 4;
const READINESS_PERIOD_MS = 100;
/** Far above the 1.5 s delay and 5 s drain: beyond it the process is killed and the run counts as failed. */
const EXIT_WAIT_MS = 30_000;

/** What the scenario needs of run.ts. */
export interface DrainHarness {
  readonly runs: number;
  /** The CA of the serving certificate. */
  readonly ca: string;
  log(line: string): void;
  /** Start `serve` with these arguments added; resolves once /readyz answers 200. */
  start(name: string, extraArgs: readonly string[]): Promise<{ port: number; child: ChildProcess }>;
}

export interface ClientCounts {
  sent: number;
  ok: number;
  failed: number;
}

export interface DrainRun {
  /** Requests sent (a new connection's request counts once it is attempted). */
  readonly sent: number;
  readonly ok: number;
  readonly failed: number;
  /** Failures by kind: `ECONNRESET` (a TCP reset), `socket hang up` (closed unanswered), `status N`, other error codes. */
  readonly errors: Record<string, number>;
  readonly newConnection: ClientCounts;
  readonly keepAlive: ClientCounts;
  /** Load before SIGTERM. */
  readonly loadMs: number;
  /** Requests sent after SIGTERM, and answers after it that carried `Connection: close`. */
  readonly sentAfterSigterm: number;
  readonly closeAnswersAfterSigterm: number;
  /** From SIGTERM to the watcher's first non-200 readiness answer. */
  readonly notReadyAfterMs: number | undefined;
  readonly exitCode: number | null;
  readonly exitSignal: string | null;
  /** From SIGTERM to the process's exit. */
  readonly exitAfterMs: number;
}

export interface DrainResult {
  readonly runs: readonly DrainRun[];
  /** The least load before each SIGTERM: seconds and requests. */
  readonly loadS: number;
  readonly minRequests: number;
  readonly serverArgs: readonly string[];
  readonly clients: { readonly newConnection: number; readonly keepAlive: number };
  readonly total: { readonly sent: number; readonly ok: number; readonly failed: number; readonly errors: Record<string, number> };
  /** 0 failed requests and exit code 0 in every run. */
  readonly pass: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `socket hang up` has the code ECONNRESET too, but is a close without an answer, not a reset. */
function errorKind(err: NodeJS.ErrnoException): string {
  if (err.message === 'socket hang up') return 'socket hang up';
  return err.code ?? err.message;
}

interface Answer {
  readonly ok: boolean;
  /** The answer said `Connection: close`, or there was none: the connection is gone. */
  readonly closing: boolean;
}

async function oneRun(h: DrainHarness, index: number, bodies: readonly { body: string; uid: string }[]): Promise<DrainRun> {
  const { port, child } = await h.start(`drain-${index + 1}`, DRAIN_SERVER_ARGS);
  const exited = new Promise<{ code: number | null; signal: string | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  let sigtermAt: number | undefined = undefined;
  let notReadyAt: number | undefined;
  let endpointsGone = false;
  let next = 0;
  let sentAfterSigterm = 0;
  let closeAnswersAfterSigterm = 0;
  const errors: Record<string, number> = {};
  const newConnection: ClientCounts = { sent: 0, ok: 0, failed: 0 };
  const keepAlive: ClientCounts = { sent: 0, ok: 0, failed: 0 };

  const send = (pool: https.Agent | false, counts: ClientCounts): Promise<Answer> =>
    new Promise((resolve) => {
      const review = bodies[next++ % bodies.length] ?? bodies[0]!;
      counts.sent++;
      if (sigtermAt !== undefined) sentAfterSigterm++;
      // A request ends once: a reset can be reported by the response and by the request.
      let settled = false;
      const fail = (kind: string): void => {
        if (settled) return;
        settled = true;
        counts.failed++;
        errors[kind] = (errors[kind] ?? 0) + 1;
        resolve({ ok: false, closing: true });
      };
      const req = https.request(
        {
          host: '127.0.0.1',
          port,
          path: '/mutate?timeout=10s',
          method: 'POST',
          ca: h.ca,
          agent: pool,
          timeout: 10_000,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(review.body) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('error', (err) => fail(errorKind(err)));
          res.on('end', () => {
            const closing = res.headers.connection === 'close';
            if (closing && sigtermAt !== undefined) closeAnswersAfterSigterm++;
            if (res.statusCode !== 200) return fail(`status ${res.statusCode}`);
            // A 200 that is not this review's answer would make the count meaningless.
            if (!Buffer.concat(chunks).toString('utf8').includes(review.uid)) return fail('wrong answer');
            if (settled) return;
            settled = true;
            counts.ok++;
            resolve({ ok: true, closing });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => fail(errorKind(err)));
      req.end(review.body);
    });

  const newConnectionClient = async (): Promise<void> => {
    while (!endpointsGone) await send(false, newConnection);
  };
  const keepAliveClient = async (): Promise<void> => {
    const pool = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (;;) {
        const { closing } = await send(pool, keepAlive);
        // The connection is gone; a new one would go only to pods still in the endpoints.
        if (closing && endpointsGone) return;
      }
    } finally {
      pool.destroy();
    }
  };
  const readiness = (): Promise<number> =>
    new Promise((resolve) => {
      const req = https.get({ host: '127.0.0.1', port, path: '/readyz', ca: h.ca, agent: false, timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(0));
    });
  const watcher = async (): Promise<void> => {
    while (!endpointsGone) {
      const asked = sigtermAt !== undefined;
      const status = await readiness();
      if (asked && status !== 200) {
        notReadyAt = performance.now();
        endpointsGone = true;
        return;
      }
      await sleep(READINESS_PERIOD_MS);
    }
  };

  const load = [
    ...Array.from({ length: CLIENTS_PER_KIND }, newConnectionClient),
    ...Array.from({ length: CLIENTS_PER_KIND }, keepAliveClient),
    watcher(),
  ];
  const loadStart = performance.now();
  const loaded = (): boolean => performance.now() - loadStart >= DRAIN_LOAD_S * 1000 && newConnection.sent + keepAlive.sent >= DRAIN_MIN_REQUESTS;
  while (!loaded() && performance.now() - loadStart < DRAIN_MAX_LOAD_MS) await sleep(50);
  sigtermAt = performance.now();
  const loadMs = sigtermAt - loadStart;
  child.kill('SIGTERM');
  await Promise.all(load);
  const killer = setTimeout(() => child.kill('SIGKILL'), EXIT_WAIT_MS);
  const exit = await exited;
  clearTimeout(killer);
  const sent = newConnection.sent + keepAlive.sent;
  const ok = newConnection.ok + keepAlive.ok;
  return {
    sent,
    ok,
    failed: newConnection.failed + keepAlive.failed,
    errors,
    newConnection,
    keepAlive,
    loadMs,
    sentAfterSigterm,
    closeAnswersAfterSigterm,
    notReadyAfterMs: notReadyAt === undefined ? undefined : notReadyAt - sigtermAt,
    exitCode: exit.code,
    exitSignal: exit.signal,
    exitAfterMs: exit.at - sigtermAt,
  };
}

export async function runDrain(h: DrainHarness): Promise<DrainResult> {
  const bodies = reviewMix(200, 1);
  const runs: DrainRun[] = [];
  for (let i = 0; i < h.runs; i++) {
    h.log(`drain: run ${i + 1}/${h.runs}: at least ${DRAIN_LOAD_S} s and ${DRAIN_MIN_REQUESTS} requests of load, then SIGTERM`);
    const r = await oneRun(h, i, bodies);
    const kinds = Object.entries(r.errors).map(([k, n]) => `${k} ${n}`).join(', ');
    h.log(`drain: run ${i + 1}: ${r.sent} sent, ${r.ok} answered 200, ${r.failed} failed${kinds ? ` (${kinds})` : ''}; exit ${r.exitCode ?? r.exitSignal} ${Math.round(r.exitAfterMs)} ms after SIGTERM`);
    runs.push(r);
  }
  const errors: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + n;
  const sum = (f: (r: DrainRun) => number): number => runs.reduce((a, r) => a + f(r), 0);
  const total = { sent: sum((r) => r.sent), ok: sum((r) => r.ok), failed: sum((r) => r.failed), errors };
  return {
    runs,
    loadS: DRAIN_LOAD_S,
    minRequests: DRAIN_MIN_REQUESTS,
    serverArgs: DRAIN_SERVER_ARGS,
    clients: { newConnection: CLIENTS_PER_KIND, keepAlive: CLIENTS_PER_KIND },
    total,
    pass: total.failed === 0 && runs.every((r) => r.exitCode === 0),
  };
}

/** The drain section of the bench's table. */
export function renderDrain(d: DrainResult): string[] {
  const header = ['run', 'load', 'sent', 'new conn.', 'keep-alive', '200', 'failed', 'after SIGTERM', 'close answers', 'not ready', 'exit', 'SIGTERM to exit'];
  const widths = [5, 6, 7, 10, 10, 7, 6, 13, 13, 9, 4, 15];
  const ms = (n: number | undefined): string => (n === undefined ? '-' : `${Math.round(n)} ms`);
  const rows = [
    header,
    ...d.runs.map((r, i) => [
      String(i + 1),
      `${(r.loadMs / 1000).toFixed(1)} s`,
      String(r.sent),
      String(r.newConnection.sent),
      String(r.keepAlive.sent),
      String(r.ok),
      String(r.failed),
      String(r.sentAfterSigterm),
      String(r.closeAnswersAfterSigterm),
      ms(r.notReadyAfterMs),
      String(r.exitCode ?? r.exitSignal),
      ms(r.exitAfterMs),
    ]),
    ['total', '', String(d.total.sent), String(d.runs.reduce((a, r) => a + r.newConnection.sent, 0)), String(d.runs.reduce((a, r) => a + r.keepAlive.sent, 0)), String(d.total.ok), String(d.total.failed)],
  ];
  const kinds = Object.entries(d.total.errors).map(([k, n]) => `${k} ${n}`).join(', ');
  return [
    `drain: ${d.runs.length} runs of load (at least ${d.loadS} s and ${d.minRequests} requests) then SIGTERM (serve ${d.serverArgs.join(' ')}); ` +
      `${d.clients.newConnection} new-connection clients until readiness fails, ${d.clients.keepAlive} keep-alive clients until Connection: close`,
    ...rows.map((row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 8) : cell.padStart(Math.max(widths[i] ?? 8, cell.length)))).join('  ').trimEnd()),
    `  failures by kind: ${kinds || 'none'}`,
    `  ${d.pass ? 'PASS' : 'FAIL'}  0 failed requests and exit 0 in every run: ${d.total.failed} failed of ${d.total.sent}, exit codes ${d.runs.map((r) => r.exitCode ?? r.exitSignal).join(', ')}`,
    '',
  ];
}
