import { mkdir, rename, symlink, writeFile } from 'node:fs/promises';

/**
 * Replace a file in one step (write aside, rename), as Kubernetes volume updates and
 * cert tools do. An in-place write can be read half-written by the watcher, which makes
 * the test depend on scheduling.
 */
async function replaceFile(file: string, data: string): Promise<void> {
  const aside = `${file}.tmp-${process.pid}`;
  await writeFile(aside, data);
  await rename(aside, file);
}
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { X509Certificate } from 'node:crypto';
import {
  readTlsFiles,
  tlsSecureContextOptions,
  tlsServerOptions,
  watchTlsFiles,
  type TlsFiles,
  type TlsPair,
} from '../../src/server/tls.js';
import { makeTestPki, newTestPki, tlsHandshake, writeTempCerts, type TempCerts } from '../support/certs.js';
import { FakeTimers } from '../support/fake-timers.js';

// Short intervals: the tests wait for events, they do not measure them.
const WATCH = { intervalMs: 50, debounceMs: 20 };

function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() - start > ms) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

function serialOf(pem: string): string {
  return new X509Certificate(pem).serialNumber;
}

async function tempCerts(t: Test, pki = makeTestPki()): Promise<TempCerts> {
  const certs = await writeTempCerts(pki);
  t.teardown(() => certs.cleanup());
  return certs;
}

/** An https server with tlsServerOptions on 127.0.0.1:0 that answers "ok". */
async function startServer(t: Test, pair: TlsPair): Promise<{ server: https.Server; port: number }> {
  const server = https.createServer(tlsServerOptions(pair), (_req, res) => res.end('ok'));
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return { server, port: (server.address() as AddressInfo).port };
}

/** GET / through `agent`; resolves with the body, the socket used and whether it was reused. */
function get(port: number, agent: https.Agent): Promise<{ body: string; socket: TLSSocket; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', agent, servername: 'localhost' }, (res) => {
      // Taken now: once the response ends the agent detaches the socket from it.
      const socket = res.socket as TLSSocket;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ body, socket, reused: req.reusedSocket }));
    });
    req.on('error', reject);
  });
}

// The control server accepts TLS 1.1, so a refusal below comes from our options, not
// from a client unable to speak TLS 1.1 (OpenSSL 3 needs security level 0 for it).
const TLS11_CLIENT = { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' } as const;

void t.test('tlsServerOptions', async (t) => {
  const pki = makeTestPki();
  const pair = { cert: pki.cert, key: pki.key };
  t.match(tlsServerOptions(pair), { cert: pki.cert, key: pki.key, minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] });
  const { port } = await startServer(t, pair);

  await t.test('control: this client can speak TLS 1.1 to a server that allows it', async (t) => {
    const control = tls.createServer({ cert: pki.cert, key: pki.key, minVersion: 'TLSv1', ciphers: 'DEFAULT:@SECLEVEL=0' }, (s) => s.end());
    await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => control.close(() => resolve())));
    const h = await tlsHandshake((control.address() as AddressInfo).port, { ...TLS11_CLIENT, ca: pki.caCert, servername: 'localhost' });
    t.equal(h.protocol, 'TLSv1.1');
  });

  const cases = [
    { name: 'TLS 1.1 is refused', client: TLS11_CLIENT, protocol: undefined },
    { name: 'TLS 1.2 is accepted', client: { maxVersion: 'TLSv1.2' } as const, protocol: 'TLSv1.2' },
    { name: 'TLS 1.3 is accepted', client: { minVersion: 'TLSv1.3' } as const, protocol: 'TLSv1.3' },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const attempt = tlsHandshake(port, { ...c.client, ca: pki.caCert, servername: 'localhost' });
      if (c.protocol === undefined) await t.rejects(attempt, { code: /ERR_SSL_.*PROTOCOL_VERSION|ERR_SSL_UNSUPPORTED_PROTOCOL/ });
      else t.equal((await attempt).protocol, c.protocol);
    });
  }

  await t.test('ALPN: http/1.1 is chosen when h2 is offered too', async (t) => {
    const h = await tlsHandshake(port, { ca: pki.caCert, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1'] });
    t.equal(h.alpnProtocol, 'http/1.1');
  });
});

