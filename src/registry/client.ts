/**
 * A small client for the distribution (OCI) registry API, on node:http/node:https: the
 * manifest check of "Mirror verification" and the authenticated requests the image copier
 * builds on. It answers the registry's auth challenge (Basic, or Bearer with a token from
 * the realm, https://distribution.github.io/distribution/spec/auth/token/) and keeps
 * connections alive, because a check sits on the admission path.
 *
 * Secrets (passwords, tokens, Authorization headers) are never logged nor put into errors.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { pipeline, type Readable } from 'node:stream';
import tls from 'node:tls';
import { isValidDigest, isValidRegistryHost, isValidRepositoryPath, isValidTag, registrySettingsKey } from '../core/reference.js';
import { parseChallenges, type RegistryAuth } from './auth.js';
import { discard, readUpTo } from './body.js';
import { configPlatform, formatPlatform, manifestPlatforms } from '../core/platforms.js';
import type { ChallengeContext, CredentialSource } from './credentials.js';
import { asError, messageOf, MirrorgateError } from '../errors.js';

export type { RegistryAuth } from './auth.js';

/** How to reach one registry. */
export interface RegistryEndpoint {
  /** Registry `host[:port]` as in the image reference; `docker.io` means `registry-1.docker.io`. */
  host: string;
  /** Plain HTTP (loopback, tests); only when configured, never as a fallback. */
  insecure?: boolean;
  /** Extra PEM roots, trusted in addition to Node's bundled roots (not instead of them). */
  ca?: string[];
  /** Basic credentials, also used to ask a Bearer realm for tokens. */
  auth?: RegistryAuth;
  /** Short-lived credentials from a cloud identity, asked for when needed (when `auth` is unset). */
  credentials?: CredentialSource;
}

/** The answer to "does the registry have this manifest?". */
export type ManifestCheck =
  /** `platforms` (as `os/arch[/variant]`) only from {@link RegistryClient.inspectManifest}. */
  | { result: 'present'; digest?: string; mediaType?: string; platforms?: string[] }
  | { result: 'absent'; status: number }
  /** `credentialsRefused`: mirrorgate's cloud credentials could not be had, or the registry refused them. */
  | { result: 'error'; reason: string; status?: number; credentialsRefused?: true };

/** Media types a manifest check accepts: OCI index and manifest, Docker list and v2. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

/** Why a registry request failed before yielding an HTTP answer (or with an auth refusal). */
export type RegistryErrorReason = 'unauthorized' | 'timeout' | 'unreachable' | 'tls' | 'token' | 'invalid' | 'credentials';

