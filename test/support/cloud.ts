/**
 * TEST DOUBLES of cloud identity services, which cannot run here: Google's metadata server,
 * STS and IAM Credentials; AWS STS, the EKS Pod Identity agent and ECR's
 * GetAuthorizationToken; Entra ID's token endpoint and ACR's `/oauth2/exchange`. Each speaks
 * its protocol as the service documents it (paths, form fields, headers, JSON or XML
 * shapes, error bodies), checks what a real service checks (the subject token, the role,
 * the client id, SigV4 signatures with the credentials STS issued), issues random tokens
 * with a lifetime on the test's clock, and can be told to refuse. They only stand in for
 * the clouds: the registry behind them is the real one (test/support/registry.ts), and
 * its token server (test/support/token-server.ts) accepts only what these issued.
 *
 * Everything listens on 127.0.0.1.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A clock the test moves; the doubles judge expiry by it. */
export class FakeClock {
  t = Date.now();
  readonly now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

interface Issued {
  expiresAt: number;
}

/** Tokens a double issued, valid until their expiry on the fake clock. */
export class TokenBook {
  readonly #tokens = new Map<string, Issued>();
  /** Every token issued, oldest first (to check none leaks into logs). */
  readonly all: string[] = [];
  constructor(private readonly clock: FakeClock) {}
  issue(prefix: string, seconds: number): string {
    const token = `${prefix}${randomBytes(24).toString('base64url')}`;
    this.#tokens.set(token, { expiresAt: this.clock.now() + seconds * 1000 });
    this.all.push(token);
    return token;
  }
  valid(token: string): boolean {
    const t = this.#tokens.get(token);
    return t !== undefined && this.clock.now() < t.expiresAt;
  }
}

interface Listening {
  url: string;
  host: string;
  stop(): Promise<void>;
}

type Handler = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;

async function listen(handler: Handler): Promise<Listening> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, Buffer.concat(chunks).toString('utf8'), res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

/** One request a double answered. */
export interface CallRecord {
  what: string;
  status: number;
}

// ---------------------------------------------------------------------------------------
// Google

export interface GoogleDoubleOptions {
  clock: FakeClock;
  /** The external_account `audience` STS expects (the workload identity provider). */
  audience: string;
  /** The subject token STS accepts (the projected ServiceAccount token the test wrote). */
  subjectToken: string;
  /** The service account that may be impersonated. */
  serviceAccount: string;
  /** Lifetime of every token issued (default 3600 s, as Google's). */
  expiresIn?: number;
}

export interface GoogleDouble extends Listening {
  /** `GCE_METADATA_HOST`. */
  metadataHost: string;
  /** external_account `token_url`. */
  stsUrl: string;
  /** external_account `service_account_impersonation_url`. */
  impersonationUrl: string;
  calls: CallRecord[];
  tokens: TokenBook;
  /** Access tokens Artifact Registry would accept: from the metadata server, impersonation or direct STS access. */
  accepts(token: string): boolean;
  /** Make a step refuse from now on. */
  refuse: { metadata?: boolean; sts?: boolean; impersonation?: boolean };
}

/**
 * Google's metadata server token endpoint
 * (https://cloud.google.com/compute/docs/access/authenticate-workloads#applications), STS
 * `v1/token` (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token) and IAM
 * Credentials `generateAccessToken`
 * (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken)
 * on one loopback port.
 */
export async function startGoogleDouble(opts: GoogleDoubleOptions): Promise<GoogleDouble> {
  const ttl = opts.expiresIn ?? 3600;
  const access = new TokenBook(opts.clock);
  const calls: CallRecord[] = [];
  const refuse: GoogleDouble['refuse'] = {};
  const impersonationPath = `/v1/projects/-/serviceAccounts/${opts.serviceAccount}:generateAccessToken`;
  const answer = (res: http.ServerResponse, what: string, status: number, body: unknown): void => {
    calls.push({ what, status });
    json(res, status, body);
  };
  const l = await listen((req, body, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'GET' && path === '/computeMetadata/v1/instance/service-accounts/default/token') {
      // The real server refuses requests without this header (SSRF protection).
      if (req.headers['metadata-flavor'] !== 'Google') return answer(res, 'metadata', 403, { error: 'missing Metadata-Flavor' });
      if (refuse.metadata) return answer(res, 'metadata', 404, { error: 'not found' });
      const token = access.issue('ya29.meta-', ttl);
      return answer(res, 'metadata', 200, { access_token: token, expires_in: ttl, token_type: 'Bearer' });
    }
    if (req.method === 'POST' && path === '/v1/token') {
      const f = new URLSearchParams(body);
      const ok =
        req.headers['content-type'] === 'application/x-www-form-urlencoded' &&
        f.get('grant_type') === 'urn:ietf:params:oauth:grant-type:token-exchange' &&
        f.get('requested_token_type') === 'urn:ietf:params:oauth:token-type:access_token' &&
        f.get('subject_token_type') === 'urn:ietf:params:oauth:token-type:jwt' &&
        f.get('audience') === opts.audience &&
        (f.get('scope') ?? '').split(' ').includes('https://www.googleapis.com/auth/cloud-platform') &&
        f.get('subject_token') === opts.subjectToken;
      if (refuse.sts || !ok) return answer(res, 'sts', 400, { error: 'invalid_grant', error_description: 'The audience in ID Token does not match the expected audience.' });
      const token = access.issue('sts-', ttl);
      return answer(res, 'sts', 200, { access_token: token, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', token_type: 'Bearer', expires_in: ttl });
    }
    if (req.method === 'POST' && path?.startsWith('/v1/projects/-/serviceAccounts/')) {
      const bearer = req.headers.authorization?.replace(/^Bearer /, '') ?? '';
      if (!access.valid(bearer) || !bearer.startsWith('sts-')) return answer(res, 'impersonation', 401, { error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } });
      if (refuse.impersonation || path !== impersonationPath) {
        return answer(res, 'impersonation', 403, { error: { code: 403, message: "Permission 'iam.serviceAccounts.getAccessToken' denied", status: 'PERMISSION_DENIED' } });
      }
      let b: { scope?: unknown; lifetime?: unknown };
      try {
        b = JSON.parse(body) as typeof b;
      } catch {
        return answer(res, 'impersonation', 400, { error: { code: 400, status: 'INVALID_ARGUMENT' } });
      }
      const lifetime = typeof b.lifetime === 'string' && /^\d+s$/.test(b.lifetime) ? Number(b.lifetime.slice(0, -1)) : 3600;
      if (!Array.isArray(b.scope) || !b.scope.includes('https://www.googleapis.com/auth/cloud-platform') || lifetime > 3600) {
        return answer(res, 'impersonation', 400, { error: { code: 400, status: 'INVALID_ARGUMENT' } });
      }
      const token = access.issue('ya29.sa-', Math.min(lifetime, ttl));
      return answer(res, 'impersonation', 200, { accessToken: token, expireTime: new Date(Date.now() + Math.min(lifetime, ttl) * 1000).toISOString() });
    }
    answer(res, `unknown ${req.method} ${path}`, 404, {});
  });
  return {
    ...l,
    metadataHost: l.host,
    stsUrl: `${l.url}/v1/token`,
    impersonationUrl: `${l.url}${impersonationPath}`,
    calls,
    tokens: access,
    accepts: (t) => access.valid(t),
    refuse,
  };
}

// ---------------------------------------------------------------------------------------
// AWS

export interface AwsDoubleOptions {
  clock: FakeClock;
  /** The role IRSA may assume. */
  roleArn: string;
  /** The projected token STS (IRSA) accepts. */
  webIdentityToken: string;
  /** The token the Pod Identity agent accepts in Authorization. */
  podIdentityToken: string;
  region: string;
  /** ECR token lifetime (default 12 h, as ECR's). */
  ecrSeconds?: number;
}

export interface AwsDouble extends Listening {
  /** AWS_ENDPOINT_URL_STS */
  stsUrl: string;
  /** AWS_ENDPOINT_URL_ECR */
  ecrUrl: string;
  /** AWS_CONTAINER_CREDENTIALS_FULL_URI */
  podIdentityUrl: string;
  calls: CallRecord[];
  /** Every secret issued (session tokens, secret keys, ECR passwords). */
  secrets: string[];
  /** ECR passwords the registry would accept (user `AWS`). */
  acceptsPassword(password: string): boolean;
  refuse: { sts?: boolean; ecr?: boolean; podIdentity?: boolean };
}

interface AwsCreds {
  secret: string;
  session: string;
  expiresAt: number;
}

/** Check a SigV4 `Authorization` header (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html). */
function sigv4Valid(req: http.IncomingMessage, body: string, creds: Map<string, AwsCreds>, region: string, service: string, now: number): boolean {
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(req.headers.authorization ?? '');
  if (!m) return false;
  const [, akid, date, r, s, signed, signature] = m as unknown as [string, string, string, string, string, string, string];
  const c = creds.get(akid);
  if (!c || now >= c.expiresAt || r !== region || s !== service) return false;
  if (req.headers['x-amz-security-token'] !== c.session) return false;
  const amzDate = req.headers['x-amz-date'];
  if (typeof amzDate !== 'string' || !amzDate.startsWith(date)) return false;
  const names = signed.split(';');
  if (!names.includes('host') || !names.includes('x-amz-date')) return false;
  const headerLines = names.map((n) => {
    const v = req.headers[n];
    return `${n}:${(Array.isArray(v) ? v.join(',') : (v ?? '')).trim().replace(/\s+/g, ' ')}\n`;
  });
  const [path = '/', query = ''] = (req.url ?? '/').split('?');
  const payloadHash = createHash('sha256').update(body).digest('hex');
  const canonical = [req.method, path, query, headerLines.join(''), signed, payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
  const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${c.secret}`, date), region), service), 'aws4_request');
  const expected = createHmac('sha256', key).update(toSign).digest();
  return timingSafeEqual(expected, Buffer.from(signature, 'hex'));
}

/**
 * AWS STS `AssumeRoleWithWebIdentity` (Query protocol, XML answer:
 * https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html),
 * the EKS Pod Identity agent (`GET` with the pod's token in Authorization, JSON credentials:
 * https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html) and ECR
 * `GetAuthorizationToken` (JSON 1.1, SigV4-signed:
 * https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html),
 * each on its own loopback port as each is its own endpoint.
 */
export async function startAwsDouble(opts: AwsDoubleOptions): Promise<AwsDouble> {
  const clock = opts.clock;
  const calls: CallRecord[] = [];
  const secrets: string[] = [];
  const creds = new Map<string, AwsCreds>();
  const ecrTokens = new TokenBook(clock);
  const refuse: AwsDouble['refuse'] = {};
  const issueCreds = (seconds: number): { akid: string; c: AwsCreds } => {
    const akid = `ASIA${randomBytes(8).toString('hex').toUpperCase()}`;
    const c = { secret: randomBytes(30).toString('base64'), session: randomBytes(48).toString('base64'), expiresAt: clock.now() + seconds * 1000 };
    creds.set(akid, c);
    secrets.push(c.secret, c.session);
    return { akid, c };
  };
  // The SDK compares Expiration with its own (real) clock.
  const expiration = (seconds: number): string => new Date(Date.now() + seconds * 1000).toISOString();

  const sts = await listen((req, body, res) => {
    const f = new URLSearchParams(body);
    const xml = (status: number, text: string): void => {
      calls.push({ what: 'sts', status });
      res.writeHead(status, { 'content-type': 'text/xml' }).end(text);
    };
    if (req.method !== 'POST' || f.get('Action') !== 'AssumeRoleWithWebIdentity' || f.get('Version') !== '2011-06-15') {
      return xml(400, '<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>Could not find operation</Message></Error><RequestId>0</RequestId></ErrorResponse>');
    }
    if (refuse.sts || f.get('RoleArn') !== opts.roleArn || f.get('WebIdentityToken') !== opts.webIdentityToken) {
      return xml(403, '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error><RequestId>1</RequestId></ErrorResponse>');
    }
    const { akid, c } = issueCreds(3600);
    xml(
      200,
      `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>` +
        `<SubjectFromWebIdentityToken>system:serviceaccount:mirrorgate:mirrorgate</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience>` +
        `<AssumedRoleUser><Arn>${opts.roleArn.replace(':iam::', ':sts::').replace(':role/', ':assumed-role/')}/${f.get('RoleSessionName') ?? ''}</Arn><AssumedRoleId>AROAEXAMPLE:${f.get('RoleSessionName') ?? ''}</AssumedRoleId></AssumedRoleUser>` +
        `<Credentials><SessionToken>${c.session}</SessionToken><SecretAccessKey>${c.secret}</SecretAccessKey><Expiration>${expiration(3600)}</Expiration><AccessKeyId>${akid}</AccessKeyId></Credentials>` +
        `<Provider>oidc.eks.${opts.region}.amazonaws.com</Provider></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>2</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>`,
    );
  });

  const agent = await listen((req, _body, res) => {
    const answer = (status: number, body: unknown): void => {
      calls.push({ what: 'pod-identity', status });
      json(res, status, body);
    };
    if (req.method !== 'GET' || req.url !== '/v1/credentials') return answer(404, { message: 'not found' });
    if (refuse.podIdentity || req.headers.authorization !== opts.podIdentityToken) return answer(401, { message: 'Credentials not found: invalid token' });
    const { akid, c } = issueCreds(3600);
    answer(200, { AccessKeyId: akid, SecretAccessKey: c.secret, Token: c.session, AccountId: '123456789012', Expiration: expiration(3600) });
  });

  const ecr = await listen((req, body, res) => {
    const answer = (status: number, b: unknown, type?: string): void => {
      calls.push({ what: 'ecr', status });
      json(res, status, b, type ? { 'x-amzn-errortype': type } : {});
    };
    if (req.method !== 'POST' || req.headers['x-amz-target'] !== 'AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken' || req.headers['content-type'] !== 'application/x-amz-json-1.1') {
      return answer(400, { __type: 'UnknownOperationException' }, 'UnknownOperationException');
    }
    if (!sigv4Valid(req, body, creds, opts.region, 'ecr', clock.now())) {
      return answer(403, { __type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' }, 'UnrecognizedClientException');
    }
    if (refuse.ecr) {
      return answer(400, { __type: 'AccessDeniedException', message: 'User is not authorized to perform: ecr:GetAuthorizationToken' }, 'AccessDeniedException');
    }
    const seconds = opts.ecrSeconds ?? 12 * 3600;
    const password = ecrTokens.issue('ecr-', seconds);
    secrets.push(password);
    answer(200, {
      authorizationData: [
        { authorizationToken: Buffer.from(`AWS:${password}`).toString('base64'), expiresAt: (Date.now() + seconds * 1000) / 1000, proxyEndpoint: `https://123456789012.dkr.ecr.${opts.region}.amazonaws.com` },
      ],
    });
  });

  return {
    url: sts.url,
    host: sts.host,
    stsUrl: sts.url,
    ecrUrl: ecr.url,
    podIdentityUrl: `${agent.url}/v1/credentials`,
    calls,
    secrets,
    acceptsPassword: (p) => ecrTokens.valid(p),
    refuse,
    stop: async () => {
      await Promise.all([sts.stop(), agent.stop(), ecr.stop()]);
    },
  };
}