void t.test('readTlsFiles', async (t) => {
  const pki = makeTestPki();
  const certs = await tempCerts(t);
  t.same(await readTlsFiles(certs), { cert: pki.cert, key: pki.key });

  const other = newTestPki();
  const missing = path.join(certs.dir, 'missing.crt');
  const notPem = path.join(certs.dir, 'not-pem.crt');
  const otherKey = path.join(certs.dir, 'other.key');
  await writeFile(notPem, 'hello');
  await writeFile(otherKey, other.key);
  const cases: Array<{ name: string; files: TlsFiles; error: RegExp }> = [
    { name: 'missing certificate file', files: { certFile: missing, keyFile: certs.keyFile }, error: /cannot read TLS certificate file .*missing\.crt/ },
    { name: 'missing key file', files: { certFile: certs.certFile, keyFile: missing }, error: /cannot read TLS key file .*missing\.crt/ },
    { name: 'certificate file without PEM', files: { certFile: notPem, keyFile: certs.keyFile }, error: /TLS certificate file .*not-pem\.crt holds no PEM/ },
    { name: 'key file without PEM', files: { certFile: certs.certFile, keyFile: notPem }, error: /TLS key file .*not-pem\.crt holds no PEM/ },
    { name: 'key of another certificate', files: { certFile: certs.certFile, keyFile: otherKey }, error: /tls\.crt and key .*other\.key are not a usable pair/ },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      await t.rejects(readTlsFiles(c.files), c.error);
    });
  }
});

void t.test('certificate reload', async (t) => {
  const first = makeTestPki();
  const certs = await tempCerts(t, first);
  const pair = await readTlsFiles(certs);
  const { server, port } = await startServer(t, pair);

  const reloads: TlsPair[] = [];
  const errors: Error[] = [];
  const watcher = watchTlsFiles(certs, {
    onReload: (p) => {
      server.setSecureContext(tlsSecureContextOptions(p));
      reloads.push(p);
    },
    onError: (e) => errors.push(e),
  }, { ...WATCH, initial: pair });
  t.teardown(() => watcher.stop());

  // One keep-alive connection open before the rotation; the agent trusts both CAs.
  const second = newTestPki();
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: [first.caCert, second.caCert] });
  t.teardown(() => agent.destroy());
  const before = await get(port, agent);
  t.equal(before.body, 'ok');
  t.equal(before.socket.getPeerCertificate().serialNumber, serialOf(first.cert));

  await t.test('a new certificate is served to new connections; the open one keeps working', async (t) => {
    // Key first, then certificate, as a careless rotation would do it.
    await replaceFile(certs.keyFile, second.key);
    await replaceFile(certs.certFile, second.cert);
    await until(() => reloads.length === 1, 'reload');
    t.same(reloads[0], { cert: second.cert, key: second.key });
    t.ok(errors.every((e) => /rejected, keeping the previous one/.test(e.message)), 'at most a half-done rotation was rejected');

    const fresh = await tlsHandshake(port, { ca: second.caCert, servername: 'localhost' });
    t.equal(fresh.serialNumber, serialOf(second.cert), 'new connection sees the new certificate');
    await t.rejects(tlsHandshake(port, { ca: first.caCert, servername: 'localhost' }), 'the old CA no longer verifies it');

    const after = await get(port, agent);
    t.equal(after.body, 'ok');
    t.ok(after.reused, 'the keep-alive connection was reused');
    t.equal(after.socket, before.socket, 'same socket');
    t.equal(after.socket.getPeerCertificate().serialNumber, serialOf(first.cert), 'still on the old handshake');

    await t.rejects(tlsHandshake(port, { ...TLS11_CLIENT, ca: second.caCert, servername: 'localhost' }), 'TLS 1.1 still refused after the reload');
  });

  await t.test('invalid new files are reported and the previous certificate stays', async (t) => {
    const third = newTestPki();
    // Counts are relative: the careless rotation above may have been seen half done.
    const seenErrors = errors.length;
    const seenReloads = reloads.length;
    // A certificate with the key of another one: each file is fine, the pair is not.
    await replaceFile(certs.certFile, third.cert);
    await until(() => errors.length > seenErrors, 'error');
    t.match(errors.at(-1)!.message, /rejected, keeping the previous one/);
    t.match(errors.at(-1)!.message, /tls\.crt/);
    t.equal(reloads.length, seenReloads, 'no reload');
    const h = await tlsHandshake(port, { ca: second.caCert, servername: 'localhost' });
    t.equal(h.serialNumber, serialOf(second.cert), 'old certificate still served');

    const errorsBefore = errors.length;
    await replaceFile(certs.certFile, 'not a certificate at all');
    await until(() => errors.length > errorsBefore, 'second error');

    // Completing the rotation recovers.
    await replaceFile(certs.keyFile, third.key);
    await replaceFile(certs.certFile, third.cert);
    await until(() => reloads.length > seenReloads, 'reload after recovery');
    t.same(reloads.at(-1), { cert: third.cert, key: third.key });
    const recovered = await tlsHandshake(port, { ca: third.caCert, servername: 'localhost' });
    t.equal(recovered.serialNumber, serialOf(third.cert));
  });
});

