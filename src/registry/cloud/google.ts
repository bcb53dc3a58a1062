/**
 * `auth: {google: {}}`: Google access tokens for Artifact Registry and Container Registry,
 * used as the password of the user `oauth2accesstoken`, as `gcloud auth print-access-token`
 * users do (https://cloud.google.com/artifact-registry/docs/docker/authentication#token).
 *
 * The token comes, as Application Default Credentials find it:
 * - from the file `GOOGLE_APPLICATION_CREDENTIALS` names when it is set: an
 *   `external_account` configuration (Workload Identity Federation, the file mirrorgate
 *   itself injects into pods): the subject token (a projected ServiceAccount token) is
 *   exchanged at the STS endpoint (RFC 8693, https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token),
 *   then, when the file names `service_account_impersonation_url`, exchanged again for the
 *   service account's token (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken);
 * - otherwise from the metadata server (GKE Workload Identity; `GCE_METADATA_HOST`
 *   overrides its address as Google's client libraries allow):
 *   https://cloud.google.com/compute/docs/access/authenticate-workloads#applications
 *
 * Written by hand rather than with google-auth-library: these are four small documented
 * exchanges, and the library would add about 13 MB on disk and 12 MB resident (measured).
 * Service account key files are refused: keeping keys out is the point of this source.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { CachedCredential, callService, CredentialError, jsonObject, refusal, seconds, serviceUrl, type CredentialLog, type CredentialSource, type Expiring } from '../credentials.js';

export const GOOGLE_USERNAME = 'oauth2accesstoken';
const SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const DEFAULT_METADATA_HOST = '169.254.169.254';
const DEFAULT_STS_URL = 'https://sts.googleapis.com/v1/token';
const DEFAULT_LIFETIME_SECONDS = 3600;

export interface GoogleSourceDeps {
  /** The registry host, for messages and logs. */
  registry: string;
  env: Readonly<Record<string, string | undefined>>;
  now: () => number;
  log?: CredentialLog | undefined;
  readFile?: (path: string) => Promise<string>;
  /** Per request to an identity service (default 10 s). */
  timeoutMs?: number;
}

interface ExternalAccount {
  audience: string;
  subjectTokenType: string;
  tokenUrl: URL;
  impersonationUrl: URL | undefined;
  lifetimeSeconds: number;
  source: { file: string } | { url: URL; headers: Record<string, string> };
  format: { type: 'text' } | { type: 'json'; field: string };
  clientAuth: string | undefined;
  userProject: string | undefined;
}

