/**
 * AWS IAM Roles for Service Accounts (IRSA), compatible with
 * aws/amazon-eks-pod-identity-webhook: the same annotations, env names, volume, mount path
 * and token-expiration rules, so a workload moves between an EKS cluster and this one
 * unchanged. Pure: decides what the pod needs; `wiring.ts` turns it into patch operations.
 */
import { parseGoInt, splitNames, type EnvVar, type ProviderWiring } from './common.js';
import { isObject, type JsonObject } from '../json.js';

// Annotation names: pkg/annotations/constants.go; the domain is the webhook's default
// --annotation-prefix (pkg/handler/handler.go, NewModifier).
export const AWS_ANNOTATION_DOMAIN = 'eks.amazonaws.com';
/** ServiceAccount: the role to assume; without it the pod is not wired. */
export const AWS_ROLE_ARN_ANNOTATION = `${AWS_ANNOTATION_DOMAIN}/role-arn`;
/** ServiceAccount: the token audience. */
export const AWS_AUDIENCE_ANNOTATION = `${AWS_ANNOTATION_DOMAIN}/audience`;
/** ServiceAccount: "true"/"false" (Go strconv.ParseBool) to add AWS_STS_REGIONAL_ENDPOINTS=regional. */
export const AWS_STS_REGIONAL_ENDPOINTS_ANNOTATION = `${AWS_ANNOTATION_DOMAIN}/sts-regional-endpoints`;
/** ServiceAccount and pod (the pod wins): token lifetime in seconds. */
export const AWS_TOKEN_EXPIRATION_ANNOTATION = `${AWS_ANNOTATION_DOMAIN}/token-expiration`;
/** Pod: comma-separated container names to leave alone (containers and initContainers). */
export const AWS_SKIP_CONTAINERS_ANNOTATION = `${AWS_ANNOTATION_DOMAIN}/skip-containers`;

// Defaults: README.md (--token-audience), pkg/handler/handler.go (NewModifier: volName,
// tokenName, MountPath), pkg/constants.go (expirations).
export const AWS_DEFAULT_AUDIENCE = 'sts.amazonaws.com';
export const AWS_VOLUME_NAME = 'aws-iam-token';
export const AWS_MOUNT_PATH = '/var/run/secrets/eks.amazonaws.com/serviceaccount';
export const AWS_TOKEN_PATH = 'token';
/** pkg/constants.go DefaultTokenExpiration (upstream jitters it only for EKS Pod Identity, which is not wired here). */
export const AWS_DEFAULT_TOKEN_EXPIRATION = 86400;
/** pkg/constants.go MinTokenExpiration; smaller values are raised to it (pkg/validation.go ValidateMinTokenExpiration). */
export const AWS_MIN_TOKEN_EXPIRATION = 600;
/**
 * Upstream sets no ceiling (pkg/constants.go MaxTokenExpiration only bounds its jitter);
 * kube-apiserver rejects a projected token over 2^32 seconds
 * (pkg/apis/core/validation/validation.go), so we stop there instead of failing the pod.
 */
export const AWS_MAX_TOKEN_EXPIRATION = 2 ** 32;

// Env names: pkg/handler/handler.go (addEnvToContainer).
export const AWS_ENV_ROLE_ARN = 'AWS_ROLE_ARN';
export const AWS_ENV_TOKEN_FILE = 'AWS_WEB_IDENTITY_TOKEN_FILE';
export const AWS_ENV_STS_REGIONAL_ENDPOINTS = 'AWS_STS_REGIONAL_ENDPOINTS';
export const AWS_ENV_REGION = 'AWS_REGION';
export const AWS_ENV_DEFAULT_REGION = 'AWS_DEFAULT_REGION';

/** Config defaults for AWS (validated by src/config/identity.ts; every field resolved). */
export interface AwsSettings {
  readonly audience: string;
  readonly tokenExpiration: number;
  /** Sets AWS_REGION and AWS_DEFAULT_REGION (upstream --aws-default-region). */
  readonly region: string | undefined;
  /** Default for the sts-regional-endpoints annotation (upstream --sts-regional-endpoint). */
  readonly stsRegionalEndpoints: boolean;
  /** Pod fsGroup to set when the pod has none, so a non-root process can read the token. */
  readonly fsGroup: number | undefined;
}

export interface AwsInput {
  readonly podAnnotations: Readonly<Record<string, string>>;
  readonly saAnnotations: Readonly<Record<string, string>>;
  readonly nodeSelector: Readonly<Record<string, string>>;
  /** spec.volumes as received (entries may be anything). */
  readonly volumes: readonly unknown[];
}

/** What AWS needs in the pod; same shape as the other providers' (see wiring.ts). */
export type AwsWiring = ProviderWiring;


/**
 * Decide the IRSA wiring for a pod. No role ARN on the ServiceAccount: no wiring, no
 * warning (the common case). Precedence as upstream: token-expiration pod > SA > config;
 * audience and sts-regional-endpoints SA > config (upstream reads neither from the pod).
 */
