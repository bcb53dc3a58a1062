/**
 * Certificate lifecycle over real certificates: the adapter reads them (inspectCerts) and
 * the core plans (its pure table is test/core/rotation.test.ts), and whole rotations
 * played out against an in-memory store with the same conflict semantics as the API
 * (the real API adapter is exercised against the loopback API in cert-store.test.ts).
 */
import { X509Certificate } from 'node:crypto';
import t from 'tap';
import { createCa, createServingCert, defaultServingNames } from '../../src/certs.js';
import { createLogger } from '../../src/logger.js';
import { applyStep, inspectCerts, reconcile, recordServed, fingerprint, type CertState, type CertStore, type SecretState } from '../../src/kube/cert-rotation.js';
import { ANNOTATION_STAGED, desiredBundle, KEYS, planRotation, SERVED_PREFIX, splitPem, type RotationPolicy } from '../../src/core/rotation.js';
import { LogSink } from '../support/app.js';

/** The adapter's reading of real certificates, then the core's decision. */
const plan = (state: CertState, p: RotationPolicy) => planRotation(inspectCerts(state, p.names), p);

const DAY = 86_400_000;
const names = defaultServingNames('mirrorgate', 'mirrorgate');
const t0 = new Date('2026-11-24T00:00:00Z');

function policy(now: Date, extra: Partial<RotationPolicy> = {}): RotationPolicy {
  return { now, names, renewBeforeDays: 30, caRenewBeforeDays: 90, overlapMs: 10 * 60_000, liveWindowMs: 30 * 60_000, ...extra };
}

const ca = createCa({ now: t0 });
const leaf = createServingCert(ca, names, { now: t0 });
const healthy: SecretState = { data: { [KEYS.ca]: ca.cert, [KEYS.caKey]: ca.key, [KEYS.cert]: leaf.cert, [KEYS.key]: leaf.key }, annotations: {}, resourceVersion: '1' };

t.test('planRotation', async (t) => {
  const other = createCa({ now: t0 });
  const cases: { name: string; secret: SecretState | undefined; bundle?: string; now?: Date; expect: string }[] = [
    { name: 'no secret: create', secret: undefined, expect: 'create' },
    { name: 'CA unreadable: create', secret: { ...healthy, data: { ...healthy.data, [KEYS.ca]: 'garbage' } }, expect: 'create' },
    { name: 'healthy but caBundle empty: publish', secret: healthy, bundle: '', expect: 'publish-bundle' },
    { name: 'healthy and published: nothing', secret: healthy, expect: 'none' },
    { name: 'caBundle with a stranger: publish', secret: healthy, bundle: ca.cert + other.cert, expect: 'publish-bundle' },
    { name: 'serving cert near expiry: renew', secret: healthy, now: new Date(t0.getTime() + 340 * DAY), expect: 'renew-serving' },
    { name: 'serving cert from another CA: renew', secret: { ...healthy, data: { ...healthy.data, [KEYS.cert]: createServingCert(other, names, { now: t0 }).cert } }, expect: 'renew-serving' },
    {
      name: 'serving cert missing a service name: renew',
      secret: { ...healthy, data: { ...healthy.data, [KEYS.cert]: createServingCert(ca, defaultServingNames('other', 'ns'), { now: t0 }).cert } },
      expect: 'renew-serving',
    },
    { name: 'CA near expiry: stage the next CA', secret: healthy, now: new Date(t0.getTime() + 3600 * DAY), expect: 'stage-next-ca' },
    { name: 'CA expired: start over', secret: healthy, now: new Date(t0.getTime() + 3700 * DAY), expect: 'create' },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const bundle = c.bundle ?? (c.secret ? desiredBundle(c.secret.data) : '');
      t.equal(plan({ secret: c.secret, caBundle: bundle }, policy(c.now ?? t0)).kind, c.expect);
    });
  }
});

/** In-memory store with resourceVersion conflicts, like the API. */
class MemoryStore implements CertStore {
  secret: SecretState | undefined;
  bundle = '';
  rv = 0;
  writes = 0;
  async readSecret() {
    return this.secret && structuredClone(this.secret);
  }
  async writeSecret(data: Record<string, string>, annotations: Record<string, string>, resourceVersion: string | undefined) {
    if ((resourceVersion === undefined) !== (this.secret === undefined) || (resourceVersion !== undefined && resourceVersion !== this.secret?.resourceVersion)) {
      throw Object.assign(new Error('conflict'), { code: 409 });
    }
    this.writes++;
    this.secret = { data, annotations, resourceVersion: String(++this.rv) };
  }
  async readCaBundle() {
    return this.bundle;
  }
  async writeCaBundle(b: string) {
    this.bundle = b;
  }
}

