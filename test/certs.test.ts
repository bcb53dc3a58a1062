import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readFile, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import forge from 'node-forge';
import t, { type Test } from 'tap';
import {
  certificateExpiry,
  createCa,
  createServingCert,
  defaultServingNames,
  ensureCertificates,
  type EnsuredCertificates,
  type ServingNames,
} from '../src/certs.js';
import { LOOPBACK_NAMES, makeTestPki, tlsHandshake } from './support/certs.js';

const DAY_MS = 24 * 60 * 60 * 1000;

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-certs-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function readAll(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of ['ca.crt', 'ca.key', 'tls.crt', 'tls.key']) out[name] = await readFile(path.join(dir, name), 'utf8');
  return out;
}

function covers(certPem: string, names: ServingNames): boolean {
  const cert = new X509Certificate(certPem);
  return names.dnsNames.every((n) => cert.checkHost(n, { subject: 'never' }) !== undefined)
    && names.ipAddresses.every((ip) => cert.checkIP(ip) !== undefined);
}

void t.test('defaultServingNames', (t) => {
  const cases = [
    {
      name: 'service and namespace',
      args: ['mirrorgate', 'mirrorgate-system'] as const,
      dns: ['localhost', 'mirrorgate', 'mirrorgate.mirrorgate-system', 'mirrorgate.mirrorgate-system.svc', 'mirrorgate.mirrorgate-system.svc.cluster.local'],
    },
    { name: 'service only', args: ['mirrorgate'] as const, dns: ['localhost', 'mirrorgate'] },
    { name: 'nothing', args: [] as const, dns: ['localhost'] },
  ];
  for (const c of cases) {
    void t.test(c.name, (t) => {
      const names = defaultServingNames(...c.args);
      t.same(names.dnsNames, c.dns);
      t.same(names.ipAddresses, ['127.0.0.1', '::1']);
      t.end();
    });
  }
  t.end();
});

void t.test('createCa', (t) => {
  const now = new Date('2026-01-01T00:00:00Z');
  const ca = createCa({ commonName: 'test-ca', days: 100, now });
  const x = new X509Certificate(ca.cert);
  t.ok(x.ca, 'CA:true');
  t.ok(x.verify(x.publicKey), 'self-signed');
  t.ok(x.checkPrivateKey(createPrivateKey(ca.key)), 'key matches');
  t.match(x.subject, /CN=test-ca/);
  t.equal(certificateExpiry(ca.cert).getTime(), now.getTime() + 100 * DAY_MS);
  t.ok(new Date(x.validFrom).getTime() <= now.getTime(), 'valid from now (backdated)');
  const parsed = forge.pki.certificateFromPem(ca.cert);
  t.match(parsed.getExtension('basicConstraints'), { cA: true, critical: true });
  t.match(parsed.getExtension('keyUsage'), { keyCertSign: true, critical: true });
  t.equal(certificateExpiry(createCa({ now }).cert).getTime(), now.getTime() + 3650 * DAY_MS, 'default 3650 days');
  t.end();
});

