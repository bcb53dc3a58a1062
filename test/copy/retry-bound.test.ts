/**
 * The two retry layers together, against real registries on loopback: a blob the source
 * answers 500 for, every time, is asked for exactly the documented number of times
 * (REQUEST_RETRY.attempts × JOB_RETRY.attempts), and then the copy fails for good. All waits
 * are on fake timers.
 */
import t from 'tap';
import { parseReference, type ImageReference } from '../../src/core/reference.js';
import { copyImage, REQUEST_RETRY } from '../../src/copy/copier.js';
import { CopyQueue, JOB_RETRY, type CopyOutcome } from '../../src/copy/queue.js';
import { createMetrics } from '../../src/metrics.js';
import { RegistryClient } from '../../src/registry/client.js';
import { maxTries } from '../../src/retry.js';
import { FakeTimers } from '../support/fake-timers.js';
import { pushImage, startRegistry } from '../support/registry.js';
import { waitFor } from '../support/wait.js';
import { startProxy } from './support.js';

function ref(s: string): ImageReference {
  const p = parseReference(s);
  if (!p.ok) throw new Error(p.reason);
  return p.ref;
}

t.test('a permanently failing blob: requests ≤ request attempts × job attempts, exactly', async (t) => {
  const src = await startRegistry();
  const mirror = await startRegistry();
  const client = new RegistryClient();
  t.teardown(async () => {
    client.close();
    await Promise.all([src.stop(), mirror.stop()]);
  });
  await pushImage(src, 'library/app', 'v1');
  const proxy = await startProxy(src.url, {
    intercept: (req, res) => {
      if (req.method !== 'GET' || !req.url?.includes('/blobs/')) return false;
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNKNOWN"}]}');
      return true;
    },
  });
  t.teardown(() => proxy.stop());

  const timers = new FakeTimers();
  const outcomes: CopyOutcome[] = [];
  const queue = new CopyQueue({
    copy: (source, target, signal) => copyImage(source, target, { client, endpoint: (host) => ({ host, insecure: true }), signal, timers }),
    metrics: createMetrics({ defaultMetrics: false }),
    timers,
    onOutcome: (o) => outcomes.push(o),
  });
  t.teardown(() => queue.close());
  t.equal(queue.enqueue(ref(`${proxy.host}/library/app:v1`), ref(`${mirror.host}/dh/library/app:v1`)), 'queued');

  // Every wait of both layers is on the fake timers: run each once the copy is waiting on it.
  await waitFor(
    'the copy to fail for good',
    () => {
      if (timers.pending > 0) timers.advance(60_000);
      return outcomes.length === 1;
    },
    30_000,
  );
  const [outcome] = outcomes;
  t.match(outcome, { ok: false, attempts: JOB_RETRY.attempts, error: /HTTP 500/ });

  const gets = new Map<string, number>();
  for (const r of proxy.requests) if (r.method === 'GET' && r.path.includes('/blobs/')) gets.set(r.path, (gets.get(r.path) ?? 0) + 1);
  t.ok(gets.size >= 1, 'blobs were asked for');
  const bound = maxTries(REQUEST_RETRY, JOB_RETRY);
  t.equal(bound, 12);
  for (const [path, n] of gets) t.equal(n, bound, `${path.slice(path.lastIndexOf('/') + 1, path.lastIndexOf('/') + 20)}…: asked ${bound} times, no more, no less`);
  const jobWaits = timers.delays.filter((d) => d >= JOB_RETRY.baseMs);
  t.same(jobWaits, [5000, 10_000], 'the job layer waited 5 s, then 10 s');
});
