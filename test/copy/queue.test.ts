import t from 'tap';
import { decodeReview, evaluate } from '../../src/core/admission.js';
import { parseReference, type ImageReference } from '../../src/core/reference.js';
import { validateConfig } from '../../src/config/schema.js';
import { copyOnMissObserver } from '../../src/copy/copy-on-miss.js';
import { CopyError, type CopyResult } from '../../src/copy/copier.js';
import { CopyQueue, type CopyFn, type CopyOutcome } from '../../src/copy/queue.js';
import { createMetrics } from '../../src/metrics.js';
import { review } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';

function ref(s: string): ImageReference {
  const p = parseReference(s);
  if (!p.ok) throw new Error(p.reason);
  return p.ref;
}

function result(target: ImageReference, bytesSent = 100): CopyResult {
  return {
    source: 'src',
    target: `${target.registry}/${target.repository}`,
    digest: 'sha256:' + 'a'.repeat(64),
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    bytesSent,
    blobsSent: 1,
    blobsSkipped: 0,
    blobsMounted: 0,
    manifests: 2,
    manifestsSkipped: 0,
  };
}

/** A copy function whose calls wait until the test releases them. */
function controlled(): { fn: CopyFn; calls: { target: string; release(err?: Error): void }[]; running: number; maxRunning: number } {
  const state = {
    calls: [] as { target: string; release(err?: Error): void }[],
    running: 0,
    maxRunning: 0,
    fn: (async (_source, target) => {
      state.running++;
      state.maxRunning = Math.max(state.maxRunning, state.running);
      try {
        await new Promise<void>((resolve, reject) => {
          state.calls.push({ target: `${target.registry}/${target.repository}`, release: (err) => (err ? reject(err) : resolve()) });
        });
        return result(target);
      } finally {
        state.running--;
      }
    }) as CopyFn,
  };
  return state;
}

async function metric(m: ReturnType<typeof createMetrics>, name: string): Promise<string> {
  const text = await m.registry.metrics();
  return text.split('\n').filter((l) => l.startsWith(name)).join('\n');
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Turns of the event loop until `cond` holds (the copies here are in memory: a few turns). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await tick();
  }
  throw new Error('condition not met');
}

void t.test('CopyQueue', async (t) => {
  t.test('one copy per image at a time: a duplicate is not queued again', async (t) => {
    const c = controlled();
    const metrics = createMetrics({ defaultMetrics: false });
    const q = new CopyQueue({ copy: c.fn, metrics });
    t.equal(q.enqueue(ref('docker.io/library/nginx:1'), ref('mirror.example.com/dh/library/nginx:1')), 'queued');
    t.equal(q.enqueue(ref('docker.io/library/nginx:1'), ref('mirror.example.com/dh/library/nginx:1')), 'duplicate');
    await tick();
    t.equal(c.calls.length, 1);
    t.equal(q.enqueue(ref('nginx:1'), ref('mirror.example.com/dh/library/nginx:1')), 'duplicate', 'while running too');
    c.calls[0]!.release();
    await q.idle();
    t.equal(q.enqueue(ref('nginx:1'), ref('mirror.example.com/dh/library/nginx:1')), 'recent', 'just copied: the cooldown holds it');
    t.match(await metric(metrics, 'mirrorgate_copies_total'), /result="success"} 1/);
    t.match(await metric(metrics, 'mirrorgate_copy_bytes_total'), /mirrorgate_copy_bytes_total 100/);
  });

  t.test('bounded concurrency and a bounded backlog that drops with a metric', async (t) => {
    const c = controlled();
    const metrics = createMetrics({ defaultMetrics: false });
    const q = new CopyQueue({ copy: c.fn, metrics, concurrency: 2, maxQueued: 2 });
    const answers = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => q.enqueue(ref(`docker.io/x/${n}:1`), ref(`mirror.example.com/x/${n}:1`)));
    // Two start at once (the pump runs synchronously), two wait, the rest are dropped.
    t.same(answers, ['queued', 'queued', 'queued', 'queued', 'dropped', 'dropped']);
    await tick();
    t.equal(c.running, 2);
    t.same(q.stats(), { queued: 2, running: 2, retrying: 0, succeeded: 0, failed: 0, dropped: 2 });
    while (c.calls.length > 0 || q.stats().running > 0) {
      for (const call of c.calls.splice(0)) call.release();
      await tick();
    }
    await q.idle();
    t.equal(c.maxRunning, 2);
    const text = await metric(metrics, 'mirrorgate_copies_total');
    t.match(text, /result="dropped"} 2/);
    t.match(text, /result="success"} 4/);
    t.match(text, /result="failure"} 0/);
  });

  t.test('transient failures are retried with backoff; permanent ones are not', async (t) => {
    const metrics = createMetrics({ defaultMetrics: false });
    const attempts = new Map<string, number>();
    const outcomes: CopyOutcome[] = [];
    const timers = new FakeTimers();
    const q = new CopyQueue({
      metrics,
      backoffMs: 1000,
      attempts: 3,
      timers,
      onOutcome: (o) => outcomes.push(o),
      copy: async (_s, target) => {
        const key = target.repository;
        const n = (attempts.get(key) ?? 0) + 1;
        attempts.set(key, n);
        if (key === 'flaky' && n < 3) throw new CopyError('registry', 'HTTP 503', { status: 503, transient: true });
        if (key === 'gone') throw new CopyError('not-found', 'source manifest: not found', { status: 404 });
        if (key === 'down') throw new CopyError('unreachable', 'ECONNREFUSED', { transient: true });
        return result(target, 7);
      },
    });
    /** Every attempt so far has failed and its retry waits. */
    const waiting = (n: number): Promise<void> => until(() => q.stats().retrying === n && q.stats().running === 0);
    q.enqueue(ref('docker.io/flaky:1'), ref('mirror.example.com/flaky:1'));
    q.enqueue(ref('docker.io/gone:1'), ref('mirror.example.com/gone:1'));
    q.enqueue(ref('docker.io/down:1'), ref('mirror.example.com/down:1'));
    await waiting(2);
    t.same(Object.fromEntries(attempts), { flaky: 1, gone: 1, down: 1 }, 'first attempts; the permanent failure is final');
    t.same(timers.delays, [1000, 1000], 'the first retries wait backoffMs');
    timers.advance(999);
    t.same(Object.fromEntries(attempts), { flaky: 1, gone: 1, down: 1 }, 'no retry before its backoff');
    timers.advance(1);
    await waiting(2);
    t.same(Object.fromEntries(attempts), { flaky: 2, gone: 1, down: 2 });
    t.same(timers.delays, [1000, 1000, 2000, 2000], 'doubled for the next');
    timers.advance(2000);
    await q.idle();
    t.same(Object.fromEntries(attempts), { flaky: 3, gone: 1, down: 3 });
    t.equal(timers.pending, 0, 'no retry after the last attempt');
    t.same(
      outcomes.map((o) => [o.target.repository, o.ok, o.attempts]).sort(),
      [
        ['down', false, 3],
        ['flaky', true, 3],
        ['gone', false, 1],
      ],
    );
    const text = await metric(metrics, 'mirrorgate_copies_total');
    t.match(text, /result="success"} 1/);
    t.match(text, /result="failure"} 2/);
  });

  t.test('close cancels a retry waiting for its backoff', async (t) => {
    const metrics = createMetrics({ defaultMetrics: false });
    const timers = new FakeTimers();
    const q = new CopyQueue({ metrics, timers, copy: async () => Promise.reject(new CopyError('unreachable', 'ECONNREFUSED', { transient: true })) });
    q.enqueue(ref('docker.io/down:1'), ref('mirror.example.com/down:1'));
    await until(() => q.stats().retrying === 1);
    t.equal(timers.pending, 1);
    await q.close();
    t.equal(timers.pending, 0, 'cancelled');
    t.equal(q.stats().retrying, 0);
    await q.idle();
  });

  t.test('close aborts running copies and drops the backlog', async (t) => {
    const metrics = createMetrics({ defaultMetrics: false });
    let aborted = false;
    const q = new CopyQueue({
      metrics,
      concurrency: 1,
      copy: (_s, _t, signal) =>
        new Promise((_resolve, reject) => {
          signal.addEventListener('abort', () => {
            aborted = true;
            reject(new CopyError('unreachable', 'aborted'));
          });
        }),
    });
    q.enqueue(ref('docker.io/a:1'), ref('mirror.example.com/a:1'));
    q.enqueue(ref('docker.io/b:1'), ref('mirror.example.com/b:1'));
    await q.close();
    t.ok(aborted);
    t.equal(q.enqueue(ref('docker.io/c:1'), ref('mirror.example.com/c:1')), 'dropped');
  });
});

