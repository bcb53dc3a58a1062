/**
 * Copy one image between registries, digest-exact, over the distribution API (README,
 * "Copying images into the mirror"): manifests byte for byte (children by digest before
 * their index, then the tag), blobs skipped when present, mounted from another repository
 * of the same registry when we know one holds them, otherwise streamed from the source
 * straight into the upload, never held whole in memory.
 *
 * Spec: https://github.com/opencontainers/distribution-spec/blob/main/spec.md (pushing
 * blobs, monolithic and chunked uploads, cross-repository mount, pushing manifests).
 */
import { createHash, type Hash } from 'node:crypto';
import { pipeline, Readable, Transform, type TransformCallback } from 'node:stream';
import { digestAlgorithm, formatReference, isValidDigest, type ImageReference } from '../core/reference.js';
import {
  MANIFEST_MEDIA_TYPES,
  RegistryError,
  type RegistryClient,
  type RegistryEndpoint,
  type RegistryResponse,
} from '../registry/client.js';
import { discard, firstHeader, readUpTo } from '../registry/body.js';
import { CredentialError } from '../registry/credentials.js';
import { messageOf, MirrorgateError } from '../errors.js';
import { sleepOn, systemClock, systemTimers, type Clock, type Timers } from '../ports.js';
import { backoffMs, retryable, type RetryPolicy } from '../retry.js';

/** `os/architecture[/variant]`, as an index's `platform` names it. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** Why a copy failed; `transient` failures may succeed when tried again later. */
export type CopyErrorReason =
  | 'not-found' // the source has no such manifest (or blob)
  | 'unauthorized' // a registry refused our credentials
  | 'digest-mismatch' // bytes or a registry's digest differ from what was expected
  | 'unsupported' // a manifest we cannot copy faithfully (schema 1, unknown media type)
  | 'platform' // --platform names no child of the index, or cannot apply
  | 'registry' // an unexpected HTTP answer
  | 'unreachable'; // network, TLS, timeout (after retries)

