/**
 * The clients of the bench: one request at a time (answer checks, the 3 MiB UPDATE), the
 * closed loop (wrk and its Lua script) and the open loop (a constant rate from this
 * process).
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { HarnessError, MUTATE_PATH, percentile, tail } from './harness.js';
import { command, type Pinning, type Processes } from './processes.js';
import type { GeneratedReview } from './reviews.js';
import type { RunningServer } from './servers.js';

// ---------------------------------------------------------------------------------
// One request at a time (answer checks, the 3 MiB UPDATE)

export interface Answer {
  status: number;
  body: string;
  ms: number;
}

export function post(port: number, agent: https.Agent, body: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = https.request(
      { host: '127.0.0.1', port, path: MUTATE_PATH, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0 }));
        res.on('error', reject);
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
    req.end(body);
  });
}

export interface ReviewAnswer {
  allowed: boolean;
  patched: boolean;
  imageOps: number;
  /** The denial's message. */
  message?: string;
}

/** Check that an answer is a well-formed AdmissionReview for `uid`; returns what it decided, or what is wrong with it. */
export function readAnswer(answer: Answer, uid: string): ReviewAnswer | string {
  if (answer.status !== 200) return `HTTP ${answer.status}: ${answer.body.slice(0, 200)}`;
  let review: { apiVersion?: unknown; kind?: unknown; response?: { uid?: unknown; allowed?: unknown; patch?: unknown; status?: { message?: unknown } } };
  try {
    review = JSON.parse(answer.body) as typeof review;
  } catch {
    return `not JSON: ${answer.body.slice(0, 200)}`;
  }
  const r = review.response;
  if (review.kind !== 'AdmissionReview' || review.apiVersion !== 'admission.k8s.io/v1' || r === undefined) return `not an AdmissionReview: ${answer.body.slice(0, 200)}`;
  if (r.uid !== uid) return `uid ${String(r.uid)} instead of ${uid}`;
  let imageOps = 0;
  if (typeof r.patch === 'string') {
    const ops = JSON.parse(Buffer.from(r.patch, 'base64').toString('utf8')) as { path?: string }[];
    imageOps = ops.filter((op) => typeof op.path === 'string' && op.path.endsWith('/image')).length;
  }
  if (r.allowed !== true) return { allowed: false, patched: false, imageOps, message: typeof r.status?.message === 'string' ? r.status.message : '(no message)' };
  return { allowed: true, patched: typeof r.patch === 'string', imageOps };
}

export interface CheckResult {
  reviews: number;
  patched: number;
  needPatch: number;
  imageOps: number;
  rewritableImages: number;
}

/**
 * Send every distinct review once and check the answers: all allowed with the right
 * uid; the baseline never patches; mirrorgate patches every review with a third-party
 * image (otherwise the bench would time a no-op). Also warms up both servers' JIT.
 */
export async function checkAnswers(server: RunningServer, ca: string, reviews: readonly GeneratedReview[]): Promise<CheckResult> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const problems: string[] = [];
  const result: CheckResult = { reviews: 0, patched: 0, needPatch: 0, imageOps: 0, rewritableImages: 0 };
  try {
    for (const r of reviews) {
      const a = readAnswer(await post(server.port, agent, Buffer.from(r.body)), r.uid);
      result.reviews++;
      if (r.rewritable > 0) result.needPatch++;
      result.rewritableImages += r.rewritable;
      if (typeof a === 'string' || !a.allowed) {
        problems.push(`${r.size} ${r.operation} ${r.uid}: ${typeof a === 'string' ? a : `denied: ${a.message ?? ''}`}`);
        continue;
      }
      if (a.patched) result.patched++;
      result.imageOps += a.imageOps;
      if (server.kind === 'baseline' && a.patched) problems.push(`${r.uid}: the baseline must not patch`);
      if (server.kind === 'mirrorgate' && r.rewritable > 0 && !a.patched) problems.push(`${r.size} ${r.operation} ${r.uid}: ${r.rewritable} third-party images but no patch`);
    }
  } finally {
    agent.destroy();
  }
  if (problems.length > 0) {
    throw new HarnessError(`${server.name} answered ${problems.length} of ${reviews.length} reviews wrongly, so its figures would mean nothing:\n  ${problems.slice(0, 5).join('\n  ')}\nlog: ${tail(server.logFile, 5)}`);
  }
  return result;
}

export interface UpdateResult {
  bytes: number;
  medianMs: number;
  samplesMs: number[];
  patched: boolean;
  imageOps: number;
}

/** Time the one big UPDATE review on a kept-alive connection: 2 unmeasured, then `runs`. */
export async function timeUpdate(server: RunningServer, ca: string, review: GeneratedReview, runs = 7): Promise<UpdateResult> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const body = Buffer.from(review.body);
  const samples: number[] = [];
  let last: ReviewAnswer | undefined;
  try {
    for (let i = 0; i < runs + 2; i++) {
      const answer = await post(server.port, agent, body);
      const a = readAnswer(answer, review.uid);
      if (typeof a === 'string' || !a.allowed) throw new HarnessError(`${server.name}: 3 MiB UPDATE answered wrongly: ${typeof a === 'string' ? a : `denied: ${a.message ?? ''}`}`);
      last = a;
      if (i >= 2) samples.push(answer.ms);
    }
  } finally {
    agent.destroy();
  }
  return { bytes: body.length, medianMs: percentile([...samples].sort((a, b) => a - b), 50), samplesMs: samples, patched: last?.patched ?? false, imageOps: last?.imageOps ?? 0 };
}