/** A Google credential source for one registry. */
export function googleSource(deps: GoogleSourceDeps): CredentialSource {
  const read = deps.readFile ?? ((p: string) => fsReadFile(p, 'utf8'));
  const timeoutMs = deps.timeoutMs ?? 10_000;
  const fail = (step: string, why: string, refused = false): CredentialError => new CredentialError(deps.registry, 'google', step, why, { refused });
  const file = deps.env.GOOGLE_APPLICATION_CREDENTIALS;
  const how = file !== undefined && file !== '' ? 'external_account' : 'metadata';

  async function fromMetadata(): Promise<Expiring> {
    const host = deps.env.GCE_METADATA_HOST || deps.env.GCE_METADATA_IP || DEFAULT_METADATA_HOST;
    const url = serviceUrl(`http://${host}/computeMetadata/v1/instance/service-accounts/default/token`, true);
    if (!url) throw fail('metadata server token', 'GCE_METADATA_HOST is not a host[:port]');
    const started = deps.now();
    let a;
    try {
      a = await callService(url, { method: 'GET', headers: { 'metadata-flavor': 'Google' }, timeoutMs });
    } catch (err) {
      throw fail('metadata server token', `${(err as Error).message} (outside GKE, set GOOGLE_APPLICATION_CREDENTIALS to an external_account file)`);
    }
    if (a.status !== 200) throw fail('metadata server token', a.status === 404 ? 'refused (HTTP 404): is Workload Identity enabled for the node pool and this ServiceAccount annotated with iam.gke.io/gcp-service-account?' : refusal(a), a.status < 500);
    const o = jsonObject(a.body);
    const token = o?.access_token;
    const ttl = seconds(o?.expires_in);
    if (typeof token !== 'string' || token === '' || ttl === undefined) throw fail('metadata server token', 'the answer has no access_token and expires_in');
    return { auth: { username: GOOGLE_USERNAME, password: token }, expiresAt: started + ttl * 1000 };
  }

  async function readConfig(path: string): Promise<ExternalAccount> {
    let text: string;
    try {
      text = await read(path);
    } catch (err) {
      throw fail('credential file', `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const o = jsonObject(text);
    if (!o) throw fail('credential file', `${path} is not a JSON object`);
    if (o.type !== 'external_account') {
      const t = typeof o.type === 'string' ? o.type : 'no type';
      throw fail('credential file', `${path} is "${t.slice(0, 40)}", not an external_account configuration (service account keys belong in auth: {file} or, better, nowhere)`);
    }
    const str = (k: string): string | undefined => (typeof o[k] === 'string' && o[k] !== '' ? o[k] : undefined);
    const audience = str('audience');
    const subjectTokenType = str('subject_token_type');
    if (!audience || !subjectTokenType) throw fail('credential file', `${path} lacks audience or subject_token_type`);
    const tokenUrl = serviceUrl(str('token_url') ?? DEFAULT_STS_URL);
    if (!tokenUrl) throw fail('credential file', `${path}: token_url must be an https URL`);
    let impersonationUrl: URL | undefined;
    const imp = str('service_account_impersonation_url');
    if (imp !== undefined) {
      impersonationUrl = serviceUrl(imp);
      if (!impersonationUrl) throw fail('credential file', `${path}: service_account_impersonation_url must be an https URL`);
    }
    const impOpts = o.service_account_impersonation;
    const lifetime = typeof impOpts === 'object' && impOpts !== null ? seconds((impOpts as Record<string, unknown>).token_lifetime_seconds) : undefined;
    const cs = o.credential_source;
    if (typeof cs !== 'object' || cs === null) throw fail('credential file', `${path} has no credential_source`);
    const c = cs as Record<string, unknown>;
    let source: ExternalAccount['source'];
    if (typeof c.file === 'string' && c.file !== '') source = { file: c.file };
    else if (typeof c.url === 'string') {
      const u = serviceUrl(c.url, true);
      if (!u) throw fail('credential file', `${path}: credential_source.url is not a URL`);
      const headers: Record<string, string> = {};
      if (typeof c.headers === 'object' && c.headers !== null) {
        for (const [k, v] of Object.entries(c.headers as Record<string, unknown>)) if (typeof v === 'string') headers[k.toLowerCase()] = v;
      }
      source = { url: u, headers };
    } else {
      const kind = 'environment_id' in c ? 'environment_id (AWS-sourced)' : 'executable' in c ? 'executable' : 'this';
      throw fail('credential file', `${path}: a ${kind} credential_source is not supported; use file or url`);
    }
    let format: ExternalAccount['format'] = { type: 'text' };
    if (typeof c.format === 'object' && c.format !== null) {
      const f = c.format as Record<string, unknown>;
      if (f.type === 'json') {
        if (typeof f.subject_token_field_name !== 'string' || f.subject_token_field_name === '') throw fail('credential file', `${path}: format json needs subject_token_field_name`);
        format = { type: 'json', field: f.subject_token_field_name };
      } else if (f.type !== undefined && f.type !== 'text') throw fail('credential file', `${path}: credential_source.format.type must be text or json`);
    }
    const id = str('client_id');
    const secret = str('client_secret');
    return {
      audience,
      subjectTokenType,
      tokenUrl,
      impersonationUrl,
      lifetimeSeconds: lifetime ?? DEFAULT_LIFETIME_SECONDS,
      source,
      format,
      clientAuth: id !== undefined ? `Basic ${Buffer.from(`${id}:${secret ?? ''}`).toString('base64')}` : undefined,
      userProject: str('workforce_pool_user_project'),
    };
  }

  async function subjectToken(cfg: ExternalAccount): Promise<string> {
    let raw: string;
    if ('file' in cfg.source) {
      try {
        raw = await read(cfg.source.file);
      } catch (err) {
        throw fail('subject token', `cannot read ${cfg.source.file} (${(err as NodeJS.ErrnoException).code ?? 'error'}): is the projected ServiceAccount token mounted?`);
      }
    } else {
      let a;
      try {
        a = await callService(cfg.source.url, { method: 'GET', headers: cfg.source.headers, timeoutMs });
      } catch (err) {
        throw fail('subject token', (err as Error).message);
      }
      if (a.status !== 200) throw fail('subject token', refusal(a));
      raw = a.body;
    }
    let token: unknown = raw.trim();
    if (cfg.format.type === 'json') token = jsonObject(raw)?.[cfg.format.field];
    if (typeof token !== 'string' || token === '') throw fail('subject token', 'it is empty');
    return token;
  }

  async function fromExternalAccount(path: string): Promise<Expiring> {
    const cfg = await readConfig(path);
    const subject = await subjectToken(cfg);
    const started = deps.now();
    const form = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      audience: cfg.audience,
      scope: SCOPE,
      requested_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      subject_token: subject,
      subject_token_type: cfg.subjectTokenType,
    });
    if (cfg.userProject !== undefined && cfg.clientAuth === undefined) form.set('options', JSON.stringify({ userProject: cfg.userProject }));
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (cfg.clientAuth) headers.authorization = cfg.clientAuth;
    let a;
    try {
      a = await callService(cfg.tokenUrl, { method: 'POST', headers, body: form.toString(), timeoutMs });
    } catch (err) {
      throw fail('STS token exchange', (err as Error).message);
    }
    if (a.status !== 200) throw fail('STS token exchange', refusal(a), a.status < 500);
    const o = jsonObject(a.body);
    const sts = o?.access_token;
    const ttl = seconds(o?.expires_in);
    if (typeof sts !== 'string' || sts === '') throw fail('STS token exchange', 'the answer has no access_token');
    if (!cfg.impersonationUrl) {
      // Direct resource access: the federated token itself, for as long as STS says.
      return { auth: { username: GOOGLE_USERNAME, password: sts }, expiresAt: started + (ttl ?? DEFAULT_LIFETIME_SECONDS) * 1000 };
    }
    const impStarted = deps.now();
    let b;
    try {
      b = await callService(cfg.impersonationUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${sts}` },
        body: JSON.stringify({ scope: [SCOPE], lifetime: `${cfg.lifetimeSeconds}s` }),
        timeoutMs,
      });
    } catch (err) {
      throw fail('service account impersonation', (err as Error).message);
    }
    if (b.status !== 200) {
      const hint = b.status === 403 ? ': grant roles/iam.workloadIdentityUser (or serviceAccountTokenCreator) on the service account to the federated principal' : '';
      throw fail('service account impersonation', refusal(b) + hint, b.status < 500);
    }
    const p = jsonObject(b.body);
    const token = p?.accessToken;
    const expireTime = typeof p?.expireTime === 'string' ? Date.parse(p.expireTime) : NaN;
    if (typeof token !== 'string' || token === '') throw fail('service account impersonation', 'the answer has no accessToken');
    // expireTime is the service's wall clock; the lifetime we asked for bounds it on ours.
    const asked = impStarted + cfg.lifetimeSeconds * 1000;
    const expiresAt = Number.isFinite(expireTime) ? Math.min(asked, impStarted + Math.max(0, expireTime - Date.now())) : asked;
    return { auth: { username: GOOGLE_USERNAME, password: token }, expiresAt };
  }

  const cache = new CachedCredential(() => (how === 'metadata' ? fromMetadata() : fromExternalAccount(file as string)), {
    now: deps.now,
    log: deps.log,
    fields: { registry: deps.registry, source: `google ${how}` },
  });
  return {
    kind: 'google',
    id: `google|${how}|${file ?? ''}`,
    get: () => cache.get(),
    invalidate: (auth) => cache.invalidate(auth),
  };
}
