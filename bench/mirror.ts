/**
 * The registry side of the bench's verification scenario: a real registry (Debian's
 * `docker-registry`, started by test/support) filled with the rewrite targets of the
 * request mix, and a small counting proxy in front of it, so the bench can say how many
 * registry requests one admission costs (the registry's own access log is off).
 */
import http from 'node:http';
import type net from 'node:net';
import { parseReference } from '../src/core/reference.js';
import { pushImage, type TestRegistry } from '../test/support/registry.js';
import type { GeneratedReview } from './reviews.js';

/** The bench's mirror rules: source registry → path prefix under the mirror host. */
export const MIRROR_RULES = [
  { from: 'docker.io', path: 'dockerhub' },
  { from: 'quay.io', path: 'quay' },
  { from: 'ghcr.io', path: 'ghcr' },
  { from: 'gcr.io', path: 'gcr' },
] as const;

/** What {@link fillMirror} pushed, and the mix to send to a verifying mirrorgate. */
export interface MirrorPlan {
  /** The mix, each fake digest replaced by the digest of an image pushed for it (same byte count). */
  readonly reviews: GeneratedReview[];
  readonly pushedByTag: number;
  readonly pushedByDigest: number;
  /** The source reference that was never pushed: its reviews meet an absent mirror copy. */
  readonly absent: string;
  /** Where the rules send it (the reference the registry is asked for). */
  readonly absentTarget: string;
  /** Uids of the reviews that contain the absent image. */
  readonly absentUids: ReadonlySet<string>;
  /** Distinct rewrite targets in the mix, the absent one included. */
  readonly distinctTargets: number;
  /** Mean distinct rewrite targets per review: registry checks per admission with no cache and no sharing. */
  readonly targetsPerReview: number;
}

const IMAGE_FIELD = /"image":"([^"]+)"/g;
const DIGEST_SUFFIX = /@(sha256:[0-9a-f]{64})/g;

interface Target {
  /** Repository under the mirror host, e.g. `dockerhub/library/nginx`. */
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

/** The rewrite target of a source reference under the bench's rules, or undefined when no rule applies. */
function targetOf(image: string): Target | undefined {
  const parsed = parseReference(image);
  if (!parsed.ok) return undefined;
  const rule = MIRROR_RULES.find((r) => r.from === parsed.ref.registry);
  if (rule === undefined) return undefined;
  return { repository: `${rule.path}/${parsed.ref.repository}`, tag: parsed.ref.tag, digest: parsed.ref.digest };
}

/** Run `jobs` with at most `limit` at a time. */
async function pool(jobs: readonly (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++];
      if (job) await job();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}

/**
 * Push an image for every rewrite target of `mix` to `reg`, except one (the least frequent
 * by-tag image, so that few reviews meet it), and return the mix to send. The mix pins
 * some images by random digests, which no registry can hold (a digest is the hash of the
 * content), so each gets an image of its own, and its digest replaces the random one in
 * every body: same repositories, same byte counts, and every digest target present.
 *
 * @param mirrorHost the host the verifying rules rewrite to (for `absentTarget` only).
 */
export async function fillMirror(reg: TestRegistry, mix: readonly GeneratedReview[], mirrorHost: string, concurrency = 4): Promise<MirrorPlan> {
  const imagesOf = (body: string): Set<string> => new Set([...body.matchAll(IMAGE_FIELD)].map((m) => m[1] ?? ''));
  const tagReviews = new Map<string, number>();
  const digestRefs = new Map<string, Target>();
  for (const r of mix) {
    for (const image of imagesOf(r.body)) {
      const t = targetOf(image);
      if (t === undefined) continue;
      if (t.digest !== undefined) digestRefs.set(t.digest, t);
      else tagReviews.set(image, (tagReviews.get(image) ?? 0) + 1);
    }
  }
  // Least frequent first, then by name: the same choice on every run.
  const [absent] = [...tagReviews].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))[0] ?? [];
  if (absent === undefined) throw new Error('the mix has no third-party image by tag');
  const absentT = targetOf(absent);
  if (absentT === undefined) throw new Error(`no rule for ${absent}`);

  const realDigest = new Map<string, string>();
  const jobs: (() => Promise<void>)[] = [];
  for (const image of tagReviews.keys()) {
    const t = targetOf(image);
    if (image === absent || t === undefined) continue;
    jobs.push(async () => {
      await pushImage(reg, t.repository, t.tag ?? 'latest', { content: `bench ${image}` });
    });
  }
  for (const [fake, t] of digestRefs) {
    jobs.push(async () => {
      // Content unique per fake digest: a distinct image, so a distinct registry answer.
      realDigest.set(fake, await pushImage(reg, t.repository, undefined, { content: `bench ${t.repository}@${fake}` }));
    });
  }
  await pool(jobs, concurrency);

  const reviews = mix.map((r) => ({ ...r, body: r.body.replace(DIGEST_SUFFIX, (m: string, d: string) => `@${realDigest.get(d) ?? d}`) }));
  const absentUids = new Set<string>();
  const targets = new Set<string>();
  let perReview = 0;
  for (const r of reviews) {
    const mine = new Set<string>();
    for (const image of imagesOf(r.body)) {
      const t = targetOf(image);
      if (t === undefined) continue;
      if (image === absent) absentUids.add(r.uid);
      mine.add(`${t.repository}${t.digest !== undefined ? `@${t.digest}` : `:${t.tag ?? 'latest'}`}`);
    }
    perReview += mine.size;
    for (const m of mine) targets.add(m);
  }
  return {
    reviews,
    pushedByTag: jobs.length - digestRefs.size,
    pushedByDigest: digestRefs.size,
    absent,
    absentTarget: `${mirrorHost}/${absentT.repository}:${absentT.tag ?? 'latest'}`,
    absentUids,
    distinctTargets: targets.size,
    targetsPerReview: reviews.length === 0 ? 0 : perReview / reviews.length,
  };
}

/** Requests seen by a {@link CountingProxy} since it started. */
export interface ProxyCounts {
  /** Every request. */
  readonly requests: number;
  /** `HEAD /v2/<name>/manifests/<reference>`: the verification checks. */
  readonly manifestHeads: number;
}

export interface CountingProxy {
  /** `127.0.0.1:PORT`: the registry host to give the verifying mirrorgate. */
  readonly host: string;
  counts(): ProxyCounts;
  close(): Promise<void>;
}

const MANIFEST_HEAD = /^\/v2\/.+\/manifests\/[^/]+$/;

/**
 * A plain HTTP forwarding proxy on 127.0.0.1 in front of `upstreamPort` that counts what
 * passes. Keep-alive on both sides, as between mirrorgate and a real registry; it adds a
 * loopback hop (some tenths of a millisecond) to every registry request.
 */
export async function startCountingProxy(upstreamPort: number): Promise<CountingProxy> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  let requests = 0;
  let manifestHeads = 0;
  const server = http.createServer((req, res) => {
    requests++;
    const url = req.url ?? '/';
    if (req.method === 'HEAD' && MANIFEST_HEAD.test(url.split('?')[0] ?? '')) manifestHeads++;
    const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: url, headers: req.headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${err.message}`);
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    counts: () => ({ requests, manifestHeads }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