/** The only error a copy throws; `message` names the step and never carries secrets. */
export class CopyError extends MirrorgateError {
  readonly reason: CopyErrorReason;
  readonly status: number | undefined;
  /** Worth trying again later (429, 5xx, network). */
  readonly transient: boolean;
  /** From `Retry-After`, when the registry said how long to wait. */
  readonly retryAfterMs: number | undefined;
  constructor(reason: CopyErrorReason, message: string, opts: { status?: number; transient?: boolean; retryAfterMs?: number; cause?: unknown } = {}) {
    super('MG_COPY', message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.reason = reason;
    this.status = opts.status;
    this.transient = opts.transient ?? false;
    this.retryAfterMs = opts.retryAfterMs;
  }
}

/**
 * Which repositories of a registry are known to hold a blob, so a copy can mount it
 * instead of sending it. In-process and bounded: the oldest digests are forgotten first.
 */
export class BlobLocations {
  readonly #byRegistry = new Map<string, Map<string, Set<string>>>();
  readonly #maxDigests: number;
  constructor(maxDigestsPerRegistry = 10_000) {
    this.#maxDigests = maxDigestsPerRegistry;
  }
  /** Remember that `registry/repository` holds `digest`. */
  add(registry: string, repository: string, digest: string): void {
    const host = registry.toLowerCase();
    let digests = this.#byRegistry.get(host);
    if (!digests) this.#byRegistry.set(host, (digests = new Map<string, Set<string>>()));
    let repos = digests.get(digest);
    if (repos) {
      // Refresh its place so an active digest is not the first forgotten.
      digests.delete(digest);
    } else {
      repos = new Set();
      if (digests.size >= this.#maxDigests) {
        const oldest = digests.keys().next();
        if (!oldest.done) digests.delete(oldest.value);
      }
    }
    repos.add(repository);
    if (repos.size > 8) repos.delete(repos.values().next().value as string);
    digests.set(digest, repos);
  }
  /** Repositories of `registry` known to hold `digest`, except `except`. */
  holders(registry: string, digest: string, except: string): string[] {
    const repos = this.#byRegistry.get(registry.toLowerCase())?.get(digest);
    return repos ? [...repos].filter((r) => r !== except) : [];
  }
}

/** Progress of one image copy, reported as blobs finish. */
export interface CopyProgress {
  source: string;
  target: string;
  blobsDone: number;
  blobsTotal: number;
  bytesSent: number;
}

/** The subset of a pino logger the copier uses. */
export interface CopyLog {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CopyOptions {
  client: RegistryClient;
  /** How to reach a registry host (CA, plain HTTP, credentials). */
  endpoint: (host: string) => RegistryEndpoint;
  /** Copy only this platform's manifest of an index (the tag then points at it). */
  platform?: Platform | undefined;
  /** Shared across copies so later copies can mount what earlier ones pushed. */
  locations?: BlobLocations | undefined;
  /** Parallel blob transfers per image (default 3). */
  concurrency?: number | undefined;
  /** Blobs larger than this are uploaded in chunks (default 64 MiB). */
  chunkThreshold?: number | undefined;
  /** Size of each chunk of a chunked upload (default 16 MiB). */
  chunkSize?: number | undefined;
  /** Attempts per request on 429/5xx/network errors (default: {@link REQUEST_RETRY}, 4). */
  attempts?: number | undefined;
  /** First backoff in ms, doubled each retry (default: {@link REQUEST_RETRY}, 500). */
  backoffMs?: number | undefined;
  /** Longest wait between attempts, also the cap on `Retry-After` (default: {@link REQUEST_RETRY}, 30000). */
  maxBackoffMs?: number | undefined;
  /**
   * Waits between attempts (tests pass a recorder). By default a timer that keeps the
   * process alive, as a `mirrorgate copy` backing off has nothing else that would; on
   * `timers` when those are given.
   */
  sleep?: ((ms: number) => Promise<void>) | undefined;
  /** Timers of the waits between attempts (when no `sleep` is given) and their jitter. */
  timers?: Timers | undefined;
  /** The wall clock an HTTP-date `Retry-After` is counted from (the system's by default). */
  clock?: Clock | undefined;
  onProgress?: ((p: CopyProgress) => void) | undefined;
  log?: CopyLog | undefined;
  signal?: AbortSignal | undefined;
}

/** What one image copy did. */
export interface CopyResult {
  /** The source reference as given, fully qualified. */
  source: string;
  /** The target reference written (tag, or digest when the source had no tag). */
  target: string;
  /** Digest of the manifest copied: the source's, equal to the target's. */
  digest: string;
  mediaType: string;
  /** Bytes of blobs uploaded (mounted and skipped blobs excluded; manifests excluded). */
  bytesSent: number;
  blobsSent: number;
  blobsSkipped: number;
  blobsMounted: number;
  /** Manifests written to the target (children, index, tag). */
  manifests: number;
  /** Manifests already in the target by digest (their blobs were not looked at again). */
  manifestsSkipped: number;
  /** Set when `platform` narrowed an index: the tag points at this platform's manifest. */
  narrowed?: { platform: string; indexDigest: string } | undefined;
}

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const IMAGE_TYPES = new Set(['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json']);
/** distribution's limit on a manifest body. */
const MAX_MANIFEST_BYTES = 4 << 20;
const HASHES: Readonly<Record<string, string>> = { sha256: 'sha256', sha384: 'sha384', sha512: 'sha512' };

interface Descriptor {
  mediaType: string | undefined;
  digest: string;
  size: number;
  platform?: Platform | undefined;
  urls?: string[] | undefined;
}

interface Fetched {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  children: Descriptor[];
  blobs: Descriptor[];
}

interface Ctx {
  opts: CopyOptions;
  src: RegistryEndpoint;
  dst: RegistryEndpoint;
  srcRepo: string;
  dstRepo: string;
  locations: BlobLocations;
  result: CopyResult;
  blobsTotal: number;
  blobsDone: number;
}

/**
 * Copy `source` to `target`: the whole index by default, or one platform's manifest with
 * `opts.platform`. Children go before their index, each by digest, then the tag (a target
 * without a tag is written by digest only). Every manifest PUT must answer the source's
 * digest in `Docker-Content-Digest`, or the copy fails. Requests are retried on 429, 5xx and
 * network errors with exponential backoff honouring `Retry-After` (bounded).
 *
 * @throws CopyError naming the failed step.
 */
export async function copyImage(source: ImageReference, target: ImageReference, opts: CopyOptions): Promise<CopyResult> {
  const srcRef = source.digest ?? source.tag ?? 'latest';
  const dstTag = target.tag ?? (target.digest === undefined ? 'latest' : undefined);
  const ctx: Ctx = {
    opts,
    src: opts.endpoint(source.registry),
    dst: opts.endpoint(target.registry),
    srcRepo: source.repository,
    dstRepo: target.repository,
    locations: opts.locations ?? new BlobLocations(),
    result: {
      source: formatReference(source),
      target: formatReference(target),
      digest: '',
      mediaType: '',
      bytesSent: 0,
      blobsSent: 0,
      blobsSkipped: 0,
      blobsMounted: 0,
      manifests: 0,
      manifestsSkipped: 0,
    },
    blobsTotal: 0,
    blobsDone: 0,
  };

  let top = await fetchManifest(ctx, srcRef);
  if (source.digest !== undefined && top.digest !== source.digest) {
    throw new CopyError('digest-mismatch', `source manifest: digest ${top.digest}, expected ${source.digest}`);
  }
  if (opts.platform && top.children.length > 0) {
    if (target.digest !== undefined) {
      throw new CopyError('platform', 'platform: a reference by digest names the whole index; it cannot be narrowed');
    }
    const child = pickPlatform(top.children, opts.platform);
    if (!child) throw new CopyError('platform', `platform: ${platformString(opts.platform)} is not in the index ${top.digest}`);
    const indexDigest = top.digest;
    top = await fetchManifest(ctx, child.digest);
    ctx.result.narrowed = { platform: platformString(opts.platform), indexDigest };
  }
  if (target.digest !== undefined && target.digest !== top.digest) {
    throw new CopyError('digest-mismatch', `target reference names ${target.digest}, the source manifest is ${top.digest}`);
  }
  ctx.result.digest = top.digest;
  ctx.result.mediaType = top.mediaType;

  // Manifests to write, children first; a manifest the target has by digest is complete
  // (registries refuse a manifest whose blobs or children are missing), so skip its subtree.
  const toPut: Fetched[] = [];
  const blobs = new Map<string, Descriptor>();
  const visit = async (m: Fetched, depth: number): Promise<void> => {
    if (await targetHasManifest(ctx, m.digest)) {
      ctx.result.manifestsSkipped++;
      return;
    }
    if (depth > 2) throw new CopyError('unsupported', `manifest ${m.digest}: indexes nested too deep`);
    for (const c of m.children) await visit(await fetchManifest(ctx, c.digest), depth + 1);
    for (const b of m.blobs) if (!blobs.has(b.digest)) blobs.set(b.digest, b);
    toPut.push(m);
  };
  await visit(top, 0);

  ctx.blobsTotal = blobs.size;
  progress(ctx);
  await eachLimited([...blobs.values()], opts.concurrency ?? 3, (b) => copyBlob(ctx, b));

  for (const m of toPut) await putManifest(ctx, m, m.digest);
  if (dstTag !== undefined) {
    // Re-pointing a tag that already names this digest would be a no-op write.
    const current = await retrying(ctx, `target manifest ${dstTag}`, () => headManifest(ctx, ctx.dst, ctx.dstRepo, dstTag, 'pull,push'));
    if (current !== top.digest) await putManifest(ctx, top, dstTag);
  }
  opts.log?.debug({ ...ctx.result }, 'image copied');
  return ctx.result;
}

function platformString(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Parse `os/arch[/variant]`; undefined when malformed. */
export function parsePlatform(s: string): Platform | undefined {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/i.test(p))) return undefined;
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return { os, architecture, ...(variant ? { variant } : {}) };
}

function pickPlatform(children: Descriptor[], want: Platform): Descriptor | undefined {
  const same = children.filter((c) => c.platform?.os === want.os && c.platform.architecture === want.architecture);
  if (want.variant !== undefined) return same.find((c) => c.platform?.variant === want.variant);
  return same.find((c) => c.platform?.variant === undefined) ?? same[0];
}

function progress(ctx: Ctx): void {
  ctx.opts.onProgress?.({
    source: ctx.result.source,
    target: ctx.result.target,
    blobsDone: ctx.blobsDone,
    blobsTotal: ctx.blobsTotal,
    bytesSent: ctx.result.bytesSent,
  });
}

// ---------------------------------------------------------------------------------------
// Manifests

async function fetchManifest(ctx: Ctx, reference: string): Promise<Fetched> {
  return retrying(ctx, `source manifest ${reference}`, async () => {
    const res = await call(ctx, ctx.src, {
      method: 'GET',
      path: `/v2/${ctx.srcRepo}/manifests/${reference}`,
      headers: { accept: MANIFEST_MEDIA_TYPES.join(', ') },
      repository: ctx.srcRepo,
      actions: 'pull',
    });
    if (res.status === 404) {
      await discard(res.body);
      throw new CopyError('not-found', `source manifest ${ctx.src.host}/${ctx.srcRepo}:${reference}: not found (HTTP 404)`, { status: 404 });
    }
    await expectStatus(res, [200], `source manifest ${reference}`);
    const bytes = await readUpTo(res.body, MAX_MANIFEST_BYTES, () => new CopyError('unsupported', `source manifest ${reference}: larger than ${MAX_MANIFEST_BYTES} bytes`));
    const algorithm = digestAlgorithm(reference) ?? 'sha256';
    const digest = digestOf(algorithm, bytes);
    const header = firstHeader(res.headers, 'docker-content-digest');
    // A registry that names another digest served bytes we would not copy faithfully.
    if (header !== undefined && header.startsWith(`${algorithm}:`) && header !== digest) {
      throw new CopyError('digest-mismatch', `source manifest ${reference}: registry says ${header}, the bytes are ${digest}`);
    }
    return parseManifest(bytes, digest, firstHeader(res.headers, 'content-type'));
  });
}

function parseManifest(bytes: Buffer, digest: string, contentType: string | undefined): Fetched {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new CopyError('unsupported', `manifest ${digest}: not JSON`);
  }
  if (typeof json !== 'object' || json === null) throw new CopyError('unsupported', `manifest ${digest}: not a JSON object`);
  const m = json as Record<string, unknown>;
  const declared = typeof m.mediaType === 'string' ? m.mediaType : undefined;
  const header = contentType?.split(';')[0]?.trim();
  const mediaType = header !== undefined && (INDEX_TYPES.has(header) || IMAGE_TYPES.has(header)) ? header : declared;
  if (m.schemaVersion === 1 || mediaType === undefined || !(INDEX_TYPES.has(mediaType) || IMAGE_TYPES.has(mediaType))) {
    throw new CopyError('unsupported', `manifest ${digest}: media type ${mediaType ?? header ?? 'unknown'} cannot be copied (Docker v2 or OCI only)`);
  }
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(m.manifests)) throw new CopyError('unsupported', `manifest ${digest}: index without manifests`);
    return { digest, mediaType, bytes, children: m.manifests.map((d) => descriptor(d, digest)), blobs: [] };
  }
  const layers = Array.isArray(m.layers) ? m.layers.map((d) => descriptor(d, digest)) : [];
  const blobs = [descriptor(m.config, digest), ...layers].filter(
    // Foreign (non-distributable) layers live at their `urls`, not in registries: not copied, as the registries expect.
    (d) => !(d.urls?.length && /foreign|nondistributable/.test(d.mediaType ?? '')),
  );
  return { digest, mediaType, bytes, children: [], blobs };
}

