/** Start the real CLI (TypeScript through tsx) as a process, for tests of what a pod runs. */
import { spawn, type ChildProcess } from 'node:child_process';

export interface CliOptions {
  /**
   * `dist`: the built `dist/cli.js` under plain `node` (what the image runs; `make test`
   * builds it first), with no TypeScript loader and none of the test runner's
   * `NODE_OPTIONS` in the process. Default `src`: `src/cli.ts` through tsx.
   */
  readonly entry?: 'src' | 'dist' | undefined;
  /** Options for node itself, before the script (e.g. `--max-old-space-size=96`). */
  readonly nodeArgs?: readonly string[] | undefined;
}

/** Start `mirrorgate serve ...` and resolve once it logs that it is listening. */
export function startCli(args: string[], opts: CliOptions = {}): Promise<{ child: ChildProcess; lines: string[]; url: string; metricsUrl: string }> {
  const script = opts.entry === 'dist' ? ['dist/cli.js'] : ['--import', 'tsx', 'src/cli.ts'];
  const env = opts.entry === 'dist' ? { ...process.env, NODE_OPTIONS: '' } : process.env;
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cli did not start: ${lines.join('\n')}`)), 60_000);
    let partial = '';
    child.stdout?.on('data', (d: Buffer) => {
      const text = partial + d.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) {
        if (l.trim() === '') continue;
        lines.push(l);
        if (l.includes('"mirrorgate listening"')) {
          clearTimeout(timer);
          const parsed = JSON.parse(l) as { url: string; metrics: string };
          resolve({ child, lines, url: parsed.url, metricsUrl: parsed.metrics.replace(/\/metrics$/, '') });
        }
      }
    });
    child.stderr?.on('data', (d: Buffer) => lines.push(d.toString('utf8')));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`cli exited ${code}: ${lines.join('\n')}`));
    });
  });
}

/** Resolves with the exit code (and signal) once the child has exited. */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
