/**
 * Registry credentials that come from a cloud identity instead of a stored password: a
 * short-lived token (Google access token, ECR authorization token, ACR refresh token)
 * fetched from the cloud's identity services, cached for its lifetime, refreshed ahead of
 * expiry, and fetched once however many requests want it at the same moment.
 *
 * Secrets never reach a log line or an error message: errors say which registry, which
 * source and which step failed, and quote only status codes and the services' error codes.
 */
import http from 'node:http';
import https from 'node:https';
import type { RegistryAuth } from './auth.js';
import { messageOf, MirrorgateError } from '../errors.js';

/** The cloud credential sources of `registries.<host>.auth`. */
export type CloudSourceKind = 'google' | 'aws' | 'azure';

/** What the registry's challenge said, for sources whose exchange lives on the token service (ACR). */
export interface ChallengeContext {
  /** The registry's own origin (`https://host[:port]`). */
  base: URL;
  /** The Bearer realm, when the registry named one. */
  realm?: URL;
  /** The Bearer `service`, when the registry named one. */
  service?: string;
}

/** Registry credentials from a cloud identity. */
export interface CredentialSource {
  readonly kind: CloudSourceKind;
  /** Stable per source: registry tokens obtained with its credentials are cached under it. */
  readonly id: string;
  /**
   * Current credentials: cached, refreshed before they expire, one fetch for concurrent
   * callers.
   *
   * @throws CredentialError naming the registry and the step that failed.
   */
  get(ctx: ChallengeContext): Promise<RegistryAuth>;
  /** The registry refused `auth`: forget it, so the next {@link get} fetches anew. */
  invalidate(auth: RegistryAuth): void;
}

