/**
 * mirrorgate as its own process (`node dist/cli.js serve`), as a cluster runs it: its
 * Kubernetes credentials are a kubeconfig file, so against a real API server it has
 * exactly the rights RBAC gives that identity. Loopback only; ports chosen by the OS.
 * Needs `npm run build` (make test builds first).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli.js');

export interface MirrorgateProcess {
  /** https://127.0.0.1:PORT (the webhook; POST /mutate). */
  readonly url: string;
  /** http://127.0.0.1:PORT (metrics, /report). */
  readonly metricsUrl: string;
  readonly child: ChildProcess;
  /** Everything it wrote so far (JSON log lines and CLI messages). */
  output(): string;
  /** SIGTERM and wait for the exit; resolves the exit code. */
  stop(): Promise<number | null>;
}

export interface StartOptions {
  readonly readyTimeoutMs?: number;
  /** The webhook port (default: one the OS picks). */
  readonly port?: number;
  /** Added to the environment (e.g. POD_NAME, the replica's report key). */
  readonly env?: Readonly<Record<string, string>>;
}

/** Start `mirrorgate serve` with `args` (plus --host/--port/--metrics-port on loopback). */
export async function startMirrorgate(args: string[], opts: StartOptions = {}): Promise<MirrorgateProcess> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const child = spawn(process.execPath, [CLI, 'serve', '--host', '127.0.0.1', '--port', String(opts.port ?? 0), '--metrics-port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const listening = new Promise<{ url: string; metricsUrl: string }>((resolve, reject) => {
    const onData = (c: Buffer): void => {
      out += c.toString('utf8');
      // The log line serve writes once both servers listen.
      const m = /"url":"(https:\/\/127\.0\.0\.1:\d+)\/mutate","metrics":"(http:\/\/127\.0\.0\.1:\d+)\/metrics"[^\n]*"msg":"mirrorgate listening"/.exec(out);
      if (m) resolve({ url: m[1] as string, metricsUrl: m[2] as string });
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    void exited.then((code) => reject(new Error(`mirrorgate exited (${String(code)}) before listening:\n${out.slice(-8000)}`)));
    const timer = setTimeout(() => reject(new Error(`mirrorgate not listening after ${(opts.readyTimeoutMs ?? 60_000) / 1000} s:\n${out.slice(-8000)}`)), opts.readyTimeoutMs ?? 60_000);
    timer.unref();
  });
  let where: { url: string; metricsUrl: string };
  try {
    where = await listening;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    ...where,
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}
