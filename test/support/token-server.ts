/**
 * A Bearer token server for tests, speaking the distribution token protocol
 * (https://distribution.github.io/distribution/spec/auth/token/) the way `docker-registry`
 * 2.8 accepts it: an ES256 JWT whose header carries the signing certificate in `x5c`,
 * that same self-signed certificate being the registry's `auth.token.rootcertbundle`.
 *
 * node-forge cannot make EC certificates and node:crypto cannot make certificates at all,
 * so the certificate's DER is assembled with forge's asn1 helpers and signed with
 * node:crypto (ECDSA P-256, SHA-256).
 */
import { generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import forge from 'node-forge';

/** An EC P-256 key and a self-signed certificate for it. */
export interface EcSigner {
  privateKey: KeyObject;
  /** DER of the certificate, as `x5c` carries it (base64). */
  certDer: Buffer;
  certPem: string;
}

const { asn1 } = forge;
const U = asn1.Class.UNIVERSAL;

function seq(value: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(U, asn1.Type.SEQUENCE, true, value);
}
function oid(o: string): forge.asn1.Asn1 {
  return asn1.create(U, asn1.Type.OID, false, asn1.oidToDer(o).getBytes());
}
function der(a: forge.asn1.Asn1): string {
  return asn1.toDer(a).getBytes();
}
function commonName(cn: string): forge.asn1.Asn1 {
  return seq([asn1.create(U, asn1.Type.SET, true, [seq([oid('2.5.4.3'), asn1.create(U, asn1.Type.UTF8, false, cn)])])]);
}
function extension(id: string, critical: boolean, value: forge.asn1.Asn1): forge.asn1.Asn1 {
  return seq([
    oid(id),
    ...(critical ? [asn1.create(U, asn1.Type.BOOLEAN, false, '\xff')] : []),
    asn1.create(U, asn1.Type.OCTETSTRING, false, der(value)),
  ]);
}

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/**
 * Make an EC P-256 key and a self-signed CA certificate for it (valid from an hour ago for
 * `days`), suitable as a JWT `x5c` and a registry `rootcertbundle`.
 */
export function createEcSigner(cn = 'mirrorgate test token signer', days = 1): EcSigner {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and without a redundant leading zero
  const notBefore = new Date(Date.now() - 3600_000);
  const notAfter = new Date(Date.now() + days * 86400_000);
  const tbs = seq([
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [asn1.create(U, asn1.Type.INTEGER, false, asn1.integerToDer(2).getBytes())]),
    asn1.create(U, asn1.Type.INTEGER, false, serial.toString('binary')),
    seq([oid(ECDSA_WITH_SHA256)]),
    commonName(cn),
    seq([asn1.create(U, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(notBefore)), asn1.create(U, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(notAfter))]),
    commonName(cn),
    asn1.fromDer(spki.toString('binary')),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 3, true, [
      seq([
        extension('2.5.29.19', true, seq([asn1.create(U, asn1.Type.BOOLEAN, false, '\xff')])), // basicConstraints cA
        extension('2.5.29.15', true, asn1.create(U, asn1.Type.BITSTRING, false, '\x02\x84')), // digitalSignature, keyCertSign
      ]),
    ]),
  ]);
  const tbsDer = Buffer.from(der(tbs), 'binary');
  const signature = sign('sha256', tbsDer, privateKey); // DER-encoded ECDSA-Sig-Value, as X.509 wants
  const cert = seq([tbs, seq([oid(ECDSA_WITH_SHA256)]), asn1.create(U, asn1.Type.BITSTRING, false, '\x00' + signature.toString('binary'))]);
  const certDer = Buffer.from(der(cert), 'binary');
  const x509 = new X509Certificate(certDer);
  if (!x509.verify(publicKey)) throw new Error('createEcSigner: the certificate does not verify');
  return { privateKey, certDer, certPem: x509.toString() };
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** One grant in a token's `access` claim. */
export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

