/**
 * `auth: {aws: {}}`: Amazon ECR authorization tokens
 * (https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html#registry-auth-token),
 * obtained with the pod's own AWS identity and the AWS SDK for JavaScript v3:
 * - IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (what the EKS Pod Identity Webhook,
 *   or mirrorgate itself, injects): `sts:AssumeRoleWithWebIdentity`;
 * - EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI` (+ `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`),
 *   the Pod Identity agent on the node;
 * then `ecr:GetAuthorizationToken`, whose token (user `AWS`) lasts 12 hours and is cached for
 * that long, less a margin. No other credential source is tried: on a machine without
 * either, the error says what to set rather than probing instance metadata.
 *
 * The SDK (26 packages, 18 MB on disk) is loaded on first use only (6-13 MB more resident
 * once loaded, measured after the webhook started), so a
 * webhook that never talks to ECR does not pay for it. Endpoints follow the SDK's own
 * settings (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL`), which is
 * also how the tests point it at loopback.
 */
import { CachedCredential, CredentialError, type CredentialLog, type CredentialSource, type Expiring } from '../credentials.js';
import { messageOf } from '../../errors.js';

export const ECR_USERNAME = 'AWS';
/** `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]` */
const ECR_HOST = /^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/i;

export interface AwsSettings {
  /** Overrides the region in the registry host (needed when the host does not name one). */
  readonly region?: string | undefined;
}

export interface AwsSourceDeps {
  registry: string;
  env: Readonly<Record<string, string | undefined>>;
  now: () => number;
  log?: CredentialLog | undefined;
  timeoutMs?: number;
}

/** The region an ECR registry host names, if it is one. */
export function ecrRegion(host: string): string | undefined {
  return ECR_HOST.exec(host.replace(/:\d+$/, ''))?.[2]?.toLowerCase();
}

type Identity = Awaited<ReturnType<ReturnType<typeof import('@aws-sdk/credential-providers').fromTokenFile>>>;
interface Sdk {
  /** An ECR client signing with these credentials. */
  ecr: (credentials: Identity) => import('@aws-sdk/client-ecr').ECRClient;
  command: typeof import('@aws-sdk/client-ecr').GetAuthorizationTokenCommand;
  identity: () => Promise<Identity>;
}

interface SdkError {
  name?: string;
  $metadata?: { httpStatusCode?: number };
}

/** A short, secret-free reason from an SDK error: its name and HTTP status, not its message. */
function sdkReason(err: unknown): { why: string; refused: boolean } {
  const e = err as SdkError & Error;
  const status = e?.$metadata?.httpStatusCode;
  const name = typeof e?.name === 'string' && /^[\w.-]{1,64}$/.test(e.name) ? e.name : 'Error';
  if (name === 'CredentialsProviderError' || name === 'ProviderError') {
    // Made by the SDK itself (configuration missing, agent unreachable): its message says what.
    const msg = (e.message ?? '').split('\n')[0]?.slice(0, 160) ?? '';
    return { why: msg, refused: false };
  }
  if (status !== undefined) return { why: `refused (HTTP ${status} ${name})`, refused: status >= 400 && status < 500 };
  const code = (err as NodeJS.ErrnoException)?.code;
  return { why: `unreachable (${typeof code === 'string' ? code : name})`, refused: false };
}

