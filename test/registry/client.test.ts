import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import t from 'tap';
import { parseWwwAuthenticate } from '../../src/registry/auth.js';
import { RegistryClient, type RegistryEndpoint, type RegistryLog } from '../../src/registry/client.js';
import { credentialsFromDockerConfig } from '../../src/registry/docker-config.js';
import { createTestTls, pushImage, pushIndex, startRegistry } from '../support/registry.js';
import { startTokenServer } from '../support/token-server.js';

interface LogEntry {
  level: 'debug' | 'warn';
  obj: object;
  msg: string;
}

function logSink(): { entries: LogEntry[]; log: RegistryLog } {
  const entries: LogEntry[] = [];
  return {
    entries,
    log: {
      debug: (obj, msg) => entries.push({ level: 'debug', obj, msg }),
      warn: (obj, msg) => entries.push({ level: 'warn', obj, msg }),
    },
  };
}

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

void t.test('parseWwwAuthenticate', (t) => {
  const cases: Array<{ name: string; header: string; want: ReturnType<typeof parseWwwAuthenticate> }> = [
    {
      name: 'Bearer challenge of Docker Hub',
      header: 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
      want: { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' } },
    },
    {
      name: 'commas inside quotes stay in the value',
      header: 'Bearer realm="http://127.0.0.1:1/token",service="s",scope="repository:a/b:pull,push",error="insufficient_scope"',
      want: { scheme: 'bearer', params: { realm: 'http://127.0.0.1:1/token', service: 's', scope: 'repository:a/b:pull,push', error: 'insufficient_scope' } },
    },
    { name: 'Basic with a realm', header: 'Basic realm="Registry Realm"', want: { scheme: 'basic', params: { realm: 'Registry Realm' } } },
    { name: 'escaped quotes', header: 'Basic realm="say \\"hi\\""', want: { scheme: 'basic', params: { realm: 'say "hi"' } } },
    {
      name: 'case, spaces and unquoted tokens',
      header: 'BEARER  Realm = "x" , service=reg',
      want: { scheme: 'bearer', params: { realm: 'x', service: 'reg' } },
    },
    { name: 'scheme without parameters', header: 'Basic', want: { scheme: 'basic', params: {} } },
    {
      name: 'an answerable challenge after one we cannot answer',
      header: 'Negotiate abc==, Basic realm="r"',
      want: { scheme: 'basic', params: { realm: 'r' } },
    },
    {
      name: 'two challenges: the first answerable one',
      header: 'Bearer realm="https://a/token", Basic realm="b"',
      want: { scheme: 'bearer', params: { realm: 'https://a/token' } },
    },
    { name: 'only an unknown scheme', header: 'Negotiate abc==', want: { scheme: 'negotiate', params: {} } },
    { name: 'empty', header: '', want: undefined },
    { name: 'parameters without a scheme', header: 'realm="x"', want: undefined },
    { name: 'unterminated quote', header: 'Bearer realm="x', want: undefined },
  ];
  for (const c of cases) {
    void t.test(c.name, (t) => {
      t.same(parseWwwAuthenticate(c.header), c.want);
      t.end();
    });
  }
  t.end();
});

void t.test('credentialsFromDockerConfig', (t) => {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const cases: Array<{ name: string; json: unknown; host: string; want: { username: string; password: string } | undefined }> = [
    {
      name: 'auth field, base64 user:password',
      json: { auths: { 'mirror.example.com': { auth: b64('robot:s3cret') } } },
      host: 'mirror.example.com',
      want: { username: 'robot', password: 's3cret' },
    },
    {
      name: 'password containing colons',
      json: { auths: { 'mirror.example.com': { auth: b64('robot:a:b:c') } } },
      host: 'mirror.example.com',
      want: { username: 'robot', password: 'a:b:c' },
    },
    {
      name: 'username and password fields',
      json: { auths: { 'mirror.example.com:5000': { username: 'u', password: 'p' } } },
      host: 'mirror.example.com:5000',
      want: { username: 'u', password: 'p' },
    },
    {
      name: 'auth wins over username/password',
      json: { auths: { 'm.example.com': { auth: b64('a:1'), username: 'b', password: '2' } } },
      host: 'm.example.com',
      want: { username: 'a', password: '1' },
    },
    {
      name: 'URL key of Docker Hub for docker.io',
      json: { auths: { 'https://index.docker.io/v1/': { auth: b64('hub:pw') } } },
      host: 'docker.io',
      want: { username: 'hub', password: 'pw' },
    },
    {
      name: 'URL key with scheme and path for a private registry, case-insensitive',
      json: { auths: { 'https://Mirror.Example.com/v2/': { auth: b64('x:y') } } },
      host: 'mirror.example.com',
      want: { username: 'x', password: 'y' },
    },
    {
      name: 'docker.io key for registry-1.docker.io',
      json: { auths: { 'docker.io': { auth: b64('hub:pw') } } },
      host: 'registry-1.docker.io',
      want: { username: 'hub', password: 'pw' },
    },
    {
      name: 'ports must match',
      json: { auths: { 'mirror.example.com:5000': { auth: b64('x:y') } } },
      host: 'mirror.example.com',
      want: undefined,
    },
    {
      name: 'wildcard matches one subdomain label',
      json: { auths: { '*.pkg.dev': { auth: b64('_json_key:k') } } },
      host: 'us-docker.pkg.dev',
      want: { username: '_json_key', password: 'k' },
    },
    { name: 'wildcard never matches the bare domain', json: { auths: { '*.pkg.dev': { auth: b64('a:b') } } }, host: 'pkg.dev', want: undefined },
    {
      name: 'wildcard never matches a look-alike',
      json: { auths: { '*.example.com': { auth: b64('a:b') } } },
      host: 'a.example.com.evil.io',
      want: undefined,
    },
    {
      name: 'exact key wins over wildcard',
      json: { auths: { '*.example.com': { auth: b64('wild:1') }, 'm.example.com': { auth: b64('exact:2') } } },
      host: 'm.example.com',
      want: { username: 'exact', password: '2' },
    },
    { name: 'legacy dockercfg at the top level', json: { 'old.example.com': { auth: b64('o:p'), email: 'x@y' } }, host: 'old.example.com', want: { username: 'o', password: 'p' } },
    { name: 'no entry for the host', json: { auths: { 'other.example.com': { auth: b64('a:b') } } }, host: 'mirror.example.com', want: undefined },
    { name: 'entry without usable credentials', json: { auths: { 'm.example.com': { auth: b64('nocolon') } } }, host: 'm.example.com', want: undefined },
  ];
  for (const c of cases) {
    void t.test(c.name, (t) => {
      t.same(credentialsFromDockerConfig(JSON.stringify(c.json), c.host), c.want);
      t.end();
    });
  }
  void t.test('invalid JSON is an error that does not quote the secret', (t) => {
    const err = t.throws(() => credentialsFromDockerConfig('{"auths": {"m": {"auth": "c2VjcmV0"} x', 'm')) as Error;
    t.match(err.message, /not valid JSON/);
    t.notMatch(err.message, /c2VjcmV0/);
    t.end();
  });
  void t.test('auths must be an object', (t) => {
    t.throws(() => credentialsFromDockerConfig('{"auths": []}', 'm'), /auths/);
    t.throws(() => credentialsFromDockerConfig('[]', 'm'), /not a JSON object/);
    t.end();
  });
  t.end();
});

void t.test('registry without auth', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const client = new RegistryClient();
  t.teardown(() => client.close());
  const ep: RegistryEndpoint = { host: reg.host, insecure: true };
  const docker = await pushImage(reg, 'library/nginx', '1.14.2');
  const oci = await pushImage(reg, 'team/oci', 'v1', { format: 'oci' });
  const index = await pushIndex(reg, 'team/multi', 'v1');
  const list = await pushIndex(reg, 'team/multi', 'v2', { format: 'docker' });

  void t.test('present by tag, with digest and media type', async (t) => {
    t.same(await client.checkManifest(ep, 'library/nginx', '1.14.2'), {
      result: 'present',
      digest: docker,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    });
  });
  void t.test('present by digest', async (t) => {
    t.match(await client.checkManifest(ep, 'library/nginx', docker), { result: 'present', digest: docker });
  });
  const kinds = [
    { name: 'OCI manifest', repo: 'team/oci', ref: 'v1', digest: oci, mediaType: 'application/vnd.oci.image.manifest.v1+json' },
    { name: 'OCI index', repo: 'team/multi', ref: 'v1', digest: index, mediaType: 'application/vnd.oci.image.index.v1+json' },
    { name: 'Docker manifest list', repo: 'team/multi', ref: 'v2', digest: list, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json' },
  ];
  for (const k of kinds) {
    void t.test(`present: ${k.name}`, async (t) => {
      t.same(await client.checkManifest(ep, k.repo, k.ref), { result: 'present', digest: k.digest, mediaType: k.mediaType });
    });
  }
  void t.test('absent tag', async (t) => {
    t.same(await client.checkManifest(ep, 'library/nginx', '9.9.9'), { result: 'absent', status: 404 });
  });
  void t.test('absent digest', async (t) => {
    t.same(await client.checkManifest(ep, 'library/nginx', `sha256:${'0'.repeat(64)}`), { result: 'absent', status: 404 });
  });
  void t.test('absent repository', async (t) => {
    t.same(await client.checkManifest(ep, 'nobody/here', 'latest'), { result: 'absent', status: 404 });
  });
  void t.test('invalid names are errors, never requests', async (t) => {
    t.match(await client.checkManifest(ep, 'library/nginx', 'bad tag'), { result: 'error', reason: /^invalid/ });
    t.match(await client.checkManifest(ep, '../x', 'latest'), { result: 'error', reason: /^invalid/ });
    t.match(await client.checkManifest({ host: 'a/b' }, 'x', 'latest'), { result: 'error', reason: /^invalid/ });
  });
  void t.test('an aborted signal is a timeout error', async (t) => {
    t.match(await client.checkManifest(ep, 'library/nginx', '1.14.2', { signal: AbortSignal.abort() }), { result: 'error', reason: /^timeout/ });
  });
  void t.test('request: upload a blob (Buffer body), then find it', async (t) => {
    const blob = Buffer.from('a blob pushed with request()');
    const digest = digestOf(blob);
    const start = await client.request(ep, { method: 'POST', path: '/v2/team/upload/blobs/uploads/', repository: 'team/upload', actions: 'pull,push' });
    start.body.resume();
    t.equal(start.status, 202);
    const location = new URL(String(start.headers.location), reg.url);
    location.searchParams.set('digest', digest);
    // An absolute upload Location on the registry's own origin is accepted as the path.
    const put = await client.request(ep, {
      method: 'PUT',
      path: location.href,
      headers: { 'content-type': 'application/octet-stream' },
      body: blob,
      repository: 'team/upload',
      actions: 'pull,push',
    });
    put.body.resume();
    t.equal(put.status, 201);
    const get = await client.request(ep, { method: 'GET', path: `/v2/team/upload/blobs/${digest}`, repository: 'team/upload', actions: 'pull' });
    t.equal(get.status, 200);
    const chunks: Buffer[] = [];
    for await (const c of get.body) chunks.push(c as Buffer);
    t.same(Buffer.concat(chunks), blob);
  });
  void t.test('request: a path off the registry is refused', async (t) => {
    await t.rejects(client.request(ep, { method: 'GET', path: 'http://127.0.0.2:1/v2/', repository: 'a', actions: 'pull' }), { name: 'RegistryError', reason: 'invalid' });
    await t.rejects(client.request(ep, { method: 'GET', path: '/v1/x', repository: 'a', actions: 'pull' }), { name: 'RegistryError', reason: 'invalid' });
  });
});

void t.test('registry with Basic auth (htpasswd)', async (t) => {
  const reg = await startRegistry({ auth: { htpasswd: { user: 'robot', pass: 'pull-s3cret' } } });
  t.teardown(() => reg.stop());
  const { entries, log } = logSink();
  const client = new RegistryClient({ log });
  t.teardown(() => client.close());
  const digest = await pushImage(reg, 'team/app', '1.0');
  const good: RegistryEndpoint = { host: reg.host, insecure: true, auth: { username: 'robot', password: 'pull-s3cret' } };

  void t.test('good credentials: present', async (t) => {
    t.match(await client.checkManifest(good, 'team/app', '1.0'), { result: 'present', digest });
    // The second check sends the credentials up front (the challenge is remembered).
    t.match(await client.checkManifest(good, 'team/app', '1.0'), { result: 'present', digest });
    t.same(await client.checkManifest(good, 'team/app', 'nope'), { result: 'absent', status: 404 });
  });
  void t.test('wrong credentials: unauthorized', async (t) => {
    t.same(await client.checkManifest({ ...good, auth: { username: 'robot', password: 'wrong' } }, 'team/app', '1.0'), {
      result: 'error',
      reason: 'unauthorized',
      status: 401,
    });
  });
  void t.test('no credentials: unauthorized', async (t) => {
    t.same(await client.checkManifest({ host: reg.host, insecure: true }, 'team/app', '1.0'), { result: 'error', reason: 'unauthorized', status: 401 });
  });
  void t.test('request: push with a stream body on a fresh client learns the challenge first', async (t) => {
    const fresh = new RegistryClient();
    t.teardown(() => fresh.close());
    const blob = Buffer.from('streamed blob behind basic auth');
    const start = await fresh.request(good, { method: 'POST', path: '/v2/team/app/blobs/uploads/', repository: 'team/app', actions: 'pull,push' });
    start.body.resume();
    t.equal(start.status, 202);
    const streaming = new RegistryClient();
    t.teardown(() => streaming.close());
    const location = new URL(String(start.headers.location), reg.url);
    location.searchParams.set('digest', digestOf(blob));
    const put = await streaming.request(good, {
      method: 'PUT',
      path: location.pathname + location.search,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.length) },
      body: Readable.from([blob]),
      repository: 'team/app',
      actions: 'pull,push',
    });
    put.body.resume();
    t.equal(put.status, 201);
  });
  void t.test('the password is never logged', (t) => {
    t.ok(entries.length > 0);
    t.notMatch(JSON.stringify(entries), /pull-s3cret|cm9ib3Q6cHVsbC1zM2NyZXQ/);
    t.end();
  });
});

