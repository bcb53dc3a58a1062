/**
 * `npm run bench`: mirrorgate against a bare `node:https` baseline, in one run, on the
 * same request mix, so the figures say what mirrorgate costs on top of the least a
 * webhook can do. See bench/README.md for what is measured and how to read it.
 *
 * Exit code 1 only when the harness fails (a server does not start, wrk is missing, an
 * answer is wrong so the numbers would mean nothing); missed targets are reported.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import ts from 'typescript';
import { createCa, createServingCert } from '../src/certs.js';
import { startRegistry, type TestRegistry } from '../test/support/registry.js';
import { renderDrain, runDrain, type DrainResult } from './drain.js';
import { fillMirror, MIRROR_RULES, startCountingProxy, type CountingProxy, type MirrorPlan, type ProxyCounts } from './mirror.js';
import { renderReload, runReloadBench, type ReloadResult } from './reload.js';
import { largeOnly, largeUpdateReview, reviewMix, summarize, type GeneratedReview, type MixSummary } from './reviews.js';
import { renderTwoTargets, runTwoTargets, type TwoTargetsAnswer, type TwoTargetsHarness, type TwoTargetsResults } from './two-targets.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH_DIR, '..');
const DEFAULT_CLI = path.join(ROOT, 'dist', 'cli.js');
const MUTATE_PATH = '/mutate?timeout=10s';
const CONCURRENCIES = [1, 8, 64] as const;

/** The issue's acceptance targets. */
const TARGETS = { ratioAtC8: 0.85, p99AtRateMs: 2, peakRssMB: 150, update3MiBMs: 25, reloadBlockMs: 50 } as const;

type ServerKind = 'baseline' | 'mirrorgate';

/** A failure of the harness itself (as opposed to a missed target): exit 1. */
class HarnessError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HarnessError';
  }
}

interface Options {
  servers: ServerKind[];
  /** mirrorgate's built entry point. */
  cli: string;
  durationS: number;
  warmupS: number;
  rate: number;
  pin: boolean;
  /** Run the verification scenario (a real registry, `verify: true`). */
  verify: boolean;
  /** Run the reload scenario (20,000 rules; see reload.ts). */
  reload: boolean;
  /** `--only reload`: nothing but the reload scenario. */
  reloadOnly: boolean;
  /** `--only drain`: nothing but the drain scenario (see drain.ts), `drainRuns` SIGTERMs. */
  drainOnly: boolean;
  drainRuns: number;
}

const USAGE = `Usage: npm run bench -- [--only baseline|mirrorgate|reload|drain] [--duration 10] [--warmup 2] [--rate 500]
                          [--no-pin] [--no-verify] [--no-reload] [--drain-runs 5] [--cli dist/cli.js]

Runs mirrorgate (node dist/cli.js, build first: npm run build) and a bare node:https
baseline on the same generated AdmissionReview mix and prints a table and a JSON line.`;

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      cli: { type: 'string' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      rate: { type: 'string', default: '500' },
      'no-pin': { type: 'boolean', default: false },
      'no-verify': { type: 'boolean', default: false },
      'no-reload': { type: 'boolean', default: false },
      'drain-runs': { type: 'string', default: '5' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return undefined;
  const positive = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new HarnessError(`--${name}: a number >= ${min} (got ${v})\n${USAGE}`);
    return n;
  };
  let servers: ServerKind[] = ['baseline', 'mirrorgate'];
  const reloadOnly = values.only === 'reload';
  const drainOnly = values.only === 'drain';
  if (values.only !== undefined && !reloadOnly && !drainOnly) {
    if (values.only !== 'baseline' && values.only !== 'mirrorgate') throw new HarnessError(`--only: baseline, mirrorgate, reload or drain (got ${values.only})`);
    servers = [values.only];
  }
  return {
    servers,
    cli: path.resolve(values.cli ?? DEFAULT_CLI),
    durationS: Math.round(positive('duration', values.duration, 1)),
    warmupS: Math.round(positive('warmup', values.warmup, 0)),
    rate: positive('rate', values.rate, 1),
    pin: !values['no-pin'],
    verify: !values['no-verify'],
    reload: reloadOnly || (!values['no-reload'] && values.only !== 'baseline'),
    reloadOnly,
    drainOnly,
    drainRuns: Math.round(positive('drain-runs', values['drain-runs'], 1)),
  };
}

// ---------------------------------------------------------------------------------
// Child processes and the temporary directory: always cleaned up, also on Ctrl-C and
// on a crash of this process (the 'exit' handler runs synchronously either way).

const children = new Set<ChildProcess>();
let tmpDir: string | undefined;
/** Synchronous last-resort cleanups of things not spawned here (the registry). */
const lastResort = new Set<() => void>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function cleanupSync(): void {
  for (const child of children) if (alive(child)) child.kill('SIGKILL');
  children.clear();
  for (const f of lastResort) f();
  lastResort.clear();
  if (tmpDir !== undefined) {
    rmSync(tmpDir, { recursive: true, force: true });
    tmpDir = undefined;
  }
}

