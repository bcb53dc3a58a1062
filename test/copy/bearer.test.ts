/**
 * Copying with Bearer token auth, the auth Docker Hub, ghcr.io and quay.io use: real
 * docker-registry instances behind token servers on loopback, with credentials reaching the
 * copier as they do in a cluster (a dockerconfigjson Secret, through loadEndpoints).
 */
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { parseReference, type ImageReference } from '../../src/core/reference.js';
import { BlobLocations, CopyError, copyImage, type CopyOptions } from '../../src/copy/copier.js';
import { RegistryClient, type RegistryEndpoint } from '../../src/registry/client.js';
import { endpointFor, loadEndpoints, type EndpointTable } from '../../src/verify/endpoints.js';
import { pushImage, pushIndex, startRegistry, type Credentials } from '../support/registry.js';
import { startTokenServer } from '../support/token-server.js';
import { headDigest, manifestBytes, pullToken, startProxy } from './support.js';

function ref(s: string): ImageReference {
  const p = parseReference(s);
  if (!p.ok) throw new Error(p.reason);
  return p.ref;
}

function dockerConfig(entries: Record<string, Credentials>): string {
  const auths = Object.fromEntries(
    Object.entries(entries).map(([host, c]) => [host, { auth: Buffer.from(`${c.username}:${c.password}`).toString('base64') }]),
  );
  return JSON.stringify({ auths });
}

/** Endpoints as the webhook builds them: `registries:` settings, credentials from the Secret `copy-creds`. */
async function endpointsFrom(hosts: string[], secret: string): Promise<EndpointTable> {
  const config = validateConfig({ registries: Object.fromEntries(hosts.map((h) => [h, { insecure: true, auth: { secret: 'copy-creds' } }])) });
  const warnings: string[] = [];
  const table = await loadEndpoints(config.registries, {
    secrets: { readDockerConfig: async (name) => (name === 'copy-creds' ? secret : undefined) },
    log: { warn: (_obj, msg) => void warnings.push(msg) },
  });
  // An open registry has no entry in the Secret; any other warning means credentials went missing.
  if (warnings.some((w) => !w.includes('no entry for this registry'))) throw new Error(`endpoints: ${warnings.join('; ')}`);
  return table;
}