void t.test('registry with Bearer auth (token server)', async (t) => {
  const ts = await startTokenServer({ users: { alice: 'token-s3cret' } });
  t.teardown(() => ts.stop());
  const reg = await startRegistry({ auth: { token: ts } });
  t.teardown(() => reg.stop());
  const alice = { username: 'alice', password: 'token-s3cret' };
  const digest = await pushImage(reg, 'team/app', '1.0', { auth: alice });
  const ep: RegistryEndpoint = { host: reg.host, insecure: true, auth: alice };
  const { entries, log } = logSink();
  let now = 1_000_000;
  const client = new RegistryClient({ log, now: () => now });
  t.teardown(() => client.close());

  void t.test('present; the token is fetched once and cached across checks', async (t) => {
    const before = ts.requests.length;
    t.match(await client.checkManifest(ep, 'team/app', '1.0'), { result: 'present', digest });
    t.match(await client.checkManifest(ep, 'team/app', digest), { result: 'present', digest });
    t.same(await client.checkManifest(ep, 'team/app', 'nope'), { result: 'absent', status: 404 });
    const fetched = ts.requests.slice(before);
    t.equal(fetched.length, 1);
    t.same(fetched[0], { user: 'alice', service: ts.service, scopes: ['repository:team/app:pull'], status: 200, method: 'GET' });
  });
  void t.test('concurrent checks of one scope share one token fetch', async (t) => {
    const c = new RegistryClient();
    t.teardown(() => c.close());
    const before = ts.requests.length;
    const results = await Promise.all(['1.0', '1.0', 'nope', digest].map((ref) => c.checkManifest(ep, 'team/app', ref)));
    t.same(
      results.map((r) => r.result),
      ['present', 'present', 'absent', 'present'],
    );
    t.equal(ts.requests.length - before, 1);
  });
  void t.test('each repository has its own scope', async (t) => {
    const before = ts.requests.length;
    t.same(await client.checkManifest(ep, 'team/other', 'latest'), { result: 'absent', status: 404 });
    t.same(
      ts.requests.slice(before).map((r) => r.scopes),
      [['repository:team/other:pull']],
    );
  });
  void t.test('an expired token is fetched again', async (t) => {
    const before = ts.requests.length;
    now += 300_000; // the server's expires_in
    t.match(await client.checkManifest(ep, 'team/app', '1.0'), { result: 'present' });
    t.match(await client.checkManifest(ep, 'team/app', '1.0'), { result: 'present' });
    t.equal(ts.requests.length - before, 1);
  });
  void t.test('wrong credentials: unauthorized', async (t) => {
    t.match(await client.checkManifest({ ...ep, auth: { username: 'alice', password: 'wrong' } }, 'team/app', '1.0'), {
      result: 'error',
      reason: 'unauthorized',
      status: 401,
    });
  });
  void t.test('no credentials: an anonymous token without access, so unauthorized', async (t) => {
    const before = ts.requests.length;
    t.match(await client.checkManifest({ host: reg.host, insecure: true }, 'team/app', '1.0'), { result: 'error', reason: 'unauthorized' });
    t.ok(ts.requests.slice(before).every((r) => r.user === undefined));
  });
  void t.test('request: push with pull,push scope and a stream body', async (t) => {
    const blob = Buffer.from('streamed blob behind a token');
    const start = await client.request(ep, { method: 'POST', path: '/v2/team/app/blobs/uploads/', repository: 'team/app', actions: 'pull,push' });
    start.body.resume();
    t.equal(start.status, 202);
    t.same(ts.requests.at(-1)?.scopes, ['repository:team/app:pull,push']);
    const location = new URL(String(start.headers.location), reg.url);
    location.searchParams.set('digest', digestOf(blob));
    const put = await client.request(ep, {
      method: 'PUT',
      path: location.pathname + location.search,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.length) },
      body: Readable.from([blob]),
      repository: 'team/app',
      actions: 'pull,push',
    });
    put.body.resume();
    t.equal(put.status, 201);
    const head = await client.request(ep, { method: 'HEAD', path: `/v2/team/app/blobs/${digestOf(blob)}`, repository: 'team/app', actions: 'pull' });
    head.body.resume();
    t.equal(head.status, 200);
  });
  void t.test('tokens and passwords are never logged', (t) => {
    t.ok(entries.some((e) => e.msg === 'registry token fetched'));
    const logged = JSON.stringify(entries);
    t.ok(ts.tokens.length > 0);
    for (const token of ts.tokens) t.notOk(logged.includes(token.split('.')[2]!), 'no token signature in logs');
    t.notMatch(logged, /token-s3cret/);
    t.end();
  });
});