/** Sign a registry token: ES256 JWT with `x5c`, signature as raw r||s (JWS), not DER. */
export function signRegistryToken(
  signer: EcSigner,
  claims: { issuer: string; service: string; subject: string; access: TokenAccess[]; expiresIn: number },
): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'ES256', typ: 'JWT', x5c: [signer.certDer.toString('base64')] };
  const payload = {
    iss: claims.issuer,
    sub: claims.subject,
    aud: claims.service,
    exp: now + claims.expiresIn,
    nbf: now - 10,
    iat: now,
    jti: randomBytes(12).toString('hex'),
    access: claims.access,
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const sig = sign('sha256', Buffer.from(input), { key: signer.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(sig)}`;
}

export interface TokenServerOptions {
  /** The registry's `auth.token.service`, checked against the `service` query (default `mirrorgate-test`). */
  service?: string;
  /** The registry's `auth.token.issuer` (default `mirrorgate-test-issuer`). */
  issuer?: string;
  /** Accepted Basic credentials, user to password. A known user gets every action it asks for (see `grant`). */
  users?: Record<string, string>;
  /**
   * What a request without credentials gets: `none` (default) a token without any access, as
   * Docker Hub answers for a private repository, so the registry then refuses it; `pull` pull
   * access to any repository.
   */
  anonymous?: 'none' | 'pull';
  /** `expires_in` of issued tokens in seconds (default 300). */
  expiresIn?: number;
  /**
   * Narrow what a known user gets for one scope (default: every action asked for), e.g. to
   * withhold `pull` on a repository. Asked on every request, so a test may change its mind.
   */
  grant?: (user: string, type: string, name: string, actions: string[]) => string[];
  /**
   * Decide Basic credentials instead of `users`, e.g. accept only passwords a cloud identity
   * service issued and that have not expired.
   */
  authenticate?: (user: string, password: string) => boolean;
  /**
   * Accept `POST <path>` with `grant_type=refresh_token` (the OAuth2 flow of docker's
   * identity tokens and ACR, https://distribution.github.io/distribution/spec/auth/oauth/):
   * the user a valid refresh token stands for, or undefined to refuse it (401).
   */
  refreshTokens?: (refreshToken: string, service: string | undefined) => string | undefined;
  /** Path of the token endpoint (default `/token`; ACR's is `/oauth2/token`). */
  path?: string;
  /** Answer other requests on the same origin (e.g. ACR's `/oauth2/exchange`); true when answered. */
  extra?: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => boolean;
}

/** One request the token server answered, for tests to count and inspect. */
export interface TokenRequestRecord {
  /** Basic user name sent, if any. */
  user: string | undefined;
  /** `service` query parameter. */
  service: string | undefined;
  /** Every `scope` query parameter, in order. */
  scopes: string[];
  /** HTTP status answered: 200, or 401 for wrong credentials. */
  status: number;
  /** `GET` with Basic or none, `POST` for a refresh token. */
  method: string;
}

export interface TokenServer {
  /** Base URL, `http://127.0.0.1:PORT`. */
  url: string;
  /** The token endpoint (`<url>/token`): the registry's `auth.token.realm`. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM of the signing certificate: the registry's `auth.token.rootcertbundle`. */
  rootCertPem: string;
  /** Every request answered, oldest first. */
  requests: TokenRequestRecord[];
  /** Every token issued, oldest first (to check that none appears in logs). */
  tokens: string[];
  stop(): Promise<void>;
}

/**
 * Start a Bearer token server on 127.0.0.1 (a free port). `GET /token?service=S&scope=...`
 * checks Basic credentials against `users` (wrong ones: 401), grants the scopes asked for
 * (see {@link TokenServerOptions.anonymous} for anonymous requests) and answers
 * `{token, access_token, expires_in, issued_at}`. Pass its `realm`, `service`, `issuer`
 * and `rootCertPem` to `startRegistry({ auth: { token } })`.
 */
export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const service = opts.service ?? 'mirrorgate-test';
  const issuer = opts.issuer ?? 'mirrorgate-test-issuer';
  const users = opts.users ?? {};
  const expiresIn = opts.expiresIn ?? 300;
  const signer = createEcSigner();
  const requests: TokenRequestRecord[] = [];
  const tokens: string[] = [];

  const tokenPath = opts.path ?? '/token';
  const refuse = (res: http.ServerResponse, record: TokenRequestRecord): void => {
    record.status = 401;
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="token"' });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'wrong credentials' }] }));
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  const handle = (req: http.IncomingMessage, res: http.ServerResponse, body: string): void => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (opts.extra?.(req, res, body)) return;
    const post = req.method === 'POST' && opts.refreshTokens !== undefined;
    if ((req.method !== 'GET' && !post) || url.pathname !== tokenPath) {
      res.writeHead(404).end();
      return;
    }
    const form = post ? new URLSearchParams(body) : url.searchParams;
    const scopes = form.getAll('scope');
    const record: TokenRequestRecord = { user: undefined, service: form.get('service') ?? undefined, scopes, status: 200, method: req.method ?? 'GET' };
    requests.push(record);
    let known = false;
    const authz = req.headers.authorization;
    if (post) {
      const user = form.get('grant_type') === 'refresh_token' ? opts.refreshTokens?.(form.get('refresh_token') ?? '', record.service) : undefined;
      if (user === undefined) {
        refuse(res, record);
        return;
      }
      record.user = user;
      known = true;
    } else if (authz?.startsWith('Basic ')) {
      const decoded = Buffer.from(authz.slice(6), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const user = decoded.slice(0, colon);
      record.user = user;
      const password = decoded.slice(colon + 1);
      const ok = colon >= 0 && (opts.authenticate ? opts.authenticate(user, password) : users[user] !== undefined && users[user] === password);
      if (!ok) {
        refuse(res, record);
        return;
      }
      known = true;
    }
    const access: TokenAccess[] = [];
    for (const scope of scopes) {
      const first = scope.indexOf(':');
      const last = scope.lastIndexOf(':');
      if (first < 0 || last <= first) continue;
      const type = scope.slice(0, first);
      const name = scope.slice(first + 1, last);
      let actions = scope.slice(last + 1).split(',').filter(Boolean);
      if (!known) actions = opts.anonymous === 'pull' ? actions.filter((a) => a === 'pull') : [];
      else if (opts.grant) actions = opts.grant(record.user ?? '', type, name, actions);
      if (actions.length > 0) access.push({ type, name, actions });
    }
    const token = signRegistryToken(signer, { issuer, service, subject: record.user ?? '', access, expiresIn });
    tokens.push(token);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() }));
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    realm: `${url}${tokenPath}`,
    service,
    issuer,
    rootCertPem: signer.certPem,
    requests,
    tokens,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
