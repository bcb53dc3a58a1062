/**
 * The reload scenario of `npm run bench`: a config of 20,000 rules compiled as a reload
 * does it (a worker thread, then adoption on the main thread a part at a time) and, beside
 * it, the same text on the main thread (`parseConfig` plus the rule index the first
 * admission builds), as reloads ran before. For each: the total time and the longest the
 * event loop that answers admissions was blocked (`perf_hooks.monitorEventLoopDelay`,
 * 1 ms resolution). The built modules (`dist/`) are measured, so the worker runs plain
 * JavaScript as in the image.
 */
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

export interface ReloadFigures {
  readonly totalMs: number;
  /** Longest event-loop block during the reload, in ms. */
  readonly maxBlockMs: number;
}

/** The same monitor on an idle event loop for as long: what the machine alone costs (preemption). */
export interface IdleFigures {
  readonly durationMs: number;
  readonly maxBlockMs: number;
}

export interface ReloadResult {
  readonly rules: number;
  readonly bytes: number;
  /** Off the main thread: what a reload does. */
  readonly worker: ReloadFigures & {
    readonly firstAdmissionMs: number;
    /** Main-thread work of the adoption: its steps between two yields to the event loop. */
    readonly steps: number;
    readonly longestStepMs: number;
  };
  readonly idle: IdleFigures;
  /** On the main thread: parse, validate, compile, then the index the first admission builds. */
  readonly mainThread: ReloadFigures;
}

/** `count` rules, most for hosts of their own, a tenth below one shared host, and a policy. */
export function ruleConfigText(count: number): string {
  const lines = ['mode: enforce', 'rules:'];
  for (let i = 0; i < count; i++) {
    const from = i % 10 === 0 ? `quay.io/team-${i}` : `registry-${i}.example.com`;
    lines.push(`  - from: ${from}`, `    to: mirror.example.com/r${i}`);
  }
  lines.push('policy:', '  allowedRegistries: [mirror.example.com, registry.k8s.io]', '');
  return lines.join('\n');
}

type Modules = {
  parseConfig: (text: string, source?: string) => { ruleSet: unknown };
  compileOffThread: (text: string, source: string, opts?: { pause?: () => Promise<void> }) => Promise<{ ruleSet: unknown }>;
  decideRewrite: (ruleSet: unknown, image: string) => { kind: string };
};

async function load(distDir: string): Promise<Modules> {
  const at = (p: string): string => pathToFileURL(path.join(distDir, p)).href;
  const schema = (await import(at('config/schema.js'))) as Pick<Modules, 'parseConfig'>;
  const compile = (await import(at('config/compile.js'))) as Pick<Modules, 'compileOffThread'>;
  const rules = (await import(at('core/rules.js'))) as Pick<Modules, 'decideRewrite'>;
  return { parseConfig: schema.parseConfig, compileOffThread: compile.compileOffThread, decideRewrite: rules.decideRewrite };
}

/** Run `work` with the event-loop delay monitor on; the monitor sees a block only once the loop turns again. */
async function watched<T>(work: () => Promise<T> | T): Promise<{ value: T; totalMs: number; maxBlockMs: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  // The monitor measures from its second tick: let it tick before the work starts.
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  const start = performance.now();
  const value = await work();
  const totalMs = performance.now() - start;
  await new Promise((resolve) => setTimeout(resolve, 20));
  h.disable();
  return { value, totalMs, maxBlockMs: h.max / 1e6 };
}

export async function runReloadBench(distDir: string, count = 20_000): Promise<ReloadResult> {
  const m = await load(distDir);
  const text = ruleConfigText(count);
  const probe = 'registry-7.example.com/app/web:1.0';
  // Warm-up: the JIT and the worker's module loading, on a small config each way.
  const small = ruleConfigText(200);
  m.decideRewrite(m.parseConfig(small).ruleSet, probe);
  m.decideRewrite((await m.compileOffThread(small, 'bench')).ruleSet, probe);

  const main = await watched(() => {
    const c = m.parseConfig(text, 'bench');
    m.decideRewrite(c.ruleSet, probe);
    return c;
  });
  // Each pause is a yield to the event loop: the time from one pause's end to the next
  // call is one step of main-thread work.
  let resumed: number | undefined;
  let steps = 0;
  let longestStepMs = 0;
  const pause = (): Promise<void> => {
    if (resumed !== undefined) longestStepMs = Math.max(longestStepMs, performance.now() - resumed);
    steps++;
    return new Promise((resolve) =>
      setImmediate(() => {
        resumed = performance.now();
        resolve();
      }),
    );
  };
  const worker = await watched(async () => {
    const c = await m.compileOffThread(text, 'bench', { pause });
    if (resumed !== undefined) longestStepMs = Math.max(longestStepMs, performance.now() - resumed);
    return c;
  });
  const idle = await watched(() => new Promise<void>((resolve) => setTimeout(resolve, worker.totalMs)));
  const first = performance.now();
  const decision = m.decideRewrite(worker.value.ruleSet, probe);
  const firstAdmissionMs = performance.now() - first;
  if (decision.kind !== 'rewrite') throw new Error(`reload bench: the adopted rules did not rewrite ${probe} (${decision.kind})`);
  return {
    rules: count,
    bytes: Buffer.byteLength(text),
    worker: { totalMs: worker.totalMs, maxBlockMs: worker.maxBlockMs, firstAdmissionMs, steps, longestStepMs },
    idle: { durationMs: idle.totalMs, maxBlockMs: idle.maxBlockMs },
    mainThread: { totalMs: main.totalMs, maxBlockMs: main.maxBlockMs },
  };
}

/** The reload section of the bench's table. */
export function renderReload(r: ReloadResult | undefined, skipped: string | undefined): string[] {
  if (r === undefined) return [`reload scenario skipped: ${skipped ?? 'not run'}`, ''];
  const kb = (r.bytes / 1024).toFixed(0);
  const f = (x: number): string => `${x.toFixed(1)} ms`;
  return [
    `reload: ${r.rules.toLocaleString('en-US')} rules (${kb} KiB of YAML), event-loop block measured with monitorEventLoopDelay (1 ms resolution)`,
    `  off the main thread (what a reload does): total ${f(r.worker.totalMs)}, longest event-loop block ${f(r.worker.maxBlockMs)}, first admission after it ${f(r.worker.firstAdmissionMs)}`,
    `    adoption on the main thread: ${r.worker.steps} steps, the longest ${f(r.worker.longestStepMs)}`,
    `  on the main thread (before):              total ${f(r.mainThread.totalMs)}, longest event-loop block ${f(r.mainThread.maxBlockMs)}`,
    `  an idle event loop for ${f(r.idle.durationMs)} on this machine: longest block ${f(r.idle.maxBlockMs)} (preemption by other processes, the floor of the figures above)`,
    '',
  ];
}
