/**
 * The shutdown procedure's order and deadlines, with a fake clock: the report is written
 * before the connection drain and whatever it does, a stuck drain is cut at its deadline,
 * and a report write that hangs never holds the exit.
 */
import t from 'tap';
import { drain } from '../../src/server/drain.js';

/** A manual clock: sleep(ms) resolves when advance() passes its time. */
function fakeClock() {
  let now = 0;
  const waiting: { at: number; resolve: () => void }[] = [];
  return {
    sleep: (ms: number) => new Promise<void>((resolve) => waiting.push({ at: now + ms, resolve })),
    async advance(ms: number): Promise<void> {
      now += ms;
      for (const w of waiting.filter((x) => x.at <= now)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
      // Let the awaiting code run up to its next sleep.
      for (let i = 0; i < 20; i++) await Promise.resolve();
    },
    get now() {
      return now;
    },
  };
}

const log = { info: () => undefined, warn: () => undefined };

t.test('order: delay, report, drain, final report, release', async (t) => {
  const clock = fakeClock();
  const events: string[] = [];
  const done = drain(
    {
      close: async () => void events.push(`close@${clock.now}`),
      cutAll: () => events.push('cut'),
      flush: async (final) => void events.push(`${final ? 'final' : 'first'} flush@${clock.now}`),
      after: async () => void events.push('after'),
    },
    { delayMs: 5000, drainTimeoutMs: 15_000, flushTimeoutMs: 2000, sleep: clock.sleep, log },
  );
  await clock.advance(4999);
  t.same(events, [], 'nothing before the delay is over');
  await clock.advance(1);
  const outcome = await done;
  t.same(events, ['first flush@5000', 'close@5000', 'final flush@5000', 'after']);
  t.same(outcome, { cut: false, flushFailures: 0 });
});

t.test('a stuck client: cut at the drain deadline, the report already written', async (t) => {
  const clock = fakeClock();
  const events: string[] = [];
  let finishClose: () => void = () => undefined;
  const done = drain(
    {
      close: () => new Promise<void>((resolve) => (finishClose = () => {
        events.push(`closed@${clock.now}`);
        resolve();
      })),
      cutAll: () => {
        events.push(`cut@${clock.now}`);
        finishClose();
      },
      flush: async (final) => void events.push(`${final ? 'final' : 'first'} flush@${clock.now}`),
    },
    { delayMs: 1000, drainTimeoutMs: 3000, flushTimeoutMs: 2000, sleep: clock.sleep, log },
  );
  await clock.advance(1000);
  t.same(events, ['first flush@1000'], 'the report is written before the drain waits on anyone');
  await clock.advance(2999);
  t.notOk(events.some((e) => e.startsWith('cut')), 'not cut before the deadline');
  await clock.advance(1);
  const outcome = await done;
  t.same(events, ['first flush@1000', 'cut@4000', 'closed@4000', 'final flush@4000']);
  t.equal(outcome.cut, true);
});

t.test('a report write that hangs or fails never holds the exit', async (t) => {
  const clock = fakeClock();
  let flushes = 0;
  const done = drain(
    {
      close: async () => undefined,
      cutAll: () => undefined,
      flush: (final) => {
        flushes++;
        return final ? Promise.reject(new Error('API down')) : new Promise<void>(() => undefined);
      },
      after: () => new Promise<void>(() => undefined),
    },
    { delayMs: 0, drainTimeoutMs: 15_000, flushTimeoutMs: 2000, sleep: clock.sleep, log },
  );
  await clock.advance(0);
  await clock.advance(2000); // the first write times out
  await clock.advance(2000); // the release step times out
  const outcome = await done;
  t.equal(flushes, 2);
  t.equal(outcome.flushFailures, 2, 'one timed out, one failed');
  t.ok(clock.now <= 4000, `bounded: exit after ${clock.now} ms of fake time`);
});