function descriptor(v: unknown, owner: string): Descriptor {
  const d = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  const digest = typeof d.digest === 'string' ? d.digest : '';
  if (digestAlgorithm(digest) === undefined) throw new CopyError('unsupported', `manifest ${owner}: descriptor with an invalid digest`);
  const size = typeof d.size === 'number' && Number.isSafeInteger(d.size) && d.size >= 0 ? d.size : -1;
  if (size < 0) throw new CopyError('unsupported', `manifest ${owner}: descriptor ${digest} without a valid size`);
  const p = (typeof d.platform === 'object' && d.platform !== null ? d.platform : undefined) as Record<string, unknown> | undefined;
  const platform =
    p && typeof p.os === 'string' && typeof p.architecture === 'string'
      ? { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) }
      : undefined;
  const urls = Array.isArray(d.urls) ? d.urls.filter((u): u is string => typeof u === 'string') : undefined;
  return { mediaType: typeof d.mediaType === 'string' ? d.mediaType : undefined, digest, size, platform, urls };
}

async function targetHasManifest(ctx: Ctx, digest: string): Promise<boolean> {
  const found = await retrying(ctx, `target manifest ${digest}`, () => headManifest(ctx, ctx.dst, ctx.dstRepo, digest, 'pull,push'));
  return found === digest;
}

