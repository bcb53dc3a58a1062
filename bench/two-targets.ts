/**
 * The bench's two-target scenario: a rule with `to: [first, second]` and `verify: true`,
 * against two real registries (Debian's `docker-registry`, started by test/support), each
 * behind its own counting proxy. The first holds the images of half the mix, the second all
 * but one, so about half of the images are served by the fallback target. Admission latency
 * is measured with every answer cached (warm) and with no cache (cold: every admission asks
 * both targets at once), at c=1 and c=8, beside the one-target figures and the baseline
 * from the same run.
 *
 * The harness (servers, wrk, answer parsing: servers.ts, load.ts) is handed in by run.ts as
 * {@link TwoTargetsHarness}, so this module holds only the scenario.
 */
import path from 'node:path';
import { startRegistry, type TestRegistry } from '../test/support/registry.js';
import { fillMirror, MIRROR_RULES, startCountingProxy, type CountingProxy, type MirrorPlan } from './mirror.js';
import type { GeneratedReview } from './reviews.js';

/** One wrk point, as run.ts measures it. */
export interface TwoTargetsPoint {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  requests: number;
}

/** A verifying mirrorgate the harness started. */
export interface TwoTargetsServer {
  readonly port: number;
  readonly pid: number | undefined;
}

/** What one review's answer decided, or what is wrong with it. */
export type TwoTargetsAnswer = { allowed: boolean; imageOps: number; message?: string | undefined; warnings: readonly string[] } | string;

/** What the scenario needs of run.ts. */
export interface TwoTargetsHarness {
  readonly mix: readonly GeneratedReview[];
  readonly dir: string;
  readonly durationS: number;
  readonly warmupS: number;
  log(line: string): void;
  /** Start `serve` with this config; stopped by `stopAll`. */
  start(name: string, config: string): Promise<TwoTargetsServer>;
  stopAll(): Promise<void>;
  /** wrk with `bodiesFile` at concurrency `c` for `seconds`. */
  wrk(server: TwoTargetsServer, bodiesFile: string, c: number, seconds: number): Promise<TwoTargetsPoint>;
  /** Send one review and read its answer. */
  answer(server: TwoTargetsServer, review: GeneratedReview): Promise<TwoTargetsAnswer>;
  writeBodies(file: string, reviews: readonly GeneratedReview[]): void;
  peakRssMB(pid: number | undefined): number | undefined;
  /** Have an abrupt exit kill this registry (by its pid) and remove its folder; returns the undo. */
  guard(reg: TestRegistry): () => void;
}

export interface TwoTargetsLoad {
  /** Manifest HEADs that reached each registry during the point. */
  headsFirst: number;
  headsSecond: number;
}

export type TwoTargetsMeasured = TwoTargetsPoint & { registry: TwoTargetsLoad };

export interface TwoTargetsResults {
  skipped?: string;
  registries?: { first: string; second: string; pushedFirst: number; pushedSecond: number; absent: string; pushSeconds: number };
  /** The answer check: reviews served (some image from the second target), and denied (the absent image). */
  check?: { reviews: number; servedBySecond: number; denied: number; imageOps: number };
  warm?: { c1?: TwoTargetsMeasured; c8?: TwoTargetsMeasured; peakRssMB?: number | undefined };
  cold?: { c1?: TwoTargetsMeasured; c8?: TwoTargetsMeasured; peakRssMB?: number | undefined };
  coldDurationS?: number;
}

/** The rules of the bench, each to both mirrors in order, verified. */
export function twoTargetsConfig(first: string, second: string, cold: boolean): string {
  const lines = ['# Written by bench/two-targets.ts: the bench rules, each to two mirrors in order (verify: true).', 'mode: enforce', 'rules:'];
  for (const r of MIRROR_RULES) lines.push(`  - from: ${r.from}`, `    to: ["${first}/${r.path}", "${second}/${r.path}"]`, '    verify: true');
  lines.push(
    'policy:',
    `  allowedRegistries: ["${first}", "${second}", mirror.example.com, registry.k8s.io]`,
    'registries:',
    `  "${first}": {insecure: true}`,
    `  "${second}": {insecure: true}`,
    'verification:',
    '  timeoutMs: 500',
    '  platforms: off',
  );
  if (cold) lines.push('  cacheSeconds: {present: 0, absent: 0}');
  lines.push('logLevel: info', '');
  return lines.join('\n');
}

