/**
 * `auth: {azure: {}}`: Azure Container Registry refresh tokens from Azure Workload Identity
 * (https://azure.github.io/azure-workload-identity/docs/), as `az acr login` gets them:
 * 1. the projected ServiceAccount token in `AZURE_FEDERATED_TOKEN_FILE` is the client
 *    assertion of a client-credentials grant at Entra ID
 *    (`AZURE_AUTHORITY_HOST` / `AZURE_TENANT_ID` / `oauth2/v2.0/token`, client `AZURE_CLIENT_ID`;
 *    https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential);
 * 2. the Entra access token is exchanged at the registry's token service,
 *    `POST /oauth2/exchange` (grant_type=access_token), for an ACR refresh token
 *    (https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md);
 * 3. the registry client then asks the realm (`/oauth2/token`) for access tokens with
 *    `grant_type=refresh_token`, user `00000000-0000-0000-0000-000000000000`.
 *
 * Hand-written rather than with @azure/identity: two form posts, against about 52 MB on
 * disk and 20 MB resident for the library (measured).
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { CachedCredential, callService, CredentialError, jsonObject, jwtExpiry, refusal, seconds, serviceUrl, type ChallengeContext, type CredentialLog, type CredentialSource, type Expiring } from '../credentials.js';

export const ACR_USERNAME = '00000000-0000-0000-0000-000000000000';
const DEFAULT_AUTHORITY = 'https://login.microsoftonline.com/';
/** The audience ACR's exchange accepts: Azure Resource Manager, in the public cloud. */
export const ACR_DEFAULT_SCOPE = 'https://management.azure.com/.default';
const GUIDISH = /^[0-9a-zA-Z.-]{1,64}$/;

export interface AzureSettings {
  /** Entra ID scope of the access token (sovereign clouds: their Resource Manager). */
  readonly scope?: string | undefined;
}

export interface AzureSourceDeps {
  registry: string;
  env: Readonly<Record<string, string | undefined>>;
  now: () => number;
  log?: CredentialLog | undefined;
  readFile?: (path: string) => Promise<string>;
  timeoutMs?: number;
}

/** An ACR credential source for one registry. */
export function azureSource(settings: AzureSettings, deps: AzureSourceDeps): CredentialSource {
  const read = deps.readFile ?? ((p: string) => fsReadFile(p, 'utf8'));
  const timeoutMs = deps.timeoutMs ?? 10_000;
  const env = deps.env;
  const scope = settings.scope ?? ACR_DEFAULT_SCOPE;
  const fail = (step: string, why: string, refused = false): CredentialError => new CredentialError(deps.registry, 'azure', step, why, { refused });
  const caches = new Map<string, CachedCredential>();

  async function entraToken(): Promise<string> {
    const tokenFile = env.AZURE_FEDERATED_TOKEN_FILE;
    const clientId = env.AZURE_CLIENT_ID;
    const tenant = env.AZURE_TENANT_ID;
    if (!tokenFile || !clientId || !tenant) {
      throw fail('identity', 'AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID must be set (label the pod azure.workload.identity/use: "true" and annotate its ServiceAccount with azure.workload.identity/client-id)');
    }
    if (!GUIDISH.test(tenant)) throw fail('identity', 'AZURE_TENANT_ID is not a tenant id or domain');
    const authority = serviceUrl(new URL(`${encodeURIComponent(tenant)}/oauth2/v2.0/token`, (env.AZURE_AUTHORITY_HOST || DEFAULT_AUTHORITY).replace(/\/*$/, '/')).toString());
    if (!authority) throw fail('identity', 'AZURE_AUTHORITY_HOST must be an https URL');
    let assertion: string;
    try {
      assertion = (await read(tokenFile)).trim();
    } catch (err) {
      throw fail('federated token', `cannot read ${tokenFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (assertion === '') throw fail('federated token', `${tokenFile} is empty`);
    const form = new URLSearchParams({
      client_id: clientId,
      scope,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
      grant_type: 'client_credentials',
    });
    let a;
    try {
      a = await callService(authority, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), timeoutMs });
    } catch (err) {
      throw fail('Entra ID token', (err as Error).message);
    }
    if (a.status !== 200) throw fail('Entra ID token', refusal(a), a.status < 500);
    const token = jsonObject(a.body)?.access_token;
    if (typeof token !== 'string' || token === '') throw fail('Entra ID token', 'the answer has no access_token');
    return token;
  }

  async function exchange(url: URL, service: string): Promise<Expiring> {
    const aad = await entraToken();
    const started = deps.now();
    const form = new URLSearchParams({ grant_type: 'access_token', service, tenant: env.AZURE_TENANT_ID ?? '', access_token: aad });
    let a;
    try {
      a = await callService(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), timeoutMs });
    } catch (err) {
      throw fail('ACR token exchange', (err as Error).message);
    }
    if (a.status !== 200) {
      const hint = a.status === 401 || a.status === 403 ? ': does the identity hold AcrPull (or AcrPush) on the registry?' : '';
      throw fail('ACR token exchange', refusal(a) + hint, a.status < 500);
    }
    const o = jsonObject(a.body);
    const refresh = o?.refresh_token;
    if (typeof refresh !== 'string' || refresh === '') throw fail('ACR token exchange', 'the answer has no refresh_token');
    // The refresh token is a JWT whose exp says how long it lasts (about 3 h); its clock is the
    // registry's, so count the lifetime on ours from when we asked.
    const exp = jwtExpiry(refresh);
    const ttl = exp !== undefined ? exp - Date.now() : (seconds(o?.expires_in) ?? 3600) * 1000;
    return { auth: { username: ACR_USERNAME, password: refresh, refreshToken: true }, expiresAt: started + Math.max(0, ttl) };
  }

  function cacheFor(ctx: ChallengeContext): CachedCredential {
    // The exchange lives on the token service the registry names (the registry itself for ACR).
    const origin = ctx.realm?.origin ?? ctx.base.origin;
    const service = ctx.service ?? ctx.base.host;
    const key = `${origin} ${service}`;
    let c = caches.get(key);
    if (!c) {
      if (caches.size >= 16) caches.delete(caches.keys().next().value as string);
      const url = new URL('/oauth2/exchange', origin);
      c = new CachedCredential(() => exchange(url, service), { now: deps.now, log: deps.log, fields: { registry: deps.registry, source: 'azure workload identity' } });
      caches.set(key, c);
    }
    return c;
  }

  return {
    kind: 'azure',
    id: `azure|${env.AZURE_CLIENT_ID ?? ''}|${scope}`,
    get: (ctx) => cacheFor(ctx).get(),
    invalidate: (auth) => {
      for (const c of caches.values()) c.invalidate(auth);
    },
  };
}