/** Why cloud credentials could not be had. `message`: `<registry>: <kind> credentials: <step>: <why>`. */
export class CredentialError extends MirrorgateError {
  readonly registry: string;
  readonly kind: CloudSourceKind;
  /** The step that failed, e.g. `metadata server token`, `STS token exchange`. */
  readonly step: string;
  /** True when the identity service refused (4xx): retrying at once will not help. */
  readonly refused: boolean;
  constructor(registry: string, kind: CloudSourceKind, step: string, why: string, opts: { refused?: boolean; cause?: unknown } = {}) {
    super('MG_CREDENTIALS', `${registry}: ${kind} credentials: ${step}: ${why}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.registry = registry;
    this.kind = kind;
    this.step = step;
    this.refused = opts.refused ?? false;
  }
}

/** Credentials and how long they last. */
export interface Expiring {
  auth: RegistryAuth;
  /** Epoch ms on the source's clock. */
  expiresAt: number;
}

/** The subset of a pino logger the sources use. */
export interface CredentialLog {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface CachedCredentialOptions {
  /** Epoch ms. */
  now: () => number;
  log?: CredentialLog | undefined;
  /** Fields for log lines (registry, source); never secrets. */
  fields: Record<string, string>;
  /** Never use credentials closer than this to their expiry (default 60 s). */
  marginMs?: number;
  /** After a failed background refresh, wait this long before trying again (default 10 s). */
  retryMs?: number;
}

/**
 * Single-flight, refresh-ahead cache of one credential. Fresh until three quarters of its
 * lifetime (at most 5 minutes before expiry): returned at once. Then, until `marginMs`
 * before expiry, still returned at once while one background refresh runs, so a request on
 * the admission path never waits for a cloud round trip. After that, callers wait for the
 * refresh. Failures are never cached: the next caller tries again (background retries are
 * spaced by `retryMs`).
 */
export class CachedCredential {
  readonly #fetch: () => Promise<Expiring>;
  readonly #opts: CachedCredentialOptions;
  readonly #marginMs: number;
  readonly #retryMs: number;
  #current: (Expiring & { refreshAt: number }) | undefined;
  #inflight: Promise<Expiring> | undefined;
  #retryAt = 0;

  constructor(fetch: () => Promise<Expiring>, opts: CachedCredentialOptions) {
    this.#fetch = fetch;
    this.#opts = opts;
    this.#marginMs = opts.marginMs ?? 60_000;
    this.#retryMs = opts.retryMs ?? 10_000;
  }

  async get(): Promise<RegistryAuth> {
    const now = this.#opts.now();
    const c = this.#current;
    if (c && now < c.expiresAt - this.#marginMs) {
      if (now >= c.refreshAt && !this.#inflight && now >= this.#retryAt) {
        // Refresh ahead; a failure leaves the current credentials in use until they expire.
        this.#refresh().catch((err: unknown) => {
          this.#retryAt = this.#opts.now() + this.#retryMs;
          this.#opts.log?.warn({ ...this.#opts.fields, error: messageOf(err) }, 'registry credentials refresh failed; the current ones stay in use');
        });
      }
      return c.auth;
    }
    return (await this.#refresh()).auth;
  }

  /** Drop the cached credentials if they are still `auth`. */
  invalidate(auth: RegistryAuth): void {
    if (this.#current && this.#current.auth.password === auth.password) this.#current = undefined;
  }

  #refresh(): Promise<Expiring> {
    if (this.#inflight) return this.#inflight;
    const started = this.#opts.now();
    const p = this.#fetch().then(
      (e) => {
        const now = this.#opts.now();
        const lifetime = Math.max(0, e.expiresAt - now);
        const refreshAt = e.expiresAt - Math.min(lifetime / 4, 300_000);
        this.#current = { ...e, refreshAt };
        this.#inflight = undefined;
        this.#opts.log?.debug({ ...this.#opts.fields, expiresInSeconds: Math.round(lifetime / 1000), durationMs: now - started }, 'registry credentials fetched');
        return e;
      },
      (err: unknown) => {
        this.#inflight = undefined;
        throw err;
      },
    );
    this.#inflight = p;
    return p;
  }
}

// ---------------------------------------------------------------------------------------
// HTTP for the identity services (small JSON and form exchanges)

/** An identity service's answer. */
export interface ServiceAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const MAX_ANSWER = 1 << 20;
const LOOPBACK = /^(?:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|localhost)$/i;

/**
 * A URL an identity service may be reached at: HTTPS, or plain HTTP only to loopback (a
 * local metadata proxy, tests) unless `plainHttp` allows it (the GKE metadata server is
 * plain HTTP by design).
 */
export function serviceUrl(raw: string, plainHttp = false): URL | undefined {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return undefined;
  }
  if (u.username !== '' || u.password !== '') return undefined;
  if (u.protocol === 'https:') return u;
  if (u.protocol === 'http:' && (plainHttp || LOOPBACK.test(u.hostname))) return u;
  return undefined;
}

export interface ServiceRequest {
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  /** Extra PEM roots (besides Node's) for HTTPS. */
  ca?: string[] | undefined;
}

/**
 * One request to an identity service, without keep-alive (a few calls an hour), the
 * answer's body read up to 1 MiB. Rejects with a short, secret-free reason on network
 * failure or timeout.
 */
export function callService(url: URL, req: ServiceRequest): Promise<ServiceAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'user-agent': 'mirrorgate', accept: 'application/json', ...req.headers };
    if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
    const options: https.RequestOptions = {
      method: req.method,
      headers,
      agent: false,
      timeout: req.timeoutMs,
      ...(req.ca?.length ? { ca: req.ca } : {}),
    };
    const r = (url.protocol === 'https:' ? https : http).request(url, options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER) {
          res.destroy(new Error('answer larger than 1 MiB'));
          return;
        }
        chunks.push(c);
      });
      res.on('error', (err) => reject(new Error(err.message)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    r.on('timeout', () => r.destroy(Object.assign(new Error(`no answer within ${req.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    r.on('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(err.code === 'ETIMEDOUT' ? err.message : `unreachable (${err.code ?? err.message})`));
    });
    r.end(req.body);
  });
}

/** Parse a JSON object answer, or undefined. */
export function jsonObject(body: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(body);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Why a service refused, safe to log: the HTTP status and an OAuth `error` code (RFC 6749
 * 5.2) or Google's `error.status`, never the description, which may echo what was sent.
 */
export function refusal(a: ServiceAnswer): string {
  const o = jsonObject(a.body);
  let code: string | undefined;
  if (typeof o?.error === 'string') code = o.error;
  else if (typeof o?.error === 'object' && o.error !== null) {
    const e = o.error as Record<string, unknown>;
    code = typeof e.status === 'string' ? e.status : typeof e.code === 'string' ? e.code : undefined;
  }
  let safe = code !== undefined && /^[\w.:-]{1,64}$/.test(code) ? ` ${code}` : '';
  // Entra ID's numbered reason (AADSTS700016: unknown application, ...) is what its docs index.
  const aad: unknown = Array.isArray(o?.error_codes) ? (o.error_codes as unknown[])[0] : undefined;
  if (typeof aad === 'number' && Number.isInteger(aad)) safe += ` AADSTS${aad}`;
  return `refused (HTTP ${a.status}${safe})`;
}

/** Seconds from an OAuth `expires_in` (number or numeric string), or undefined. */
export function seconds(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

/** `exp` of a JWT (epoch ms), when `token` is one; the signature is not checked (it is not ours to check). */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