/** The only error type the client throws; `message` is short, safe to log, and starts with the reason. */
export class RegistryError extends MirrorgateError {
  readonly reason: RegistryErrorReason;
  readonly status: number | undefined;
  constructor(reason: RegistryErrorReason, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super('MG_REGISTRY', message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.reason = reason;
    this.status = opts.status;
  }
}

/** The subset of a pino logger the client uses. */
export interface RegistryLog {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Connection pooling; one keep-alive agent per TLS configuration, pooling per host. */
export interface RegistryAgentOptions {
  /** Concurrent sockets per registry host (default 16). */
  maxSockets?: number;
  /** Idle keep-alive sockets kept per host (default 8). */
  maxFreeSockets?: number;
  /** Socket inactivity timeout in ms, for idle and active sockets (default 30000). */
  timeoutMs?: number;
}

export interface RegistryClientOptions {
  /** Clock in ms, for token expiry. */
  now?: () => number;
  agentOptions?: RegistryAgentOptions;
  log?: RegistryLog;
}

/** An authenticated registry request; see {@link RegistryClient.request}. */
export interface RegistryRequest {
  method: string;
  /** `/v2/...` (with query), or an absolute URL on the endpoint's own origin (an upload `Location`). */
  path: string;
  headers?: Record<string, string>;
  /** A Buffer can be re-sent after an auth challenge; a stream is sent once. */
  body?: Buffer | NodeJS.ReadableStream;
  /** Repository the request acts on: the Bearer scope `repository:<name>:<actions>`. */
  repository: string;
  actions: 'pull' | 'pull,push';
  /** More Bearer scopes, e.g. `repository:<other>:pull` to mount a blob from another repository. */
  extraScopes?: string[];
  signal?: AbortSignal;
}

export interface RegistryResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The response body; the caller must consume or destroy it. */
  body: Readable;
}

type KnownChallenge = { scheme: 'none' } | { scheme: 'basic' } | { scheme: 'bearer'; realm: string; service?: string };

interface CachedToken {
  token: string;
  expiresAt: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const DEFAULT_TOKEN_SECONDS = 60;
/** A token is dropped this long before it expires, so it never expires in flight. */
const TOKEN_MARGIN_MS = 10_000;
const MAX_TOKEN_BODY = 1 << 20;
const MAX_CACHED_TOKENS = 1024;
const TLS_ERROR = /^(?:CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|ERR_TLS_|ERR_SSL_|HOSTNAME_MISMATCH|EPROTO$)/;

/**
 * Registry API client. One instance per process: it owns the keep-alive agents and the
 * challenge and token caches. Call {@link RegistryClient.close} to drop idle connections.
 */
export class RegistryClient {
  readonly #now: () => number;
  readonly #log: RegistryLog | undefined;
  readonly #maxSockets: number;
  readonly #maxFreeSockets: number;
  readonly #timeoutMs: number;
  readonly #agents = new Map<string, http.Agent>();
  /** The last auth challenge seen per origin, so later requests authenticate up front. */
  readonly #challenges = new Map<string, KnownChallenge>();
  readonly #tokens = new Map<string, CachedToken>();
  /** Concurrent requests for one token share one fetch. */
  readonly #tokenFetches = new Map<string, Promise<CachedToken>>();

  constructor(opts: RegistryClientOptions = {}) {
    this.#now = opts.now ?? Date.now;
    this.#log = opts.log;
    this.#maxSockets = opts.agentOptions?.maxSockets ?? 16;
    this.#maxFreeSockets = opts.agentOptions?.maxFreeSockets ?? 8;
    this.#timeoutMs = opts.agentOptions?.timeoutMs ?? 30_000;
  }

