/**
 * The certificate-rotation planner, table-driven over facts: no certificates are made or
 * parsed here (the adapter's reading of real ones is test/kube/cert-rotation.test.ts), so
 * every branch is reached directly, including states real certificates make awkward: a
 * staged CA whose annotation was lost, a serving certificate that ends with its CA.
 */
import t from 'tap';
import {
  ANNOTATION_STAGED,
  desiredBundle,
  KEYS,
  planRotation,
  rotationPolicy,
  SERVED_PREFIX,
  servedBy,
  servedKey,
  splitPem,
  type CertFacts,
  type RotationFacts,
  type ServingFacts,
} from '../../src/core/rotation.js';

const DAY = 86_400_000;
const t0 = new Date('2026-11-24T00:00:00Z');
const at = (days: number): string => new Date(t0.getTime() + days * DAY).toUTCString();
const names = { dnsNames: ['mirrorgate.mirrorgate.svc'], ipAddresses: [] };

const ca: CertFacts = { fingerprint: 'ca1', validFrom: at(-1), validTo: at(3650) };
const serving: ServingFacts = { fingerprint: 'leaf1', validFrom: at(-1), validTo: at(365), keyMatches: true, issuedByCa: true, coversNames: true };
type SecretFacts = NonNullable<RotationFacts['secret']>;
const healthy: SecretFacts = {
  annotations: {},
  ca,
  hasCaKey: true,
  next: undefined,
  hasPrevious: false,
  serving,
  desiredBundle: 'PEM(ca1)',
  desiredFingerprints: ['ca1'],
};
const facts = (secret: Partial<SecretFacts> | undefined, bundle: readonly string[] = ['ca1']): RotationFacts => ({
  secret: secret === undefined ? undefined : { ...healthy, ...secret },
  bundleFingerprints: bundle,
});

t.test('planRotation: one step per state', async (t) => {
  const cases: { name: string; facts: RotationFacts; days?: number; expect: string; reason?: RegExp }[] = [
    { name: 'no Secret', facts: facts(undefined), expect: 'create', reason: /no Secret mirrorgate-tls/ },
    { name: 'CA unreadable', facts: facts({ ca: undefined }), expect: 'create', reason: /CA missing/ },
    { name: 'CA key missing', facts: facts({ hasCaKey: false }), expect: 'create', reason: /CA missing/ },
    { name: 'CA expired', facts: facts({}), days: 3651, expect: 'create', reason: /CA expired/ },
    { name: 'healthy, published', facts: facts({}), expect: 'none' },
    { name: 'caBundle empty', facts: facts({}, []), expect: 'publish-bundle' },
    { name: 'caBundle holds a stranger too', facts: facts({}, ['ca1', 'other']), expect: 'publish-bundle' },
    { name: 'caBundle in another order: the same set', facts: facts({ desiredFingerprints: ['prev', 'ca1'] }, ['ca1', 'prev']), expect: 'none' },
    { name: 'serving certificate unreadable', facts: facts({ serving: undefined }), expect: 'renew-serving', reason: /missing or unreadable/ },
    { name: 'serving key is not its key', facts: facts({ serving: { ...serving, keyMatches: false } }), expect: 'renew-serving', reason: /serving key/ },
    { name: 'serving certificate from another CA', facts: facts({ serving: { ...serving, issuedByCa: false } }), expect: 'renew-serving', reason: /not issued by the CA/ },
    { name: 'serving certificate misses a name', facts: facts({ serving: { ...serving, coversNames: false } }), expect: 'renew-serving', reason: /cover the service names/ },
    { name: 'serving certificate within 30 days of expiry', facts: facts({}), days: 340, expect: 'renew-serving', reason: /expires/ },
    { name: 'serving certificate 31 days from expiry', facts: facts({}), days: 334, expect: 'none' },
    // Renewing would give a certificate that ends with the CA again: the CA rotation is the cure.
    { name: 'serving certificate ends with its CA: no renewal loop', facts: facts({ serving: { ...serving, validTo: ca.validTo } }), days: 3600, expect: 'stage-next-ca' },
    { name: 'CA within 90 days of expiry', facts: facts({}), days: 3600, expect: 'stage-next-ca' },
    { name: 'staged CA inside the overlap', facts: facts({ next: { fingerprint: 'ca2', validFrom: at(0), validTo: at(7000) }, annotations: { [ANNOTATION_STAGED]: t0.toISOString() } }), expect: 'none' },
    {
      name: 'staged CA past the overlap',
      facts: facts({ next: { fingerprint: 'ca2', validFrom: at(0), validTo: at(7000) }, annotations: { [ANNOTATION_STAGED]: new Date(t0.getTime() - 11 * 60_000).toISOString() } }),
      expect: 'promote-next-ca',
    },
    // The annotation was lost to a hand edit: the next CA's own start stands in.
    { name: 'staged CA, annotation lost, CA started long ago', facts: facts({ next: { fingerprint: 'ca2', validFrom: at(-1), validTo: at(7000) } }), expect: 'promote-next-ca' },
    { name: 'staged CA, annotation lost, CA just started', facts: facts({ next: { fingerprint: 'ca2', validFrom: t0.toUTCString(), validTo: at(7000) } }), expect: 'none' },
    {
      name: 'previous CA, every live replica serves the current certificate',
      facts: facts({ hasPrevious: true, annotations: { [`${SERVED_PREFIX}a`]: `leaf1 ${t0.toISOString()}`, [`${SERVED_PREFIX}b`]: `leaf1 ${t0.toISOString()}` } }),
      expect: 'retire-previous-ca',
    },
    {
      name: 'previous CA, one live replica still serves the old certificate',
      facts: facts({ hasPrevious: true, annotations: { [`${SERVED_PREFIX}a`]: `leaf1 ${t0.toISOString()}`, [`${SERVED_PREFIX}b`]: `leaf0 ${t0.toISOString()}` } }),
      expect: 'none',
    },
    {
      name: 'previous CA, the replica on the old certificate is gone (3 intervals)',
      facts: facts({ hasPrevious: true, annotations: { [`${SERVED_PREFIX}a`]: `leaf1 ${t0.toISOString()}`, [`${SERVED_PREFIX}b`]: `leaf0 ${new Date(t0.getTime() - 31 * 60_000).toISOString()}` } }),
      expect: 'retire-previous-ca',
    },
    { name: 'previous CA, no replica recorded yet', facts: facts({ hasPrevious: true }), expect: 'none' },
    // With a previous CA still trusted, a new one is not staged on top of it.
    { name: 'previous CA kept, CA near expiry: no third CA', facts: facts({ hasPrevious: true, serving: { ...serving, validTo: at(3640) } }), days: 3600, expect: 'none' },
  ];
  for (const c of cases) {
    const step = planRotation(c.facts, rotationPolicy(new Date(t0.getTime() + (c.days ?? 0) * DAY), names));
    t.equal(step.kind, c.expect, c.name);
    if (c.reason) t.match('reason' in step ? step.reason : '', c.reason, `${c.name}: reason`);
    if (step.kind === 'publish-bundle') t.equal(step.bundle, 'PEM(ca1)', `${c.name}: publishes the Secret's bundle`);
  }
});

