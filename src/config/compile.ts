/**
 * Compiling a reloaded config without blocking the admissions the same thread answers.
 *
 * YAML parsing, validation and rule compilation of a large config take seconds (20,000
 * rules: see the bench), far past the webhook's timeout. A worker thread does all of it,
 * at a lower priority than this thread, and builds the rules' lookup index too, as
 * integers and one string table that also hold the rules (`buildRuleIndex` in
 * core/rules.ts; O(n log n)). The integers' buffer and the rest, serialised in parts of
 * {@link RULES_PER_PART} rules (the rules as written, and the scopes), are transferred, not
 * copied. This thread then adopts them a part at a time, yielding to the event loop
 * between parts: each part's rules are made from the table (shared strings, frozen) and its
 * inputs deserialised; the index is read as it is, never rebuilt, and belongs to the rule
 * list before the swap, so the first admission after it finds it complete. The config in
 * force is swapped only when all of it is in: a reload is atomic. What is left to block the
 * event loop is a step of a part (1-3 ms of work on one core) and the collector's
 * scavenges of what the adoption makes, which the ballast keeps to a few parts each (see
 * {@link adopt}): 20,000 rules block it 13-37 ms at most on the shared 2-core development
 * machine (README, "A reload of 20,000 rules").
 *
 * The worker is started per reload (reloads are rare) with a memory limit and a deadline;
 * a worker that fails, runs out of memory or out of time is a rejected reload, and the
 * last good config stays in force. It is terminated once its answer is adopted.
 */
import { Worker } from 'node:worker_threads';
import { deserialize } from 'node:v8';
import type { Problem, Rule, RuleIndexData, RuleInput, RuleScope } from '../core/rules.js';
import { adoptRuleIndex, RuleTableReader } from '../core/rules.js';
import { ConfigError, deepFreeze, type Config } from './schema.js';
import { setTimerOn, systemTimers, type SetTimer } from '../ports.js';

/** Rules per part the main thread adopts at once (a few ms each on one core). */
export const RULES_PER_PART = 250;
/**
 * Short-lived garbage allocated after each part (about ten times what a part keeps), so
 * that the young generation is scavenged every few parts: see {@link adopt}.
 */
export const BALLAST_BYTES_PER_PART = 2 * 1024 * 1024;
/** Heap of the compiling worker: 20,000 rules (1.3 MiB of YAML) need between 64 and 96 MiB. */
export const COMPILE_MEMORY_MB = 128;
/**
 * The compiling thread's priority (nice value): below the thread answering admissions, so
 * that on a busy core the compile waits, not admissions.
 */
export const COMPILE_NICE = 10;
/** A compile that takes longer is abandoned (the last good config stays). */
export const COMPILE_TIMEOUT_MS = 60_000;

/** What the worker gets. */
export interface CompileInput {
  readonly text: string;
  readonly source: string;
}

/** A part of {@link RULES_PER_PART} rules, serialised: what the rule table leaves out. */
export interface CompilePart {
  /** The rules as written (the config file's `rules`). */
  readonly inputs: readonly RuleInput[];
  /** [position in the rule list, scope] of the part's rules that have a scope. */
  readonly scopes: readonly (readonly [number, RuleScope])[];
}

/**
 * What the worker answers: the rules and their index as a table (its integers
 * transferred), the rest in serialised parts; or why the config is refused.
 */
export type CompileOutput =
  | { readonly kind: 'ok'; readonly table: RuleIndexData; readonly parts: readonly ArrayBuffer[]; readonly rest: ArrayBuffer }
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
  const { out, stop } = await runWorker({ text, source }, opts);
  try {
    if (out.kind === 'invalid') throw new ConfigError(source, out.problems);
    if (out.kind === 'failed') throw new ConfigError(source, [{ path: '(compile)', message: out.message }]);
    return await adopt(out, source, opts.pause ?? nextTurn);
  } finally {
    // Only now: tearing down the worker's heap (hundreds of ms of a core) during the
    // adoption would slow the adoption's steps and the collector's threads.
    stop();
  }
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

/** The worker's answer; `stop()` ends the worker (it waits for that once it has answered). */
function runWorker(input: CompileInput, opts: CompileOptions): Promise<{ out: CompileOutput; stop: () => void }> {
  const memoryMb = opts.memoryMb ?? COMPILE_MEMORY_MB;
  const timeoutMs = opts.timeoutMs ?? COMPILE_TIMEOUT_MS;
  return new Promise((resolve) => {
    let settled = false;
    const worker = startWorker(input, memoryMb);
    const stop = (): void => void worker.terminate();
    const settle = (out: CompileOutput): void => {
      if (settled) return;
      settled = true;
      timer.clear();
      // Abandoned or failed: stopped at once. An answer: once it is adopted.
      if (out.kind === 'failed') stop();
      resolve({ out, stop });
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

/**
 * Make the rules from the table and take in the serialised parts, a part per turn of the
 * event loop; the table's index becomes the rules' index as it is.
 *
 * Every object made here survives, and a scavenge of the young generation costs what
 * survives in it: left alone, V8 scavenges when 8-16 MiB are in, so one pause copies the
 * rules of dozens of parts (7 MiB for 20,000 rules, 30-50 ms). The ballast after each
 * part fills the young generation with garbage that costs nothing to scavenge, so a
 * scavenge comes every few parts and copies only those (3-8 ms each).
 */
async function adopt(out: Extract<CompileOutput, { kind: 'ok' }>, source: string, pause: () => Promise<void>): Promise<Config> {
  const rules: Rule[] = [];
  const inputs: RuleInput[] = [];
  const table = new RuleTableReader(out.table);
  for (let p = 0; p < out.parts.length; p++) {
    await pause();
    const part = deserialize(Buffer.from(out.parts[p] as ArrayBuffer)) as CompilePart;
    deepFreeze(part);
    const scopes = new Map(part.scopes);
    for (const r of table.rules(p * RULES_PER_PART, (p + 1) * RULES_PER_PART, (i) => scopes.get(i))) rules.push(r);
    for (const r of part.inputs) inputs.push(r);
    ballast(BALLAST_BYTES_PER_PART);
  }
  if (rules.length !== table.size) throw new ConfigError(source, [{ path: '(compile)', message: `the rule table holds ${table.size} rules, ${rules.length} adopted` }]);
  await pause();
  // Every rule is frozen already: freezing the lists themselves is enough.
  Object.freeze(rules);
  Object.freeze(inputs);
  const shell = deserialize(Buffer.from(out.rest)) as Config;
  const ruleSet = { ...shell.ruleSet, rules };
  adoptRuleIndex(rules, out.table);
  return deepFreeze({ ...shell, ruleSet, file: { ...shell.file, rules: inputs }, settings: { ...shell.settings, ruleSet } });
}

/** Where the ballast goes, so that no compiler drops it as unused. */
let _ballastSink: unknown;

/** Allocate `bytes` of young garbage, in arrays small enough not to be large objects. */
function ballast(bytes: number): void {
  for (let n = 0; n < bytes; n += 64 * 1024) _ballastSink = new Array<undefined>(8 * 1024);
  _ballastSink = undefined;
}