/** The digest a registry holds under `reference`, or undefined when it has none. */
async function headManifest(ctx: Ctx, ep: RegistryEndpoint, repo: string, reference: string, actions: 'pull' | 'pull,push'): Promise<string | undefined> {
  const res = await call(ctx, ep, {
    method: 'HEAD',
    path: `/v2/${repo}/manifests/${reference}`,
    headers: { accept: MANIFEST_MEDIA_TYPES.join(', ') },
    repository: repo,
    actions,
  });
  await discard(res.body);
  if (res.status === 404) return undefined;
  await expectStatus(res, [200], `target manifest ${reference}`);
  return firstHeader(res.headers, 'docker-content-digest') ?? (isValidDigest(reference) ? reference : undefined);
}

async function putManifest(ctx: Ctx, m: Fetched, reference: string): Promise<void> {
  await retrying(ctx, `target manifest ${reference}`, async () => {
    const res = await call(ctx, ctx.dst, {
      method: 'PUT',
      path: `/v2/${ctx.dstRepo}/manifests/${reference}`,
      headers: { 'content-type': m.mediaType },
      body: m.bytes,
      repository: ctx.dstRepo,
      actions: 'pull,push',
    });
    await expectStatus(res, [201], `put manifest ${reference}`);
    await discard(res.body);
    const answered = firstHeader(res.headers, 'docker-content-digest');
    if (answered !== m.digest) {
      throw new CopyError('digest-mismatch', `put manifest ${reference}: target digest ${answered ?? '(none)'} differs from the source's ${m.digest}`);
    }
  });
  ctx.result.manifests++;
}