export function planAws(input: AwsInput, settings: AwsSettings): { wiring: AwsWiring | undefined; warnings: string[] } {
  const warnings: string[] = [];
  const role = input.saAnnotations[AWS_ROLE_ARN_ANNOTATION];
  if (role === undefined || role === '') return { wiring: undefined, warnings };

  const audience = nonEmpty(input.saAnnotations[AWS_AUDIENCE_ANNOTATION]) ?? settings.audience;

  // Go's strconv.ParseBool; an unparsable value is ignored (pkg/cache/cache.go).
  let regionalSts = settings.stsRegionalEndpoints;
  const stsRaw = input.saAnnotations[AWS_STS_REGIONAL_ENDPOINTS_ANNOTATION];
  if (stsRaw !== undefined) {
    const parsed = parseGoBool(stsRaw);
    if (parsed === undefined) warnings.push(`mirrorgate: ${AWS_STS_REGIONAL_ENDPOINTS_ANNOTATION} is not true or false; ignored`);
    else regionalSts = parsed;
  }

  // A token volume of this name with another audience belongs to someone else: we leave
  // such a pod alone. Upstream (no test of its own covers it) would point the env and the
  // mount at that other token; the README lists this as a deliberate difference.
  for (const v of input.volumes) {
    const foreign = tokenAudienceOf(v, AWS_VOLUME_NAME);
    if (foreign !== undefined && foreign !== audience) {
      warnings.push(`mirrorgate: AWS wiring skipped: volume ${AWS_VOLUME_NAME} already holds a token for another audience`);
      return { wiring: undefined, warnings };
    }
  }

  const expirationSeconds = tokenExpiration(input, settings, warnings);

  // Windows containers read a Windows path (pkg/handler/handler.go, getPodSpecPatch).
  const windows = input.nodeSelector['kubernetes.io/os'] === 'windows' || input.nodeSelector['beta.kubernetes.io/os'] === 'windows';
  const unixTokenFile = `${AWS_MOUNT_PATH}/${AWS_TOKEN_PATH}`;
  const tokenFile = windows ? `C:${unixTokenFile.replace(/\//g, '\\')}` : unixTokenFile;

  // Groups and their order as upstream appends them: a container that already sets one
  // region variable gets neither, one that sets the role or the token file gets neither.
  const envGroups: EnvVar[][] = [];
  if (regionalSts) envGroups.push([{ name: AWS_ENV_STS_REGIONAL_ENDPOINTS, value: 'regional' }]);
  if (settings.region !== undefined) {
    envGroups.push([
      { name: AWS_ENV_DEFAULT_REGION, value: settings.region },
      { name: AWS_ENV_REGION, value: settings.region },
    ]);
  }
  envGroups.push([
    { name: AWS_ENV_ROLE_ARN, value: role },
    { name: AWS_ENV_TOKEN_FILE, value: tokenFile },
  ]);

  const volume: JsonObject = {
    name: AWS_VOLUME_NAME,
    projected: { sources: [{ serviceAccountToken: { audience, expirationSeconds, path: AWS_TOKEN_PATH } }] },
  };
  return {
    wiring: {
      volumes: [volume],
      envGroups,
      mounts: [{ name: AWS_VOLUME_NAME, readOnly: true, mountPath: AWS_MOUNT_PATH }],
      skipContainers: splitNames(input.podAnnotations[AWS_SKIP_CONTAINERS_ANNOTATION], ',', true),
      // Upstream's addEnvToContainer leaves a container alone (no env, no token mount) that
      // already sets the role or token file, a region and AWS_STS_REGIONAL_ENDPOINTS
      // (pkg/handler/testdata/rawPodHasAll.pod.yaml); the volume is still added.
      completeWhen: [[AWS_ENV_ROLE_ARN, AWS_ENV_TOKEN_FILE], [AWS_ENV_REGION, AWS_ENV_DEFAULT_REGION], [AWS_ENV_STS_REGIONAL_ENDPOINTS]],
      annotations: {},
      fsGroup: settings.fsGroup,
    },
    warnings,
  };
}

/** Pod annotation, else ServiceAccount annotation, else config; invalid values fall back as upstream does. */
function tokenExpiration(input: AwsInput, settings: AwsSettings, warnings: string[]): number {
  let chosen: { value: number; from: string } | undefined;
  for (const [from, annotations] of [['pod', input.podAnnotations], ['ServiceAccount', input.saAnnotations]] as const) {
    const raw = annotations[AWS_TOKEN_EXPIRATION_ANNOTATION];
    if (raw === undefined) continue;
    const value = parseGoInt(raw);
    if (value === undefined) {
      warnings.push(`mirrorgate: ${AWS_TOKEN_EXPIRATION_ANNOTATION} on the ${from} is not an integer; ignored`);
      continue;
    }
    chosen = { value, from };
    break;
  }
  if (chosen === undefined) return settings.tokenExpiration;
  if (chosen.value < AWS_MIN_TOKEN_EXPIRATION) {
    warnings.push(`mirrorgate: ${AWS_TOKEN_EXPIRATION_ANNOTATION} ${chosen.value} is below ${AWS_MIN_TOKEN_EXPIRATION}; using ${AWS_MIN_TOKEN_EXPIRATION}`);
    return AWS_MIN_TOKEN_EXPIRATION;
  }
  if (chosen.value > AWS_MAX_TOKEN_EXPIRATION) {
    warnings.push(`mirrorgate: ${AWS_TOKEN_EXPIRATION_ANNOTATION} ${chosen.value} is above ${AWS_MAX_TOKEN_EXPIRATION}; using ${AWS_MAX_TOKEN_EXPIRATION}`);
    return AWS_MAX_TOKEN_EXPIRATION;
  }
  return chosen.value;
}

/** The audience of volume `name` when it is a projected serviceAccountToken volume. */
function tokenAudienceOf(volume: unknown, name: string): string | undefined {
  if (!isObject(volume) || volume.name !== name || !isObject(volume.projected)) return undefined;
  const sources = volume.projected.sources;
  if (!Array.isArray(sources)) return undefined;
  for (const s of sources as unknown[]) {
    if (isObject(s) && isObject(s.serviceAccountToken)) {
      const aud = s.serviceAccountToken.audience;
      return typeof aud === 'string' ? aud : '';
    }
  }
  return undefined;
}



/** Go's strconv.ParseBool. */
function parseGoBool(s: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return undefined;
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}