  /**
   * Ask whether `repository:reference` (a tag or a digest) exists: `HEAD
   * /v2/<repository>/manifests/<reference>` accepting OCI index and manifest, Docker list
   * and v2, answering the auth challenge (Basic, or Bearer with a token cached per registry
   * and scope until shortly before `expires_in`). 200 is present (with the
   * `Docker-Content-Digest`), 404 absent, anything else an error: `unauthorized` for 401/403,
   * and unreachable, timeouts (including `signal` aborting), 429 and 5xx. Never throws.
   */
  async checkManifest(
    endpoint: RegistryEndpoint,
    repository: string,
    reference: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<ManifestCheck> {
    const started = this.#now();
    const fields = { registry: endpoint.host, repository, reference };
    let check: ManifestCheck;
    try {
      if (!isValidTag(reference) && !isValidDigest(reference)) {
        throw new RegistryError('invalid', 'invalid: not a tag or digest');
      }
      const res = await this.request(endpoint, {
        method: 'HEAD',
        path: `/v2/${repository}/manifests/${reference}`,
        headers: { accept: MANIFEST_MEDIA_TYPES.join(', ') },
        repository,
        actions: 'pull',
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      // Wait for the (empty) body to end: only then is the socket back in the pool for the next check.
      await discard(res.body);
      check = manifestCheckFrom(res.status, res.headers, reference);
    } catch (err) {
      check = errorCheck(toRegistryError(err, opts.signal), endpoint);
    }
    const durationMs = this.#now() - started;
    if (check.result === 'error' && !check.reason.startsWith('timeout')) {
      this.#log?.warn({ ...fields, reason: check.reason, status: check.status, durationMs }, 'registry manifest check failed');
    } else {
      this.#log?.debug({ ...fields, ...check, durationMs }, 'registry manifest check');
    }
    return check;
  }

  /**
   * As {@link checkManifest}, but `GET` the manifest to learn its platforms as well: an
   * index's children's platforms, or for an image manifest the `os`/`architecture` of its
   * config blob (a second `GET`). The digest is the bytes' own (what a pin names), checked
   * against `Docker-Content-Digest`. Manifests over 4 MiB and configs over 1 MiB are
   * errors. Never throws.
   */
  async inspectManifest(
    endpoint: RegistryEndpoint,
    repository: string,
    reference: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<ManifestCheck> {
    const started = this.#now();
    const fields = { registry: endpoint.host, repository, reference };
    let check: ManifestCheck;
    try {
      if (!isValidTag(reference) && !isValidDigest(reference)) throw new RegistryError('invalid', 'invalid: not a tag or digest');
      const get = (path: string, accept: string) =>
        this.request(endpoint, { method: 'GET', path, headers: { accept }, repository, actions: 'pull', ...(opts.signal ? { signal: opts.signal } : {}) });
      const res = await get(`/v2/${repository}/manifests/${reference}`, MANIFEST_MEDIA_TYPES.join(', '));
      if (res.status !== 200) {
        await discard(res.body);
        check = manifestCheckFrom(res.status, res.headers, reference);
      } else {
        const bytes = await readUpTo(res.body, MAX_MANIFEST_BYTES, () => new RegistryError('invalid', `invalid: manifest larger than ${MAX_MANIFEST_BYTES} bytes`));
        const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
        const header = res.headers['docker-content-digest'];
        if (typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
          throw new RegistryError('invalid', `invalid: registry says ${header}, the manifest bytes are ${digest}`);
        }
        const mediaType = res.headers['content-type']?.split(';')[0]?.trim();
        const found = manifestPlatforms(parseJson(bytes, 'manifest'), mediaType);
        let platforms: string[];
        if (found.kind === 'index') platforms = found.platforms.map(formatPlatform);
        else if (found.kind === 'image') {
          const blob = await get(`/v2/${repository}/blobs/${found.configDigest}`, '*/*');
          if (blob.status !== 200) {
            await discard(blob.body);
            // The manifest is there but its config is not: the image cannot run.
            throw new RegistryError('invalid', `invalid: config blob ${found.configDigest}: HTTP ${blob.status}`, { status: blob.status });
          }
          const p = configPlatform(parseJson(await readUpTo(blob.body, MAX_CONFIG_BYTES, () => new RegistryError('invalid', `invalid: config larger than ${MAX_CONFIG_BYTES} bytes`)), 'config'));
          platforms = p === undefined ? [] : [formatPlatform(p)];
        } else throw new RegistryError('invalid', `invalid: ${found.reason}`);
        check = { result: 'present', digest, ...(mediaType ? { mediaType } : {}), platforms };
      }
    } catch (err) {
      check = errorCheck(toRegistryError(err, opts.signal), endpoint);
    }
    const durationMs = this.#now() - started;
    if (check.result === 'error' && !check.reason.startsWith('timeout')) {
      this.#log?.warn({ ...fields, reason: check.reason, status: check.status, durationMs }, 'registry manifest inspection failed');
    } else this.#log?.debug({ ...fields, ...check, durationMs }, 'registry manifest inspection');
    return check;
  }

  /**
   * Send one request to the registry's API with authentication: credentials known for the
   * origin are sent up front; a 401 challenge is answered once (Basic, or a Bearer token for
   * `repository:<repository>:<actions>` plus `extraScopes`) and the request retried. A stream
   * body cannot be re-sent, so for it the challenge is learnt first from `GET /v2/`. GET and
   * HEAD follow redirects (without the Authorization header to another origin). Any HTTP
   * status is returned as is.
   *
   * @throws RegistryError on network failure, timeout or abort, TLS failure, an invalid
   *   request, or a token realm that refuses the credentials or fails.
   */
  async request(endpoint: RegistryEndpoint, req: RegistryRequest): Promise<RegistryResponse> {
    const { signal } = req;
    try {
      // The reference grammar's path; 255 is distribution's RepositoryNameTotalLengthMax.
      if (req.repository.length > 255 || !isValidRepositoryPath(req.repository)) {
        throw new RegistryError('invalid', 'invalid: repository name');
      }
      const base = baseUrl(endpoint);
      const url = requestUrl(base, req.path);
      const scopes = [`repository:${req.repository}:${req.actions}`, ...(req.extraScopes ?? [])];
      const agent = this.#agent(base.protocol, endpoint.ca);
      const resendable = !isStream(req.body);

      let known = this.#challenges.get(base.origin);
      // A stream cannot be re-sent after a 401, so learn the challenge first. Also when the
      // origin answered reads anonymously: it may still want credentials for a push.
      if (!resendable && (!known || known.scheme === 'none')) known = await this.#ping(endpoint, base, signal);
      let authorization = known ? await this.#authorization(endpoint, base, known, scopes, signal, false) : undefined;
      const headersWith = (authz: string | undefined): Record<string, string> => {
        const h = lowercaseKeys(req.headers);
        if (authz !== undefined) h.authorization = authz;
        if (Buffer.isBuffer(req.body) && h['content-length'] === undefined) h['content-length'] = String(req.body.length);
        return h;
      };

      let res = await this.#exchange(url, req.method, headersWith(authorization), req.body, agent, signal);
      // Cloud credentials sent as Basic (ECR) and refused: they may have been revoked or
      // expired early; fetch fresh ones once.
      if (res.statusCode === 401 && resendable && authorization?.startsWith('Basic ') && endpoint.credentials && !endpoint.auth) {
        const next = await this.#refreshBasic(endpoint, base, authorization);
        if (next !== undefined) {
          await discard(res);
          authorization = next;
          res = await this.#exchange(url, req.method, headersWith(authorization), req.body, agent, signal);
        }
      }
      // Answer the challenge once: when we sent nothing, or a token that may have expired
      // or lacked the scope. Re-sending the same Basic credentials would not help.
      if (res.statusCode === 401 && resendable && !authorization?.startsWith('Basic ')) {
        const challenge = challengeFrom(res);
        if (challenge) {
          this.#challenges.set(base.origin, challenge);
          let next: string | undefined;
          try {
            next = await this.#authorization(endpoint, base, challenge, scopes, signal, authorization !== undefined);
          } catch (err) {
            res.resume();
            throw err;
          }
          if (next !== undefined) {
            await discard(res);
            authorization = next;
            res = await this.#exchange(url, req.method, headersWith(authorization), req.body, agent, signal);
          }
        }
      }
      if (known === undefined && res.statusCode !== 401 && !this.#challenges.has(base.origin)) {
        // Answered without a challenge: this registry needs no authentication.
        this.#challenges.set(base.origin, { scheme: 'none' });
      }

      for (let hops = 0; REDIRECTS.has(res.statusCode ?? 0) && (req.method === 'GET' || req.method === 'HEAD'); hops++) {
        const location = res.headers.location;
        if (location === undefined) break;
        await discard(res);
        if (hops === MAX_REDIRECTS) throw new RegistryError('unreachable', 'unreachable: too many redirects');
        const next = new URL(location, url);
        if (next.protocol !== 'https:' && !(next.protocol === 'http:' && endpoint.insecure)) {
          throw new RegistryError('invalid', `invalid: redirect to ${next.protocol} refused`);
        }
        const h = lowercaseKeys(req.headers);
        // Credentials go only to the registry itself, never to the storage it redirects to.
        if (next.origin === base.origin && authorization !== undefined) h.authorization = authorization;
        res = await this.#exchange(next, req.method, h, undefined, this.#agent(next.protocol, endpoint.ca), signal);
      }
      return { status: res.statusCode ?? 0, headers: res.headers, body: res };
    } catch (err) {
      throw toRegistryError(err, signal);
    }
  }

  /** Destroy the pooled connections; the client stays usable and reconnects on demand. */
  close(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }

  /** Learn an origin's challenge without a body to lose: `GET /v2/`. */
  async #ping(endpoint: RegistryEndpoint, base: URL, signal: AbortSignal | undefined): Promise<KnownChallenge> {
    const res = await this.#exchange(new URL('/v2/', base), 'GET', {}, undefined, this.#agent(base.protocol, endpoint.ca), signal);
    await discard(res);
    const challenge: KnownChallenge = (res.statusCode === 401 ? challengeFrom(res) : undefined) ?? { scheme: 'none' };
    this.#challenges.set(base.origin, challenge);
    return challenge;
  }

  async #authorization(
    endpoint: RegistryEndpoint,
    base: URL,
    challenge: KnownChallenge,
    scopes: string[],
    signal: AbortSignal | undefined,
    fresh: boolean,
  ): Promise<string | undefined> {
    switch (challenge.scheme) {
      case 'none':
        return undefined;
      case 'basic': {
        const auth = await this.#credentials(endpoint, { base });
        return auth ? basic(auth) : undefined;
      }
      case 'bearer':
        return `Bearer ${(await this.#token(endpoint, base, challenge, scopes, signal, fresh)).token}`;
    }
  }

  /** The endpoint's static credentials, or its cloud source's current ones. */
  async #credentials(endpoint: RegistryEndpoint, ctx: ChallengeContext): Promise<RegistryAuth | undefined> {
    if (endpoint.auth || !endpoint.credentials) return endpoint.auth;
    try {
      return await endpoint.credentials.get(ctx);
    } catch (err) {
      throw new RegistryError('credentials', messageOf(err), { cause: err });
    }
  }

  /** Basic cloud credentials `sent` were refused: new ones, or undefined when the source has nothing newer. */
  async #refreshBasic(endpoint: RegistryEndpoint, base: URL, sent: string): Promise<string | undefined> {
    const current = await this.#credentials(endpoint, { base });
    if (current && basic(current) === sent) endpoint.credentials?.invalidate(current);
    const fresh = await this.#credentials(endpoint, { base });
    return fresh && basic(fresh) !== sent ? basic(fresh) : undefined;
  }

