/**
 * What every part of `npm run bench` shares: where things are, the failure of the harness
 * itself, the progress log, and small helpers.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(BENCH_DIR, '..');
export const DEFAULT_CLI = path.join(ROOT, 'dist', 'cli.js');
export const MUTATE_PATH = '/mutate?timeout=10s';

/** A failure of the harness itself (as opposed to a missed target): exit 1. */
export class HarnessError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HarnessError';
  }
}

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function tail(file: string, lines = 15): string {
  try {
    const text = readFileSync(file, 'utf8').trimEnd();
    return text === '' ? '(no output)' : text.split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}