const log = createLogger({ level: 'warn', destination: new LogSink() });

t.test('a full CA rotation keeps an overlap: the API server always trusts what is served', async (t) => {
  const store = new MemoryStore();
  let now = t0;
  const pol = () => policy(now);
  const trusted = (pem: string): boolean => splitPem(store.bundle).some((c) => new X509Certificate(pem).checkIssued(new X509Certificate(c)));

  const first = await reconcile(store, pol, log);
  t.same(first.steps, ['create', 'publish-bundle']);
  const servedV1 = store.secret!.data[KEYS.cert]!;
  t.ok(trusted(servedV1));
  await recordServed(store, 'pod-a', servedV1, now);
  await recordServed(store, 'pod-b', servedV1, now);
  t.same((await reconcile(store, pol, log)).steps, [], 'steady state');

  // 3600 days later the CA is within 90 days of expiry.
  now = new Date(t0.getTime() + 3600 * DAY);
  const staged = await reconcile(store, pol, log);
  t.same(staged.steps, ['stage-next-ca', 'publish-bundle', 'renew-serving'].filter((s) => staged.steps.includes(s as never)));
  t.ok(store.secret!.data[KEYS.next], 'next CA staged');
  t.equal(splitPem(store.bundle).length, 2, 'caBundle holds old and new');
  t.ok(trusted(store.secret!.data[KEYS.cert]!), 'what is served stays trusted');

  // After the overlap the serving certificate moves to the new CA; the old CA stays trusted.
  now = new Date(now.getTime() + 11 * 60_000);
  const promoted = await reconcile(store, pol, log);
  t.ok(promoted.steps.includes('promote-next-ca'));
  const servedV2 = store.secret!.data[KEYS.cert]!;
  t.ok(store.secret!.data[KEYS.previous], 'old CA kept as previous');
  t.ok(trusted(servedV1), 'replicas still serving the old certificate are trusted');
  t.ok(trusted(servedV2), 'the new certificate is trusted');

  // pod-a reloaded, pod-b not yet: the old CA must stay.
  await recordServed(store, 'pod-a', servedV2, now);
  await recordServed(store, 'pod-b', servedV1, now);
  t.same((await reconcile(store, pol, log)).steps, [], 'waits for every live replica');
  t.ok(trusted(servedV1));

  await recordServed(store, 'pod-b', servedV2, now);
  const retired = await reconcile(store, pol, log);
  t.same(retired.steps, ['retire-previous-ca', 'publish-bundle']);
  t.equal(splitPem(store.bundle).length, 1);
  t.notOk(trusted(servedV1), 'the old CA is gone');
  t.ok(trusted(servedV2));
  t.equal(store.secret!.annotations[ANNOTATION_STAGED], undefined);
});

t.test('a replica that is gone (stale served annotation) does not block retirement', async (t) => {
  const s = applyStep({ kind: 'promote-next-ca' }, { ...healthy, data: { ...healthy.data, [KEYS.next]: ca.cert, [KEYS.nextKey]: ca.key } }, policy(t0));
  const fp = fingerprint(s.data[KEYS.cert]!);
  const annotations = {
    [`${SERVED_PREFIX}alive`]: `${fp} ${t0.toISOString()}`,
    [`${SERVED_PREFIX}gone`]: `deadbeef ${new Date(t0.getTime() - 3600_000).toISOString()}`,
  };
  const state = { secret: { data: s.data, annotations, resourceVersion: '9' }, caBundle: desiredBundle(s.data) };
  t.equal(plan(state, policy(t0)).kind, 'retire-previous-ca');
});

t.test('two replicas reconciling at once never lose a write', async (t) => {
  const store = new MemoryStore();
  const results = await Promise.all([reconcile(store, () => policy(t0), log), reconcile(store, () => policy(t0), log)]);
  t.ok(store.secret, 'secret exists');
  t.equal(plan({ secret: store.secret, caBundle: store.bundle }, policy(t0)).kind, 'none', 'converged');
  t.equal(results.flatMap((r) => r.steps).filter((s) => s === 'create').length, 1, 'created once');
});