  async #token(
    endpoint: RegistryEndpoint,
    base: URL,
    challenge: { realm: string; service?: string },
    scopes: string[],
    signal: AbortSignal | undefined,
    fresh: boolean,
  ): Promise<CachedToken> {
    // Tokens belong to the credentials that obtained them: a changed password must not reuse one.
    // A cloud source's credentials change on every refresh; the tokens they got stay good.
    const who = endpoint.auth
      ? createHash('sha256').update(`${endpoint.auth.username}\0${endpoint.auth.password}`).digest('hex')
      : endpoint.credentials
        ? `source:${endpoint.credentials.id}`
        : '';
    const key = JSON.stringify([base.origin, challenge.realm, challenge.service ?? '', who, scopes]);
    const cached = this.#tokens.get(key);
    if (cached && !fresh && cached.expiresAt > this.#now()) return cached;
    if (cached) this.#tokens.delete(key);
    let fetching = this.#tokenFetches.get(key);
    if (!fetching) {
      // Not tied to this caller's deadline: a token that arrives late still serves the next check.
      fetching = this.#fetchToken(endpoint, base, challenge, scopes).then(
        (t) => {
          this.#remember(key, t);
          return t;
        },
      );
      const done = (): void => {
        this.#tokenFetches.delete(key);
      };
      void fetching.then(done, done);
      this.#tokenFetches.set(key, fetching);
    }
    return raceSignal(fetching, signal);
  }