/**
 * Check every answer: a review without the absent image is allowed with all of its
 * third-party images rewritten (every image is on one of the targets), and those with an
 * image only the second holds carry the "served by target 2 of 2" warning; a review with
 * the absent image is denied as not in the mirror yet (its original is not allowed).
 */
async function checkAnswers(h: TwoTargetsHarness, server: TwoTargetsServer, plan: MirrorPlan, firstHas: MirrorPlan): Promise<NonNullable<TwoTargetsResults['check']>> {
  const out = { reviews: 0, servedBySecond: 0, denied: 0, imageOps: 0 };
  const problems: string[] = [];
  for (const r of plan.reviews) {
    const a = await h.answer(server, r);
    out.reviews++;
    if (typeof a === 'string') {
      problems.push(`${r.uid}: ${a}`);
      continue;
    }
    if (plan.absentUids.has(r.uid)) {
      if (a.allowed || !(a.message ?? '').includes('is not in the mirror yet')) problems.push(`${r.uid} (has ${plan.absent}): expected a denial, got ${a.allowed ? 'allowed' : `"${a.message ?? ''}"`}`);
      else out.denied++;
      continue;
    }
    if (!a.allowed) problems.push(`${r.uid}: denied: ${a.message ?? ''}`);
    else if (a.imageOps !== r.rewritable) problems.push(`${r.uid}: ${a.imageOps} of ${r.rewritable} third-party images rewritten`);
    if (a.warnings.some((w) => w.includes('served by target 2 of 2'))) out.servedBySecond++;
    out.imageOps += a.imageOps;
  }
  // The first mirror holds half the mix's images: some reviews must have been served by the second.
  if (out.servedBySecond === 0 && firstHas.distinctTargets < plan.distinctTargets) problems.push('no review was served by the second target');
  if (problems.length > 0) throw new Error(`the two-target mirrorgate answered ${problems.length} reviews wrongly:\n  ${problems.slice(0, 5).join('\n  ')}`);
  return out;
}

