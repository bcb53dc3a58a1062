/**
 * The reflector waits on the timers it is given: a failing list is retried after the
 * backoff it chose, only when that time has passed on the (fake) clock, with jitter
 * from the injected random source. The loopback API answers 500 to the first lists: a
 * fault a real API server cannot be made to show on demand.
 */
import t from 'tap';
import { loadKubeClient } from '../../src/kube/client.js';
import { Reflector } from '../../src/kube/reflector.js';
import { createLogger } from '../../src/logger.js';
import { LogSink } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { kubeconfigFor, startKubeApi } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';

t.test('list failures back off on the injected timers, doubling, jittered by the injected random', async (t) => {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a' } });
  api.onNext({ method: 'GET', path: /^\/api\/v1\/namespaces$/, watch: false, status: 500, times: 2 });
  const client = loadKubeClient({ file: await kubeconfigFor(api) });
  const timers = new FakeTimers();
  timers.randomValue = 1; // the top of the jitter band: 1.2 × the delay
  const lists = (): number => api.requests.filter((r) => r.path === '/api/v1/namespaces' && !r.watch).length;
  const reflector = new Reflector<string>({
    name: 'namespaces',
    path: '/api/v1/namespaces',
    list: async (token, limit) => {
      const list = await client.core.listNamespace({ limit, ...(token !== undefined ? { _continue: token } : {}) });
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '', continue: list.metadata?._continue };
    },
    watch: client.watch,
    keep: (obj) => obj.metadata?.name,
    log: createLogger({ destination: new LogSink() }),
    backoff: { initialMs: 1000, maxMs: 60_000 },
    resyncMs: 0,
    timers,
    clock: timers,
  }).start();
  t.teardown(() => reflector.stop(0));

  await waitFor('the first failed list to schedule its retry', () => timers.delays.length === 1);
  t.same(timers.delays, [1200], 'first retry after the initial backoff, +20% jitter');
  t.equal(lists(), 1);
  timers.advance(1199);
  t.equal(timers.pending, 1, 'the retry still waits 1 ms before its time');
  timers.advance(1);
  t.equal(timers.pending, 0, 'and runs when it is due');
  await waitFor('the second failed list to schedule its retry', () => timers.delays.length === 2);
  t.same(timers.delays, [1200, 2400], 'the delay doubled');
  t.equal(lists(), 2);
  timers.advance(2400);
  await waitFor('the third list to fill the store', () => reflector.synced());
  t.equal(lists(), 3);
  t.equal(reflector.get('team-a'), 'team-a');
});