// ---------------------------------------------------------------------------------------
// Azure

export interface EntraDoubleOptions {
  clock: FakeClock;
  tenant: string;
  clientId: string;
  /** The projected token Entra accepts as client assertion. */
  federatedToken: string;
  /** Access token lifetime (default 3599 s). */
  expiresIn?: number;
}

export interface EntraDouble extends Listening {
  /** AZURE_AUTHORITY_HOST */
  authorityHost: string;
  calls: CallRecord[];
  tokens: TokenBook;
  refuse: { token?: boolean };
}

/**
 * Entra ID's v2 token endpoint, client credentials with a federated assertion
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential).
 */
export async function startEntraDouble(opts: EntraDoubleOptions): Promise<EntraDouble> {
  const tokens = new TokenBook(opts.clock);
  const calls: CallRecord[] = [];
  const refuse: EntraDouble['refuse'] = {};
  const l = await listen((req, body, res) => {
    const answer = (status: number, b: unknown): void => {
      calls.push({ what: 'entra', status });
      json(res, status, b);
    };
    if (req.method !== 'POST' || req.url !== `/${opts.tenant}/oauth2/v2.0/token`) return answer(404, { error: 'invalid_request', error_codes: [90002] });
    const f = new URLSearchParams(body);
    const ok =
      f.get('grant_type') === 'client_credentials' &&
      f.get('client_id') === opts.clientId &&
      f.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' &&
      f.get('client_assertion') === opts.federatedToken &&
      (f.get('scope') ?? '').endsWith('/.default');
    if (refuse.token || !ok) {
      return answer(400, { error: 'invalid_client', error_description: 'AADSTS70021: No matching federated identity record found for presented assertion.', error_codes: [70021] });
    }
    const ttl = opts.expiresIn ?? 3599;
    answer(200, { token_type: 'Bearer', expires_in: ttl, ext_expires_in: ttl, access_token: tokens.issue('eyJ0eXAi.aad-', ttl) });
  });
  return { ...l, authorityHost: `${l.url}/`, calls, tokens, refuse };
}

