/**
 * Reload compilation off the main thread (src/config/compile.ts) with the real worker:
 * the adopted config is the one parseConfig makes, refusals are the same, a worker that
 * runs out of memory or time is a refused reload, and admissions are answered, with the
 * config in force, while a large reload is being adopted. Nothing here is timed: the
 * adoption's yields are the test's own promises.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { compileOffThread, RULES_PER_PART } from '../../src/config/compile.js';
import { ConfigError, parseConfig } from '../../src/config/schema.js';
import { ConfigWatcher, loadConfigFile } from '../../src/config/watch.js';
import { decideRewrite } from '../../src/core/rules.js';
import { review, testApp } from '../support/app.js';

const RICH = `mode: enforce
failurePolicy: Ignore
rules:
  - from: docker.io
    to: [mirror.example.com/dockerhub, backup.example.com/dockerhub]
    verify: true
    copyOnMiss: true
    exclude: [docker.io/library/busybox]
  - from: quay.io
    to: mirror.example.com/quay
    namespaces: [team-a, team-b]
    podSelector: { matchLabels: { app: web } }
  - from: "*.gcr.io"
    to: mirror.example.com/gcr
    namespaceSelector: { matchExpressions: [{ key: tier, operator: In, values: [prod] }] }
exclude: [ghcr.io/acme/tools]
policy:
  allowedRegistries: [mirror.example.com, backup.example.com, "*.pkg.dev"]
pullSecrets:
  - name: mirror-pull
    registries: [mirror.example.com]
    copyFrom: mirrorgate
registries:
  mirror.example.com: { insecure: true }
verification:
  timeoutMs: 800
  cacheSeconds: { present: 60, absent: 5 }
  onUnreachable: deny
  platforms: [linux/amd64, linux/arm64]
report:
  flushSeconds: 30
logLevel: warn
`;

function manyRules(count: number, to: string): string {
  const lines = ['mode: enforce', 'rules:', '  - from: docker.io', `    to: ${to}`];
  for (let i = 0; i < count; i++) lines.push(`  - from: registry-${i}.example.com`, `    to: mirror.example.com/r${i}`);
  return `${lines.join('\n')}\n`;
}

function isDeepFrozen(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return true;
  return Object.isFrozen(v) && Object.values(v).every(isDeepFrozen);
}

t.test('the adopted config is the one parseConfig makes, frozen, its rule index ready', async (t) => {
  for (const text of [RICH, manyRules(3 * RULES_PER_PART + 7, 'mirror.example.com/dockerhub')]) {
    const adopted = await compileOffThread(text, 'cfg.yaml');
    const direct = parseConfig(text, 'cfg.yaml');
    t.strictSame(adopted, direct, 'the same config');
    t.ok(isDeepFrozen(adopted), 'frozen throughout');
    t.equal(adopted.settings.ruleSet, adopted.ruleSet, 'settings share the rule set, as parseConfig makes it');
    for (const image of ['nginx:1.25', 'docker.io/library/busybox:1', 'registry-1.example.com/app:1', 'quay.io/x/y:1', 'ghcr.io/acme/tools:2', 'eu.gcr.io/p/i:1']) {
      t.strictSame(decideRewrite(adopted.ruleSet, image, { namespace: 'team-a', namespaceLabels: { tier: 'prod' }, podLabels: { app: 'web' } }), decideRewrite(direct.ruleSet, image, { namespace: 'team-a', namespaceLabels: { tier: 'prod' }, podLabels: { app: 'web' } }), image);
    }
  }
});

t.test('a refused config: the same problems as parseConfig, long values cut', async (t) => {
  const bad = `mode: nonsense\nlogLevel: "${'v'.repeat(100_000)}"\nrules:\n  - from: docker.io\n`;
  let direct: ConfigError | undefined;
  try {
    parseConfig(bad, 'cfg.yaml');
  } catch (err) {
    direct = err as ConfigError;
  }
  const err = await compileOffThread(bad, 'cfg.yaml').then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, ConfigError);
  const problems = (err as ConfigError).problems;
  t.strictSame(problems.map((p) => p.path), direct?.problems.map((p) => p.path));
  t.ok(problems.every((p) => p.message.length < 1100), 'no problem repeats the 100,000-character value');
  t.match((err as Error).message, /logLevel: must be one of .*…\(\d+ chars\)/);
  await t.rejects(compileOffThread('# nothing but a comment\n', 'cfg.yaml'), /the config is empty/);
  await t.rejects(compileOffThread('rules: [', 'cfg.yaml'), /\(syntax\)/);
});

t.test('a compile that needs more memory than allowed, or more time, is a refused reload', async (t) => {
  await t.rejects(compileOffThread(manyRules(20_000, 'mirror.example.com/d'), 'cfg.yaml', { memoryMb: 16 }), /\(compile\): compiling needs more than 16 MiB of memory/);
  // The deadline fires as soon as it is set: the worker is abandoned.
  let cleared = false;
  const fireAtOnce = (fn: () => void): { clear(): void } => {
    queueMicrotask(fn);
    return { clear: () => (cleared = true) };
  };
  await t.rejects(compileOffThread(RICH, 'cfg.yaml', { setTimer: fireAtOnce, timeoutMs: 5000 }), /compiling took longer than 5 s; abandoned/);
  t.ok(cleared, 'the deadline is cleared once settled');
  // Stopping the watcher abandons a compile in progress.
  const stop = new AbortController();
  const pending = compileOffThread(manyRules(20_000, 'mirror.example.com/d'), 'cfg.yaml', { signal: stop.signal });
  stop.abort();
  await t.rejects(pending, /abandoned: the config watcher stopped/);
});

t.test('admissions are answered, with the config in force, while a large reload is adopted', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mg-compile-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yaml');
  await writeFile(file, 'mode: enforce\nrules:\n  - from: docker.io\n    to: mirror.example.com/dockerhub\n');

  // Each yield of the adoption waits for the test.
  const yields: (() => void)[] = [];
  let yielded: () => void = () => undefined;
  const firstYield = new Promise<void>((resolve) => (yielded = resolve));
  let released = false;
  const pause = (): Promise<void> =>
    released
      ? Promise.resolve()
      : new Promise((resolve) => {
          yields.push(resolve);
          yielded();
        });
  let reloaded = false;
  const watcher = new ConfigWatcher(file, await loadConfigFile(file), { onReload: () => (reloaded = true), onReject: (e) => t.fail(e.message) }, { compile: (text, source) => compileOffThread(text, source, { pause }) });
  t.teardown(() => watcher.stop());
  const { app } = testApp(undefined, { config: watcher });
  const admit = async (): Promise<string> => {
    const res = await app.inject({ method: 'POST', url: '/mutate?timeout=10s', payload: review().body });
    const patch = res.json<{ response: { patch?: string } }>().response.patch;
    return Buffer.from(patch ?? '', 'base64').toString('utf8');
  };

  await writeFile(file, manyRules(5000, 'mirror.example.com/new-dockerhub'));
  const reload = watcher.check();
  await firstYield;
  // The worker has parsed and compiled; the main thread is adopting, part by part.
  for (let i = 0; i < 3; i++) {
    t.match(await admit(), /mirror\.example\.com\/dockerhub\/library\/nginx/, 'answered with the config in force');
    t.notOk(reloaded, 'while the reload is still pending');
    yields.shift()?.();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  // Let the rest go.
  released = true;
  for (const resume of yields.splice(0)) resume();
  await reload;
  t.ok(reloaded, 'the reload completed');
  t.equal(watcher.current().ruleSet.rules.length, 5001);
  t.match(await admit(), /mirror\.example\.com\/new-dockerhub\/library\/nginx/, 'then the new rules apply');
});