void t.test('copyOnMissObserver', async (t) => {
  const config = validateConfig({
    rules: [
      { from: 'docker.io', to: 'mirror.example.com/dh', verify: true, copyOnMiss: true },
      { from: 'quay.io', to: 'mirror.example.com/quay', verify: true },
    ],
  });
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web' },
    spec: {
      containers: [
        { name: 'web', image: 'nginx:1.14.2' },
        { name: 'side', image: 'quay.io/prometheus/node-exporter:v1' },
        { name: 'here', image: 'docker.io/library/redis:7' },
      ],
    },
  };
  const outcomes = new Map([
    ['mirror.example.com/dh/library/nginx:1.14.2', 'absent' as const],
    ['mirror.example.com/quay/prometheus/node-exporter:v1', 'absent' as const],
    ['mirror.example.com/dh/library/redis:7', 'present' as const],
  ]);
  const cases = [
    { name: 'a missing image of a copyOnMiss rule is queued; others are not', dryRun: false, want: [['docker.io/library/nginx:1.14.2', 'mirror.example.com/dh/library/nginx:1.14.2']] },
    { name: 'dry-run requests queue nothing', dryRun: true, want: [] },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const decoded = decodeReview(review({ object: pod, dryRun: c.dryRun }).body);
      if (!decoded.ok) throw new Error(decoded.error);
      const evaluation = evaluate(decoded.request, config.settings, 'enforce', { outcomes, onUnreachable: 'original' });
      const queued: string[][] = [];
      const observer = copyOnMissObserver({
        queue: {
          enqueue: (s, tgt) => {
            queued.push([`${s.registry}/${s.repository}${s.suffix}`, `${tgt.registry}/${tgt.repository}${tgt.suffix}`]);
            return 'queued';
          },
        },
      });
      observer.observe({ request: decoded.request, evaluation, mode: 'enforce' });
      t.same(queued, c.want);
    });
  }

  t.test('a throwing queue never reaches the admission path', async (t) => {
    const decoded = decodeReview(review({ object: pod }).body);
    if (!decoded.ok) throw new Error(decoded.error);
    const evaluation = evaluate(decoded.request, config.settings, 'enforce', { outcomes, onUnreachable: 'original' });
    const observer = copyOnMissObserver({
      queue: {
        enqueue: () => {
          throw new Error('boom');
        },
      },
    });
    t.doesNotThrow(() => observer.observe({ request: decoded.request, evaluation, mode: 'enforce' }));
  });
});
