/**
 * Certificates for tests, generated at run time (no keys in git). Key generation costs
 * tens of milliseconds per key, so `makeTestPki()` keeps one PKI per set of names for
 * the whole process; `newTestPki()` makes a distinct one when a test needs a second
 * CA (e.g. a certificate rotation).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createCa, createServingCert, type CertificateBundle, type ServingNames } from '../../src/certs.js';

/** localhost, 127.0.0.1 and ::1: what a test server on loopback needs. */
export const LOOPBACK_NAMES: ServingNames = { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] };

const cache = new Map<string, CertificateBundle>();

/** A CA and a serving certificate for `names` (default loopback), shared within the process. */
export function makeTestPki(names: ServingNames = LOOPBACK_NAMES): CertificateBundle {
  const key = JSON.stringify(names);
  let pki = cache.get(key);
  if (!pki) {
    pki = newTestPki(names);
    cache.set(key, pki);
  }
  return pki;
}

/** A new CA and serving certificate, never cached. */
export function newTestPki(names: ServingNames = LOOPBACK_NAMES, opts: { days?: number; now?: Date } = {}): CertificateBundle {
  const ca = createCa({ commonName: 'mirrorgate-test-ca', ...(opts.now ? { now: opts.now } : {}) });
  const serving = createServingCert(ca, names, opts);
  return { caCert: ca.cert, caKey: ca.key, cert: serving.cert, key: serving.key };
}

/** A temporary directory with `ca.crt`, `ca.key`, `tls.crt`, `tls.key`. */
export interface TempCerts extends CertificateBundle {
  dir: string;
  caFile: string;
  caKeyFile: string;
  certFile: string;
  keyFile: string;
  /** Removes the directory. */
  cleanup(): Promise<void>;
}

/** Write `pki` (default `makeTestPki()`) into a new temporary directory. */
export async function writeTempCerts(pki: CertificateBundle = makeTestPki()): Promise<TempCerts> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-certs-'));
  const files = {
    caFile: path.join(dir, 'ca.crt'),
    caKeyFile: path.join(dir, 'ca.key'),
    certFile: path.join(dir, 'tls.crt'),
    keyFile: path.join(dir, 'tls.key'),
  };
  await Promise.all([
    writeFile(files.caFile, pki.caCert, { mode: 0o600 }),
    writeFile(files.caKeyFile, pki.caKey, { mode: 0o600 }),
    writeFile(files.certFile, pki.cert, { mode: 0o600 }),
    writeFile(files.keyFile, pki.key, { mode: 0o600 }),
  ]);
  return { ...pki, dir, ...files, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** What a TLS handshake with a server showed. */
export interface Handshake {
  protocol: string | null;
  alpnProtocol: string | false | null;
  /** Serial number of the certificate the server presented (hex, as Node prints it). */
  serialNumber: string;
}

/**
 * One TLS handshake with a server on loopback (default host 127.0.0.1), verifying its
 * certificate with `opts.ca`; resolves with what was negotiated, rejects on any failure.
 */
export function tlsHandshake(port: number, opts: tls.ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...opts }, () => {
      const result: Handshake = {
        protocol: socket.getProtocol(),
        alpnProtocol: socket.alpnProtocol ?? null,
        serialNumber: socket.getPeerCertificate().serialNumber,
      };
      socket.end();
      resolve(result);
    });
    socket.on('error', reject);
  });
}
