/**
 * Everything the bench starts that must not outlive it, and CPU pinning.
 *
 * One {@link Processes} owns the child processes, the temporary directory and the
 * last-resort cleanups of things not spawned here (the registry): they are always cleaned
 * up, also on Ctrl-C and on a crash of this process (the 'exit' handler runs synchronously
 * either way).
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

export function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

export class Processes {
  readonly #children = new Set<ChildProcess>();
  #tmpDir: string | undefined;
  /** Synchronous last-resort cleanups of things not spawned here (the registry). */
  readonly #lastResort = new Set<() => void>();
  /** The Node.js binary the servers run on (see resolveNode); this process's until set. */
  node: string = process.execPath;

  /** Cleans up on exit, SIGINT and SIGTERM from now on. */
  constructor() {
    process.on('exit', () => this.cleanupSync());
    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(signal, () => {
        process.stderr.write(`\nbench: ${signal}, stopping servers and removing temporary files\n`);
        this.cleanupSync();
        process.exit(code);
      });
    }
  }

  /** The temporary directory, removed by the cleanup. */
  set tmpDir(dir: string) {
    this.#tmpDir = dir;
  }

  track(child: ChildProcess): ChildProcess {
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  cleanupSync(): void {
    for (const child of this.#children) if (alive(child)) child.kill('SIGKILL');
    this.#children.clear();
    for (const f of this.#lastResort) f();
    this.#lastResort.clear();
    if (this.#tmpDir !== undefined) {
      rmSync(this.#tmpDir, { recursive: true, force: true });
      this.#tmpDir = undefined;
    }
  }

  /**
   * Until the returned function is called, an abrupt exit still stops the registry that
   * test/support started in `dir` (by its pid) and removes `dir`.
   */
  guardRegistry(dir: string): () => void {
    // The registry's config file, which its command line names.
    const pid = childPidWithArg(path.join(dir, 'config.yml'));
    const kill = (): void => {
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      rmSync(dir, { recursive: true, force: true });
    };
    this.#lastResort.add(kill);
    return () => void this.#lastResort.delete(kill);
  }
}

/** Stop gracefully, then for good after `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
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

// CPU pinning: the server under test on CPU 0, every load generator (wrk and this
// process, which runs the open-loop and UPDATE clients) on CPU 1.

export interface Pinning {
  readonly server: string[];
  readonly load: string[];
}

export function setUpPinning(wanted: boolean): Pinning | undefined {
  if (!wanted) return undefined;
  const works = (cpu: string): boolean => spawnSync('taskset', ['-c', cpu, 'true'], { stdio: 'ignore' }).status === 0;
  if (!works('0') || !works('1')) return undefined;
  // -a: every thread of this process (libuv pool, V8 helpers), not just the main one.
  const self = spawnSync('taskset', ['-a', '-c', '-p', '1', String(process.pid)], { stdio: 'ignore' });
  if (self.status !== 0) return undefined;
  return { server: ['taskset', '-c', '0'], load: ['taskset', '-c', '1'] };
}

export function command(prefix: readonly string[] | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  if (prefix === undefined || prefix.length === 0) return [cmd, [...args]];
  const [first, ...rest] = prefix;
  return [first ?? cmd, [...rest, cmd, ...args]];
}

/**
 * The Node.js the servers run on: `--node`, else the image's runtime (Node.js 24, the
 * binary scripts/node24.sh pins and installs once; `NODE24=/path` names another), else
 * this process's node with a note. The bench measures what ships, on both servers alike.
 */
export function resolveNode(wanted: string | undefined, root: string): { node: string; note?: string } {
  if (wanted !== undefined) return { node: wanted };
  const r = spawnSync('bash', [path.join(root, 'scripts', 'node24.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const found = r.status === 0 ? r.stdout.trim() : '';
  if (found !== '') return { node: found };
  return { node: process.execPath, note: `no Node.js 24 (scripts/node24.sh failed): both servers run on ${process.version}, not the image's runtime` };
}

/** `node --version` of a binary. */
export function nodeVersion(node: string): string {
  const r = spawnSync(node, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}