t.test('desiredBundle: previous, current, next, blank entries left out', async (t) => {
  t.equal(desiredBundle({ [KEYS.ca]: 'B\n', [KEYS.previous]: 'A', [KEYS.next]: ' ' }), 'A\nB\n');
  t.equal(desiredBundle({ [KEYS.ca]: 'B', [KEYS.next]: 'C' }), 'B\nC\n');
  t.equal(desiredBundle({}), '');
});

t.test('splitPem and servedBy', async (t) => {
  const pem = (x: string): string => `-----BEGIN CERTIFICATE-----\n${x}\n-----END CERTIFICATE-----`;
  t.same(splitPem(`${pem('a')}\n${pem('b')}\n`), [pem('a'), pem('b')]);
  t.same(splitPem('garbage'), []);
  const live = servedBy({ [`${SERVED_PREFIX}a`]: `f1 ${t0.toISOString()}`, [`${SERVED_PREFIX}b`]: `f2 ${new Date(t0.getTime() - 2 * DAY).toISOString()}`, other: 'x', [`${SERVED_PREFIX}c`]: 'broken' }, t0, DAY);
  t.same([...live], [['a', 'f1']], 'only live, well-formed records');
});

t.test('servedKey: a valid annotation name always', async (t) => {
  t.equal(servedKey('mirrorgate-7d9f8b6c5-x2x4q'), `${SERVED_PREFIX}mirrorgate-7d9f8b6c5-x2x4q`);
  const long = servedKey('p'.repeat(64));
  t.match(long, /^served\.mirrorgate\.io\/r-[0-9a-f]{32}$/, 'too long: a digest');
  t.equal(servedKey('p'.repeat(64)), long, 'stable');
  t.match(servedKey('-bad-'), /\/r-[0-9a-f]{32}$/, 'not alphanumeric at the ends: a digest');
});