// ---------------------------------------------------------------------------------------
// Blobs

async function copyBlob(ctx: Ctx, b: Descriptor): Promise<void> {
  const dstHost = ctx.dst.host;
  const outcome = await retrying(ctx, `blob ${b.digest}`, async (): Promise<'skipped' | 'mounted' | 'sent'> => {
    const head = await call(ctx, ctx.dst, {
      method: 'HEAD',
      path: `/v2/${ctx.dstRepo}/blobs/${b.digest}`,
      repository: ctx.dstRepo,
      actions: 'pull,push',
    });
    await discard(head.body);
    if (head.status === 200) return 'skipped';
    if (head.status !== 404) await expectStatus(head, [200, 404], `target blob ${b.digest}`);

    const holders = ctx.locations.holders(dstHost, b.digest, ctx.dstRepo);
    if (sameRegistry(ctx.src, ctx.dst) && ctx.srcRepo !== ctx.dstRepo && !holders.includes(ctx.srcRepo)) holders.unshift(ctx.srcRepo);
    let location: string | undefined;
    for (const from of holders.slice(0, 3)) {
      const mount = await tryMount(ctx, b.digest, from);
      if (mount === 'mounted') return 'mounted';
      if (location !== undefined) await cancelUpload(ctx, location);
      location = mount.location;
    }
    await upload(ctx, b, location);
    return 'sent';
  });
  if (outcome === 'skipped') ctx.result.blobsSkipped++;
  else if (outcome === 'mounted') ctx.result.blobsMounted++;
  else ctx.result.blobsSent++;
  ctx.locations.add(dstHost, ctx.dstRepo, b.digest);
  ctx.blobsDone++;
  progress(ctx);
}

function sameRegistry(a: RegistryEndpoint, b: RegistryEndpoint): boolean {
  return a.host.toLowerCase() === b.host.toLowerCase() && Boolean(a.insecure) === Boolean(b.insecure);
}

