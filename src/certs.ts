/**
 * A private CA and the webhook's serving certificate, built with node-forge. The API
 * server only calls webhooks over TLS and verifies the serving certificate against the
 * `caBundle` of the webhook configuration, by its subject alternative names (Go ignores
 * the common name), so the names here must be exactly what the Service resolves to.
 *
 * This module knows nothing of Kubernetes: the entry point passes the service names in
 * and hands the CA to whoever patches the `caBundle`.
 */
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { ServingNames } from './core/rotation.js';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import forge from 'node-forge';

/** A CA and a serving certificate with its key, all PEM. */
export interface CertificateBundle {
  caCert: string;
  caKey: string;
  cert: string;
  key: string;
}

/** The names a serving certificate is valid for (subject alternative names). */
export type { ServingNames };

/** File names inside a certificates directory; `tls.crt`/`tls.key` match a kubernetes.io/tls Secret. */
export const CERT_FILES = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  cert: 'tls.crt',
  key: 'tls.key',
} as const;

const DAY_MS = 24 * 60 * 60 * 1000;
/** notBefore is set a little in the past so that a peer whose clock lags still accepts a fresh certificate. */
const BACKDATE_MS = 5 * 60 * 1000;

/**
 * Default names: `localhost`, `127.0.0.1`, `::1` and, for service `S` in namespace `N`,
 * `S`, `S.N`, `S.N.svc`, `S.N.svc.cluster.local` (the API server calls `S.N.svc`).
 */
export function defaultServingNames(service?: string, namespace?: string): ServingNames {
  const dnsNames = ['localhost'];
  if (service) {
    dnsNames.push(service);
    if (namespace) {
      dnsNames.push(`${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`);
    }
  }
  return { dnsNames: unique(dnsNames), ipAddresses: ['127.0.0.1', '::1'] };
}

/**
 * A new self-signed CA: RSA 2048, `CA:true` (critical), keyCertSign + cRLSign, SHA-256,
 * valid for `days` (default 3650) from `now`.
 */
export function createCa(opts: { commonName?: string; days?: number; now?: Date } = {}): { cert: string; key: string } {
  const now = opts.now ?? new Date();
  const days = positiveDays(opts.days ?? 3650, 'days');
  const { keyPem, privateKey, publicKey } = newRsaKey();
  const subject = [{ name: 'commonName', value: opts.commonName ?? 'mirrorgate-ca' }];

  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS);
  cert.validity.notAfter = new Date(now.getTime() + days * DAY_MS);
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keyPem };
}

/**
 * A serving certificate signed by `ca`: subject alternative names from `names` (DNS and
 * IP), extended key usage serverAuth, digitalSignature + keyEncipherment, a random
 * positive serial, SHA-256, valid for `days` (default 365) from `now` but never beyond
 * the CA's own expiry (a chain is only as valid as its CA).
 */
export function createServingCert(
  ca: { cert: string; key: string },
  names: ServingNames,
  opts: { days?: number; now?: Date } = {},
): { cert: string; key: string } {
  const now = opts.now ?? new Date();
  const days = positiveDays(opts.days ?? 365, 'days');
  const altNames = subjectAltNames(names);
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const caKey = forge.pki.privateKeyFromPem(ca.key);
  const { keyPem, publicKey } = newRsaKey();

  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now.getTime() - BACKDATE_MS);
  const notAfter = now.getTime() + days * DAY_MS;
  cert.validity.notAfter = new Date(Math.min(notAfter, caCert.validity.notAfter.getTime()));
  // Go has ignored the CN since 1.15; it is informational only and must fit 64 characters.
  const commonName = (names.dnsNames[0] ?? names.ipAddresses[0] ?? 'mirrorgate').slice(0, 64);
  cert.setSubject([{ name: 'commonName', value: commonName }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
    // forge's `keyIdentifier: true` would use this certificate's own key; the AKI must be the CA's SKI.
    { name: 'authorityKeyIdentifier', keyIdentifier: caKeyIdentifier(caCert) },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keyPem };
}

/** The certificate's notAfter. Works for any key type (RSA, ECDSA, Ed25519). */
export function certificateExpiry(pem: string): Date {
  return x509Date(new X509Certificate(pem).validTo);
}

