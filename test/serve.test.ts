/**
 * The webhook as it runs: `serve()` with real TLS on 127.0.0.1, certificates created
 * once and reused, the metrics port, and SIGTERM-style shutdown that keeps answering
 * while endpoints update. The CLI is also started as a process and stopped by SIGTERM.
 */
import { spawn } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { join } from 'node:path';
import t from 'tap';
import { serve, type Running } from '../src/serve.js';
import { LogSink, review } from './support/app.js';
import { getResponse, postJson } from './support/http.js';
import { SERVE_TEST_CONFIG, serveOptions, tempDir } from './support/serve.js';
import { startCli } from './support/cli.js';
import { FakeTimers } from './support/fake-timers.js';
import { sleepOn } from '../src/ports.js';

const CONFIG = SERVE_TEST_CONFIG;


async function start(
  t: { teardown(fn: () => unknown): void },
  dir: string,
  shutdownDelayMs = 200,
  shutdownSleep?: (ms: number) => Promise<void>,
): Promise<{ running: Running; ca: string; logs: LogSink }> {
  const configPath = join(dir, 'config.yaml');
  await writeFile(configPath, CONFIG);
  const logs = new LogSink();
  const running = await serve(serveOptions(dir, { configPath, shutdownDelayMs, shutdownSleep, logDestination: logs }));
  t.teardown(() => running.shutdown('test over'));
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  return { running, ca, logs };
}