  /** Cache a token; the cache is bounded (one token per repository checked adds up). */
  #remember(key: string, token: CachedToken): void {
    if (this.#tokens.size >= MAX_CACHED_TOKENS) {
      const now = this.#now();
      for (const [k, t] of this.#tokens) if (t.expiresAt <= now) this.#tokens.delete(k);
      // Still full: drop the oldest (a Map iterates in insertion order).
      const oldest = this.#tokens.keys().next();
      if (this.#tokens.size >= MAX_CACHED_TOKENS && !oldest.done) this.#tokens.delete(oldest.value);
    }
    this.#tokens.set(key, token);
  }

  async #fetchToken(
    endpoint: RegistryEndpoint,
    base: URL,
    challenge: { realm: string; service?: string },
    scopes: string[],
  ): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      throw new RegistryError('token', 'token: realm is not a URL');
    }
    // Credentials travel to the realm only as safely as to the registry itself.
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && base.protocol === 'http:')) {
      throw new RegistryError('token', `token: realm must use https`);
    }
    const ctx: ChallengeContext = { base, realm, ...(challenge.service !== undefined ? { service: challenge.service } : {}) };
    let auth = await this.#credentials(endpoint, ctx);
    let res = await this.#askRealm(endpoint, realm, challenge.service, scopes, auth);
    let status = res.statusCode ?? 0;
    if ((status === 401 || status === 403) && auth && endpoint.credentials && !endpoint.auth) {
      // Cloud credentials refused (revoked, or expired early by the service's clock): once more with fresh ones.
      res.resume();
      endpoint.credentials.invalidate(auth);
      const fresh = await this.#credentials(endpoint, ctx);
      if (fresh && fresh.password !== auth.password) auth = fresh;
      res = await this.#askRealm(endpoint, realm, challenge.service, scopes, auth);
      status = res.statusCode ?? 0;
    }
    if (status === 401 || status === 403) {
      res.resume();
      const what = auth && endpoint.credentials && !endpoint.auth ? `: the token service refused the ${endpoint.credentials.kind} credentials (HTTP ${status})` : '';
      throw new RegistryError('unauthorized', `unauthorized${what}`, { status });
    }
    if (status !== 200) {
      res.resume();
      throw new RegistryError('token', `token: realm answered HTTP ${status}`, { status });
    }
    const body = await readUpTo(res, MAX_TOKEN_BODY, () => new RegistryError('token', 'token: realm answer too large'));
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new RegistryError('token', 'token: realm answered invalid JSON');
    }
    const obj = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
    const token = typeof obj.token === 'string' && obj.token !== '' ? obj.token : obj.access_token;
    if (typeof token !== 'string' || token === '') throw new RegistryError('token', 'token: realm answered no token');
    const seconds = typeof obj.expires_in === 'number' && obj.expires_in > 0 ? obj.expires_in : DEFAULT_TOKEN_SECONDS;
    const lifetimeMs = seconds * 1000;
    const expiresAt = this.#now() + lifetimeMs - Math.min(TOKEN_MARGIN_MS, lifetimeMs / 2);
    this.#log?.debug({ registry: endpoint.host, realm: realm.origin + realm.pathname, scopes, expiresIn: seconds }, 'registry token fetched');
    return { token, expiresAt };
  }

  /**
   * Ask the realm for a token: `GET ?service=&scope=` with Basic credentials, or, for a
   * refresh token (ACR, docker's identity tokens), the OAuth2 form post
   * `grant_type=refresh_token` with one `scope` field per scope, as ACR documents it.
   */
  #askRealm(endpoint: RegistryEndpoint, realm: URL, service: string | undefined, scopes: string[], auth: RegistryAuth | undefined): Promise<http.IncomingMessage> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const agent = this.#agent(realm.protocol, endpoint.ca);
    const signal = AbortSignal.timeout(this.#timeoutMs);
    if (auth?.refreshToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', client_id: 'mirrorgate', refresh_token: auth.password });
      if (service !== undefined) form.set('service', service);
      for (const s of scopes) form.append('scope', s);
      const body = Buffer.from(form.toString());
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(body.length);
      return this.#exchange(realm, 'POST', headers, body, agent, signal);
    }
    const url = new URL(realm);
    if (service !== undefined) url.searchParams.set('service', service);
    for (const s of scopes) url.searchParams.append('scope', s);
    if (auth) headers.authorization = basic(auth);
    return this.#exchange(url, 'GET', headers, undefined, agent, signal);
  }

  /** Keep-alive agents per protocol and set of extra roots; each pools sockets per host. */
  #agent(protocol: string, ca: string[] | undefined): http.Agent {
    const caKey = ca?.length ? createHash('sha256').update(ca.join('\n')).digest('hex') : '';
    const key = `${protocol}|${caKey}`;
    let agent = this.#agents.get(key);
    if (!agent) {
      const common = {
        keepAlive: true,
        maxSockets: this.#maxSockets,
        maxFreeSockets: this.#maxFreeSockets,
        timeout: this.#timeoutMs,
        scheduling: 'lifo' as const,
      };
      agent =
        protocol === 'https:'
          ? new https.Agent({
              ...common,
              // `ca` replaces Node's roots, so add the extra roots to them.
              ...(ca?.length ? { ca: [...tls.rootCertificates, ...ca] } : {}),
            })
          : new http.Agent(common);
      this.#agents.set(key, agent);
    }
    return agent;
  }

  /** One HTTP exchange; an idempotent request is re-sent once if a reused keep-alive socket was closed under it. */
  async #exchange(
    url: URL,
    method: string,
    headers: Record<string, string>,
    body: Buffer | NodeJS.ReadableStream | undefined,
    agent: http.Agent,
    signal: AbortSignal | undefined,
  ): Promise<http.IncomingMessage> {
    try {
      return await this.#exchangeOnce(url, method, headers, body, agent, signal);
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { reusedSocket?: boolean };
      if (e.reusedSocket && (e.code === 'ECONNRESET' || e.code === 'EPIPE') && !isStream(body) && !signal?.aborted) {
        return this.#exchangeOnce(url, method, headers, body, agent, signal);
      }
      throw err;
    }
  }

  #exchangeOnce(
    url: URL,
    method: string,
    headers: Record<string, string>,
    body: Buffer | NodeJS.ReadableStream | undefined,
    agent: http.Agent,
    signal: AbortSignal | undefined,
  ): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const options: http.RequestOptions = {
        protocol: url.protocol,
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port === '' ? undefined : Number(url.port),
        path: url.pathname + url.search,
        method,
        headers: { 'user-agent': 'mirrorgate', ...headers },
        agent,
        timeout: this.#timeoutMs,
        ...(signal ? { signal } : {}),
      };
      const req = (url.protocol === 'https:' ? https : http).request(options);
      req.on('timeout', () => {
        req.destroy(new RegistryError('timeout', 'timeout: no answer from the registry'));
      });
      req.on('response', resolve);
      req.on('error', (err: Error & { reusedSocket?: boolean }) => {
        err.reusedSocket = req.reusedSocket;
        reject(err);
      });
      if (isStream(body)) {
        // Errors surface on `req` (and so reject above); the callback only silences pipeline.
        pipeline(body, req, () => undefined);
      } else {
        req.end(body);
      }
    });
  }
}