void t.test('registry over TLS with a private CA', async (t) => {
  const tlsFiles = createTestTls();
  const reg = await startRegistry({ tls: tlsFiles });
  t.teardown(() => reg.stop());
  t.notOk(reg.insecure);
  // The push helper trusts the CA given in `tls.ca`.
  const digest = await pushImage(reg, 'team/secure', '1');
  const client = new RegistryClient();
  t.teardown(() => client.close());

  void t.test('trusted through ca: present', async (t) => {
    t.match(await client.checkManifest({ host: reg.host, ca: [tlsFiles.ca] }, 'team/secure', '1'), { result: 'present', digest });
  });
  void t.test('without the CA: a TLS error', async (t) => {
    t.match(await client.checkManifest({ host: reg.host }, 'team/secure', '1'), { result: 'error', reason: /^tls/ });
  });
  void t.test('plain HTTP against a TLS registry is an error', async (t) => {
    t.match(await client.checkManifest({ host: reg.host, insecure: true }, 'team/secure', '1'), { result: 'error' });
  });
});

void t.test('registry stopped: an error, not an exception', async (t) => {
  const reg = await startRegistry();
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await reg.stop();
  });
  await pushImage(reg, 'team/app', '1');
  const client = new RegistryClient();
  t.teardown(() => client.close());
  const ep: RegistryEndpoint = { host: reg.host, insecure: true };
  t.match(await client.checkManifest(ep, 'team/app', '1'), { result: 'present' });
  await reg.stop();
  stopped = true;
  t.match(await client.checkManifest(ep, 'team/app', '1', { signal: AbortSignal.timeout(5000) }), { result: 'error', reason: /^unreachable/ });
});

