/**
 * `npm run bench`: mirrorgate against a bare `node:https` baseline, in one run, on the
 * same request mix, so the figures say what mirrorgate costs on top of the least a
 * webhook can do. See bench/README.md for what is measured and how to read it.
 *
 * Exit code 1 only when the harness fails (a server does not start, wrk is missing, an
 * answer is wrong so the numbers would mean nothing); missed targets are reported.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { renderDrain, runDrain, type DrainResult } from './drain.js';
import { HarnessError, log, ROOT } from './harness.js';
import { checkAnswers, openLoop, post, readAnswer, runWrk, timeUpdate, WRK_LUA, writeBodies } from './load.js';
import { parseOptions, USAGE, type Options, type ServerKind } from './options.js';
import { nodeVersion, Processes, resolveNode, setUpPinning, stopChild } from './processes.js';
import { renderReload, runReloadBench, type ReloadResult } from './reload.js';
import { buildReport, fmtInt, fmtMs, POINT_LABELS, renderTable, type ServerResults } from './report.js';
import { largeOnly, largeUpdateReview, reviewMix, summarize } from './reviews.js';
import { baselineArgs, benchConfig, freePort, makeTls, mirrorgateArgs, peakRssMB, startServer, type RunningServer } from './servers.js';
import { runTwoTargets, type TwoTargetsAnswer, type TwoTargetsHarness, type TwoTargetsResults } from './two-targets.js';
import { coldTiming, runVerification, verificationSkipReason, type VerificationResults, type VerifyContext } from './verification.js';

const procs = new Processes();
const CONCURRENCIES = [1, 8, 64] as const;

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const runtime = resolveNode(opts.node, ROOT);
  procs.node = runtime.node;
  if (runtime.note !== undefined) log(`bench: ${runtime.note}`);
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
  procs.tmpDir = dir;
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
      servers.push(await startServer(procs, kind, args, port, tls, dir, pin));
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
        if (opts.warmupS > 0) await runWrk(procs, s.port, lua, file, concurrency, opts.warmupS, pin);
        const r = await runWrk(procs, s.port, lua, file, concurrency, opts.durationS, pin);
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
    verification = await runVerification({ procs, opts, pin, dir, tls, lua, mix, elapsed });
  } else {
    verification = { skipped: skipVerify };
    log(`verification scenario skipped: ${skipVerify}`);
  }

  // Rules with two targets each (bench/two-targets.ts), also on CPU 0 alone.
  const twoTargets: TwoTargetsResults = skipVerify === undefined ? await runTwoTargets(twoTargetsHarness({ procs, opts, pin, dir, tls, lua, mix, elapsed })) : { skipped: skipVerify };

  // Last, in this process, once every server has stopped.
  const reload = opts.reload ? await reloadScenario(opts) : undefined;

  const report = { ...buildReport(opts, pin !== undefined, summarize(mix), summarize(large), update, results, verification, reload, nodeVersion(procs.node)), twoTargets };
  process.stdout.write(renderTable(report));
  process.stdout.write(`${JSON.stringify(report)}\n`);
  return 0;
}

/** What bench/two-targets.ts needs of this harness. */
function twoTargetsHarness(ctx: VerifyContext): TwoTargetsHarness {
  const { procs, opts, pin, dir, tls, lua, mix, elapsed } = ctx;
  const servers: RunningServer[] = [];
  return {
    mix,
    dir,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    log: (line) => log(`[${elapsed()}] ${line}`),
    async start(name, config) {
      const port = await freePort();
      const server = await startServer(procs, 'mirrorgate', mirrorgateArgs(name, config, opts.cli, port, 0, tls, dir), port, tls, dir, pin, name);
      servers.push(server);
      return { port, pid: server.child.pid };
    },
    stopAll: () => Promise.all(servers.splice(0).map((s) => stopChild(s.child))).then(() => undefined),
    wrk: (server, file, c, seconds) => runWrk(procs, server.port, lua, file, c, seconds, pin),
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
    guard: (reg) => procs.guardRegistry(reg.dir),
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
  procs.tmpDir = dir;
  const tls = makeTls(dir);
  return runDrain({
    runs: opts.drainRuns,
    ca: tls.ca,
    log,
    async start(name, extraArgs) {
      const port = await freePort();
      // The later --shutdown-delay of extraArgs wins over mirrorgateArgs' 0s.
      const args = [...mirrorgateArgs(name, benchConfig(), opts.cli, port, 0, tls, dir), ...extraArgs];
      const server = await startServer(procs, 'mirrorgate', args, port, tls, dir, pin, name);
      return { port, child: server.child };
    },
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = err as Error;
    process.stderr.write(`bench: ${e instanceof HarnessError ? e.message : (e.stack ?? String(e))}\n`);
    procs.cleanupSync();
    process.exitCode = 1;
  },
);
