import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError } from '../../src/config/schema.js';
import { ConfigWatcher, loadConfigFile } from '../../src/config/watch.js';
import { FakeTimers } from '../support/fake-timers.js';

async function tempConfig(t: { teardown(fn: () => unknown): void }, text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yaml');
  await writeFile(file, text);
  return file;
}

/**
 * Replace the file by a rename, as a ConfigMap volume update does: a write in place can be
 * read between its truncation and its data (an empty document, rightly refused), which on
 * a busy machine made the rejection counted below the wrong one.
 */
async function replaceFile(file: string, text: string): Promise<void> {
  const next = `${file}.new`;
  await writeFile(next, text);
  await rename(next, file);
}

function until(cond: () => boolean, ms = 60_000): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() - start > ms) reject(new Error('condition not met in time'));
      else setTimeout(tick, 20);
    };
    tick();
  });
}

t.test('loadConfigFile: unreadable file is a ConfigError naming the file', async (t) => {
  await t.rejects(loadConfigFile(join(tmpdir(), 'does-not-exist-mg.yaml')), ConfigError);
  await t.rejects(loadConfigFile(join(tmpdir(), 'does-not-exist-mg.yaml')), /does-not-exist-mg.yaml/);
});

t.test('reloads a valid change, rejects an invalid one and keeps the last good config', async (t) => {
  const file = await tempConfig(t, 'mode: enforce\n');
  const reloaded: string[] = [];
  const rejected: string[] = [];
  const timers = new FakeTimers();
  const w = new ConfigWatcher(file, await loadConfigFile(file), {
    onReload: (c) => reloaded.push(c.mode),
    onReject: (e) => rejected.push(e.message),
  }, { intervalMs: 50, debounceMs: 100, timers }).start();
  t.teardown(() => w.stop());
  /** The file changed: once a change event started the debounce, let it pass. */
  const debounced = async (): Promise<void> => {
    await until(() => timers.pending > 0);
    timers.advance(99);
    t.ok(timers.pending > 0, 'still waiting out the quiet time');
    timers.advance(1);
    t.equal(timers.pending, 0, 'the read began once it passed');
  };

  await replaceFile(file, 'mode: audit\n');
  await debounced();
  await until(() => reloaded.length === 1);
  t.equal(w.current().mode, 'audit');

  await replaceFile(file, 'mode: nonsense\n');
  await debounced();
  await until(() => rejected.length === 1);
  t.match(rejected[0], /mode: must be one of enforce, audit/);
  t.equal(w.current().mode, 'audit', 'last good config stays in force');

  // A ConfigMap volume update: the file is replaced by a rename, not written in place.
  const next = `${file}.new`;
  await writeFile(next, 'mode: enforce\n');
  await rename(next, file);
  await debounced();
  await until(() => reloaded.length === 2);
  t.equal(w.current().mode, 'enforce');
  t.equal(reloaded.length + rejected.length, 3, 'each change read once');
});

t.test('an emptied file on reload is rejected: the last good policy stays', async (t) => {
  const file = await tempConfig(t, 'mode: enforce\npolicy:\n  allowedRegistries: [mirror.example.com]\n');
  const rejected: string[] = [];
  const w = new ConfigWatcher(file, await loadConfigFile(file), { onReload: () => t.fail('must not reload'), onReject: (e) => rejected.push(e.message) }, { intervalMs: 50, debounceMs: 10 });
  for (const text of ['', '  \n', '# only a comment\n']) {
    await writeFile(file, text);
    await w.check();
  }
  t.equal(rejected.length, 3);
  for (const m of rejected) t.match(m, /the config is empty/);
  t.ok(w.current().policy !== undefined, 'the policy is still in force');
});

t.test('loadConfigFile: an empty file is refused at start', async (t) => {
  const file = await tempConfig(t, '\n');
  await t.rejects(loadConfigFile(file), /the config is empty/);
});