process.on('exit', cleanupSync);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  process.once(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping servers and removing temporary files\n`);
    cleanupSync();
    process.exit(code);
  });
}

/** Stop gracefully, then for good after `graceMs`. */
async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------
// CPU pinning: the server under test on CPU 0, every load generator (wrk and this
// process, which runs the open-loop and UPDATE clients) on CPU 1.

interface Pinning {
  readonly server: string[];
  readonly load: string[];
}

function setUpPinning(wanted: boolean): Pinning | undefined {
  if (!wanted) return undefined;
  const works = (cpu: string): boolean => spawnSync('taskset', ['-c', cpu, 'true'], { stdio: 'ignore' }).status === 0;
  if (!works('0') || !works('1')) return undefined;
  // -a: every thread of this process (libuv pool, V8 helpers), not just the main one.
  const self = spawnSync('taskset', ['-a', '-c', '-p', '1', String(process.pid)], { stdio: 'ignore' });
  if (self.status !== 0) return undefined;
  return { server: ['taskset', '-c', '0'], load: ['taskset', '-c', '1'] };
}

function command(prefix: readonly string[] | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  if (prefix === undefined || prefix.length === 0) return [cmd, [...args]];
  const [first, ...rest] = prefix;
  return [first ?? cmd, [...rest, cmd, ...args]];
}

// ---------------------------------------------------------------------------------
// Servers

interface Tls {
  readonly ca: string;
  readonly certFile: string;
  readonly keyFile: string;
}

interface RunningServer {
  readonly kind: ServerKind;
  /** The kind, or which instance of it (log file name, messages). */
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  readonly logFile: string;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function tail(file: string, lines = 15): string {
  try {
    const text = readFileSync(file, 'utf8').trimEnd();
    return text === '' ? '(no output)' : text.split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

function getStatus(port: number, urlPath: string, ca: string): Promise<number> {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: urlPath, ca, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

async function startServer(
  kind: ServerKind,
  args: string[],
  port: number,
  tls: Tls,
  dir: string,
  pin: Pinning | undefined,
  name: string = kind,
): Promise<RunningServer> {
  const logFile = path.join(dir, `${name}.log`);
  // Output goes to a file, not to a pipe this process would have to drain on the load CPU.
  const fd = openSync(logFile, 'a');
  const [cmd, cmdArgs] = command(pin?.server, process.execPath, args);
  const child = track(spawn(cmd, cmdArgs, { cwd: ROOT, stdio: ['ignore', fd, fd] }));
  closeSync(fd);
  const started = performance.now();
  while (performance.now() - started < 30_000) {
    if (!alive(child)) throw new HarnessError(`${name} exited during startup (code ${String(child.exitCode ?? child.signalCode)}):\n${tail(logFile)}`);
    if ((await getStatus(port, '/readyz', tls.ca)) === 200) return { kind, name, port, child, logFile };
    await sleep(100);
  }
  throw new HarnessError(`${name} not ready on port ${port} after 30 s:\n${tail(logFile)}`);
}

/** The baseline runs as plain `node` on a transpiled copy: no TypeScript loader in the measured process. */
function baselineScript(dir: string): string {
  const source = readFileSync(path.join(BENCH_DIR, 'baseline-server.ts'), 'utf8');
  const out = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
  const file = path.join(dir, 'baseline-server.mjs');
  writeFileSync(file, out.outputText);
  return file;
}

/** How a verifying mirrorgate reaches its mirror, and how long it keeps answers. */
interface VerifyConfig {
  /** `127.0.0.1:PORT` (the counting proxy in front of the registry). */
  readonly mirrorHost: string;
  /** Omitted: the defaults (present 3600 s, absent 30 s). */
  readonly cacheSeconds?: { readonly present: number; readonly absent: number };
}

/**
 * The mirrorgate config: every third-party registry of the mix has a mirror rule, under a
 * registry policy. With `verify`, the same rules to the bench's registry with `verify: true`;
 * the policy also allows `mirror.example.com`, where some of the mix's images already are.
 */
function benchConfig(verify?: VerifyConfig): string {
  const host = verify?.mirrorHost ?? 'mirror.example.com';
  const lines = [
    verify
      ? '# Written by bench/run.ts: the mirror rules of the bench, checked against a real registry (verify: true).'
      : '# Written by bench/run.ts: every third-party registry of the mix has a mirror rule.',
    'mode: enforce',
    'rules:',
  ];
  for (const r of MIRROR_RULES) {
    lines.push(`  - from: ${r.from}`, `    to: ${host}/${r.path}`);
    if (verify) lines.push('    verify: true');
  }
  lines.push('policy:');
  if (verify) {
    lines.push(
      `  allowedRegistries: ["${host}", mirror.example.com, registry.k8s.io]`,
      'registries:',
      `  "${host}": {insecure: true}`,
      'verification:',
      '  timeoutMs: 500',
    );
    if (verify.cacheSeconds) lines.push(`  cacheSeconds: {present: ${verify.cacheSeconds.present}, absent: ${verify.cacheSeconds.absent}}`);
  } else {
    lines.push('  allowedRegistries: [mirror.example.com, registry.k8s.io]');
  }
  lines.push('logLevel: info', '');
  return lines.join('\n');
}

function baselineArgs(port: number, tls: Tls, dir: string): string[] {
  return [baselineScript(dir), '--host', '127.0.0.1', '--port', String(port), '--cert', tls.certFile, '--key', tls.keyFile];
}

/** `serve` with the config written to `<dir>/<name>.yaml`; `metricsPort` 0: any free port (not read). */
function mirrorgateArgs(name: string, config: string, cli: string, port: number, metricsPort: number, tls: Tls, dir: string): string[] {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, config);
  return [
    cli, 'serve', '--config', file, '--no-kube', '--host', '127.0.0.1', '--port', String(port),
    '--metrics-port', String(metricsPort), '--certs-dir', path.join(dir, 'certs'), '--tls-cert', tls.certFile, '--tls-key', tls.keyFile,
    '--shutdown-delay', '0s',
  ];
}

function makeTls(dir: string): Tls {
  const ca = createCa({ commonName: 'mirrorgate-bench-ca' });
  const serving = createServingCert(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const certDir = path.join(dir, 'certs');
  mkdirSync(certDir, { recursive: true });
  const certFile = path.join(certDir, 'tls.crt');
  const keyFile = path.join(certDir, 'tls.key');
  writeFileSync(certFile, serving.cert, { mode: 0o600 });
  writeFileSync(keyFile, serving.key, { mode: 0o600 });
  writeFileSync(path.join(certDir, 'ca.crt'), ca.cert, { mode: 0o600 });
  return { ca: ca.cert, certFile, keyFile };
}

/** Peak resident set size (VmHWM) in MB, from /proc; undefined where there is no /proc. */
function peakRssMB(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------
// One request at a time (answer checks, the 3 MiB UPDATE)

interface Answer {
  status: number;
  body: string;
  ms: number;
}

function post(port: number, agent: https.Agent, body: Buffer): Promise<Answer> {
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

interface ReviewAnswer {
  allowed: boolean;
  patched: boolean;
  imageOps: number;
  /** The denial's message. */
  message?: string;
}

/** Check that an answer is a well-formed AdmissionReview for `uid`; returns what it decided, or what is wrong with it. */
function readAnswer(answer: Answer, uid: string): ReviewAnswer | string {
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

interface CheckResult {
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
async function checkAnswers(server: RunningServer, ca: string, reviews: readonly GeneratedReview[]): Promise<CheckResult> {
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

interface UpdateResult {
  bytes: number;
  medianMs: number;
  samplesMs: number[];
  patched: boolean;
  imageOps: number;
}

/** Time the one big UPDATE review on a kept-alive connection: 2 unmeasured, then `runs`. */
async function timeUpdate(server: RunningServer, ca: string, review: GeneratedReview, runs = 7): Promise<UpdateResult> {
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

const WRK_LUA = `-- Written by bench/run.ts at run time.
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

interface PointResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  requests: number;
  /** Socket errors by kind and non-2xx answers, as wrk counted them. */
  detail: Record<string, number>;
}