/** An ECR credential source for one registry. */
export function awsSource(settings: AwsSettings, deps: AwsSourceDeps): CredentialSource {
  const env = deps.env;
  const timeoutMs = deps.timeoutMs ?? 10_000;
  const fail = (step: string, why: string, refused = false): CredentialError => new CredentialError(deps.registry, 'aws', step, why, { refused });
  const region = settings.region ?? ecrRegion(deps.registry) ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  const irsa = !!env.AWS_WEB_IDENTITY_TOKEN_FILE && !!env.AWS_ROLE_ARN;
  const podIdentity = !irsa && !!env.AWS_CONTAINER_CREDENTIALS_FULL_URI;
  const how = irsa ? 'IRSA' : podIdentity ? 'EKS Pod Identity' : 'none';
  const identityStep = irsa ? 'STS AssumeRoleWithWebIdentity' : 'EKS Pod Identity agent';

  let sdk: Promise<Sdk> | undefined;

  async function load(r: string): Promise<Sdk> {
    const [ecrMod, providers] = await Promise.all([import('@aws-sdk/client-ecr'), import('@aws-sdk/credential-providers')]);
    const requestHandler = { connectionTimeout: timeoutMs, requestTimeout: timeoutMs };
    const stsEndpoint = env.AWS_ENDPOINT_URL_STS ?? env.AWS_ENDPOINT_URL;
    const identity = irsa
      ? providers.fromTokenFile({
          webIdentityTokenFile: env.AWS_WEB_IDENTITY_TOKEN_FILE as string,
          roleArn: env.AWS_ROLE_ARN as string,
          roleSessionName: env.AWS_ROLE_SESSION_NAME ?? 'mirrorgate',
          clientConfig: { region: r, requestHandler, maxAttempts: 2, ...(stsEndpoint ? { endpoint: stsEndpoint } : {}) },
        })
      : providers.fromHttp({
          awsContainerCredentialsFullUri: env.AWS_CONTAINER_CREDENTIALS_FULL_URI as string,
          ...(env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE ? { awsContainerAuthorizationTokenFile: env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE } : {}),
          // The agent is on the node: a short timeout, which the SDK also waits between tries.
          timeout: Math.min(timeoutMs, 2000),
          maxRetries: 1,
        });
    const ecrEndpoint = env.AWS_ENDPOINT_URL_ECR ?? env.AWS_ENDPOINT_URL;
    // A client per exchange (twice a day): the SDK would otherwise keep the credentials it
    // was first given for as long as they say they last, on its own clock.
    const ecr = (credentials: Identity): import('@aws-sdk/client-ecr').ECRClient =>
      new ecrMod.ECRClient({ region: r, requestHandler, maxAttempts: 2, ...(ecrEndpoint ? { endpoint: ecrEndpoint } : {}), credentials });
    return { ecr, command: ecrMod.GetAuthorizationTokenCommand, identity: () => identity() };
  }

  async function fetch(): Promise<Expiring> {
    if (how === 'none') {
      throw fail('identity', 'no AWS identity: set AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (IRSA: annotate the ServiceAccount with eks.amazonaws.com/role-arn) or use EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI)');
    }
    if (!region) throw fail('identity', 'no region: the registry host names none; set registries.<host>.auth.aws.region or AWS_REGION');
    sdk ??= load(region).catch((err: unknown) => {
      sdk = undefined;
      throw fail('loading the AWS SDK', messageOf(err));
    });
    const s = await sdk;
    let identity: Identity;
    try {
      identity = await s.identity();
    } catch (err) {
      const r = sdkReason(err);
      throw fail(identityStep, r.why, r.refused);
    }
    const started = deps.now();
    let out;
    const ecr = s.ecr(identity);
    try {
      out = await ecr.send(new s.command({}));
    } catch (err) {
      const r = sdkReason(err);
      const hint = r.refused && /AccessDenied/.test(r.why) ? ': the role needs ecr:GetAuthorizationToken on *' : '';
      throw fail('ecr:GetAuthorizationToken', r.why + hint, r.refused);
    } finally {
      ecr.destroy();
    }
    const data = out.authorizationData?.[0];
    const decoded = data?.authorizationToken ? Buffer.from(data.authorizationToken, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw fail('ecr:GetAuthorizationToken', 'the answer has no authorizationToken');
    // expiresAt is the service's wall clock; count its lifetime from when we asked, on ours.
    const lifetime = data?.expiresAt instanceof Date ? data.expiresAt.getTime() - Date.now() : 12 * 3600_000;
    return { auth: { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }, expiresAt: started + Math.max(0, Math.min(lifetime, 12 * 3600_000)) };
  }

  const cache = new CachedCredential(fetch, {
    now: deps.now,
    log: deps.log,
    fields: { registry: deps.registry, source: `aws ${how}` },
    // ECR's documented lifetime is 12 h; never use the last 5 minutes of it.
    marginMs: 5 * 60_000,
  });
  return {
    kind: 'aws',
    id: `aws|${how}|${region ?? ''}`,
    get: () => cache.get(),
    invalidate: (auth) => cache.invalidate(auth),
  };
}
