/**
 * The servers under test: the baseline (a transpiled bench/baseline-server.ts) and
 * mirrorgate (the built CLI) with their configs and TLS files, started pinned and waited
 * for until ready.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import ts from 'typescript';
import { createCa, createServingCert } from '../src/certs.js';
import { BENCH_DIR, HarnessError, ROOT, sleep, tail } from './harness.js';
import { MIRROR_RULES } from './mirror.js';
import type { ServerKind } from './options.js';
import { alive, command, type Pinning, type Processes } from './processes.js';

export interface Tls {
  readonly ca: string;
  readonly certFile: string;
  readonly keyFile: string;
}

export interface RunningServer {
  readonly kind: ServerKind;
  /** The kind, or which instance of it (log file name, messages). */
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  readonly logFile: string;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export function getStatus(port: number, urlPath: string, ca: string): Promise<number> {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: urlPath, ca, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/**
 * V8's heap as in the Deployment's container, for both servers. Node sizes the heap from
 * the cgroup's memory limit (256 Mi: an old generation of 128 MB, and a young generation
 * scaled from it); a bench machine has no such limit, so V8 would size both from the host's
 * memory (on Node 24 that doubled peak RSS, baseline included) and collect far later than
 * in a pod. test/server/memory.test.ts runs the webhook the same way.
 */
export const POD_HEAP = ['--max-old-space-size=128'] as const;

export async function startServer(
  procs: Processes,
  kind: ServerKind,
  args: string[],
  port: number,
  tls: Tls,
  dir: string,
  pin: Pinning | undefined,
  name: string = kind,
): Promise<RunningServer> {
  const logFile = path.join(dir, `${name}.log`);
  // Output goes to a file, not to a pipe this process would have to drain on the load CPU.
  const fd = openSync(logFile, 'a');
  const [cmd, cmdArgs] = command(pin?.server, procs.node, [...POD_HEAP, ...args]);
  const child = procs.track(spawn(cmd, cmdArgs, { cwd: ROOT, stdio: ['ignore', fd, fd] }));
  closeSync(fd);
  const started = performance.now();
  while (performance.now() - started < 30_000) {
    if (!alive(child)) throw new HarnessError(`${name} exited during startup (code ${String(child.exitCode ?? child.signalCode)}):\n${tail(logFile)}`);
    if ((await getStatus(port, '/readyz', tls.ca)) === 200) return { kind, name, port, child, logFile };
    await sleep(100);
  }
  throw new HarnessError(`${name} not ready on port ${port} after 30 s:\n${tail(logFile)}`);
}

/** The baseline runs as plain `node` on a transpiled copy: no TypeScript loader in the measured process. */
export function baselineScript(dir: string): string {
  const source = readFileSync(path.join(BENCH_DIR, 'baseline-server.ts'), 'utf8');
  const out = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
  const file = path.join(dir, 'baseline-server.mjs');
  writeFileSync(file, out.outputText);
  return file;
}

/** How a verifying mirrorgate reaches its mirror, and how long it keeps answers. */
export interface VerifyConfig {
  /** `127.0.0.1:PORT` (the counting proxy in front of the registry). */
  readonly mirrorHost: string;
  /** Omitted: the defaults (present 3600 s, absent 30 s). */
  readonly cacheSeconds?: { readonly present: number; readonly absent: number };
}

/**
 * The mirrorgate config: every third-party registry of the mix has a mirror rule, under a
 * registry policy. With `verify`, the same rules to the bench's registry with `verify: true`;
 * the policy also allows `mirror.example.com`, where some of the mix's images already are.
 */
export function benchConfig(verify?: VerifyConfig): string {
  const host = verify?.mirrorHost ?? 'mirror.example.com';
  const lines = [
    verify
      ? '# Written by bench/run.ts: the mirror rules of the bench, checked against a real registry (verify: true).'
      : '# Written by bench/run.ts: every third-party registry of the mix has a mirror rule.',
    'mode: enforce',
    'rules:',
  ];
  for (const r of MIRROR_RULES) {
    lines.push(`  - from: ${r.from}`, `    to: ${host}/${r.path}`);
    if (verify) lines.push('    verify: true');
  }
  lines.push('policy:');
  if (verify) {
    lines.push(
      `  allowedRegistries: ["${host}", mirror.example.com, registry.k8s.io]`,
      'registries:',
      `  "${host}": {insecure: true}`,
      'verification:',
      '  timeoutMs: 500',
    );
    if (verify.cacheSeconds) lines.push(`  cacheSeconds: {present: ${verify.cacheSeconds.present}, absent: ${verify.cacheSeconds.absent}}`);
  } else {
    lines.push('  allowedRegistries: [mirror.example.com, registry.k8s.io]');
  }
  lines.push('logLevel: info', '');
  return lines.join('\n');
}

export function baselineArgs(port: number, tls: Tls, dir: string): string[] {
  return [baselineScript(dir), '--host', '127.0.0.1', '--port', String(port), '--cert', tls.certFile, '--key', tls.keyFile];
}

/** `serve` with the config written to `<dir>/<name>.yaml`; `metricsPort` 0: any free port (not read). */
export function mirrorgateArgs(name: string, config: string, cli: string, port: number, metricsPort: number, tls: Tls, dir: string): string[] {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, config);
  return [
    cli, 'serve', '--config', file, '--no-kube', '--host', '127.0.0.1', '--port', String(port),
    '--metrics-port', String(metricsPort), '--certs-dir', path.join(dir, 'certs'), '--tls-cert', tls.certFile, '--tls-key', tls.keyFile,
    '--shutdown-delay', '0s',
  ];
}

export function makeTls(dir: string): Tls {
  const ca = createCa({ commonName: 'mirrorgate-bench-ca' });
  const serving = createServingCert(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const certDir = path.join(dir, 'certs');
  mkdirSync(certDir, { recursive: true });
  const certFile = path.join(certDir, 'tls.crt');
  const keyFile = path.join(certDir, 'tls.key');
  writeFileSync(certFile, serving.cert, { mode: 0o600 });
  writeFileSync(keyFile, serving.key, { mode: 0o600 });
  writeFileSync(path.join(certDir, 'ca.crt'), ca.cert, { mode: 0o600 });
  return { ca: ca.cert, certFile, keyFile };
}

/** Peak resident set size (VmHWM) in MB, from /proc; undefined where there is no /proc. */
export function peakRssMB(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}
