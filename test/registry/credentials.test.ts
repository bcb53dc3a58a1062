/**
 * The credential cache every cloud source shares: single-flight, refresh-ahead, failures
 * never cached, refused credentials forgotten. Fake clock; fetches resolve when the test says.
 */
import t from 'tap';
import { CachedCredential, type Expiring } from '../../src/registry/credentials.js';
import { FakeClock } from '../support/cloud.js';

interface Pending {
  resolve(e: Expiring): void;
  reject(err: Error): void;
}

function setup(): { clock: FakeClock; cache: CachedCredential; pending: Pending[]; warnings: string[] } {
  const clock = new FakeClock();
  const pending: Pending[] = [];
  const warnings: string[] = [];
  const cache = new CachedCredential(
    () => new Promise<Expiring>((resolve, reject) => pending.push({ resolve, reject })),
    { now: clock.now, fields: { registry: 'r.example' }, log: { debug: () => undefined, warn: (_o, m) => void warnings.push(m) } },
  );
  return { clock, cache, pending, warnings };
}

const HOUR = 3600_000;
const cred = (clock: FakeClock, password: string, lifetimeMs = HOUR): Expiring => ({ auth: { username: 'u', password }, expiresAt: clock.now() + lifetimeMs });

t.test('concurrent callers share one fetch', async (t) => {
  const { clock, cache, pending } = setup();
  const all = Promise.all(Array.from({ length: 10 }, () => cache.get()));
  t.equal(pending.length, 1, 'one fetch for ten callers');
  pending[0]!.resolve(cred(clock, 'a'));
  t.same((await all).map((a) => a.password), Array(10).fill('a'));
  t.equal((await cache.get()).password, 'a', 'then served from the cache');
  t.equal(pending.length, 1);
});

t.test('refreshed ahead of expiry in the background, the current one served meanwhile', async (t) => {
  const { clock, cache, pending } = setup();
  const first = cache.get();
  pending[0]!.resolve(cred(clock, 'a'));
  await first;
  clock.advance(HOUR - 5 * 60_000 - 1);
  t.equal((await cache.get()).password, 'a');
  t.equal(pending.length, 1, 'still fresh: no refresh');
  clock.advance(2);
  t.equal((await cache.get()).password, 'a', 'in the refresh window: the current one at once');
  t.equal(pending.length, 2, 'and one background refresh');
  t.equal((await cache.get()).password, 'a');
  t.equal(pending.length, 2, 'not a second one while it runs');
  pending[1]!.resolve(cred(clock, 'b'));
  await new Promise((r) => setImmediate(r));
  t.equal((await cache.get()).password, 'b', 'the refreshed one afterwards');
});

t.test('expired (within the margin): callers wait for the new one', async (t) => {
  const { clock, cache, pending } = setup();
  const first = cache.get();
  pending[0]!.resolve(cred(clock, 'a'));
  await first;
  clock.advance(HOUR - 60_000);
  const next = cache.get();
  t.equal(pending.length, 2);
  let settled = false;
  void next.then(() => (settled = true));
  await new Promise((r) => setImmediate(r));
  t.notOk(settled, 'not answered with the old one');
  pending[1]!.resolve(cred(clock, 'b'));
  t.equal((await next).password, 'b');
});

t.test('a failure is not cached; a failed background refresh keeps the current one', async (t) => {
  const { clock, cache, pending, warnings } = setup();
  const first = cache.get();
  pending[0]!.reject(new Error('r.example: google credentials: metadata server token: refused (HTTP 404)'));
  await t.rejects(first, /metadata server token: refused/);
  const second = cache.get();
  t.equal(pending.length, 2, 'the next caller tries again');
  pending[1]!.resolve(cred(clock, 'a'));
  await second;

  clock.advance(HOUR - 4 * 60_000);
  t.equal((await cache.get()).password, 'a');
  pending[2]!.reject(new Error('STS unreachable'));
  await new Promise((r) => setImmediate(r));
  t.match(warnings, ['registry credentials refresh failed; the current ones stay in use']);
  t.equal((await cache.get()).password, 'a', 'still the current one');
  t.equal(pending.length, 3, 'no retry within 10 s');
  clock.advance(10_001);
  t.equal((await cache.get()).password, 'a');
  t.equal(pending.length, 4, 'retried after 10 s');
});

t.test('invalidate drops the credentials the registry refused, not newer ones', async (t) => {
  const { clock, cache, pending } = setup();
  const first = cache.get();
  pending[0]!.resolve(cred(clock, 'a'));
  await first;
  cache.invalidate({ username: 'u', password: 'other' });
  t.equal((await cache.get()).password, 'a', 'another password: kept');
  cache.invalidate({ username: 'u', password: 'a' });
  const next = cache.get();
  t.equal(pending.length, 2, 'refused: fetched anew');
  pending[1]!.resolve(cred(clock, 'b'));
  t.equal((await next).password, 'b');
});