t.test('serves /mutate over TLS with created certificates, and metrics over HTTP', async (t) => {
  const dir = await tempDir(t);
  const { running, ca, logs } = await start(t, dir);
  t.match(running.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const { uid, body } = review();
  const res = await postJson(`${running.url}/mutate?timeout=10s`, ca, body);
  t.equal(res.status, 200);
  t.equal(res.json.response.uid, uid);
  t.equal(res.json.response.patchType, 'JSONPatch');
  t.equal((await getResponse(`${running.url}/readyz`, ca)).status, 200);
  const metrics = await getResponse(`${running.metricsUrl}/metrics`);
  t.match(metrics.body, /mirrorgate_admission_requests_total\{operation="create",result="patched"\} 1/);
  t.match(metrics.body, /process_cpu_user_seconds_total/, 'Node default metrics');
  for (const f of ['ca.crt', 'tls.crt', 'tls.key']) {
    t.equal((await stat(join(dir, 'certs', f))).mode & 0o777, 0o600, `${f} is 0600`);
  }
  t.equal(logs.find('mirrorgate listening').length, 1);
  t.match(logs.find('admission')[0], { uid, decision: 'patched' });
});

t.test('certificates are created once and reused on the next start', async (t) => {
  const dir = await tempDir(t);
  const first = await start(t, dir);
  const crt = await readFile(join(dir, 'certs', 'tls.crt'), 'utf8');
  await first.running.shutdown('restart');
  const second = await start(t, dir);
  t.equal(await readFile(join(dir, 'certs', 'tls.crt'), 'utf8'), crt, 'same certificate');
  t.equal(second.logs.find('reusing certificates').length, 1);
});

t.test('shutdown: not ready at once, keeps serving during the delay, then closes', async (t) => {
  const dir = await tempDir(t);
  // The delay ends when the test says, not after 600 ms of real time: on a busy machine
  // the 20 requests below could otherwise outlast it and meet a closed server.
  const timers = new FakeTimers();
  const { running, ca } = await start(t, dir, 600, (ms) => sleepOn(timers, ms));
  const agent = new Agent({ keepAlive: true, ca });
  t.teardown(() => agent.destroy());
  await postJson(`${running.url}/mutate`, ca, review().body, agent);
  const done = running.shutdown('SIGTERM');
  const ready = await getResponse(`${running.url}/readyz`, ca);
  t.equal(ready.status, 503, 'readiness false at once');
  t.match(ready.body, /shutting down/);
  // Requests during the delay, on the kept-alive connection and on new ones, all succeed.
  const during = await Promise.all(Array.from({ length: 20 }, (_, i) => postJson(`${running.url}/mutate`, ca, review().body, i % 2 === 0 ? agent : undefined)));
  t.ok(during.every((r) => r.status === 200 && r.json.response.allowed === true), 'all answered during the shutdown delay');
  t.equal(timers.delays[0], 600, 'the drain waits the shutdown delay first');
  timers.advance(600);
  await done;
  await t.rejects(postJson(`${running.url}/mutate`, ca, review().body), 'closed after the drain');
});

t.test('invalid config: serve throws a ConfigError naming the field', async (t) => {
  const dir = await tempDir(t);
  const configPath = join(dir, 'bad.yaml');
  await writeFile(configPath, 'mode: enforce\nrules:\n  - from: docker.io\n    to: "not a host"\n');
  await t.rejects(
    serve(serveOptions(dir, { configPath, certsDir: join(dir, 'c'), serviceName: 's', namespace: 'n' })),
    /rules\[0\]\.to: "not a host" contains whitespace/,
  );
});

t.test('the CLI exits 0 on SIGTERM after draining', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const { child, url, lines } = await startCli(['serve', '--config', join(dir, 'config.yaml'), '--no-kube', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--certs-dir', join(dir, 'certs'), '--shutdown-delay', '100ms']);
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  const res = await postJson(url, ca, review().body);
  t.equal(res.status, 200);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exit code 0');
  t.ok(lines.some((l) => l.includes('"shut down"')), 'logged the shutdown');
});

t.test('make run: Ctrl-C (SIGINT) stops it without the production shutdown delay', async (t) => {
  // The flags `make run` passes, as make prints them (ports 0 and a temporary folder here).
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const printed = await new Promise<string>((resolve, reject) => {
    const make = spawn('make', ['-s', '-n', 'run', `CONFIG=${join(dir, 'config.yaml')}`, 'PORT=0', 'METRICS_PORT=0', `CERTS_DIR=${join(dir, 'certs')}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    make.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    make.on('error', reject);
    make.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`make -n run: exit ${String(code)}`))));
  });
  const line = printed.split('\n').find((l) => l.startsWith('node dist/cli.js serve ')) ?? '';
  const args = line.slice('node dist/cli.js '.length).split(' ');
  t.ok(args.includes('--shutdown-delay') && args[args.indexOf('--shutdown-delay') + 1] === '0s', line);
  const { child, lines } = await startCli(args);
  const exitCode = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  t.equal(await exitCode, 0, 'exit code 0');
  const stopping = lines.find((l) => l.includes('"shutting down: not ready, still serving while endpoints update"'));
  t.match(JSON.parse(stopping ?? '{}'), { reason: 'SIGINT', delayMs: 0 }, 'no delay to wait out');
});

t.test('the CLI: usage and config errors exit 2 with a message', async (t) => {
  const run = (args: string[]): Promise<{ code: number | null; err: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
      child.on('exit', (code) => resolve({ code, err }));
    });
  const dir = await tempDir(t);
  await writeFile(join(dir, 'bad.yaml'), 'mode: strict\nrules: [{from: docker.io, to: m.example.com, extra: 1}]\n');
  const bad = await run(['serve', '--config', join(dir, 'bad.yaml'), '--no-kube']);
  t.equal(bad.code, 2);
  t.match(bad.err, /mode: must be one of enforce, audit/);
  t.match(bad.err, /rules\[0\]\.extra: unknown key/);
  const usage = await run(['serve', '--bogus']);
  t.equal(usage.code, 2);
  t.match(usage.err, /Unknown option '--bogus'/);
  const unknown = await run(['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.err, /unknown command "frobnicate"/);
});

t.test('mirrorgate rewrite prints each decision', async (t) => {
  const { main } = await import('../src/cli.js');
  const dir = await tempDir(t);
  await writeFile(join(dir, 'c.yaml'), CONFIG);
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
  t.equal(await main(['rewrite', '--config', join(dir, 'c.yaml'), 'nginx:1.14.2'], io), 0);
  t.match(out.join('\n'), 'nginx:1.14.2 -> mirror.example.com/dockerhub/library/nginx:1.14.2');
  out.length = 0;
  t.equal(await main(['rewrite', '--config', join(dir, 'c.yaml'), 'quay.io/x/y:1', 'Bad:Ref'], io), 1, 'exit 1 when denied or invalid');
  t.match(out.join('\n'), /quay.io\/x\/y:1: unchanged \(no-rule\)\n {2}policy: denied: "quay.io\/x\/y:1" is not from an allowed registry/);
  t.match(out.join('\n'), /Bad:Ref: invalid/);
  out.length = 0;
  t.equal(await main(['rewrite', '--config', join(dir, 'c.yaml'), '--output', 'json', 'nginx'], io), 0);
  t.same(JSON.parse(out.join('\n'))[0].result, 'mirror.example.com/dockerhub/library/nginx');
  out.length = 0;
  t.equal(await main(['rewrite', '--config', join(dir, 'c.yaml'), '--output', 'json', 'nginx', 'quay.io/x/y:1', 'Bad:Ref'], io), 1);
  const [rewritten, unchanged, invalid] = JSON.parse(out.join('\n')) as Record<string, unknown>[];
  t.match(rewritten, { decision: 'rewrite', reason: null, rule: /^rules\[0\] docker\.io -> /, policy: 'allowed', policyMessage: null });
  t.match(unchanged, { decision: 'unchanged', reason: 'no-rule', detail: null, result: 'quay.io/x/y:1', policy: 'denied', policyMessage: /is not from an allowed registry/ }, 'decision and reason are separate codes, prose apart');
  t.match(invalid, { decision: 'invalid', reason: 'invalid-reference', detail: /./ });
  t.equal(await main(['rewrite', '--config', join(dir, 'c.yaml')], io), 2, 'no image is a usage error');
});