/** A loopback HTTP server standing in for a registry, for answers a real one will not give on demand. */
async function fakeServer(handler: http.RequestListener): Promise<{ host: string; url: string; connections: () => number; close: () => Promise<void> }> {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

void t.test('answers a real registry does not give on demand', async (t) => {
  const seen: http.IncomingHttpHeaders[] = [];
  const storage = await fakeServer((req, res) => {
    seen.push(req.headers);
    res.end('blob bytes');
  });
  t.teardown(() => storage.close());
  const fake = await fakeServer((req, res) => {
    const url = req.url ?? '';
    if (url.includes('/manifests/busy')) res.writeHead(503).end();
    else if (url.includes('/manifests/limited')) res.writeHead(429).end();
    else if (url.includes('/manifests/teapot')) res.writeHead(418).end();
    else if (url.includes('/manifests/hang')) return; // never answers
    else if (url.includes('/blobs/')) {
      if (req.headers.authorization === undefined) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
      } else {
        res.writeHead(307, { location: `${storage.url}/bucket/blob?sig=1` }).end();
      }
    } else {
      // Like distribution: a HEAD answer names the manifest's length (Node's client keeps
      // no connection alive after a HEAD answer without it).
      res.writeHead(200, { 'docker-content-digest': `sha256:${'a'.repeat(64)}`, 'content-length': '512' }).end();
    }
  });
  t.teardown(() => fake.close());
  const client = new RegistryClient();
  t.teardown(() => client.close());
  const ep: RegistryEndpoint = { host: fake.host, insecure: true, auth: { username: 'u', password: 'p' } };

  const statuses = [
    { ref: 'busy', status: 503 },
    { ref: 'limited', status: 429 },
    { ref: 'teapot', status: 418 },
  ];
  for (const s of statuses) {
    void t.test(`HTTP ${s.status} is an error with the status`, async (t) => {
      t.match(await client.checkManifest(ep, 'team/app', s.ref), { result: 'error', status: s.status });
    });
  }
  void t.test('a registry that does not answer in time: timeout error', async (t) => {
    t.match(await client.checkManifest(ep, 'team/app', 'hang', { signal: AbortSignal.timeout(200) }), { result: 'error', reason: /^timeout/ });
  });
  void t.test('keep-alive: sequential checks reuse one connection', async (t) => {
    const c = new RegistryClient();
    t.teardown(() => c.close());
    const before = fake.connections();
    for (let i = 0; i < 5; i++) t.match(await c.checkManifest(ep, 'team/app', 'ok'), { result: 'present' });
    t.equal(fake.connections() - before, 1);
  });
  void t.test('redirects are followed without credentials to another origin', async (t) => {
    const res = await client.request(ep, { method: 'GET', path: `/v2/team/app/blobs/sha256:${'b'.repeat(64)}`, repository: 'team/app', actions: 'pull' });
    t.equal(res.status, 200);
    const chunks: Buffer[] = [];
    for await (const c of res.body) chunks.push(c as Buffer);
    t.equal(Buffer.concat(chunks).toString(), 'blob bytes');
    t.equal(seen.length, 1);
    t.equal(seen[0]?.authorization, undefined);
  });
});