function baseUrl(endpoint: RegistryEndpoint): URL {
  if (!isValidRegistryHost(endpoint.host)) throw new RegistryError('invalid', 'invalid: registry host');
  const host = registrySettingsKey(endpoint.host) === 'docker.io' ? 'registry-1.docker.io' : endpoint.host;
  try {
    return new URL(`${endpoint.insecure ? 'http' : 'https'}://${host}`);
  } catch {
    throw new RegistryError('invalid', 'invalid: registry host');
  }
}

function requestUrl(base: URL, path: string): URL {
  if (path.startsWith('/v2/')) return new URL(path, base);
  let url: URL | undefined;
  try {
    url = new URL(path);
  } catch {
    url = undefined;
  }
  if (!url || url.origin !== base.origin || !url.pathname.startsWith('/v2/')) {
    throw new RegistryError('invalid', 'invalid: path must be /v2/... on the registry');
  }
  return url;
}

function manifestCheckFrom(status: number, headers: http.IncomingHttpHeaders, reference: string): ManifestCheck {
  if (status === 200) {
    const header = headers['docker-content-digest'];
    const digest = typeof header === 'string' && header !== '' ? header : isValidDigest(reference) ? reference : undefined;
    const mediaType = headers['content-type']?.split(';')[0]?.trim();
    return { result: 'present', ...(digest ? { digest } : {}), ...(mediaType ? { mediaType } : {}) };
  }
  if (status === 404) return { result: 'absent', status };
  if (status === 401 || status === 403) return { result: 'error', reason: 'unauthorized', status };
  if (status === 429) return { result: 'error', reason: 'rate limited (HTTP 429)', status };
  if (status >= 500) return { result: 'error', reason: `server error (HTTP ${status})`, status };
  return { result: 'error', reason: `unexpected answer (HTTP ${status})`, status };
}