void t.test('createServingCert', (t) => {
  const ca = createCa();
  const names = { dnsNames: ['localhost', 'svc', 'svc.ns.svc'], ipAddresses: ['127.0.0.1', '::1', '10.0.0.7'] };
  const serving = createServingCert(ca, names);
  const x = new X509Certificate(serving.cert);
  const caX = new X509Certificate(ca.cert);

  void t.test('subject alternative names', (t) => {
    t.equal(x.subjectAltName, 'DNS:localhost, DNS:svc, DNS:svc.ns.svc, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.0.0.7');
    t.ok(covers(serving.cert, names));
    t.equal(x.checkHost('other.example.com', { subject: 'never' }), undefined, 'no other names');
    t.end();
  });

  void t.test('signed by the CA, not a CA itself, serverAuth', (t) => {
    t.ok(x.checkIssued(caX));
    t.ok(x.verify(caX.publicKey));
    t.notOk(x.ca);
    t.same(x.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extended key usage serverAuth');
    t.ok(x.checkPrivateKey(createPrivateKey(serving.key)));
    t.match(forge.pki.certificateFromPem(serving.cert).getExtension('keyUsage'), { digitalSignature: true, keyEncipherment: true, keyCertSign: false });
    t.end();
  });

  void t.test('random positive serials', (t) => {
    const other = new X509Certificate(createServingCert(ca, names).cert);
    t.not(other.serialNumber, x.serialNumber);
    for (const serial of [x.serialNumber, other.serialNumber]) {
      t.ok(parseInt(serial.slice(0, 2), 16) < 0x80, `${serial} is positive`);
    }
    t.end();
  });

  void t.test('validity: days, default 365, never beyond the CA', (t) => {
    const now = new Date('2026-03-01T00:00:00Z');
    const shortCa = createCa({ days: 10, now });
    t.equal(certificateExpiry(createServingCert(ca, names, { now }).cert).getTime(), now.getTime() + 365 * DAY_MS);
    t.equal(certificateExpiry(createServingCert(ca, names, { now, days: 7 }).cert).getTime(), now.getTime() + 7 * DAY_MS);
    t.equal(certificateExpiry(createServingCert(shortCa, names, { now }).cert).getTime(), certificateExpiry(shortCa.cert).getTime());
    t.end();
  });

  void t.test('invalid names are refused', (t) => {
    t.throws(() => createServingCert(ca, { dnsNames: [], ipAddresses: [] }), /at least one/);
    t.throws(() => createServingCert(ca, { dnsNames: ['ok'], ipAddresses: ['300.1.1.1'] }), /not an IP address/);
    t.throws(() => createServingCert(ca, { dnsNames: ['a b'], ipAddresses: [] }), /not a DNS name/);
    t.end();
  });

  void t.test('accepted by Node TLS; a client trusting the CA connects by name and by IP', async (t) => {
    t.doesNotThrow(() => tls.createSecureContext({ cert: serving.cert, key: serving.key }));
    const server = https.createServer({ cert: serving.cert, key: serving.key }, (_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as import('node:net').AddressInfo).port;

    const byName = await tlsHandshake(port, { ca: ca.cert, servername: 'localhost' });
    t.equal(byName.serialNumber, x.serialNumber);
    const byIp = await tlsHandshake(port, { ca: ca.cert });
    t.equal(byIp.serialNumber, x.serialNumber);
    await t.rejects(tlsHandshake(port, { ca: ca.cert, servername: 'not-in-the-cert' }), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    await t.rejects(tlsHandshake(port, { ca: makeTestPki().caCert, servername: 'localhost' }), 'another CA is not trusted');
  });
  t.end();
});

void t.test('certificateExpiry', (t) => {
  const now = new Date('2026-06-15T12:34:56Z');
  const ca = createCa({ now, days: 20 });
  t.equal(certificateExpiry(ca.cert).toISOString(), '2026-07-05T12:34:56.000Z');
  t.throws(() => certificateExpiry('not a certificate'));
  t.end();
});

void t.test('ensureCertificates', (t) => {
  const names = defaultServingNames('mirrorgate', 'mirrorgate-system');
  // One good directory made once and copied for each case: key generation is the slow part.
  let template: Promise<{ dir: string; result: EnsuredCertificates }> | undefined;
  const goodDir = async (sub: Test): Promise<{ dir: string; first: EnsuredCertificates }> => {
    template ??= tempDir(t).then(async (dir) => ({ dir, result: await ensureCertificates(dir, names) }));
    const { dir: from, result } = await template;
    const dir = await tempDir(sub);
    for (const name of await readdir(from)) {
      await copyFile(path.join(from, name), path.join(dir, name));
      await chmod(path.join(dir, name), 0o600);
    }
    return { dir, first: result };
  };

  void t.test('creates a directory (0700) and files (0600), then reuses them byte for byte', async (t) => {
    const dir = path.join(await tempDir(t), 'nested', 'certs');
    const first = await ensureCertificates(dir, names);
    t.equal(first.created, true);
    t.equal((await stat(dir)).mode & 0o777, 0o700);
    t.same((await readdir(dir)).sort(), ['ca.crt', 'ca.key', 'tls.crt', 'tls.key'], 'no temporary files left');
    for (const name of ['ca.crt', 'ca.key', 'tls.crt', 'tls.key']) {
      t.equal((await stat(path.join(dir, name))).mode & 0o777, 0o600, `${name} is 0600`);
    }
    t.equal(first.certFile, path.join(dir, 'tls.crt'));
    t.equal(first.keyFile, path.join(dir, 'tls.key'));
    t.equal(first.caFile, path.join(dir, 'ca.crt'));
    t.ok(covers(first.cert, names));
    t.ok(new X509Certificate(first.cert).checkIssued(new X509Certificate(first.caCert)));
    const files = await readAll(dir);
    t.equal(files['tls.crt'], first.cert);
    t.equal(files['tls.key'], first.key);
    t.equal(files['ca.crt'], first.caCert);

    const second = await ensureCertificates(dir, names);
    t.equal(second.created, false);
    t.equal(second.cert, first.cert);
    t.equal(second.key, first.key);
    t.equal(second.caCert, first.caCert);
    t.same(await readAll(dir), files, 'files untouched');

    const subset = await ensureCertificates(dir, LOOPBACK_NAMES);
    t.equal(subset.created, false, 'a subset of the names is still covered');
  });

  // Each case damages a good directory; `ca` says whether the CA must survive.
  const cases: Array<{ name: string; damage(dir: string): Promise<unknown>; names?: ServingNames; now?: Date; ca: 'kept' | 'new' }> = [
    { name: 'tls.key missing', damage: (dir) => unlink(path.join(dir, 'tls.key')), ca: 'kept' },
    { name: 'tls.crt missing', damage: (dir) => unlink(path.join(dir, 'tls.crt')), ca: 'kept' },
    { name: 'tls.crt corrupt', damage: (dir) => writeFile(path.join(dir, 'tls.crt'), '-----BEGIN CERTIFICATE-----\ngarbage\n'), ca: 'kept' },
    { name: 'tls.key does not match tls.crt', damage: (dir) => writeFile(path.join(dir, 'tls.key'), makeTestPki().key), ca: 'kept' },
    { name: 'tls.crt signed by another CA', damage: (dir) => writeFile(path.join(dir, 'tls.crt'), makeTestPki(namesPlus('x')).cert), ca: 'kept' },
    { name: 'names changed', damage: () => Promise.resolve(), names: namesPlus('mirrorgate.other.svc'), ca: 'kept' },
    { name: 'IP address added', damage: () => Promise.resolve(), names: { ...LOOPBACK_NAMES, ipAddresses: ['127.0.0.1', '10.1.2.3'] }, ca: 'kept' },
    { name: 'serving certificate within 30 days of expiry', damage: () => Promise.resolve(), now: new Date(Date.now() + 340 * DAY_MS), ca: 'kept' },
    { name: 'serving certificate expired', damage: () => Promise.resolve(), now: new Date(Date.now() + 400 * DAY_MS), ca: 'kept' },
    { name: 'CA within 30 days of expiry', damage: () => Promise.resolve(), now: new Date(Date.now() + 3630 * DAY_MS), ca: 'new' },
    { name: 'ca.crt missing', damage: (dir) => unlink(path.join(dir, 'ca.crt')), ca: 'new' },
    { name: 'ca.crt corrupt', damage: (dir) => writeFile(path.join(dir, 'ca.crt'), 'junk'), ca: 'new' },
    {
      name: 'serving certificate must be renewed and ca.key is missing',
      damage: async (dir) => {
        await unlink(path.join(dir, 'ca.key'));
        await unlink(path.join(dir, 'tls.key'));
      },
      ca: 'new',
    },
  ];
  for (const c of cases) {
    void t.test(`regenerates when ${c.name}`, async (t) => {
      const { dir, first } = await goodDir(t);
      await c.damage(dir);
      const wanted = c.names ?? names;
      const opts = c.now ? { now: c.now } : {};
      const again = await ensureCertificates(dir, wanted, opts);
      t.equal(again.created, true);
      t.not(again.cert, first.cert);
      t.not(again.key, first.key);
      t.ok(covers(again.cert, wanted), 'covers the names asked for');
      const cert = new X509Certificate(again.cert);
      t.ok(cert.checkIssued(new X509Certificate(again.caCert)) && cert.verify(new X509Certificate(again.caCert).publicKey), 'signed by ca.crt');
      t.ok(cert.checkPrivateKey(createPrivateKey(again.key)), 'matches tls.key');
      if (c.ca === 'kept') t.equal(again.caCert, first.caCert, 'the CA (and so the caBundle) is kept');
      else t.not(again.caCert, first.caCert, 'a new CA');
      t.same(await readAll(dir).then((f) => [f['ca.crt'], f['tls.crt'], f['tls.key']]), [again.caCert, again.cert, again.key], 'written');
      for (const name of await readdir(dir)) t.equal((await stat(path.join(dir, name))).mode & 0o777, 0o600, `${name} is 0600`);

      const third = await ensureCertificates(dir, wanted, opts);
      t.equal(third.created, false, 'then reused');
      t.equal(third.cert, again.cert);
    });
  }

  void t.test('renewBeforeDays', async (t) => {
    const dir = await tempDir(t);
    await ensureCertificates(dir, names, { days: 10 });
    t.equal((await ensureCertificates(dir, names, { renewBeforeDays: 5 })).created, false);
    t.equal((await ensureCertificates(dir, names, { renewBeforeDays: 11 })).created, true);
  });

  void t.test('an invalid name fails before any file is written', async (t) => {
    const dir = path.join(await tempDir(t), 'never');
    await t.rejects(ensureCertificates(dir, { dnsNames: ['ok'], ipAddresses: ['nope'] }), /not an IP address/);
    await t.rejects(stat(dir), { code: 'ENOENT' });
  });
  t.end();
});

function namesPlus(dns: string): ServingNames {
  const names = defaultServingNames('mirrorgate', 'mirrorgate-system');
  return { ...names, dnsNames: [...names.dnsNames, dns] };
}