export interface AcrDouble {
  /** For `startTokenServer({ extra, refreshTokens, path: '/oauth2/token' })`. */
  extra: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => boolean;
  refreshTokens: (refreshToken: string, service: string | undefined) => string | undefined;
  calls: CallRecord[];
  /** Every refresh token issued. */
  refresh: string[];
  refuse: { exchange?: boolean };
}

/**
 * ACR's token service (https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md):
 * `POST /oauth2/exchange` turns a valid Entra access token into a refresh token (a JWT with
 * `exp`), which `POST /oauth2/token` (grant_type=refresh_token) then accepts. Plugged into
 * the suite's token server, which signs the registry tokens.
 */
export function acrDouble(opts: { clock: FakeClock; entra: EntraDouble; tenant: string; service: string; refreshSeconds?: number }): AcrDouble {
  const book = new TokenBook(opts.clock);
  const calls: CallRecord[] = [];
  const refresh: string[] = [];
  const refuse: AcrDouble['refuse'] = {};
  const seconds = opts.refreshSeconds ?? 3 * 3600;
  return {
    calls,
    refresh,
    refuse,
    extra: (req, res, body) => {
      if (req.url !== '/oauth2/exchange') return false;
      const f = new URLSearchParams(body);
      const status = req.method === 'POST' && f.get('grant_type') === 'access_token' && f.get('service') === opts.service && f.get('tenant') === opts.tenant && opts.entra.tokens.valid(f.get('access_token') ?? '') && !refuse.exchange ? 200 : 401;
      calls.push({ what: 'exchange', status });
      if (status !== 200) {
        json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required, visit https://aka.ms/acr/authorization for more information.' }] });
        return true;
      }
      const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
      const id = book.issue('', seconds);
      const jwt = `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64({ jti: id, iss: 'Azure Container Registry', aud: opts.service, exp: Math.floor(Date.now() / 1000) + seconds, grant_type: 'refresh_token', tenant: opts.tenant })}.${id}`;
      refresh.push(jwt);
      json(res, 200, { refresh_token: jwt });
      return true;
    },
    refreshTokens: (rt, service) => {
      const id = rt.split('.')[2] ?? '';
      return service === opts.service && refresh.includes(rt) && book.valid(id) ? 'acr-identity' : undefined;
    },
  };
}