/** `POST ?mount=&from=`: 201 mounted; 202 means the registry opened an ordinary upload instead. */
async function tryMount(ctx: Ctx, digest: string, from: string): Promise<'mounted' | { location: string | undefined }> {
  const res = await call(ctx, ctx.dst, {
    method: 'POST',
    path: `/v2/${ctx.dstRepo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
    headers: { 'content-length': '0' },
    body: Buffer.alloc(0),
    repository: ctx.dstRepo,
    actions: 'pull,push',
    extraScopes: [`repository:${from}:pull`],
  });
  await discard(res.body);
  if (res.status === 201) return 'mounted';
  if (res.status === 202) return { location: firstHeader(res.headers, 'location') };
  if (res.status === 429 || res.status >= 500) await expectStatus(res, [201, 202], `mount ${digest}`);
  // Refused (e.g. no pull access to `from`): fall back to sending it.
  ctx.opts.log?.debug({ digest, from, status: res.status }, 'blob mount refused');
  return { location: undefined };
}

async function cancelUpload(ctx: Ctx, location: string): Promise<void> {
  try {
    const res = await call(ctx, ctx.dst, { method: 'DELETE', path: uploadPath(ctx, location), repository: ctx.dstRepo, actions: 'pull,push' });
    await discard(res.body);
  } catch {
    // An abandoned upload session is purged by the registry; nothing else to do.
  }
}

async function startUpload(ctx: Ctx): Promise<string> {
  const res = await call(ctx, ctx.dst, {
    method: 'POST',
    path: `/v2/${ctx.dstRepo}/blobs/uploads/`,
    headers: { 'content-length': '0' },
    body: Buffer.alloc(0),
    repository: ctx.dstRepo,
    actions: 'pull,push',
  });
  await expectStatus(res, [202], 'start upload');
  await discard(res.body);
  const location = firstHeader(res.headers, 'location');
  if (location === undefined) throw new CopyError('registry', 'start upload: no Location in the answer');
  return location;
}

/** An upload `Location` as a path the client accepts, with extra query parameters. */
function uploadPath(ctx: Ctx, location: string, params: Record<string, string> = {}): string {
  const base = new URL(`${ctx.dst.insecure ? 'http' : 'https'}://${ctx.dst.host}`);
  const url = new URL(location, base);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.origin === base.origin ? url.pathname + url.search : url.toString();
}

/** Stream the source blob into the target: one PUT, or PATCH chunks then PUT for large blobs. */
async function upload(ctx: Ctx, b: Descriptor, openLocation: string | undefined): Promise<void> {
  let location = openLocation ?? (await startUpload(ctx));
  const res = await call(ctx, ctx.src, { method: 'GET', path: `/v2/${ctx.srcRepo}/blobs/${b.digest}`, repository: ctx.srcRepo, actions: 'pull' });
  if (res.status === 404) {
    await discard(res.body);
    throw new CopyError('not-found', `source blob ${b.digest}: not found (HTTP 404)`, { status: 404 });
  }
  await expectStatus(res, [200], `source blob ${b.digest}`);
  const hasher = new Digester(b.digest);
  // Errors of the source stream reach the upload through the hasher, which pipeline destroys.
  const hashed = pipeline(res.body, hasher, () => undefined);
  const threshold = ctx.opts.chunkThreshold ?? 64 << 20;
  try {
    if (b.size <= threshold) {
      const put = await call(ctx, ctx.dst, {
        method: 'PUT',
        path: uploadPath(ctx, location, { digest: b.digest }),
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(b.size) },
        body: hashed,
        repository: ctx.dstRepo,
        actions: 'pull,push',
      });
      // The registry's refusal says more than our half-read stream would.
      await expectStatus(put, [201], `upload ${b.digest}`);
      await discard(put.body);
      hasher.check(b);
    } else {
      const chunkSize = Math.max(1, ctx.opts.chunkSize ?? 16 << 20);
      const reader = new ChunkReader(hashed[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
      for (let start = 0; start < b.size; start += chunkSize) {
        const length = Math.min(chunkSize, b.size - start);
        const patch = await call(ctx, ctx.dst, {
          method: 'PATCH',
          path: uploadPath(ctx, location),
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(length),
            'content-range': `${start}-${start + length - 1}`,
          },
          body: Readable.from(reader.take(length), { objectMode: false }),
          repository: ctx.dstRepo,
          actions: 'pull,push',
        });
        await expectStatus(patch, [202], `upload ${b.digest} chunk at ${start}`);
        await discard(patch.body);
        location = firstHeader(patch.headers, 'location') ?? location;
      }
      await reader.end();
      hasher.check(b);
      const put = await call(ctx, ctx.dst, {
        method: 'PUT',
        path: uploadPath(ctx, location, { digest: b.digest }),
        headers: { 'content-length': '0' },
        body: Buffer.alloc(0),
        repository: ctx.dstRepo,
        actions: 'pull,push',
      });
      await expectStatus(put, [201], `upload ${b.digest}`);
      await discard(put.body);
    }
  } catch (err) {
    hashed.destroy();
    throw err;
  }
  ctx.result.bytesSent += hasher.bytes;
}

/** Counts and hashes what streams through, so what was sent is verified, not assumed. */
class Digester extends Transform {
  readonly #hash: Hash;
  readonly #algorithm: string;
  bytes = 0;
  #digest: string | undefined;
  constructor(expected: string) {
    super();
    this.#algorithm = digestAlgorithm(expected) ?? 'sha256';
    this.#hash = createHash(HASHES[this.#algorithm] ?? 'sha256');
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.#digest = `${this.#algorithm}:${this.#hash.digest('hex')}`;
    cb();
  }
  /** Throw unless the whole stream went through with the descriptor's size and digest. */
  check(b: Descriptor): void {
    if (this.#digest === undefined) throw new CopyError('unreachable', `blob ${b.digest}: source stream ended early`, { transient: true });
    if (this.bytes !== b.size || this.#digest !== b.digest) {
      throw new CopyError('digest-mismatch', `blob ${b.digest}: streamed ${this.bytes} bytes with digest ${this.#digest}, expected ${b.size} bytes`);
    }
  }
}

/** Cuts one byte stream into consecutive pieces of given lengths, holding at most one source chunk. */
class ChunkReader {
  #pending: Buffer | undefined;
  constructor(private readonly iter: AsyncIterator<Buffer>) {}
  async *take(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      let buf = this.#pending;
      this.#pending = undefined;
      if (!buf) {
        const r = await this.iter.next();
        if (r.done) throw new CopyError('unreachable', 'source blob ended early', { transient: true });
        buf = r.value;
      }
      if (buf.length > left) {
        this.#pending = buf.subarray(left);
        buf = buf.subarray(0, left);
      }
      left -= buf.length;
      yield buf;
    }
  }
  /** Read to the end, so the hasher sees the end of the stream (there must be nothing left). */
  async end(): Promise<void> {
    if (this.#pending?.length) throw new CopyError('digest-mismatch', 'source blob is longer than its descriptor says');
    const r = await this.iter.next();
    if (!r.done) throw new CopyError('digest-mismatch', 'source blob is longer than its descriptor says');
  }
}

// ---------------------------------------------------------------------------------------
// Requests, retries, limits

/** A registry's answer with the endpoint that gave it, so a refusal can name the registry. */
type Answer = RegistryResponse & { endpoint: RegistryEndpoint; receivedAt: number };

async function call(ctx: Ctx, ep: RegistryEndpoint, req: Parameters<RegistryClient['request']>[1]): Promise<Answer> {
  try {
    const res = await ctx.opts.client.request(ep, { ...req, ...(ctx.opts.signal ? { signal: ctx.opts.signal } : {}) });
    return { ...res, endpoint: ep, receivedAt: (ctx.opts.clock ?? systemClock).wall().getTime() };
  } catch (err) {
    if (err instanceof RegistryError) {
      const code: CopyErrorReason = err.reason === 'unauthorized' || err.reason === 'credentials' ? 'unauthorized' : 'unreachable';
      const transient =
        err.reason === 'unreachable' ||
        (err.reason === 'timeout' && !ctx.opts.signal?.aborted) ||
        (err.reason === 'token' && (err.status ?? 0) >= 500) ||
        // Cloud identity services that failed (rather than refused) may answer the next time.
        (err.reason === 'credentials' && err.cause instanceof CredentialError && !err.cause.refused);
      // The client says only `unauthorized` when a Bearer token service refused us; say who and why.
      const message =
        err.reason === 'unauthorized'
          ? `${ep.host}: authentication failed: its token service refused ${ep.auth ? 'the credentials' : ep.credentials ? `the ${ep.credentials.kind} credentials` : 'anonymous access'} (HTTP ${err.status ?? 401})${noCredentials(ep)}`
          : err.reason === 'credentials'
            ? err.message // names the registry, the source and the step already
            : `${ep.host}: ${err.message}`;
      throw new CopyError(code, message, { transient, cause: err, ...(err.status === undefined ? {} : { status: err.status }) });
    }
    throw err;
  }
}

/** A hint for refusals of a registry we sent no credentials to. */
function noCredentials(ep: RegistryEndpoint): string {
  return ep.auth || ep.credentials ? '' : '; no credentials are configured for it';
}

/** Throw a CopyError (transient for 429 and 5xx, with Retry-After) unless the status is expected. */
async function expectStatus(res: Answer, ok: number[], what: string): Promise<void> {
  if (ok.includes(res.status)) return;
  const detail = await errorDetail(res);
  const status = res.status;
  if (status === 401 || status === 403) {
    // 401: Basic credentials refused, or a Bearer token without access to the repository
    // (anonymous, or a user without rights); name the registry, the step alone does not say which.
    const why = status === 401 ? 'authentication failed' : 'access denied';
    throw new CopyError('unauthorized', `${what}: ${why} at ${res.endpoint.host} (HTTP ${status}${detail})${noCredentials(res.endpoint)}`, { status });
  }
  const transient = status === 429 || status >= 500;
  const retryAfterMs = transient ? retryAfter(firstHeader(res.headers, 'retry-after'), res.receivedAt) : undefined;
  throw new CopyError('registry', `${what}: HTTP ${status}${detail}`, { status, transient, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
}

/** The first error code of a distribution error body (`{"errors":[{"code":...}]}`), if any. */
async function errorDetail(res: RegistryResponse): Promise<string> {
  try {
    const body = await readUpTo(res.body, 64 << 10, () => new CopyError('unsupported', `error: larger than ${64 << 10} bytes`));
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown }[] };
    const code = parsed.errors?.[0]?.code;
    return typeof code === 'string' ? ` ${code}` : '';
  } catch {
    return '';
  }
}

/** `Retry-After` in ms: seconds, or an HTTP date counted from when the answer arrived (wall-clock ms). */
function retryAfter(v: string | undefined, receivedAt: number): number | undefined {
  if (v === undefined) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - receivedAt);
}

/** A wait that keeps the process alive (the default of a copy without timers). */
function heldSleep(ms: number): Promise<void> {
  return new Promise<void>((r) => setTimeout(r, ms));
}

/**
 * The request layer's retries (src/retry.ts): one registry request (a manifest, one blob's
 * transfer) on 429, 5xx, a reset or refused connection, a timeout; `Retry-After` wins over
 * the backoff, capped. Short, for what heals in seconds; the copy queue retries the whole
 * copy later when these are used up. Worst case per request: 4 tries, waiting at most
 * 0.5 + 1 + 2 = 3.5 s in all (jitter only shortens), or 3 × 30 s = 90 s when every answer
 * says `Retry-After` of 30 s or more.
 */
export const REQUEST_RETRY: RetryPolicy = { attempts: 4, baseMs: 500, capMs: 30_000, jitter: 0.5 };

async function retrying<T>(ctx: Ctx, what: string, fn: () => Promise<T>): Promise<T> {
  const policy: RetryPolicy = {
    ...REQUEST_RETRY,
    attempts: ctx.opts.attempts ?? REQUEST_RETRY.attempts,
    baseMs: ctx.opts.backoffMs ?? REQUEST_RETRY.baseMs,
    capMs: ctx.opts.maxBackoffMs ?? REQUEST_RETRY.capMs,
  };
  const timers = ctx.opts.timers;
  const sleep = ctx.opts.sleep ?? (timers ? (ms: number) => sleepOn(timers, ms) : heldSleep);
  const random = (): number => (timers ?? systemTimers).random();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = err instanceof CopyError ? err : new CopyError('unreachable', `${what}: ${messageOf(err)}`, { cause: err });
      if (!retryable(policy, attempt, { transient: e.transient, aborted: ctx.opts.signal?.aborted })) throw e;
      // Jitter spreads retries of parallel transfers; Retry-After wins when the registry gives one.
      const wait = backoffMs(policy, attempt, random, e.retryAfterMs);
      ctx.opts.log?.warn({ what, attempt, status: e.status, waitMs: Math.round(wait), reason: e.message }, 'registry request failed; retrying');
      await sleep(wait);
    }
  }
}

/** Run `fn` over `items`, at most `limit` at a time; the first failure stops new starts and is thrown once all running ones settle. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.err;
}


function digestOf(algorithm: string, bytes: Buffer): string {
  return `${algorithm}:${createHash(HASHES[algorithm] ?? 'sha256').update(bytes).digest('hex')}`;
}


