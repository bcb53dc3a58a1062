/**
 * The verification scenario of `npm run bench`: rules with `verify: true` against a real
 * registry, with every answer cached (warm) and with no cache at all (cold, every
 * admission asks).
 */
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { startRegistry, type TestRegistry } from '../test/support/registry.js';
import { HarnessError, log, sleep, tail } from './harness.js';
import { openLoop, post, readAnswer, runWrk, writeBodies, type PointResult, type RateResult } from './load.js';
import { fillMirror, startCountingProxy, type CountingProxy, type MirrorPlan, type ProxyCounts } from './mirror.js';
import type { Options } from './options.js';
import { stopChild, type Pinning, type Processes } from './processes.js';
import { fmtInt, fmtMs, fmtRatio } from './report.js';
import type { GeneratedReview } from './reviews.js';
import { benchConfig, freePort, mirrorgateArgs, peakRssMB, startServer, type RunningServer, type Tls } from './servers.js';

/** Why the scenario did not run, or undefined when it can. */
export function verificationSkipReason(opts: Options): string | undefined {
  if (!opts.verify) return '--no-verify';
  if (!opts.servers.includes('mirrorgate')) return '--only baseline';
  if (spawnSync('docker-registry', ['--version'], { stdio: 'ignore' }).error) return 'docker-registry not installed';
  return undefined;
}

/**
 * The pid of our child process whose command line holds `arg` (from /proc): the registry
 * that test/support started, so that an abrupt exit can still stop it by its id.

/** The counters the scenario reads from a verifying mirrorgate's /metrics, summed over other labels. */
export interface Counters {
  /** `mirrorgate_registry_checks_total` by result (present, absent, error). */
  checks: Record<string, number>;
  /** `mirrorgate_admission_requests_total` by result (patched, allowed, denied, ...). */
  admissions: Record<string, number>;
}

export const COUNTER_LINE = /^(mirrorgate_registry_checks_total|mirrorgate_admission_requests_total)\{([^}]*)\} (\S+)$/;

export function scrapeCounters(metricsPort: number): Promise<Counters> {
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
export interface RegistryLoad {
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

export function diff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** Run `measure` and report the registry traffic and admission results it caused. */
export async function withRegistryLoad<T>(proxy: CountingProxy, metricsPort: number, measure: () => Promise<T>): Promise<T & { registry: RegistryLoad }> {
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

export interface VerifyCheck {
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
export async function checkVerifiedAnswers(server: RunningServer, ca: string, plan: MirrorPlan, proxy: CountingProxy): Promise<VerifyCheck> {
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

export type VerifyWrkPoint = PointResult & { registry: RegistryLoad };
export type VerifyRatePoint = RateResult & { registry: RegistryLoad };

export interface VerificationResults {
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

export interface VerifyContext {
  procs: Processes;
  opts: Options;
  pin: Pinning | undefined;
  dir: string;
  tls: Tls;
  lua: string;
  mix: readonly GeneratedReview[];
  elapsed: () => string;
}

/** Cold points are shorter: the section should not double the bench's time. */
export function coldTiming(opts: Options): { durationS: number; warmupS: number } {
  return { durationS: Math.max(1, Math.round(opts.durationS / 2)), warmupS: Math.min(opts.warmupS, 1) };
}

/**
 * The scenario: a registry holding all rewrite targets of the mix but one, a counting
 * proxy in front of it, and two more mirrorgates (pinned like the first) with the same
 * rules plus `verify: true`: "warm" with the default cache lifetimes, measured after one
 * pass over the mix, and "cold" with `cacheSeconds: {present: 0, absent: 0}`, where every
 * admission asks the registry.
 */
export async function runVerification(ctx: VerifyContext): Promise<VerificationResults> {
  const { procs, opts, pin, dir, tls, lua, elapsed } = ctx;
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
    forget = procs.guardRegistry(registry.dir);
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
      const server = await startServer(procs, 'mirrorgate', mirrorgateArgs(name, config, opts.cli, port, metricsPort, tls, dir), port, tls, dir, pin, name);
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
      if (warmupS > 0) await runWrk(procs, s.server.port, lua, mixFile, c, warmupS, pin);
      return withRegistryLoad(proxy as CountingProxy, s.metricsPort, () => runWrk(procs, s.server.port, lua, mixFile, c, durationS, pin));
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
    forget?.();
  }
}