/** The challenge to answer: Bearer (with a realm) before Basic, as the docker CLI prefers. */
function challengeFrom(res: http.IncomingMessage): KnownChallenge | undefined {
  const all = (res.headersDistinct['www-authenticate'] ?? []).flatMap(parseChallenges);
  const bearer = all.find((c) => c.scheme === 'bearer' && c.params.realm);
  if (bearer?.params.realm !== undefined) {
    return { scheme: 'bearer', realm: bearer.params.realm, ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}) };
  }
  return all.some((c) => c.scheme === 'basic') ? { scheme: 'basic' } : undefined;
}

function basic(auth: RegistryAuth): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'utf8').toString('base64')}`;
}

/** Lowercased header names, so the Authorization we set replaces the caller's rather than doubling it. */
function lowercaseKeys(h: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) out[k.toLowerCase()] = v;
  return out;
}

function isStream(body: Buffer | NodeJS.ReadableStream | undefined): body is NodeJS.ReadableStream {
  return body !== undefined && !Buffer.isBuffer(body);
}

function raceSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new RegistryError('timeout', 'timeout: deadline exceeded'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new RegistryError('timeout', 'timeout: deadline exceeded'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(asError(err));
      },
    );
  });
}

const MAX_MANIFEST_BYTES = 4 << 20;
const MAX_CONFIG_BYTES = 1 << 20;

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new RegistryError('invalid', `invalid: ${what} is not JSON`);
  }
}

/** Classify any failure as a RegistryError whose message is safe to log. */
/** A check's error answer; a refusal of cloud credentials is marked so that admissions can say so. */
function errorCheck(e: RegistryError, endpoint: RegistryEndpoint): ManifestCheck {
  const refused = e.reason === 'credentials' || (e.reason === 'unauthorized' && endpoint.credentials !== undefined && endpoint.auth === undefined);
  return { result: 'error', reason: e.message, ...(e.status === undefined ? {} : { status: e.status }), ...(refused ? { credentialsRefused: true as const } : {}) };
}

function toRegistryError(err: unknown, signal: AbortSignal | undefined): RegistryError {
  if (err instanceof RegistryError) return err;
  if (signal?.aborted) return new RegistryError('timeout', 'timeout: deadline exceeded', { cause: err });
  const e = err as NodeJS.ErrnoException;
  // A system error's code (ECONNREFUSED, ...); ours carry an MG_ code that says less than their message.
  const code = !(err instanceof MirrorgateError) && typeof e?.code === 'string' ? e.code : undefined;
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError' || code === 'ETIMEDOUT' || code === 'ABORT_ERR') {
    return new RegistryError('timeout', 'timeout: deadline exceeded', { cause: err });
  }
  if (code && TLS_ERROR.test(code)) return new RegistryError('tls', `tls: ${code}`, { cause: err });
  return new RegistryError('unreachable', `unreachable: ${code ?? (err instanceof Error ? err.message : 'unknown error')}`, { cause: err });
}