/** Options of {@link ensureCertificates}. */
export interface EnsureCertificatesOptions {
  /** Regenerate when the serving certificate (or the CA) expires within this many days. Default 30. */
  renewBeforeDays?: number;
  /** Validity of a new serving certificate. Default 365. */
  days?: number;
  /** Validity of a new CA. Default 3650. */
  caDays?: number;
  /** Common name of a new CA. Default `mirrorgate-ca`. */
  caCommonName?: string;
  /** The current time (tests). */
  now?: Date;
}

/** What {@link ensureCertificates} found or wrote. */
export interface EnsuredCertificates {
  caCert: string;
  cert: string;
  key: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  /** True when new files were written. */
  created: boolean;
}

/**
 * Create once and reuse. When `dir` holds `ca.crt`, `tls.crt` and `tls.key` that parse,
 * whose `tls.crt` is signed by `ca.crt`, matches `tls.key`, covers every name in `names`
 * and neither certificate is within `renewBeforeDays` of expiry, they are returned
 * unchanged (`created: false`). Otherwise a new serving certificate is written, signed
 * by the existing CA when `ca.crt` and `ca.key` are still valid (so the `caBundle`
 * already deployed keeps working), else by a new CA. Files are written with mode 0600
 * through a temporary file and a rename, so a reader never sees half a file; `dir` is
 * created with mode 0700 when missing.
 */
export async function ensureCertificates(
  dir: string,
  names: ServingNames,
  opts: EnsureCertificatesOptions = {},
): Promise<EnsuredCertificates> {
  const now = opts.now ?? new Date();
  const renewBeforeMs = (opts.renewBeforeDays ?? 30) * DAY_MS;
  const files = {
    caCert: join(dir, CERT_FILES.caCert),
    caKey: join(dir, CERT_FILES.caKey),
    cert: join(dir, CERT_FILES.cert),
    key: join(dir, CERT_FILES.key),
  };
  const paths = { caFile: files.caCert, certFile: files.cert, keyFile: files.key };
  subjectAltNames(names); // fail early on an invalid name, before touching any file

  const [caCert, caKey, cert, key] = await Promise.all([
    readOptional(files.caCert),
    readOptional(files.caKey),
    readOptional(files.cert),
    readOptional(files.key),
  ]);

  const ca = caCert === undefined ? undefined : usableCa(caCert, now, renewBeforeMs);
  if (ca && cert !== undefined && key !== undefined && servingCertValid(ca.x509, cert, key, names, now, renewBeforeMs)) {
    return { caCert: ca.pem, cert, key, ...paths, created: false };
  }

  const newCa = (): { cert: string; key: string } =>
    createCa({ days: opts.caDays ?? 3650, now, ...(opts.caCommonName ? { commonName: opts.caCommonName } : {}) });
  let bundleCa: { cert: string; key: string } | undefined;
  let serving: { cert: string; key: string } | undefined;
  if (ca && caKey !== undefined && caKeyMatches(ca.x509, caKey)) {
    try {
      serving = createServingCert({ cert: ca.pem, key: caKey }, names, { days: opts.days ?? 365, now });
      bundleCa = { cert: ca.pem, key: caKey };
    } catch {
      // A CA forge cannot sign with (an ECDSA key put there by hand): start over with our own.
    }
  }
  if (!bundleCa || !serving) {
    bundleCa = newCa();
    serving = createServingCert(bundleCa, names, { days: opts.days ?? 365, now });
  }

  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Keys first and the serving certificate last: a watcher that sees the new tls.crt
  // then finds its key already in place.
  if (bundleCa.key !== caKey) await writeFileAtomic(files.caKey, bundleCa.key);
  if (bundleCa.cert !== caCert) await writeFileAtomic(files.caCert, bundleCa.cert);
  await writeFileAtomic(files.key, serving.key);
  await writeFileAtomic(files.cert, serving.cert);
  return { caCert: bundleCa.cert, cert: serving.cert, key: serving.key, ...paths, created: true };
}

// ---------------------------------------------------------------------------

function newRsaKey(): { keyPem: string; privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey } {
  // OpenSSL generates a 2048-bit key in milliseconds; forge's pure-JS generator takes
  // seconds. forge only builds and signs the certificates.
  const { privateKey: keyPem } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const privateKey = forge.pki.privateKeyFromPem(keyPem);
  const publicKey = forge.pki.setRsaPublicKey(privateKey.n, privateKey.e);
  return { keyPem, privateKey, publicKey };
}