interface WrkJson {
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

async function runWrk(port: number, lua: string, bodiesFile: string, concurrency: number, seconds: number, pin: Pinning | undefined): Promise<PointResult> {
  const url = `https://127.0.0.1:${port}${MUTATE_PATH}`;
  // One thread: wrk has one CPU to itself, and one thread drives 64 connections easily.
  const [cmd, args] = command(pin?.load, 'wrk', ['-t1', `-c${concurrency}`, `-d${seconds}s`, '--timeout', '10s', '-s', lua, url]);
  const child = track(spawn(cmd, args, { env: { ...process.env, MG_BENCH_BODIES: bodiesFile, MG_BENCH_PATH: MUTATE_PATH }, stdio: ['ignore', 'pipe', 'pipe'] }));
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

interface RateResult {
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

async function openLoop(port: number, agent: https.Agent, bodies: readonly Buffer[], rate: number, seconds: number): Promise<RateResult> {
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

// ---------------------------------------------------------------------------------
// Verification scenario: rules with `verify: true` against a real registry, with every
// answer cached (warm) and with no cache at all (cold, every admission asks).

/** Why the scenario did not run, or undefined when it can. */
function verificationSkipReason(opts: Options): string | undefined {
  if (!opts.verify) return '--no-verify';
  if (!opts.servers.includes('mirrorgate')) return '--only baseline';
  if (spawnSync('docker-registry', ['--version'], { stdio: 'ignore' }).error) return 'docker-registry not installed';
  return undefined;
}

/**
 * The pid of our child process whose command line holds `arg` (from /proc): the registry
 * that test/support started, so that an abrupt exit can still stop it by its id.
 */
function childPidWithArg(arg: string): number | undefined {
  try {
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        // `pid (comm) state ppid ...`: comm may hold spaces, so count from its ')'.
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        if (ppid === process.pid && readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(arg)) return Number(name);
      } catch {
        // The process ended while we looked.
      }
    }
  } catch {
    // No /proc: only the normal stop applies.
  }
  return undefined;
}

/** The counters the scenario reads from a verifying mirrorgate's /metrics, summed over other labels. */
interface Counters {
  /** `mirrorgate_registry_checks_total` by result (present, absent, error). */
  checks: Record<string, number>;
  /** `mirrorgate_admission_requests_total` by result (patched, allowed, denied, ...). */
  admissions: Record<string, number>;
}

const COUNTER_LINE = /^(mirrorgate_registry_checks_total|mirrorgate_admission_requests_total)\{([^}]*)\} (\S+)$/;

function scrapeCounters(metricsPort: number): Promise<Counters> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: metricsPort, path: '/metrics', agent: false, timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        const out: Counters = { checks: {}, admissions: {} };
        for (const line of text.split('\n')) {
          const m = COUNTER_LINE.exec(line);
          const result = m ? /result="([^"]*)"/.exec(m[2] ?? '')?.[1] : undefined;
          if (!m || result === undefined) continue;
          const bucket = m[1] === 'mirrorgate_registry_checks_total' ? out.checks : out.admissions;
          bucket[result] = (bucket[result] ?? 0) + Number(m[3]);
        }
        resolve(out);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('/metrics did not answer within 5 s')));
    req.on('error', (err) => reject(new HarnessError(`cannot read /metrics on port ${metricsPort}: ${err.message}`, { cause: err })));
  });
}

/** What the registry saw and mirrorgate counted during one measured run. */
interface RegistryLoad {
  /** Admissions answered (mirrorgate's counter). */
  admissions: number;
  /** Manifest HEADs that reached the registry (the proxy's count). */
  heads: number;
  headsPerAdmission: number;
  /** Every request that reached the registry. */
  requests: number;
  /** mirrorgate's registry checks by result. */
  checks: Record<string, number>;
  /** mirrorgate's admission answers by result. */
  answers: Record<string, number>;
}

function diff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** Run `measure` and report the registry traffic and admission results it caused. */
async function withRegistryLoad<T>(proxy: CountingProxy, metricsPort: number, measure: () => Promise<T>): Promise<T & { registry: RegistryLoad }> {
  const before = await scrapeCounters(metricsPort);
  const p0: ProxyCounts = proxy.counts();
  const result = await measure();
  // wrk stops with requests in flight; let mirrorgate finish them before counting.
  await sleep(200);
  const after = await scrapeCounters(metricsPort);
  const p1 = proxy.counts();
  const answers = diff(after.admissions, before.admissions);
  const admissions = Object.values(answers).reduce((a, b) => a + b, 0);
  const heads = p1.manifestHeads - p0.manifestHeads;
  return {
    ...result,
    registry: {
      admissions,
      heads,
      headsPerAdmission: admissions === 0 ? Number.NaN : heads / admissions,
      requests: p1.requests - p0.requests,
      checks: diff(after.checks, before.checks),
      answers,
    },
  };
}

interface VerifyCheck {
  reviews: number;
  patched: number;
  denied: number;
  imageOps: number;
  /** Manifest HEADs this pass sent to the registry (warm: fills the cache). */
  heads: number;
}

/**
 * Send every review of the verification mix once and check the answers: reviews with the
 * absent image are denied, saying it is not in the mirror yet (the policy does not allow
 * the original it falls back to); every other review is allowed with all of its
 * third-party images rewritten, which proves every other answer was "present".
 */
async function checkVerifiedAnswers(server: RunningServer, ca: string, plan: MirrorPlan, proxy: CountingProxy): Promise<VerifyCheck> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const problems: string[] = [];
  const out: VerifyCheck = { reviews: 0, patched: 0, denied: 0, imageOps: 0, heads: 0 };
  const heads0 = proxy.counts().manifestHeads;
  try {
    for (const r of plan.reviews) {
      const a = readAnswer(await post(server.port, agent, Buffer.from(r.body)), r.uid);
      out.reviews++;
      if (typeof a === 'string') {
        problems.push(`${r.uid}: ${a}`);
        continue;
      }
      if (plan.absentUids.has(r.uid)) {
        if (a.allowed || !(a.message ?? '').includes(`${plan.absentTarget} is not in the mirror yet`)) {
          problems.push(`${r.uid} (has ${plan.absent}): expected a denial naming ${plan.absentTarget} as not in the mirror yet, got ${a.allowed ? 'allowed' : `"${a.message ?? ''}"`}`);
        } else out.denied++;
        continue;
      }
      if (!a.allowed) problems.push(`${r.uid}: denied: ${a.message ?? ''}`);
      else if (a.imageOps !== r.rewritable) problems.push(`${r.uid}: ${a.imageOps} of ${r.rewritable} third-party images rewritten (a check did not say present)`);
      if (a.patched) out.patched++;
      out.imageOps += a.imageOps;
    }
  } finally {
    agent.destroy();
  }
  out.heads = proxy.counts().manifestHeads - heads0;
  if (problems.length > 0) {
    throw new HarnessError(`${server.name} answered ${problems.length} of ${plan.reviews.length} reviews wrongly, so its figures would mean nothing:\n  ${problems.slice(0, 5).join('\n  ')}\nlog: ${tail(server.logFile, 5)}`);
  }
  return out;
}

type VerifyWrkPoint = PointResult & { registry: RegistryLoad };
type VerifyRatePoint = RateResult & { registry: RegistryLoad };

