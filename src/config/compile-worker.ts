/**
 * Worker thread entry of {@link compileOffThread}: parses, validates and compiles one
 * config text, and posts the result in the shape compile.ts adopts (see there). Runs no
 * I/O of its own; the text comes in `workerData`.
 */
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { serialize } from 'node:v8';
import { clip } from '../core/text.js';
import { ConfigError, parseConfig } from './schema.js';
import { buildRuleIndex, type Rule, type RuleScope } from '../core/rules.js';
import { messageOf } from '../errors.js';
import { COMPILE_NICE, RULES_PER_PART, type CompileInput, type CompileOutput, type CompilePart } from './compile.js';

const { text, source } = workerData as CompileInput;

// This thread only: on Linux a thread has a priority of its own (elsewhere the call would
// lower the whole process, so it is left alone). The thread answering admissions comes
// first when both want a core. Lowering one's own priority needs no privilege.
if (process.platform === 'linux') {
  try {
    setPriority(COMPILE_NICE);
  } catch {
    // Refused: the compile runs at the usual priority.
  }
}
const port = parentPort;

function toArrayBuffer(b: Buffer): ArrayBuffer {
  // v8.serialize returns a Buffer of its own (not from the shared pool): its ArrayBuffer can be transferred.
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? (b.buffer as ArrayBuffer) : (b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
}

let out: CompileOutput;
const transfer: ArrayBuffer[] = [];
try {
  const config = parseConfig(text, source);
  const rules = config.ruleSet.rules;
  const inputs = config.file.rules;
  // The rules and their index as integers and one string table (see buildRuleIndex).
  const table = buildRuleIndex(rules, true);
  const parts: ArrayBuffer[] = [];
  for (let i = 0; i < Math.max(rules.length, inputs.length); i += RULES_PER_PART) {
    // What the table leaves out: the rules as written, and the scopes of those that have one.
    const scopes: [number, RuleScope][] = [];
    for (let j = i; j < Math.min(i + RULES_PER_PART, rules.length); j++) {
      const scope = (rules[j] as Rule).scope;
      if (scope !== undefined) scopes.push([j, scope]);
    }
    const part: CompilePart = { inputs: inputs.slice(i, i + RULES_PER_PART), scopes };
    parts.push(toArrayBuffer(serialize(part)));
  }
  // Everything else, with the rule lists emptied: they come in the parts.
  const shell = { ...config, ruleSet: { ...config.ruleSet, rules: [] }, file: { ...config.file, rules: [] }, settings: { ...config.settings, ruleSet: undefined } };
  const rest = toArrayBuffer(serialize(shell));
  transfer.push(table.ints.buffer as ArrayBuffer, ...parts, rest);
  out = { kind: 'ok', table, parts, rest };
} catch (err) {
  if (err instanceof ConfigError) {
    // Values can be megabytes: only as much as a config error lists crosses over.
    out = { kind: 'invalid', problems: err.problems.map((p) => ({ path: clip(p.path, 1024), message: clip(p.message, 1024) })) };
  } else out = { kind: 'failed', message: clip(messageOf(err), 1024) };
}
port?.postMessage(out, transfer);
// Stay until the main thread has adopted the answer and terminates this thread: tearing
// down this heap meanwhile would take a core from the adoption.
port?.once('message', () => port.close());