/** Run the scenario. Never leaves a registry, proxy or server behind. */
export async function runTwoTargets(h: TwoTargetsHarness): Promise<TwoTargetsResults> {
  const out: TwoTargetsResults = {};
  const regs: TestRegistry[] = [];
  const proxies: CountingProxy[] = [];
  const releases: (() => void)[] = [];
  try {
    const [a, b] = await Promise.all([startRegistry(), startRegistry()]);
    regs.push(a, b);
    releases.push(h.guard(a), h.guard(b));
    const [pa, pb] = await Promise.all([startCountingProxy(Number(a.host.split(':')[1])), startCountingProxy(Number(b.host.split(':')[1]))]);
    proxies.push(pa, pb);
    const t0 = performance.now();
    // The same content gives the same digests in both, so the second's review bodies fit the
    // first. The first gets half the mix, without the reviews of the image the second lacks.
    const plan = await fillMirror(b, h.mix, pb.host);
    const half = h.mix.slice(0, Math.floor(h.mix.length / 2)).filter((r) => !plan.absentUids.has(r.uid));
    const firstHas = await fillMirror(a, half, pa.host);
    out.registries = {
      first: pa.host,
      second: pb.host,
      pushedFirst: firstHas.pushedByTag + firstHas.pushedByDigest,
      pushedSecond: plan.pushedByTag + plan.pushedByDigest,
      absent: plan.absent,
      pushSeconds: (performance.now() - t0) / 1000,
    };
    h.log(`two targets: ${pa.host} holds ${out.registries.pushedFirst} images (half the mix), ${pb.host} ${out.registries.pushedSecond} (all but ${plan.absent}); pushed in ${out.registries.pushSeconds.toFixed(1)} s`);
    const mixFile = path.join(h.dir, 'two-targets-mix.jsonl');
    h.writeBodies(mixFile, plan.reviews);

    const warm = await h.start('mirrorgate-two-targets-warm', twoTargetsConfig(pa.host, pb.host, false));
    const cold = await h.start('mirrorgate-two-targets-cold', twoTargetsConfig(pa.host, pb.host, true));
    out.check = await checkAnswers(h, warm, plan, firstHas);
    await checkAnswers(h, cold, plan, firstHas);
    h.log(`two targets: ${out.check.reviews} reviews answered correctly by each; ${out.check.servedBySecond} served (in part) by the second target, ${out.check.denied} denied (absent from both)`);

    const measure = async (s: TwoTargetsServer, c: number, warmupS: number, durationS: number): Promise<TwoTargetsMeasured> => {
      if (warmupS > 0) await h.wrk(s, mixFile, c, warmupS);
      const [a0, b0] = [pa.counts().manifestHeads, pb.counts().manifestHeads];
      const r = await h.wrk(s, mixFile, c, durationS);
      return { ...r, registry: { headsFirst: pa.counts().manifestHeads - a0, headsSecond: pb.counts().manifestHeads - b0 } };
    };
    const say = (label: string, p: TwoTargetsMeasured): void =>
      h.log(`two targets, ${label}: ${Math.round(p.rps)} req/s, p50 ${p.p50Ms.toFixed(2)} ms, p99 ${p.p99Ms.toFixed(2)} ms, errors ${p.errors}, HEADs ${p.registry.headsFirst} + ${p.registry.headsSecond}`);
    out.warm = {};
    out.warm.c1 = await measure(warm, 1, h.warmupS, h.durationS);
    say('warm cache, c=1', out.warm.c1);
    out.warm.c8 = await measure(warm, 8, h.warmupS, h.durationS);
    say('warm cache, c=8', out.warm.c8);
    out.warm.peakRssMB = h.peakRssMB(warm.pid);
    const coldS = Math.max(1, Math.round(h.durationS / 2));
    const coldWarmS = Math.min(h.warmupS, 1);
    out.coldDurationS = coldS;
    out.cold = {};
    out.cold.c1 = await measure(cold, 1, coldWarmS, coldS);
    say('cold cache, c=1', out.cold.c1);
    out.cold.c8 = await measure(cold, 8, coldWarmS, coldS);
    say('cold cache, c=8', out.cold.c8);
    out.cold.peakRssMB = h.peakRssMB(cold.pid);
    return out;
  } finally {
    await h.stopAll();
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(regs.map((r) => r.stop()));
    for (const r of releases) r();
  }
}

/** Rows of the section: the two-target points beside the baseline's and the one-target ones from the same run. */
export function renderTwoTargets(
  r: TwoTargetsResults,
  beside: { label: string; c1?: TwoTargetsPoint | undefined; c8?: TwoTargetsPoint | undefined }[],
  fmt: (n: number | undefined) => string,
): string[] {
  if (r.skipped !== undefined) return [`two-target scenario skipped: ${r.skipped}`, ''];
  const lines = ['two targets: rules to [first, second] with verify: true; the first holds half the mix, the second all but one image'];
  const row = (label: string, c1?: TwoTargetsPoint, c8?: TwoTargetsPoint, heads?: string): string =>
    `  ${label.padEnd(40)} ${fmt(c1?.p50Ms).padStart(7)} ${fmt(c1?.p99Ms).padStart(7)}   ${fmt(c8?.p50Ms).padStart(7)} ${fmt(c8?.p99Ms).padStart(7)} ${String(Math.round(c8?.rps ?? Number.NaN)).padStart(7)}  ${heads ?? ''}`;
  lines.push(`  ${''.padEnd(40)} ${'c=1 p50'.padStart(7)} ${'p99'.padStart(7)}   ${'c=8 p50'.padStart(7)} ${'p99'.padStart(7)} ${'req/s'.padStart(7)}  registry HEADs/adm. (first + second, c=1)`);
  for (const b of beside) lines.push(row(b.label, b.c1, b.c8));
  const per = (p: TwoTargetsMeasured | undefined): string => {
    if (p === undefined || p.requests === 0) return '';
    return `${(p.registry.headsFirst / p.requests).toFixed(2)} + ${(p.registry.headsSecond / p.requests).toFixed(2)}`;
  };
  lines.push(row('two targets, warm cache', r.warm?.c1, r.warm?.c8, per(r.warm?.c1)));
  lines.push(row(`two targets, cold cache (${r.coldDurationS ?? '?'} s points)`, r.cold?.c1, r.cold?.c8, per(r.cold?.c1)));
  lines.push('');
  return lines;
}