interface VerificationResults {
  /** Set when the scenario did not run. */
  skipped?: string;
  registry?: {
    pushedByTag: number;
    pushedByDigest: number;
    absent: string;
    absentTarget: string;
    absentReviews: number;
    distinctTargets: number;
    targetsPerReview: number;
    pushSeconds: number;
  };
  coldDurationS?: number;
  coldWarmupS?: number;
  checks?: { warm: VerifyCheck; cold: VerifyCheck };
  warm?: { c8?: VerifyWrkPoint; rate?: VerifyRatePoint; peakRssMB?: number | undefined };
  cold?: { c8?: VerifyWrkPoint; c1?: VerifyWrkPoint; peakRssMB?: number | undefined };
}

interface VerifyContext {
  opts: Options;
  pin: Pinning | undefined;
  dir: string;
  tls: Tls;
  lua: string;
  mix: readonly GeneratedReview[];
  elapsed: () => string;
}

/** Cold points are shorter: the section should not double the bench's time. */
function coldTiming(opts: Options): { durationS: number; warmupS: number } {
  return { durationS: Math.max(1, Math.round(opts.durationS / 2)), warmupS: Math.min(opts.warmupS, 1) };
}

/**
 * The scenario: a registry holding all rewrite targets of the mix but one, a counting
 * proxy in front of it, and two more mirrorgates (pinned like the first) with the same
 * rules plus `verify: true`: "warm" with the default cache lifetimes, measured after one
 * pass over the mix, and "cold" with `cacheSeconds: {present: 0, absent: 0}`, where every
 * admission asks the registry.
 */