/** 128 random bits as a positive DER INTEGER (top bit clear, no leading zero byte). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function positiveDays(days: number, field: string): number {
  if (!Number.isFinite(days) || days <= 0) throw new Error(`${field}: must be a positive number of days, got ${days}`);
  return days;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

interface AltName {
  type: number;
  value: string;
}

function subjectAltNames(names: ServingNames): AltName[] {
  const altNames: AltName[] = [];
  for (const dns of unique(names.dnsNames)) {
    if (dns === '' || /[\s/]/.test(dns)) throw new Error(`dnsNames: not a DNS name: ${JSON.stringify(dns)}`);
    altNames.push({ type: 2, value: dns });
  }
  for (const ip of unique(names.ipAddresses)) {
    altNames.push({ type: 7, value: ipToBytes(ip) });
  }
  if (altNames.length === 0) throw new Error('a serving certificate needs at least one DNS name or IP address');
  return altNames;
}

/** An IP address as the binary string forge expects (4 or 16 bytes). */
function ipToBytes(ip: string): string {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number)).toString('binary');
  if (family !== 6) throw new Error(`ipAddresses: not an IP address: ${JSON.stringify(ip)}`);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups first.
  let text = ip.replace(/%.*$/, '');
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...tailGroups];
  const buf = Buffer.alloc(16);
  groups.forEach((g, i) => buf.writeUInt16BE(parseInt(g, 16), i * 2));
  return buf.toString('binary');
}

/** The CA's subject key identifier as bytes, or one computed from its key when it has none. */
function caKeyIdentifier(caCert: forge.pki.Certificate): string {
  const ski = caCert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | null;
  if (ski?.subjectKeyIdentifier) return forge.util.hexToBytes(ski.subjectKeyIdentifier);
  return caCert.generateSubjectKeyIdentifier().getBytes();
}

/** OpenSSL prints dates as `Nov 22 10:00:00 2026 GMT`; V8 parses that form. */
function x509Date(text: string): Date {
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) throw new Error(`cannot parse certificate date ${JSON.stringify(text)}`);
  return date;
}

function currentlyValid(cert: X509Certificate, now: Date, renewBeforeMs: number): boolean {
  const notBefore = x509Date(cert.validFrom).getTime();
  const notAfter = x509Date(cert.validTo).getTime();
  return notBefore <= now.getTime() && notAfter - renewBeforeMs > now.getTime();
}

/** A self-signed CA certificate that is valid now and not about to expire. */
function usableCa(pem: string, now: Date, renewBeforeMs: number): { pem: string; x509: X509Certificate } | undefined {
  try {
    const x509 = new X509Certificate(pem);
    if (!x509.ca || !x509.verify(x509.publicKey) || !currentlyValid(x509, now, renewBeforeMs)) return undefined;
    return { pem, x509 };
  } catch {
    return undefined;
  }
}

function caKeyMatches(ca: X509Certificate, keyPem: string): boolean {
  try {
    return ca.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function servingCertValid(
  ca: X509Certificate,
  certPem: string,
  keyPem: string,
  names: ServingNames,
  now: Date,
  renewBeforeMs: number,
): boolean {
  try {
    const cert = new X509Certificate(certPem);
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return false;
    if (!currentlyValid(cert, now, renewBeforeMs)) return false;
    // Names must be covered by SANs; the CN does not count (Go ignores it).
    for (const dns of names.dnsNames) {
      if (cert.checkHost(dns, { subject: 'never' }) === undefined) return false;
    }
    for (const ip of names.ipAddresses) {
      if (cert.checkIP(ip) === undefined) return false;
    }
    // Last, the pair as Node's TLS will load it (rejects e.g. keys OpenSSL deems too weak).
    createSecureContext({ cert: certPem, key: keyPem });
    return true;
  } catch {
    return false;
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Write to a new temporary file beside `path` (mode 0600), flush, then rename over `path`. */
async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    await handle.writeFile(data, 'utf8');
    // The mode of open() is masked by the umask; make sure of 0600 whatever it is.
    await handle.chmod(0o600);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await handle.close();
  try {
    // rename replaces the old file (or symlink) whole; the new one keeps the 0600 mode.
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
