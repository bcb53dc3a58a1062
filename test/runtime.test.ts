/**
 * The component runtime: start in order (a failure stops what started, in reverse), a
 * reload that commits to every component or to none with one metric and one log line,
 * degraded reasons collected, stop in reverse, each on its own, once. The components
 * here are the test's own: the runtime is what is under test.
 */
import t from 'tap';
import { validateConfig, type Config } from '../src/config/schema.js';
import { Runtime, type Component, type Prepared } from '../src/runtime.js';

interface Logged {
  level: 'info' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

function rig(initial: Config = validateConfig({ mode: 'audit' })) {
  const events: string[] = [];
  const logs: Logged[] = [];
  const counts = { success: 0, failure: 0 };
  const runtime = new Runtime(initial, {
    log: {
      info: (obj, msg) => logs.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
      error: (obj, msg) => logs.push({ level: 'error', obj: obj as Record<string, unknown>, msg }),
    },
    reloads: { inc: ({ result }) => void counts[result]++ },
  });
  const component = (name: string, extra: Partial<Component> = {}): Component =>
    runtime.add({
      name,
      start: () => void events.push(`start ${name}`),
      stop: () => void events.push(`stop ${name}`),
      ...extra,
    });
  return { runtime, events, logs, counts, component };
}

t.test('start in order, stop in reverse, once', async (t) => {
  const { runtime, events, component } = rig();
  component('a');
  component('b');
  component('c');
  await runtime.start();
  t.same(events, ['start a', 'start b', 'start c']);
  await Promise.all([runtime.stop(), runtime.stop()]);
  t.same(events.slice(3), ['stop c', 'stop b', 'stop a'], 'reverse order, and a second stop() does nothing more');
});

t.test('start() again starts only what was added since', async (t) => {
  const { runtime, events, component } = rig();
  component('a');
  await runtime.start();
  component('b');
  await runtime.start();
  t.same(events, ['start a', 'start b']);
});

t.test('a start that fails stops what started before it, in reverse, and the error comes out', async (t) => {
  const { runtime, events, component } = rig();
  component('a');
  component('b');
  component('broken', { start: () => Promise.reject(new Error('port in use')) });
  component('never');
  await t.rejects(runtime.start(), /port in use/);
  t.same(events, ['start a', 'start b', 'stop b', 'stop a'], 'the failed one and those after it are never stopped (never started)');
});

t.test('a stop that throws is logged; the others still stop', async (t) => {
  const { runtime, events, logs, component } = rig();
  component('a');
  component('b', { stop: () => Promise.reject(new Error('socket gone')) });
  component('c');
  await runtime.start();
  await runtime.stop();
  t.same(events.slice(3), ['stop c', 'stop a']);
  t.match(logs, [{ level: 'error', obj: { component: 'b' }, msg: 'component failed to stop cleanly' }]);
});

t.test('reload: every component prepares, then every one commits; the config is swapped with them', async (t) => {
  const { runtime, events, logs, counts, component } = rig();
  const seen: string[] = [];
  const preparing = (name: string) => (next: Config, current: Config): Prepared => {
    events.push(`prepare ${name} ${current.mode}->${next.mode}`);
    return { commit: () => void (events.push(`commit ${name}`), seen.push(runtime.config.current().mode)) };
  };
  component('a', { prepare: preparing('a') });
  component('b', { prepare: async (next, current) => preparing('b')(next, current) });
  await runtime.start();
  events.length = 0;
  const outcome = await runtime.reload(validateConfig({ mode: 'enforce' }), 'config.yaml changed');
  t.same(outcome, { ok: true });
  t.same(events, ['prepare a audit->enforce', 'prepare b audit->enforce', 'commit a', 'commit b'], 'all prepared before any commits');
  t.same(seen, ['enforce', 'enforce'], 'the admission config is committed first');
  t.equal(runtime.config.current().mode, 'enforce');
  t.same(counts, { success: 1, failure: 0 });
  t.match(logs, [{ level: 'info', obj: { reason: 'config.yaml changed', mode: 'enforce' }, msg: 'config reloaded' }]);
});

t.test('reload: one component with a problem, or one that throws, and nothing changes anywhere', async (t) => {
  for (const failing of [
    { name: 'with problems', prepare: (): Prepared => ({ problems: ['registries.r.example.ca: cannot read /missing.crt'] }), want: /^verification: registries\.r\.example\.ca: cannot read/ },
    { name: 'throwing', prepare: (): Prepared => { throw new Error('exploded'); }, want: /^verification: exploded$/ },
  ]) {
    t.test(failing.name, async (t) => {
      const { runtime, events, logs, counts, component } = rig();
      component('a', { prepare: () => ({ commit: () => void events.push('commit a') }) });
      component('verification', { prepare: failing.prepare });
      component('c', { prepare: () => ({ commit: () => void events.push('commit c') }) });
      await runtime.start();
      const outcome = await runtime.reload(validateConfig({ mode: 'enforce' }), 'config.yaml changed');
      t.equal(outcome.ok, false);
      t.match(outcome, { problems: [failing.want] });
      t.notOk(events.some((e) => e.startsWith('commit')), 'no component committed');
      t.equal(runtime.config.current().mode, 'audit', 'the admission config stays');
      t.same(counts, { success: 0, failure: 1 });
      t.equal(logs.length, 1, 'one log line');
      t.match(logs[0], { level: 'error', obj: { reason: 'config.yaml changed', problems: [failing.want] }, msg: 'config rejected; the last good config stays in force' });
    });
  }
});

t.test('reloads run one after the other, in order', async (t) => {
  const { runtime, events, component } = rig();
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  component('slow', {
    prepare: async (next) => {
      events.push(`prepare ${next.mode}`);
      if (next.mode === 'enforce') await gate;
      return { commit: () => void events.push(`commit ${next.mode}`) };
    },
  });
  await runtime.start();
  events.length = 0;
  const first = runtime.reload(validateConfig({ mode: 'enforce' }), 'first');
  const second = runtime.reload(validateConfig({ mode: 'audit' }), 'second');
  await new Promise((r) => setImmediate(r));
  t.same(events, ['prepare enforce'], 'the second waits for the first');
  release();
  await Promise.all([first, second]);
  t.same(events, ['prepare enforce', 'commit enforce', 'prepare audit', 'commit audit']);
  t.equal(runtime.config.current().mode, 'audit', 'the last one asked is in force');
});

t.test('degraded: the started components\' reasons, in start order; a throwing one is a reason too', async (t) => {
  const { runtime, component } = rig();
  component('a', { degraded: () => ['a is slow'] });
  component('b', { degraded: () => { throw new Error('b cannot tell'); } });
  component('c', { degraded: () => [] });
  t.same(runtime.degraded(), [], 'nothing before start');
  await runtime.start();
  t.same(runtime.degraded(), ['a is slow', 'b: b cannot tell']);
});

t.test('rejected(): a config that never reached the components is counted and logged once', async (t) => {
  const { runtime, logs, counts } = rig();
  runtime.rejected('config.yaml changed', ['rules[0].to: not a registry host']);
  t.same(counts, { success: 0, failure: 1 });
  t.match(logs, [{ level: 'error', obj: { reason: 'config.yaml changed', problems: ['rules[0].to: not a registry host'] } }]);
});

t.test('no reload once stopping', async (t) => {
  const { runtime, counts, component } = rig();
  component('a', { prepare: () => ({ commit: () => undefined }) });
  await runtime.start();
  await runtime.stop();
  t.same(await runtime.reload(validateConfig({ mode: 'enforce' }), 'late'), { ok: false, problems: ['shutting down'] });
  t.same(counts, { success: 0, failure: 0 });
});