async function runVerification(ctx: VerifyContext): Promise<VerificationResults> {
  const { opts, pin, dir, tls, lua, elapsed } = ctx;
  const out: VerificationResults = {};
  let reg: TestRegistry | undefined;
  let proxy: CountingProxy | undefined;
  let forget: (() => void) | undefined;
  const servers: RunningServer[] = [];
  try {
    // Started from this process, so it inherits the load CPU's pinning (with the proxy):
    // the registry plays an outside service, the server CPU stays mirrorgate's alone.
    reg = await startRegistry().catch((err: unknown) => {
      throw new HarnessError(`the registry did not start: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    const registry = reg;
    const pid = childPidWithArg(path.join(registry.dir, 'config.yml'));
    forget = () => {
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      rmSync(registry.dir, { recursive: true, force: true });
    };
    lastResort.add(forget);
    proxy = await startCountingProxy(Number(registry.host.split(':')[1]));
    const t0 = performance.now();
    const plan = await fillMirror(registry, ctx.mix, proxy.host);
    out.registry = {
      pushedByTag: plan.pushedByTag,
      pushedByDigest: plan.pushedByDigest,
      absent: plan.absent,
      absentTarget: plan.absentTarget,
      absentReviews: plan.absentUids.size,
      distinctTargets: plan.distinctTargets,
      targetsPerReview: plan.targetsPerReview,
      pushSeconds: (performance.now() - t0) / 1000,
    };
    log(
      `[${elapsed()}] verification: registry ${registry.host} behind proxy ${proxy.host}; pushed ${plan.pushedByTag} images by tag and ${plan.pushedByDigest} by digest ` +
        `in ${out.registry.pushSeconds.toFixed(1)} s; never pushed: ${plan.absent} (${plan.absentUids.size} reviews)`,
    );
    const mixFile = path.join(dir, 'verify-mix.jsonl');
    writeBodies(mixFile, plan.reviews);

    const start = async (name: string, cacheSeconds?: { present: number; absent: number }): Promise<{ server: RunningServer; metricsPort: number }> => {
      const port = await freePort();
      const metricsPort = await freePort();
      const config = benchConfig({ mirrorHost: proxy?.host ?? '', ...(cacheSeconds ? { cacheSeconds } : {}) });
      const server = await startServer('mirrorgate', mirrorgateArgs(name, config, opts.cli, port, metricsPort, tls, dir), port, tls, dir, pin, name);
      servers.push(server);
      return { server, metricsPort };
    };
    const warm = await start('mirrorgate-verify-warm');
    const cold = await start('mirrorgate-verify-cold', { present: 0, absent: 0 });

    const checkWarm = await checkVerifiedAnswers(warm.server, tls.ca, plan, proxy);
    const checkCold = await checkVerifiedAnswers(cold.server, tls.ca, plan, proxy);
    out.checks = { warm: checkWarm, cold: checkCold };
    log(
      `[${elapsed()}] verification: ${checkWarm.reviews} reviews answered correctly by each (${checkWarm.patched} patched, ${checkWarm.denied} denied: absent image); ` +
        `cache-filling pass: ${checkWarm.heads} registry HEADs for ${plan.distinctTargets} distinct targets`,
    );

    const wrkPoint = async (s: { server: RunningServer; metricsPort: number }, c: number, warmupS: number, durationS: number): Promise<VerifyWrkPoint> => {
      if (warmupS > 0) await runWrk(s.server.port, lua, mixFile, c, warmupS, pin);
      return withRegistryLoad(proxy as CountingProxy, s.metricsPort, () => runWrk(s.server.port, lua, mixFile, c, durationS, pin));
    };
    const say = (label: string, p: { p50Ms: number; p99Ms: number; errors: number; registry: RegistryLoad }, rps: string): void =>
      log(`[${elapsed()}] ${label}: ${rps}, p50 ${fmtMs(p.p50Ms)} ms, p99 ${fmtMs(p.p99Ms)} ms, errors ${p.errors}, registry HEADs per admission ${fmtRatio(p.registry.headsPerAdmission)}`);

    out.warm = {};
    out.warm.c8 = await wrkPoint(warm, 8, opts.warmupS, opts.durationS);
    say('verify, warm cache, c=8', out.warm.c8, `${fmtInt(out.warm.c8.rps)} req/s`);
    const bodies = plan.reviews.map((r) => Buffer.from(r.body));
    const agent = new https.Agent({ keepAlive: true, maxSockets: 256, ca: tls.ca });
    try {
      if (opts.warmupS > 0) await openLoop(warm.server.port, agent, bodies, opts.rate, opts.warmupS);
      out.warm.rate = await withRegistryLoad(proxy, warm.metricsPort, () => openLoop(warm.server.port, agent, bodies, opts.rate, opts.durationS));
    } finally {
      agent.destroy();
    }
    say(`verify, warm cache, ${opts.rate} req/s open loop`, out.warm.rate, `client lag p99 ${fmtMs(out.warm.rate.clientLagP99Ms)} ms`);
    out.warm.peakRssMB = peakRssMB(warm.server.child.pid);

    const ct = coldTiming(opts);
    out.coldDurationS = ct.durationS;
    out.coldWarmupS = ct.warmupS;
    out.cold = {};
    out.cold.c8 = await wrkPoint(cold, 8, ct.warmupS, ct.durationS);
    say('verify, cold cache, c=8', out.cold.c8, `${fmtInt(out.cold.c8.rps)} req/s`);
    out.cold.c1 = await wrkPoint(cold, 1, ct.warmupS, ct.durationS);
    say('verify, cold cache, c=1', out.cold.c1, `${fmtInt(out.cold.c1.rps)} req/s`);
    out.cold.peakRssMB = peakRssMB(cold.server.child.pid);
    return out;
  } finally {
    await Promise.all(servers.map((s) => stopChild(s.child)));
    await proxy?.close();
    await reg?.stop();
    if (forget) lastResort.delete(forget);
  }
}

// ---------------------------------------------------------------------------------
// Driver

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface ServerResults {
  check?: CheckResult;
  points: Record<string, PointResult>;
  rate?: RateResult;
  peakRssMB?: number | undefined;
  update?: UpdateResult;
}

interface Target {
  name: string;
  value: number | undefined;
  limit: number;
  unit: string;
  pass: boolean | undefined;
}

/** Beyond this, the open-loop figures say as much about the client as about the server. */
const CLIENT_LAG_WARN_MS = 2;

const POINT_LABELS: Record<string, string> = { c1: 'c=1', c8: 'c=8', c64: 'c=64', c64large: 'c=64, 30 KB bodies only' };

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function writeBodies(file: string, reviews: readonly GeneratedReview[]): void {
  // One compact JSON document per line: what the Lua script reads back.
  writeFileSync(file, `${reviews.map((r) => r.body).join('\n')}\n`);
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (opts.reloadOnly) {
    const reload = await reloadScenario(opts);
    process.stdout.write(renderReload(reload, undefined).join('\n') + '\n');
    process.stdout.write(`${JSON.stringify({ bench: 'mirrorgate', scenario: 'reload', reload })}\n`);
    return 0;
  }
  if (opts.drainOnly) {
    const drain = await drainScenario(opts);
    process.stdout.write(renderDrain(drain).join('\n') + '\n');
    process.stdout.write(`${JSON.stringify({ bench: 'mirrorgate', scenario: 'drain', drain })}\n`);
    return 0;
  }
  if (spawnSync('wrk', ['-v'], { stdio: 'ignore' }).error) throw new HarnessError('wrk not found: apt-get install wrk (scripts/test-deps.sh installs it)');
  if (opts.servers.includes('mirrorgate') && !existsSync(opts.cli)) throw new HarnessError(`${path.relative(process.cwd(), opts.cli)} not found: run npm run build first (make bench does), or use --only baseline`);

  const pin = setUpPinning(opts.pin);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorgate-bench-'));
  tmpDir = dir;
  const began = performance.now();
  const elapsed = (): string => `${Math.round((performance.now() - began) / 1000)}s`.padStart(4);
  const perPoint = opts.warmupS + opts.durationS;
  const skipVerify = verificationSkipReason(opts);
  const ct = coldTiming(opts);
  // Warm: c=8 and the open loop at full length; cold: c=8 and c=1 shorter; plus setup.
  const verifyS = skipVerify === undefined ? 2 * perPoint + 2 * (ct.warmupS + ct.durationS) + 15 : 0;
  log(
    `bench: about ${Math.round(((CONCURRENCIES.length + 2) * perPoint * opts.servers.length + 10 + verifyS) / 5) * 5} s; ` +
      `${pin ? 'server on CPU 0, load on CPU 1' : 'not pinned (no taskset or fewer than 2 CPUs)'}`,
  );

  const mix = reviewMix(200, 1);
  const large = largeOnly(40, 2);
  const update = largeUpdateReview();
  const mixFile = path.join(dir, 'mix.jsonl');
  const largeFile = path.join(dir, 'large.jsonl');
  writeBodies(mixFile, mix);
  writeBodies(largeFile, large);
  const lua = path.join(dir, 'bench.lua');
  writeFileSync(lua, WRK_LUA);
  const tls = makeTls(dir);

  const servers: RunningServer[] = [];
  const results: Partial<Record<ServerKind, ServerResults>> = {};
  try {
    for (const kind of opts.servers) {
      const port = await freePort();
      const args = kind === 'baseline' ? baselineArgs(port, tls, dir) : mirrorgateArgs(kind, benchConfig(), opts.cli, port, 0, tls, dir);
      servers.push(await startServer(kind, args, port, tls, dir, pin));
      results[kind] = { points: {} };
    }
    for (const s of servers) {
      const check = await checkAnswers(s, tls.ca, [...mix, ...large]);
      (results[s.kind] as ServerResults).check = check;
      log(`[${elapsed()}] ${s.kind}: ${check.reviews} reviews answered correctly, ${check.patched} patched (${check.imageOps} image ops for ${check.rewritableImages} third-party images)`);
    }

    // Both servers stay up for the whole run and take turns point by point, so drift
    // on a shared machine hits both alike; an idle server costs the other nothing.
    const point = async (key: string, file: string, concurrency: number): Promise<void> => {
      for (const s of servers) {
        if (opts.warmupS > 0) await runWrk(s.port, lua, file, concurrency, opts.warmupS, pin);
        const r = await runWrk(s.port, lua, file, concurrency, opts.durationS, pin);
        (results[s.kind] as ServerResults).points[key] = r;
        log(`[${elapsed()}] ${POINT_LABELS[key] ?? key} ${s.kind}: ${fmtInt(r.rps)} req/s, p50 ${fmtMs(r.p50Ms)} ms, p99 ${fmtMs(r.p99Ms)} ms, errors ${r.errors}`);
      }
    };
    for (const c of CONCURRENCIES) await point(`c${c}`, mixFile, c);

    const mixBodies = mix.map((r) => Buffer.from(r.body));
    for (const s of servers) {
      const agent = new https.Agent({ keepAlive: true, maxSockets: 256, ca: tls.ca });
      try {
        if (opts.warmupS > 0) await openLoop(s.port, agent, mixBodies, opts.rate, opts.warmupS);
        const r = await openLoop(s.port, agent, mixBodies, opts.rate, opts.durationS);
        (results[s.kind] as ServerResults).rate = r;
        log(`[${elapsed()}] ${opts.rate} req/s open loop ${s.kind}: p50 ${fmtMs(r.p50Ms)} ms, p99 ${fmtMs(r.p99Ms)} ms, errors ${r.errors}, client lag p99 ${fmtMs(r.clientLagP99Ms)} ms`);
      } finally {
        agent.destroy();
      }
    }

    await point('c64large', largeFile, 64);
    // VmHWM is the peak over the process's life: every run so far, the 30 KB one last.
    for (const s of servers) (results[s.kind] as ServerResults).peakRssMB = peakRssMB(s.child.pid);

    for (const s of servers) {
      const u = await timeUpdate(s, tls.ca, update);
      (results[s.kind] as ServerResults).update = u;
      log(`[${elapsed()}] 3 MiB UPDATE ${s.kind}: median ${fmtMs(u.medianMs)} ms (${u.samplesMs.map((x) => x.toFixed(1)).join(', ')})`);
    }
  } finally {
    await Promise.all(servers.map((s) => stopChild(s.child)));
  }

  // After the others have stopped, so the verifying instances have CPU 0 to themselves.
  let verification: VerificationResults;
  if (skipVerify === undefined) {
    verification = await runVerification({ opts, pin, dir, tls, lua, mix, elapsed });
  } else {
    verification = { skipped: skipVerify };
    log(`verification scenario skipped: ${skipVerify}`);
  }

  // Rules with two targets each (bench/two-targets.ts), also on CPU 0 alone.
  const twoTargets: TwoTargetsResults = skipVerify === undefined ? await runTwoTargets(twoTargetsHarness({ opts, pin, dir, tls, lua, mix, elapsed })) : { skipped: skipVerify };

  // Last, in this process, once every server has stopped.
  const reload = opts.reload ? await reloadScenario(opts) : undefined;

  const report = { ...buildReport(opts, pin !== undefined, summarize(mix), summarize(large), update, results, verification, reload), twoTargets };
  process.stdout.write(renderTable(report));
  process.stdout.write(`${JSON.stringify(report)}\n`);
  return 0;
}

/** What bench/two-targets.ts needs of this harness. */
function twoTargetsHarness(ctx: VerifyContext): TwoTargetsHarness {
  const { opts, pin, dir, tls, lua, mix, elapsed } = ctx;
  const servers: RunningServer[] = [];
  return {
    mix,
    dir,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    log: (line) => log(`[${elapsed()}] ${line}`),
    async start(name, config) {
      const port = await freePort();
      const server = await startServer('mirrorgate', mirrorgateArgs(name, config, opts.cli, port, 0, tls, dir), port, tls, dir, pin, name);
      servers.push(server);
      return { port, pid: server.child.pid };
    },
    stopAll: () => Promise.all(servers.splice(0).map((s) => stopChild(s.child))).then(() => undefined),
    wrk: (server, file, c, seconds) => runWrk(server.port, lua, file, c, seconds, pin),
    async answer(server, review): Promise<TwoTargetsAnswer> {
      const agent = new https.Agent({ keepAlive: false, ca: tls.ca });
      try {
        const raw = await post(server.port, agent, Buffer.from(review.body));
        const a = readAnswer(raw, review.uid);
        if (typeof a === 'string') return a;
        const warnings = (JSON.parse(raw.body) as { response?: { warnings?: string[] } }).response?.warnings ?? [];
        return { allowed: a.allowed, imageOps: a.imageOps, message: a.message, warnings };
      } finally {
        agent.destroy();
      }
    },
    writeBodies,
    peakRssMB,
    guard(reg) {
      const pid = childPidWithArg(path.join(reg.dir, 'config.yml'));
      const kill = (): void => {
        if (pid !== undefined) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
        rmSync(reg.dir, { recursive: true, force: true });
      };
      lastResort.add(kill);
      return () => void lastResort.delete(kill);
    },
  };
}

interface Report {
  bench: 'mirrorgate';
  date: string;
  node: string;
  cpus: number;
  pinned: boolean;
  durationS: number;
  warmupS: number;
  mix: MixSummary;
  largeOnly: MixSummary;
  updateBytes: number;
  servers: Partial<Record<ServerKind, ServerResults>>;
  /** mirrorgate req/s over baseline req/s per point. */
  ratio: Record<string, number>;
  /** Rules with `verify: true` against a real registry: warm and cold cache. */
  verification: VerificationResults & {
    /** req/s of the verifying points (warmC8, coldC8, coldC1) over the non-verifying mirrorgate's and the baseline's at the same concurrency. */
    ratio?: { vsMirrorgate: Record<string, number>; vsBaseline: Record<string, number> };
  };
  /** A reload of 20,000 rules: off the main thread, and on it as before. */
  reload: ReloadResult | undefined;
  targets: Target[];
  /** Rules to two targets in order (bench/two-targets.ts): warm and cold cache. */
  twoTargets?: TwoTargetsResults;
}

function buildReport(
  opts: Options,
  pinned: boolean,
  mix: MixSummary,
  large: MixSummary,
  update: GeneratedReview,
  servers: Partial<Record<ServerKind, ServerResults>>,
  verification: VerificationResults,
  reload: ReloadResult | undefined,
): Report {
  const b = servers.baseline;
  const m = servers.mirrorgate;
  const ratio: Record<string, number> = {};
  if (b && m) {
    for (const key of Object.keys(POINT_LABELS)) {
      const bp = b.points[key];
      const mp = m.points[key];
      if (bp && mp) ratio[key] = mp.rps / bp.rps;
    }
  }
  const target = (name: string, value: number | undefined, limit: number, unit: string, ok: (v: number) => boolean): Target => ({
    name,
    value,
    limit,
    unit,
    pass: value === undefined || Number.isNaN(value) ? undefined : ok(value),
  });
  const targets = m
    ? [
        target(`throughput at c=8 >= ${TARGETS.ratioAtC8} x baseline`, ratio.c8, TARGETS.ratioAtC8, 'x', (v) => v >= TARGETS.ratioAtC8),
        target(`p99 at ${opts.rate} req/s <= ${TARGETS.p99AtRateMs} ms`, m.rate?.p99Ms, TARGETS.p99AtRateMs, 'ms', (v) => v <= TARGETS.p99AtRateMs),
        target(`peak RSS at c=64, 30 KB bodies <= ${TARGETS.peakRssMB} MB`, m.peakRssMB, TARGETS.peakRssMB, 'MB', (v) => v <= TARGETS.peakRssMB),
        target(`3 MiB UPDATE < ${TARGETS.update3MiBMs} ms`, m.update?.medianMs, TARGETS.update3MiBMs, 'ms', (v) => v < TARGETS.update3MiBMs),
      ]
    : [];
  const vRatio = { vsMirrorgate: {} as Record<string, number>, vsBaseline: {} as Record<string, number> };
  for (const [key, p, at] of [['warmC8', verification.warm?.c8, 'c8'], ['coldC8', verification.cold?.c8, 'c8'], ['coldC1', verification.cold?.c1, 'c1']] as const) {
    if (p === undefined) continue;
    const mp = m?.points[at];
    const bp = b?.points[at];
    if (mp) vRatio.vsMirrorgate[key] = p.rps / mp.rps;
    if (bp) vRatio.vsBaseline[key] = p.rps / bp.rps;
  }
  if (reload) {
    targets.push(target(`reload of ${reload.rules.toLocaleString('en-US')} rules: event loop blocked <= ${TARGETS.reloadBlockMs} ms`, reload.worker.maxBlockMs, TARGETS.reloadBlockMs, 'ms', (v) => v <= TARGETS.reloadBlockMs));
  }
  if (verification.skipped === undefined && m) {
    // Issue 6: "the admission path with all answers cached stays within the core issue's targets".
    targets.push(target(`verify, warm cache: p99 at ${opts.rate} req/s <= ${TARGETS.p99AtRateMs} ms`, verification.warm?.rate?.p99Ms, TARGETS.p99AtRateMs, 'ms', (v) => v <= TARGETS.p99AtRateMs));
  }
  return {
    bench: 'mirrorgate',
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    pinned,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    mix,
    largeOnly: large,
    updateBytes: Buffer.byteLength(update.body),
    servers,
    ratio,
    verification: { ...verification, ...(verification.skipped === undefined ? { ratio: vRatio } : {}) },
    reload,
    targets,
  };
}

/** The reload scenario, from the built modules beside the CLI (`dist/`). */
async function reloadScenario(opts: Options): Promise<ReloadResult> {
  const dist = path.dirname(opts.cli);
  if (!existsSync(path.join(dist, 'config', 'compile.js'))) throw new HarnessError(`${path.relative(process.cwd(), dist)}/config/compile.js not found: run npm run build first`);
  // The servers are gone: give this process every CPU again, so the compiling worker does
  // not share one core with the event loop it is meant to spare (as it would not in a pod).
  spawnSync('taskset', ['-a', '-c', '-p', `0-${os.cpus().length - 1}`, String(process.pid)], { stdio: 'ignore' });
  log('reload: 20,000 rules, off the main thread and on it');
  const r = await runReloadBench(dist);
  log(`reload: worker ${fmtMs(r.worker.totalMs)} ms total, longest block ${fmtMs(r.worker.maxBlockMs)} ms; main thread ${fmtMs(r.mainThread.totalMs)} ms, longest block ${fmtMs(r.mainThread.maxBlockMs)} ms`);
  return r;
}

/** The drain scenario (drain.ts): SIGTERM to the built CLI under load, server on CPU 0 as above. */
async function drainScenario(opts: Options): Promise<DrainResult> {
  if (!existsSync(opts.cli)) throw new HarnessError(`${path.relative(process.cwd(), opts.cli)} not found: run npm run build first`);
  const pin = setUpPinning(opts.pin);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorgate-bench-'));
  tmpDir = dir;
  const tls = makeTls(dir);
  return runDrain({
    runs: opts.drainRuns,
    ca: tls.ca,
    log,
    async start(name, extraArgs) {
      const port = await freePort();
      // The later --shutdown-delay of extraArgs wins over mirrorgateArgs' 0s.
      const args = [...mirrorgateArgs(name, benchConfig(), opts.cli, port, 0, tls, dir), ...extraArgs];
      const server = await startServer('mirrorgate', args, port, tls, dir, pin, name);
      return { port, child: server.child };
    },
  });
}

// ---------------------------------------------------------------------------------
// Output

function fmtInt(n: number | undefined): string {
  return n === undefined || Number.isNaN(n) ? '-' : Math.round(n).toLocaleString('en-US');
}

function fmtMs(n: number | undefined): string {
  if (n === undefined || Number.isNaN(n)) return '-';
  return n < 10 ? n.toFixed(2) : n.toFixed(1);
}

function fmtRatio(n: number | undefined): string {
  return n === undefined || Number.isNaN(n) ? '-' : n.toFixed(2);
}

function kb(bytes: number | undefined): string {
  return bytes === undefined ? '-' : `${(bytes / 1024).toFixed(1)} KB`;
}

function renderTable(r: Report): string {
  const kinds = (['baseline', 'mirrorgate'] as const).filter((k) => r.servers[k] !== undefined);
  const lines: string[] = [];
  const c = r.mix.classes;
  lines.push('');
  lines.push(`mirrorgate bench  ${r.date}  node ${r.node}  ${r.cpus} CPUs  ${r.pinned ? 'server on CPU 0, load on CPU 1' : 'not pinned'}`);
  lines.push(
    `mix: ${r.mix.count} Pod CREATE reviews: ${c.small?.count ?? 0} small (${kb(c.small?.avgBytes)}), ${c.medium?.count ?? 0} medium (${kb(c.medium?.avgBytes)}), ` +
      `${c.large?.count ?? 0} large (${kb(c.large?.avgBytes)}); ${Math.round(r.mix.rewritableImageShare * 100)}% of images third-party`,
  );
  lines.push(`each point: ${r.warmupS} s warm-up + ${r.durationS} s, HTTP/1.1 keep-alive over TLS, POST ${MUTATE_PATH}; closed loop by wrk (1 thread)`);
  const checked = kinds.map((k) => {
    const ch = r.servers[k]?.check;
    return ch ? `${k} ${ch.reviews} allowed, ${ch.patched} patched (${ch.imageOps} image rewrites)` : `${k} -`;
  });
  lines.push(`answers checked: ${checked.join('; ')}`);
  lines.push('');

  const cols = (s: ServerResults | undefined, key: string): string[] => {
    const p = key === 'rate' ? s?.rate : s?.points[key];
    if (!p) return ['', '', '', ''];
    const rps = 'rps' in p ? fmtInt(p.rps) : fmtInt(p.achievedRps);
    return [rps, fmtMs(p.p50Ms), fmtMs(p.p99Ms), String(p.errors)];
  };
  const widths = [25, 9, 7, 7, 7, 9, 7, 7, 7, 11];
  const group = 9 + 7 + 7 + 7 + 3 * 2;
  const center = (label: string, width: number): string => {
    const text = ` ${label} `;
    const left = Math.max(0, Math.floor((width - text.length) / 2));
    return `${'-'.repeat(left)}${text}${'-'.repeat(Math.max(0, width - left - text.length))}`;
  };
  const header1 = [''.padEnd(widths[0] ?? 25), ...kinds.map((k) => center(k === 'baseline' ? 'baseline: bare node:https' : 'mirrorgate', group)), kinds.length === 2 ? 'mirrorgate'.padStart(11) : '']
    .join('  ')
    .trimEnd();
  const header2 = ['point', ...kinds.flatMap(() => ['req/s', 'p50 ms', 'p99 ms', 'errors']), kinds.length === 2 ? '/ baseline' : ''];
  const rows: string[][] = [];
  for (const key of ['c1', 'c8', 'c64', 'c64large']) {
    rows.push([POINT_LABELS[key] ?? key, ...kinds.flatMap((k) => cols(r.servers[k], key)), r.ratio[key] === undefined ? '' : (r.ratio[key] ?? 0).toFixed(2)]);
  }
  const rate = r.servers.mirrorgate?.rate ?? r.servers.baseline?.rate;
  // A client that fell behind its schedule may have added its own delay to the latencies.
  const stalled = kinds.some((k) => (r.servers[k]?.rate?.clientLagP99Ms ?? 0) > CLIENT_LAG_WARN_MS);
  rows.push([`open loop ${fmtInt(rate?.targetRps)} req/s${stalled ? ' *' : ''}`, ...kinds.flatMap((k) => cols(r.servers[k], 'rate')), '']);
  lines.push(header1, ...table([header2, ...rows], widths));
  if (stalled) lines.push(`* the open-loop client ran more than ${CLIENT_LAG_WARN_MS} ms late at p99 (see client lag below): its p99 may include client delay; rerun on a quieter machine`);
  lines.push('');

  const rows2: string[][] = [['', ...kinds]];
  rows2.push(['peak RSS (VmHWM)', ...kinds.map((k) => (r.servers[k]?.peakRssMB === undefined ? '-' : `${(r.servers[k]?.peakRssMB ?? 0).toFixed(1)} MB`))]);
  rows2.push([`${(r.updateBytes / 1048576).toFixed(2)} MiB UPDATE, median of 7`, ...kinds.map((k) => `${fmtMs(r.servers[k]?.update?.medianMs)} ms`)]);
  rows2.push(['open-loop client lag p99', ...kinds.map((k) => `${fmtMs(r.servers[k]?.rate?.clientLagP99Ms)} ms`)]);
  lines.push(...table(rows2, [33, 14, 14]));
  lines.push('');

  lines.push(...renderVerification(r));
  if (r.twoTargets !== undefined) {
    const beside = [
      { label: 'baseline: bare node:https', c1: r.servers.baseline?.points.c1, c8: r.servers.baseline?.points.c8 },
      { label: 'mirrorgate, no verification', c1: r.servers.mirrorgate?.points.c1, c8: r.servers.mirrorgate?.points.c8 },
      { label: 'one target, warm cache', c8: r.verification.warm?.c8 },
      { label: 'one target, cold cache', c1: r.verification.cold?.c1, c8: r.verification.cold?.c8 },
    ];
    lines.push(...renderTwoTargets(r.twoTargets, beside, fmtMs));
  }
  lines.push(...renderReload(r.reload, 'the reload scenario did not run (--no-reload or --only baseline)'));

  if (r.targets.length > 0) {
    lines.push('targets (mirrorgate)');
    for (const t of r.targets) {
      const verdict = t.pass === undefined ? 'n/a ' : t.pass ? 'PASS' : 'FAIL';
      const value = t.value === undefined ? '(not measured)' : t.unit === 'x' ? t.value.toFixed(2) : `${fmtMs(t.value)} ${t.unit}`;
      lines.push(`  ${verdict}  ${t.name.padEnd(48)} ${value}`);
    }
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}

/** The verification scenario's section of the table. */
function renderVerification(r: Report): string[] {
  const v = r.verification;
  if (v.skipped !== undefined) return [`verification scenario skipped: ${v.skipped}`, ''];
  const reg = v.registry;
  const lines: string[] = [];
  lines.push('verification: the same rules with verify: true, against a real registry (docker-registry) on 127.0.0.1 behind a counting proxy');
  if (reg) {
    lines.push(
      `registry: ${reg.pushedByTag} images pushed by tag, ${reg.pushedByDigest} by digest (the mix's digests replaced by theirs); never pushed: ${reg.absent} ` +
        `(${reg.absentReviews} reviews, denied: not in the mirror yet); ${reg.distinctTargets} distinct targets, ${reg.targetsPerReview.toFixed(2)} per review`,
    );
  }
  const ch = v.checks;
  lines.push(
    `warm: default cache (present 3600 s, absent 30 s), measured after one pass over the mix${ch ? ` (${ch.warm.heads} registry HEADs)` : ''}; ` +
      `cold: cacheSeconds {present: 0, absent: 0}, ${v.coldWarmupS ?? '-'} s warm-up + ${v.coldDurationS ?? '-'} s per point`,
  );
  lines.push('');
  type Row = { p50Ms: number; p99Ms: number; errors: number; rps?: number; achievedRps?: number; registry?: RegistryLoad } | undefined;
  const row = (label: string, p: Row, vsM?: number, vsB?: number): string[] => {
    if (p === undefined) return [label, '', '', '', '', '', '', ''];
    return [
      label,
      fmtInt(p.rps ?? p.achievedRps),
      fmtMs(p.p50Ms),
      fmtMs(p.p99Ms),
      String(p.errors),
      p.registry ? fmtRatio(p.registry.headsPerAdmission) : '',
      vsM === undefined ? '' : fmtRatio(vsM),
      vsB === undefined ? '' : fmtRatio(vsB),
    ];
  };
  const b = r.servers.baseline;
  const m = r.servers.mirrorgate;
  const rate = fmtInt(v.warm?.rate?.targetRps ?? r.servers.mirrorgate?.rate?.targetRps);
  const vm = v.ratio?.vsMirrorgate ?? {};
  const vb = v.ratio?.vsBaseline ?? {};
  const rows: string[][] = [['point', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'HEAD/adm.', '/ mirrorgate', '/ baseline']];
  if (b) rows.push(row('baseline, c=8', b.points.c8));
  if (m) rows.push(row('mirrorgate, no verify, c=8', m.points.c8));
  rows.push(row('verify, warm cache, c=8', v.warm?.c8, vm.warmC8, vb.warmC8));
  if (b) rows.push(row(`baseline, open loop ${rate} req/s`, b.rate));
  if (m) rows.push(row(`mirrorgate, no verify, open loop ${rate} req/s`, m.rate));
  rows.push(row(`verify, warm cache, open loop ${rate} req/s`, v.warm?.rate));
  rows.push(row('verify, cold cache, c=8', v.cold?.c8, vm.coldC8, vb.coldC8));
  rows.push(row('verify, cold cache, c=1', v.cold?.c1, vm.coldC1, vb.coldC1));
  lines.push(...table(rows, [43, 9, 7, 7, 7, 10, 12, 10]));
  const sum = (rec: Record<string, number> | undefined): string =>
    rec === undefined ? '-' : Object.entries(rec).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  for (const [label, p] of [['warm c=8', v.warm?.c8], ['warm open loop', v.warm?.rate], ['cold c=8', v.cold?.c8], ['cold c=1', v.cold?.c1]] as const) {
    if (p) lines.push(`  ${`${label}:`.padEnd(16)} admissions ${sum(p.registry.answers)}; registry checks ${sum(p.registry.checks)}; ${p.registry.heads} HEADs`);
  }
  lines.push(`  peak RSS (VmHWM): warm ${v.warm?.peakRssMB === undefined ? '-' : `${v.warm.peakRssMB.toFixed(1)} MB`}, cold ${v.cold?.peakRssMB === undefined ? '-' : `${v.cold.peakRssMB.toFixed(1)} MB`}`);
  lines.push('');
  return lines;
}

/** Left-aligned first column, right-aligned numbers. */
function table(rows: string[][], widths: number[]): string[] {
  return rows.map((row) =>
    row
      .map((cell, i) => {
        const w = Math.max(widths[i] ?? 8, cell.length);
        return i === 0 ? cell.padEnd(w) : cell.padStart(w);
      })
      .join('  ')
      .trimEnd(),
  );
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = err as Error;
    process.stderr.write(`bench: ${e instanceof HarnessError ? e.message : (e.stack ?? String(e))}\n`);
    cleanupSync();
    process.exitCode = 1;
  },
);