// ---------------------------------------------------------------------------------
// Closed loop: wrk with a Lua script that cycles through pre-built requests.

export const WRK_LUA = `-- Written by bench/run.ts at run time.
local bodies = {}
for line in io.lines(os.getenv("MG_BENCH_BODIES")) do bodies[#bodies + 1] = line end
local requests = {}
local n = 0
local i = 0
local threads = {}
non2xx = 0

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  -- Requests are formatted once here: building them per request would slow wrk down.
  for k = 1, #bodies do
    requests[k] = wrk.format("POST", os.getenv("MG_BENCH_PATH"), { ["Content-Type"] = "application/json" }, bodies[k])
  end
  n = #requests
  bodies = nil
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%.0f,"durationUs":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"timeout":%.0f,"non2xx":%.0f,"p50Us":%.0f,"p99Us":%.0f,"maxUs":%.0f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, bad,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`;

export interface PointResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  requests: number;
  /** Socket errors by kind and non-2xx answers, as wrk counted them. */
  detail: Record<string, number>;
}

export interface WrkJson {
  requests: number;
  durationUs: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
  non2xx: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export async function runWrk(procs: Processes, port: number, lua: string, bodiesFile: string, concurrency: number, seconds: number, pin: Pinning | undefined): Promise<PointResult> {
  const url = `https://127.0.0.1:${port}${MUTATE_PATH}`;
  // One thread: wrk has one CPU to itself, and one thread drives 64 connections easily.
  const [cmd, args] = command(pin?.load, 'wrk', ['-t1', `-c${concurrency}`, `-d${seconds}s`, '--timeout', '10s', '-s', lua, url]);
  const child = procs.track(spawn(cmd, args, { env: { ...process.env, MG_BENCH_BODIES: bodiesFile, MG_BENCH_PATH: MUTATE_PATH }, stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), (seconds + 30) * 1000);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  }).finally(() => clearTimeout(killer));
  const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  if (code !== 0 || line === undefined) throw new HarnessError(`wrk failed (exit ${String(code)}):\n${err}${out}`.trimEnd());
  const w = JSON.parse(line.slice('BENCH_JSON '.length)) as WrkJson;
  const socket = w.connect + w.read + w.write + w.timeout;
  return {
    rps: w.requests / (w.durationUs / 1e6),
    p50Ms: w.p50Us / 1000,
    p99Ms: w.p99Us / 1000,
    errors: socket + w.non2xx,
    requests: w.requests,
    detail: { connect: w.connect, read: w.read, write: w.write, timeout: w.timeout, non2xx: w.non2xx },
  };
}

// ---------------------------------------------------------------------------------
// Open loop: a constant request rate regardless of answers (wrk can only do a closed
// loop, and Debian has no wrk2). Latency is timed from the moment each request is
// handed to the keep-alive agent; how late the client itself was is reported beside it.

export interface RateResult {
  targetRps: number;
  achievedRps: number;
  sent: number;
  completed: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  /** p99 of how late requests left compared with their schedule (client health). */
  clientLagP99Ms: number;
}

export async function openLoop(port: number, agent: https.Agent, bodies: readonly Buffer[], rate: number, seconds: number): Promise<RateResult> {
  const total = Math.max(1, Math.round(rate * seconds));
  const interval = 1000 / rate;
  const latencies: number[] = [];
  const lags: number[] = [];
  let sent = 0;
  let settled = 0;
  let errors = 0;
  const start = performance.now();
  let lastSend = start;

  return new Promise<RateResult>((resolve) => {
    let tick: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(tick);
      clearTimeout(deadline);
      // Whatever is still out after the grace period counts as an error (a timeout).
      errors += sent - settled;
      latencies.sort((a, b) => a - b);
      lags.sort((a, b) => a - b);
      const window = Math.max(lastSend - start, interval * (total - 1), 1) / 1000;
      resolve({
        targetRps: rate,
        achievedRps: sent / Math.max(window, seconds),
        sent,
        completed: latencies.length,
        p50Ms: percentile(latencies, 50),
        p99Ms: percentile(latencies, 99),
        maxMs: latencies.at(-1) ?? Number.NaN,
        errors,
        clientLagP99Ms: percentile(lags, 99),
      });
    };
    const settle = (): void => {
      settled++;
      if (sent === total && settled === total) finish();
    };
    const dispatch = (body: Buffer): void => {
      const t0 = performance.now();
      let done = false;
      const once = (ok: boolean, status: number): void => {
        if (done) return;
        done = true;
        if (ok && status >= 200 && status < 300) latencies.push(performance.now() - t0);
        else errors++;
        settle();
      };
      const req = https.request(
        { host: '127.0.0.1', port, path: MUTATE_PATH, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          res.resume();
          res.on('end', () => once(true, res.statusCode ?? 0));
          res.on('error', () => once(false, 0));
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
      req.on('error', () => once(false, 0));
      req.end(body);
    };
    const fire = (): void => {
      const now = performance.now();
      while (sent < total && start + sent * interval <= now) {
        const body = bodies[sent % bodies.length];
        if (body === undefined) throw new Error('no bodies');
        lags.push(performance.now() - (start + sent * interval));
        sent++;
        lastSend = performance.now();
        dispatch(body);
      }
      if (sent < total) tick = setTimeout(fire, Math.max(0, start + sent * interval - performance.now()));
      else deadline = setTimeout(finish, 5000);
    };
    fire();
  });
}

export function writeBodies(file: string, reviews: readonly GeneratedReview[]): void {
  // One compact JSON document per line: what the Lua script reads back.
  writeFileSync(file, `${reviews.map((r) => r.body).join('\n')}\n`);
}