void t.test('copyImage with Bearer token auth', async (t) => {
  const reader: Credentials = { username: 'reader', password: 'src-pass' };
  const pusher: Credentials = { username: 'pusher', password: 'mirror-pass' };
  // Repositories of the mirror the pusher may not read (set by the mount fallback test).
  const unreadable = new Set<string>();
  const srcTokens = await startTokenServer({ users: { [reader.username]: reader.password } });
  const mirrorTokens = await startTokenServer({
    users: { [pusher.username]: pusher.password },
    grant: (_user, _type, name, actions) => (unreadable.has(name) ? actions.filter((a) => a !== 'pull') : actions),
  });
  const [src, open, mirror] = await Promise.all([startRegistry({ auth: { token: srcTokens } }), startRegistry(), startRegistry({ auth: { token: mirrorTokens } })]);
  // Proxies in front of the targets record every request and its status (the registries log no access).
  const openProxy = await startProxy(open.url);
  const mirrorProxy = await startProxy(mirror.url);
  const client = new RegistryClient();
  t.teardown(async () => {
    client.close();
    await Promise.all([openProxy.stop(), mirrorProxy.stop()]);
    await Promise.all([src.stop(), open.stop(), mirror.stop()]);
    await Promise.all([srcTokens.stop(), mirrorTokens.stop()]);
  });
  const endpoints = await endpointsFrom([src.host, openProxy.host, mirrorProxy.host], dockerConfig({ [src.host]: reader, [mirrorProxy.host]: pusher }));
  t.match(endpoints.get(src.host), { auth: reader }, 'the source credentials come from the Secret');
  const opts = (extra: Partial<CopyOptions> = {}): CopyOptions => ({ client, endpoint: (host) => endpointFor(endpoints, host), ...extra });
  const srcRef = (name: string): ImageReference => ref(`${src.host}/${name}`);

  t.test('Bearer source, open target: digest-exact, pull tokens for the source repository', async (t) => {
    const digest = await pushImage(src, 'team/app', 'v1', { auth: reader });
    const before = srcTokens.requests.length;
    const r = await copyImage(srcRef('team/app:v1'), ref(`${openProxy.host}/mirror/team/app:v1`), opts());
    t.equal(r.digest, digest);
    t.match(r, { blobsSent: 2, manifests: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json' });
    t.equal(await headDigest(open, 'mirror/team/app', 'v1'), digest);
    t.same(await manifestBytes(open, 'mirror/team/app', 'v1'), await manifestBytes(src, 'team/app', 'v1', reader), 'the same manifest bytes');

    const seen = srcTokens.requests.slice(before);
    t.ok(seen.length > 0, 'tokens were fetched');
    t.ok(
      seen.some((q) => q.scopes.includes('repository:team/app:pull')),
      'scope=repository:team/app:pull was asked for',
    );
    t.same([...new Set(seen.map((q) => `${q.user} ${q.status} ${q.service} ${q.scopes.join(' ')}`))], [`reader 200 ${srcTokens.service} repository:team/app:pull`], 'only pull on the source, as the configured user');
  });

  t.test('Bearer source and Bearer target: push with pull,push tokens on the target repository', async (t) => {
    const digest = await pushIndex(src, 'team/multi', 'v1', { auth: reader, format: 'oci' });
    const before = mirrorTokens.requests.length;
    const r = await copyImage(srcRef('team/multi:v1'), ref(`${mirrorProxy.host}/hub/team/multi:v1`), opts());
    t.equal(r.digest, digest);
    t.match(r, { manifests: 4, blobsSent: 4, mediaType: 'application/vnd.oci.image.index.v1+json' });
    t.equal(await headDigest(mirror, 'hub/team/multi', 'v1', pusher), digest);
    t.same(await manifestBytes(mirror, 'hub/team/multi', 'v1', pusher), await manifestBytes(src, 'team/multi', 'v1', reader), 'the same index bytes');
    const index = JSON.parse((await manifestBytes(src, 'team/multi', digest, reader)).toString()) as { manifests: { digest: string }[] };
    for (const m of index.manifests) t.equal(await headDigest(mirror, 'hub/team/multi', m.digest, pusher), m.digest, 'each child by digest');

    const seen = mirrorTokens.requests.slice(before);
    t.ok(seen.length > 0 && seen.every((q) => q.user === 'pusher' && q.status === 200), 'mirror tokens for the mirror user');
    t.ok(seen.some((q) => q.scopes.includes('repository:hub/team/multi:pull,push')), 'scope=repository:hub/team/multi:pull,push was asked for');
    t.notOk(srcTokens.requests.some((q) => q.user === 'pusher'), 'the mirror credentials never went to the source token server');
    const puts = mirrorProxy.requests.filter((q) => q.method === 'PUT' && q.path.startsWith('/v2/hub/team/multi/'));
    t.ok(puts.length >= 4 + 3 && puts.every((q) => q.status === 201), 'every blob and manifest PUT was accepted');
  });

  t.test('cross-repository mount on a Bearer target: the token also grants pull on the repository mounted from', async (t) => {
    await pushImage(src, 'team/shared', 'v1', { auth: reader, content: 'shared layer' });
    const locations = new BlobLocations();
    const first = await copyImage(srcRef('team/shared:v1'), ref(`${mirrorProxy.host}/x/shared:v1`), opts({ locations }));
    t.match(first, { blobsSent: 2, blobsMounted: 0 });

    const requestsBefore = mirrorProxy.requests.length;
    const tokensBefore = mirrorTokens.requests.length;
    const second = await copyImage(srcRef('team/shared:v1'), ref(`${mirrorProxy.host}/y/shared:v1`), opts({ locations }));
    t.match(second, { digest: first.digest, blobsMounted: 2, blobsSent: 0, bytesSent: 0 });
    t.equal(await headDigest(mirror, 'y/shared', 'v1', pusher), first.digest);

    const requests = mirrorProxy.requests.slice(requestsBefore);
    const mounts = requests.filter((q) => q.method === 'POST' && q.path.includes('mount='));
    t.equal(mounts.length, 2, 'one mount per blob');
    for (const m of mounts) {
      t.match(m, { status: 201, path: /^\/v2\/y\/shared\/blobs\/uploads\/\?mount=sha256%3A[0-9a-f]{64}&from=x%2Fshared$/ }, 'mounted (201) from x/shared');
    }
    t.notOk(requests.some((q) => q.method === 'PATCH' || (q.method === 'PUT' && q.path.includes('/blobs/'))), 'no blob was uploaded');
    t.ok(
      mirrorTokens.requests.slice(tokensBefore).some((q) => q.status === 200 && q.scopes.includes('repository:y/shared:pull,push') && q.scopes.includes('repository:x/shared:pull')),
      'one token asked for push on y/shared and pull on x/shared',
    );

    // The control: the registry refuses that mount to a token without pull on x/shared, so the
    // second scope is what made the mounts above work.
    const layer = (JSON.parse((await manifestBytes(mirror, 'x/shared', 'v1', pusher)).toString()) as { layers: { digest: string }[] }).layers[0]!.digest;
    const mountWith = async (token: string | undefined): Promise<number> => {
      const res = await fetch(`${mirror.url}/v2/z/shared/blobs/uploads/?mount=${encodeURIComponent(layer)}&from=x%2Fshared`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token ?? ''}`, 'content-length': '0' },
      });
      await res.arrayBuffer();
      return res.status;
    };
    const challenge = `Bearer realm="${mirrorTokens.realm}",service="${mirrorTokens.service}"`;
    t.equal(await mountWith(await pullToken(challenge, 'z/shared', pusher, 'pull,push')), 401, 'without pull on x/shared: refused');
  });

  t.test('a mount the token service does not allow falls back to an upload; the copy is still exact', async (t) => {
    await pushImage(src, 'team/locked', 'v1', { auth: reader, content: 'locked layer' });
    const locations = new BlobLocations();
    const first = await copyImage(srcRef('team/locked:v1'), ref(`${mirrorProxy.host}/locked/a:v1`), opts({ locations }));
    t.equal(first.blobsSent, 2);
    // The mirror user loses read access to locked/a (as with a repository of another team).
    unreadable.add('locked/a');
    t.teardown(() => void unreadable.delete('locked/a'));
    const requestsBefore = mirrorProxy.requests.length;
    const second = await copyImage(srcRef('team/locked:v1'), ref(`${mirrorProxy.host}/locked/b:v1`), opts({ locations }));
    t.match(second, { digest: first.digest, blobsMounted: 0, blobsSent: 2 });
    t.ok(second.bytesSent > 0);
    const mounts = mirrorProxy.requests.slice(requestsBefore).filter((q) => q.method === 'POST' && q.path.includes('mount='));
    t.ok(mounts.length >= 2 && mounts.every((q) => q.status === 401), 'the registry refused the mounts');
    t.equal(await headDigest(mirror, 'locked/b', 'v1', pusher), first.digest);
    t.same(await manifestBytes(mirror, 'locked/b', 'v1', pusher), await manifestBytes(src, 'team/locked', 'v1', reader));
  });

  t.test('wrong credentials for a Bearer source: a clear failure, nothing written to the target', async (t) => {
    await pushImage(src, 'team/private', 'v1', { auth: reader });
    const wrong = await endpointsFrom([src.host, openProxy.host], dockerConfig({ [src.host]: { username: 'reader', password: 'not-the-password' } }));
    const fresh = new RegistryClient();
    t.teardown(() => fresh.close());
    const tokensBefore = srcTokens.requests.length;
    const targetBefore = openProxy.requests.length;
    const err = await copyImage(srcRef('team/private:v1'), ref(`${openProxy.host}/mirror/team/private:v1`), {
      client: fresh,
      endpoint: (host) => endpointFor(wrong, host),
      sleep: async () => undefined,
    }).catch((e: unknown) => e);
    t.ok(err instanceof CopyError, String(err));
    t.match(err, { reason: 'unauthorized', transient: false, status: 401 });
    const message = (err as Error).message;
    t.ok(message.includes(src.host), `names the registry: ${message}`);
    t.match(message, /authentication failed/);
    t.notMatch(message, /not-the-password/, 'never the password');
    t.same(
      srcTokens.requests.slice(tokensBefore).map((q) => `${q.user} ${q.status}`),
      ['reader 401'],
      'the token server refused the user once; no retries',
    );
    t.equal(openProxy.requests.length, targetBefore, 'the target was not even asked');
    t.equal(await headDigest(open, 'mirror/team/private', 'v1'), undefined);
  });

  t.test('no credentials for a Bearer source: an anonymous token without access, a clear failure', async (t) => {
    const fresh = new RegistryClient();
    t.teardown(() => fresh.close());
    const anonymous = (host: string): RegistryEndpoint => ({ host, insecure: true });
    const targetBefore = openProxy.requests.length;
    const err = await copyImage(srcRef('team/app:v1'), ref(`${openProxy.host}/mirror/team/anon:v1`), { client: fresh, endpoint: anonymous }).catch((e: unknown) => e);
    t.ok(err instanceof CopyError, String(err));
    t.match(err, { reason: 'unauthorized', transient: false, status: 401 });
    const message = (err as Error).message;
    t.ok(message.includes(src.host), `names the registry: ${message}`);
    t.match(message, /authentication failed/);
    t.equal(openProxy.requests.length, targetBefore, 'the target was not even asked');
  });
});
