/**
 * Compiling a reloaded config without blocking the admissions the same thread answers.
 *
 * YAML parsing, validation and rule compilation of a large config take seconds (20,000
 * rules: see the bench), far past the webhook's timeout. A worker thread does all of it;
 * the result comes back serialised in parts of {@link RULES_PER_PART} rules, transferred
 * (not copied). The main thread then adopts it a part at a time, yielding to the event loop
 * between parts: each part is deserialised, frozen and added to the rule index, so the
 * first admission after the swap finds the index built. The config in force is swapped
 * only when all of it is in: a reload is atomic.
 *
 * The worker is started per reload (reloads are rare) with a memory limit and a deadline;
 * a worker that fails, runs out of memory or out of time is a rejected reload, and the
 * last good config stays in force.
 */
import { Worker } from 'node:worker_threads';
import { deserialize } from 'node:v8';
import type { Problem, Rule, RuleInput } from '../core/rules.js';
import { RuleIndexBuilder } from '../core/rules.js';
import { ConfigError, deepFreeze, type Config } from './schema.js';
import { setTimerOn, systemTimers, type SetTimer } from '../ports.js';

/** Rules per part the main thread adopts at once (a few ms each on one core). */
export const RULES_PER_PART = 250;
/** Heap of the compiling worker: 20,000 rules (1.3 MiB of YAML) need between 64 and 96 MiB. */
export const COMPILE_MEMORY_MB = 128;
/** A compile that takes longer is abandoned (the last good config stays). */
export const COMPILE_TIMEOUT_MS = 60_000;

/** What the worker gets. */
export interface CompileInput {
  readonly text: string;
  readonly source: string;
}

/** What the worker answers: the config in serialised parts, or why it is refused. */
export type CompileOutput =
  | { readonly kind: 'ok'; readonly parts: readonly ArrayBuffer[]; readonly rest: ArrayBuffer }
  | { readonly kind: 'invalid'; readonly problems: readonly Problem[] }
  | { readonly kind: 'failed'; readonly message: string };

export interface CompileOptions {
  /** Between two parts: yields to the event loop (default `setImmediate`). Tests pass their own. */
  readonly pause?: (() => Promise<void>) | undefined;
  readonly memoryMb?: number | undefined;
  readonly timeoutMs?: number | undefined;
  /** Starts the deadline timer (default: the system timers, unref'd). */
  readonly setTimer?: SetTimer | undefined;
  /** Aborting stops the worker (the watcher stops): the compile is refused. */
  readonly signal?: AbortSignal | undefined;
}

/** Parse, validate and compile `text` off the main thread. Throws ConfigError as parseConfig does. */
export async function compileOffThread(text: string, source: string, opts: CompileOptions = {}): Promise<Config> {
  const out = await runWorker({ text, source }, opts);
  if (out.kind === 'invalid') throw new ConfigError(source, out.problems);
  if (out.kind === 'failed') throw new ConfigError(source, [{ path: '(compile)', message: out.message }]);
  return adopt(out, opts.pause ?? nextTurn);
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The worker, beside this file. Built (`dist/`), it is plain JavaScript. Run from source
 * (tsx, the tests), the worker registers tsx's loader itself, and inherits none of the
 * parent's loaders (which may be slower, or absent under `tsx -e`).
 */
function startWorker(input: CompileInput, memoryMb: number): Worker {
  const options = { workerData: input, resourceLimits: { maxOldGenerationSizeMb: memoryMb }, stdout: false, stderr: false };
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./compile-worker.js', import.meta.url), options);
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./compile-worker.ts', import.meta.url).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(boot, { ...options, eval: true, execArgv: [] });
}

function runWorker(input: CompileInput, opts: CompileOptions): Promise<CompileOutput> {
  const memoryMb = opts.memoryMb ?? COMPILE_MEMORY_MB;
  const timeoutMs = opts.timeoutMs ?? COMPILE_TIMEOUT_MS;
  return new Promise((resolve) => {
    let settled = false;
    const worker = startWorker(input, memoryMb);
    const settle = (out: CompileOutput): void => {
      if (settled) return;
      settled = true;
      timer.clear();
      resolve(out);
      void worker.terminate();
    };
    const timer = (opts.setTimer ?? setTimerOn(systemTimers))(() => settle({ kind: 'failed', message: `compiling took longer than ${timeoutMs / 1000} s; abandoned` }), timeoutMs);
    worker.once('message', (out: CompileOutput) => settle(out));
    worker.once('error', (err: Error & { code?: string }) =>
      settle({ kind: 'failed', message: err.code === 'ERR_WORKER_OUT_OF_MEMORY' ? `compiling needs more than ${memoryMb} MiB of memory` : `compiling failed: ${err.message}` }),
    );
    worker.once('exit', (code) => settle({ kind: 'failed', message: `the compiling thread exited (${code}) without an answer` }));
    const abort = (): void => settle({ kind: 'failed', message: 'abandoned: the config watcher stopped' });
    if (opts.signal?.aborted) abort();
    else opts.signal?.addEventListener('abort', abort, { once: true });
  });
}

/** Deserialise, freeze and index the parts, a part per turn of the event loop. */
async function adopt(out: Extract<CompileOutput, { kind: 'ok' }>, pause: () => Promise<void>): Promise<Config> {
  const rules: Rule[] = [];
  const inputs: RuleInput[] = [];
  const index = new RuleIndexBuilder();
  for (const part of out.parts) {
    await pause();
    const batch = deserialize(Buffer.from(part)) as { rules: Rule[]; inputs: RuleInput[] };
    deepFreeze(batch);
    for (const r of batch.rules) rules.push(r);
    for (const r of batch.inputs) inputs.push(r);
    index.add(batch.rules);
  }
  await pause();
  // Every rule is frozen already: freezing the lists themselves is enough.
  Object.freeze(rules);
  Object.freeze(inputs);
  const shell = deserialize(Buffer.from(out.rest)) as Config;
  const ruleSet = { ...shell.ruleSet, rules };
  index.finish(rules);
  return deepFreeze({ ...shell, ruleSet, file: { ...shell.file, rules: inputs }, settings: { ...shell.settings, ruleSet } });
}
