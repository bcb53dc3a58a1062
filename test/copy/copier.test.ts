import type http from 'node:http';
import t from 'tap';
import { parseReference, type ImageReference } from '../../src/core/reference.js';
import { BlobLocations, CopyError, copyImage, type CopyOptions } from '../../src/copy/copier.js';
import { RegistryClient, type RegistryEndpoint } from '../../src/registry/client.js';
import { pushImage, pushIndex, startRegistry, type TestRegistry } from '../support/registry.js';
import { headDigest, pushBigImage, startProxy } from './support.js';
import { FakeTimers } from '../support/fake-timers.js';
import type { Timers } from '../../src/ports.js';

function ref(s: string): ImageReference {
  const p = parseReference(s);
  if (!p.ok) throw new Error(p.reason);
  return p.ref;
}

const MiB = 1 << 20;

void t.test('copyImage between two real registries', async (t) => {
  const src = await startRegistry();
  const mirror = await startRegistry({ auth: { htpasswd: { user: 'copier', pass: 's3cret' } } });
  const client = new RegistryClient();
  t.teardown(async () => {
    client.close();
    await Promise.all([src.stop(), mirror.stop()]);
  });
  const endpoints = new Map<string, RegistryEndpoint>([
    [src.host, { host: src.host, insecure: true }],
    // Basic auth on the target: every test below pushes through it.
    [mirror.host, { host: mirror.host, insecure: true, ...(mirror.auth ? { auth: mirror.auth } : {}) }],
  ]);
  const opts = (extra: Partial<CopyOptions> = {}): CopyOptions => ({
    client,
    endpoint: (host) => endpoints.get(host) ?? { host, insecure: true },
    ...extra,
  });
  const srcRef = (name: string): ImageReference => ref(`${src.host}/${name}`);
  const dstRef = (name: string): ImageReference => ref(`${mirror.host}/${name}`);

  t.test('a single-arch Docker v2 image, digest-exact; a re-run sends nothing', async (t) => {
    const digest = await pushImage(src, 'library/app', 'v1');
    const r = await copyImage(srcRef('library/app:v1'), dstRef('dh/library/app:v1'), opts());
    t.equal(r.digest, digest);
    t.equal(await headDigest(mirror, 'dh/library/app', 'v1'), await headDigest(src, 'library/app', 'v1'));
    t.match(r, { blobsSent: 2, blobsSkipped: 0, blobsMounted: 0, manifests: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json' });
    t.ok(r.bytesSent > 0);

    const again = await copyImage(srcRef('library/app:v1'), dstRef('dh/library/app:v1'), opts());
    t.match(again, { digest, bytesSent: 0, blobsSent: 0, manifests: 0, manifestsSkipped: 1 });
  });

  for (const format of ['oci', 'docker'] as const) {
    t.test(`a multi-arch ${format === 'oci' ? 'OCI index' : 'Docker manifest list'}: children by digest, then the index`, async (t) => {
      const name = `library/multi-${format}`;
      const digest = await pushIndex(src, name, 'v2', { format });
      const r = await copyImage(srcRef(`${name}:v2`), dstRef(`dh/${name}:v2`), opts());
      t.equal(r.digest, digest);
      t.equal(await headDigest(mirror, `dh/${name}`, 'v2'), digest);
      t.equal(r.manifests, 4, 'two children, the index by digest, the tag');
      t.equal(r.blobsSent, 4);
      // Each child is in the mirror by its own digest, as the source has it.
      const index = JSON.parse(await getText(src, `/v2/${name}/manifests/${digest}`)) as { manifests: { digest: string }[] };
      for (const m of index.manifests) t.equal(await headDigest(mirror, `dh/${name}`, m.digest), m.digest);
    });
  }

  t.test('--platform narrows an index: the tag names the platform manifest', async (t) => {
    const indexDigest = await pushIndex(src, 'library/narrow', 'v1', { format: 'oci' });
    const index = JSON.parse(await getText(src, `/v2/library/narrow/manifests/${indexDigest}`)) as { manifests: { digest: string; platform: { architecture: string } }[] };
    const arm = index.manifests.find((m) => m.platform.architecture === 'arm64');
    const r = await copyImage(srcRef('library/narrow:v1'), dstRef('dh/library/narrow:v1'), opts({ platform: { os: 'linux', architecture: 'arm64' } }));
    t.equal(r.digest, arm?.digest);
    t.same(r.narrowed, { platform: 'linux/arm64', indexDigest });
    t.equal(await headDigest(mirror, 'dh/library/narrow', 'v1'), arm?.digest);
    await t.rejects(copyImage(srcRef('library/narrow:v1'), dstRef('dh/library/narrow:v1'), opts({ platform: { os: 'windows', architecture: 'amd64' } })), { name: 'CopyError', reason: 'platform' });
  });

  t.test('by digest: the target is written by digest only', async (t) => {
    const digest = await pushImage(src, 'library/pinned', 'v1', { format: 'oci' });
    const r = await copyImage(srcRef(`library/pinned@${digest}`), dstRef(`dh/library/pinned@${digest}`), opts());
    t.equal(r.digest, digest);
    t.equal(await headDigest(mirror, 'dh/library/pinned', digest), digest);
    t.equal(await headDigest(mirror, 'dh/library/pinned', 'v1'), undefined);
  });

  t.test('a blob already in another repository of the mirror is mounted, not sent', async (t) => {
    await pushImage(src, 'library/shared', 'v1', { content: 'shared layer' });
    const locations = new BlobLocations();
    const first = await copyImage(srcRef('library/shared:v1'), dstRef('team-a/shared:v1'), opts({ locations }));
    t.equal(first.blobsSent, 2);
    const second = await copyImage(srcRef('library/shared:v1'), dstRef('team-b/shared:v1'), opts({ locations }));
    t.match(second, { blobsMounted: 2, blobsSent: 0, bytesSent: 0 });
    t.equal(await headDigest(mirror, 'team-b/shared', 'v1'), first.digest);
  });

  t.test('an image missing at the source fails clearly', async (t) => {
    const err = await copyImage(srcRef('library/nope:v1'), dstRef('dh/library/nope:v1'), opts()).catch((e: unknown) => e);
    t.ok(err instanceof CopyError);
    t.match(err, { reason: 'not-found', message: /source manifest .*library\/nope:v1: not found/ });
  });

  t.test('wrong credentials for the target: unauthorized', async (t) => {
    await pushImage(src, 'library/auth', 'v1');
    const bad = (host: string): RegistryEndpoint =>
      host === mirror.host ? { host, insecure: true, auth: { username: 'copier', password: 'wrong' } } : { host, insecure: true };
    await t.rejects(copyImage(srcRef('library/auth:v1'), dstRef('dh/library/auth:v1'), { client: new RegistryClient(), endpoint: bad }), { name: 'CopyError', reason: 'unauthorized' });
  });

  t.test('a source that answers 429 once: retried after Retry-After', async (t) => {
    await pushImage(src, 'library/limited', 'v1');
    let limited = false;
    const proxy = await startProxy(src.url, {
      intercept: (req, res) => {
        if (limited || req.method !== 'GET' || !req.url?.includes('/manifests/')) return false;
        limited = true;
        res.writeHead(429, { 'retry-after': '2', 'content-type': 'application/json' });
        res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
        return true;
      },
    });
    t.teardown(() => proxy.stop());
    const waits: number[] = [];
    const r = await copyImage(ref(`${proxy.host}/library/limited:v1`), dstRef('dh/library/limited:v1'), opts({ sleep: async (ms) => void waits.push(ms) }));
    t.same(waits, [2000], 'waited as Retry-After said');
    t.equal(proxy.requests.filter((q) => q.status === 429).length, 1);
    t.equal(await headDigest(mirror, 'dh/library/limited', 'v1'), r.digest);
  });

  t.test('Retry-After as an HTTP date is counted from the injected wall clock; the backoff waits on the injected timers', async (t) => {
    await pushImage(src, 'library/dated', 'v1');
    let answered = 0;
    const proxy = await startProxy(src.url, {
      intercept: (req, res) => {
        if (req.method !== 'GET' || !req.url?.includes('/manifests/') || answered >= 2) return false;
        answered++;
        // First an HTTP date 3 s after "now", then a 503 without Retry-After (the backoff applies).
        if (answered === 1) res.writeHead(429, { 'retry-after': 'Sun, 22 Nov 2026 10:00:03 GMT' });
        else res.writeHead(503);
        res.end();
        return true;
      },
    });
    t.teardown(() => proxy.stop());
    const fake = new FakeTimers();
    // The fake timers, telling the test when the copy starts its next wait.
    const started: (() => void)[] = [];
    const nextWait = (): Promise<void> => new Promise((resolve) => started.push(resolve));
    const timers: Timers = {
      after: (ms, fn) => {
        const handle = fake.after(ms, fn);
        started.shift()?.();
        return handle;
      },
      every: (ms, fn) => fake.every(ms, fn),
      random: () => fake.random(),
    };
    const clock = { now: () => 0, wall: () => new Date('2026-11-22T10:00:00Z') };
    const first = nextWait();
    const copying = copyImage(ref(`${proxy.host}/library/dated:v1`), dstRef('dh/library/dated:v1'), opts({ timers, clock, backoffMs: 400 }));
    await first;
    t.same(fake.delays, [3000], 'waited until the date, by the injected clock');
    const second = nextWait();
    fake.advance(3000);
    await second;
    // 400 × 2 × (0.5 + 0.5 / 2): the fake timers' jitter is 0.5.
    t.same(fake.delays, [3000, 600], 'then the backoff, with the timers\' jitter');
    fake.advance(600);
    const r = await copying;
    t.equal(await headDigest(mirror, 'dh/library/dated', 'v1'), r.digest);
  });

  t.test('persistent 5xx: bounded attempts, then a clear failure', async (t) => {
    const proxy = await startProxy(src.url, {
      intercept: (req, res) => {
        if (!req.url?.includes('/manifests/')) return false;
        res.writeHead(503);
        res.end();
        return true;
      },
    });
    t.teardown(() => proxy.stop());
    const waits: number[] = [];
    await t.rejects(
      copyImage(ref(`${proxy.host}/library/app:v1`), dstRef('dh/library/x:v1'), opts({ attempts: 3, sleep: async (ms) => void waits.push(ms) })),
      { name: 'CopyError', reason: 'registry', status: 503 },
    );
    t.equal(waits.length, 2);
  });

  for (const mode of [
    { name: 'monolithic', chunkThreshold: 64 * MiB, chunkSize: undefined },
    { name: 'chunked', chunkThreshold: 1 * MiB, chunkSize: 1 * MiB },
  ]) {
    t.test(`a layer of several MiB is streamed (${mode.name} upload), never buffered whole`, async (t) => {
      const size = 6 * MiB + 12345;
      const name = `library/big-${mode.name}`;
      const big = await pushBigImage(src, name, 'v1', size);
      // The mirror side counts upload bytes; the source side holds back the second half of
      // the layer until the mirror has received the first. A copier that buffered the layer
      // before uploading would wait here until the gate gives up.
      const mirrorProxy = await startProxy(mirror.url);
      let gateTimedOut = false;
      const srcProxy = await startProxy(src.url, {
        body: (req, upstream, res) => {
          if (!req.url?.endsWith(`/blobs/${big.layer}`) || req.method !== 'GET') return false;
          void gate(upstream, res, size / 2, () => mirrorProxy.uploaded >= MiB, () => (gateTimedOut = true));
          return true;
        },
      });
      t.teardown(async () => {
        await srcProxy.stop();
        await mirrorProxy.stop();
      });
      const ends = new Map<string, RegistryEndpoint>([
        [srcProxy.host, { host: srcProxy.host, insecure: true }],
        [mirrorProxy.host, { host: mirrorProxy.host, insecure: true, ...(mirror.auth ? { auth: mirror.auth } : {}) }],
      ]);
      const rssBefore = process.memoryUsage().rss;
      const r = await copyImage(ref(`${srcProxy.host}/${name}:v1`), ref(`${mirrorProxy.host}/dh/${name}:v1`), {
        client,
        endpoint: (h) => ends.get(h) ?? { host: h },
        chunkThreshold: mode.chunkThreshold,
        chunkSize: mode.chunkSize,
      });
      t.notOk(gateTimedOut, 'the upload began before the download ended');
      t.equal(r.digest, big.digest);
      t.ok(r.bytesSent > size, 'the layer and the config were sent');
      t.equal(await headDigest(mirror, `dh/${name}`, 'v1'), big.digest);
      if (mode.name === 'chunked') t.ok(mirrorProxy.requests.filter((q) => q.method === 'PATCH').length >= 6, 'uploaded in 1 MiB PATCHes');
      t.comment(`rss growth ${((process.memoryUsage().rss - rssBefore) / MiB).toFixed(1)} MiB for a ${(size / MiB).toFixed(1)} MiB layer`);
    });
  }
});

/** Forward `upstream` to `res`, pausing after `first` bytes until `open()` or 15 s pass. */
async function gate(upstream: http.IncomingMessage, res: http.ServerResponse, first: number, open: () => boolean, onTimeout: () => void): Promise<void> {
  let sent = 0;
  let waited = false;
  for await (const chunk of upstream) {
    const b = chunk as Buffer;
    if (!waited && sent + b.length > first) {
      const head = b.subarray(0, first - sent);
      res.write(head);
      sent += head.length;
      waited = true;
      const deadline = Date.now() + 15_000;
      while (!open() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (!open()) onTimeout();
      res.write(b.subarray(head.length));
      sent += b.length - head.length;
      continue;
    }
    if (!res.write(b)) await new Promise((r) => res.once('drain', r));
    sent += b.length;
  }
  res.end();
}

async function getText(reg: TestRegistry, path: string): Promise<string> {
  const res = await fetch(`${reg.url}${path}`, {
    headers: {
      accept: 'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json',
      ...(reg.auth ? { authorization: `Basic ${Buffer.from(`${reg.auth.username}:${reg.auth.password}`).toString('base64')}` } : {}),
    },
  });
  return res.text();
}