void t.test('a Kubernetes Secret volume update (..data symlink swap) is picked up', async (t) => {
  const first = makeTestPki();
  const second = newTestPki();
  const certs = await tempCerts(t, first);
  // The kubelet's layout: real files in a timestamped directory, `..data` pointing at it,
  // and the visible names pointing through `..data`.
  const vol = path.join(certs.dir, 'volume');
  const writeVersion = async (name: string, pki: { cert: string; key: string }): Promise<void> => {
    await mkdir(path.join(vol, name), { recursive: true });
    await writeFile(path.join(vol, name, 'tls.crt'), pki.cert);
    await writeFile(path.join(vol, name, 'tls.key'), pki.key);
  };
  await writeVersion('..2026_01_01_00_00_00.1', first);
  await symlink('..2026_01_01_00_00_00.1', path.join(vol, '..data'));
  await symlink('..data/tls.crt', path.join(vol, 'tls.crt'));
  await symlink('..data/tls.key', path.join(vol, 'tls.key'));
  const files = { certFile: path.join(vol, 'tls.crt'), keyFile: path.join(vol, 'tls.key') };

  const reloads: TlsPair[] = [];
  const errors: Error[] = [];
  const watcher = watchTlsFiles(files, { onReload: (p) => reloads.push(p), onError: (e) => errors.push(e) }, {
    ...WATCH,
    initial: await readTlsFiles(files),
  });
  t.teardown(() => watcher.stop());

  await writeVersion('..2026_01_02_00_00_00.2', second);
  await symlink('..2026_01_02_00_00_00.2', path.join(vol, '..data_tmp'));
  await rename(path.join(vol, '..data_tmp'), path.join(vol, '..data'));
  await until(() => reloads.length === 1, 'reload');
  t.same(reloads[0], { cert: second.cert, key: second.key });
  t.same(errors, []);
});

void t.test('stop() ends the watching', async (t) => {
  const certs = await tempCerts(t);
  const events: string[] = [];
  const timers = new FakeTimers();
  const initial = await readTlsFiles(certs);
  const watcher = watchTlsFiles(certs, { onReload: () => events.push('reload'), onError: () => events.push('error') }, { ...WATCH, timers, initial });
  watcher.stop();
  // A watcher still running on the same files: once it has read the change, the stopped
  // one was told of it too (the same polls, the same directory events), had it listened.
  const seen: string[] = [];
  const live = watchTlsFiles(certs, { onReload: (pair) => seen.push(pair.cert), onError: () => undefined }, { ...WATCH, initial });
  t.teardown(() => live.stop());
  const other = newTestPki();
  await replaceFile(certs.keyFile, other.key);
  await replaceFile(certs.certFile, other.cert);
  await until(() => seen.includes(other.cert), 'the running watcher to reload');
  t.same(events, [], 'nothing reported by the stopped watcher');
  t.same(timers.delays, [], 'it did not even start a check');
});

void t.test('a throwing handler does not escape the watcher', async (t) => {
  const certs = await tempCerts(t);
  const errors: Error[] = [];
  const watcher = watchTlsFiles(certs, {
    onReload: () => {
      throw new Error('handler failed');
    },
    onError: (e) => errors.push(e),
  }, { ...WATCH, initial: await readTlsFiles(certs) });
  t.teardown(() => watcher.stop());
  const other = newTestPki();
  await replaceFile(certs.keyFile, other.key);
  await replaceFile(certs.certFile, other.cert);
  await until(() => errors.some((e) => e.message === 'handler failed'), 'the handler error');
  t.pass('reported through onError');
});
