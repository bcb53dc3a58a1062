/**
 * GCP Workload Identity Federation for clusters outside GKE, compatible with
 * pfnet-research/gcp-workload-identity-federation-webhook v0.7.0 (checked by
 * test/conformance/identity-webhooks.test.ts), always in its "direct" injection mode:
 * the external_account credential configuration travels in a pod annotation and reaches
 * the containers through a downwardAPI volume, so nothing must exist in the namespace
 * beforehand and no init container (with its own image) is added. Pure.
 *
 * On GKE, `iam.gke.io/gcp-service-account` needs no pod change, so it is not handled here.
 */
import { parseGoInt, quoted, splitNames, type EnvVar, type PlanResult, type ProviderWiring } from './common.js';
import type { JsonObject } from '../json.js';

// Annotation names: webhooks/annotations.go; domain: webhooks/constants.go AnnotationDomainDefault.
export const GCP_ANNOTATION_DOMAIN = 'cloud.google.com';
/** ServiceAccount: projects/{N}/locations/{L}/workloadIdentityPools/{P}/providers/{ID}. */
export const GCP_PROVIDER_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/workload-identity-provider`;
/** ServiceAccount: the Google service account to impersonate. */
export const GCP_SERVICE_ACCOUNT_EMAIL_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/service-account-email`;
/** ServiceAccount: the token audience. */
export const GCP_AUDIENCE_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/audience`;
/** ServiceAccount and pod (the pod wins): token lifetime in seconds. */
export const GCP_TOKEN_EXPIRATION_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/token-expiration`;
/** Pod: comma-separated container names to leave alone. */
export const GCP_SKIP_CONTAINERS_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/skip-containers`;
/** Pod: the credential configuration JSON, read by the downwardAPI volume. */
export const GCP_EXTERNAL_CREDENTIALS_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/external-credentials-json`;
/** ServiceAccount: 'direct' or 'gcloud' (upstream default gcloud; we always inject direct). */
export const GCP_INJECTION_MODE_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/injection-mode`;
/** ServiceAccount: 'service-account' (default) or 'direct-access' (no impersonation). */
export const GCP_TOKEN_EXCHANGE_MODE_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/token-exchange-mode`;
/** ServiceAccount: project for CLOUDSDK_CORE_PROJECT, over the one in the email. */
export const GCP_PROJECT_ID_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/project-id`;

// Defaults and injected names: webhooks/constants.go.
export const GCP_DEFAULT_AUDIENCE = 'sts.googleapis.com';
/** DefaultTokenExpirationDefault (24h). */
export const GCP_DEFAULT_TOKEN_EXPIRATION = 86400;
/** MinTokenExprationDefault (1h); smaller values are raised to it (webhooks/mutatepod.go). */
export const GCP_MIN_TOKEN_EXPIRATION = 3600;
/** No upstream ceiling; kube-apiserver rejects projected tokens over 2^32 seconds. */
export const GCP_MAX_TOKEN_EXPIRATION = 2 ** 32;
/** VolumeModeDefault 0440, the default of upstream's --token-default-mode (its unit tests set 0400). */
export const GCP_VOLUME_MODE = 0o440;
/** GCloudSetupInitContainerName: upstream's own init container, never wired. */
export const GCP_GCLOUD_SETUP_CONTAINER = 'gcloud-setup';
/** ServiceAccount: the gcloud-setup container's runAsUser; only checked, as upstream parses it. */
export const GCP_RUN_AS_USER_ANNOTATION = `${GCP_ANNOTATION_DOMAIN}/gcloud-run-as-user`;
export const GCP_TOKEN_VOLUME_NAME = 'gcp-iam-token';
export const GCP_TOKEN_MOUNT_PATH = '/var/run/secrets/sts.googleapis.com/serviceaccount';
export const GCP_TOKEN_PATH = 'token';
export const GCP_CREDENTIALS_VOLUME_NAME = 'external-credential-config';
/** DirectInjectedExternalMountPath (pinned in webhooks/mutatepod_parts_test.go). */
export const GCP_CREDENTIALS_MOUNT_PATH = '/var/run/secrets/workload-identity';
export const GCP_CREDENTIALS_FILE = 'federation.json';
export const GCP_GCLOUD_CONFIG_VOLUME_NAME = 'gcloud-config';
export const GCP_GCLOUD_CONFIG_MOUNT_PATH = '/var/run/secrets/gcloud/config';

// Env names: webhooks/mutatepod_parts.go (envVarsToAddOrReplace, envVarsToAddIfNotPresent).
export const GCP_ENV_APPLICATION_CREDENTIALS = 'GOOGLE_APPLICATION_CREDENTIALS';
export const GCP_ENV_CREDENTIAL_FILE_OVERRIDE = 'CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE';
export const GCP_ENV_CLOUDSDK_CONFIG = 'CLOUDSDK_CONFIG';
export const GCP_ENV_COMPUTE_REGION = 'CLOUDSDK_COMPUTE_REGION';
export const GCP_ENV_CORE_PROJECT = 'CLOUDSDK_CORE_PROJECT';

// webhooks/identityconfig.go and webhooks/mutatepod.go.
const PROVIDER_FORMAT = /^projects\/.+\/locations\/.+\/workloadIdentityPools\/.+\/providers\/.+$/;
const PROJECT_FROM_EMAIL = /@(.*).iam.gserviceaccount.com/;

/** Config defaults for GCP (validated by src/config/identity.ts). */
export interface GcpSettings {
  readonly audience: string;
  readonly tokenExpiration: number;
  /** Sets CLOUDSDK_COMPUTE_REGION when a container has none (upstream --gcp-default-region). */
  readonly region: string | undefined;
  /** defaultMode of the token and credential volumes (upstream --token-default-mode). */
  readonly tokenVolumeMode: number;
}

export interface GcpInput {
  readonly podAnnotations: Readonly<Record<string, string>>;
  readonly saAnnotations: Readonly<Record<string, string>>;
}

/** What GCP needs in the pod; same shape as the other providers' (see wiring.ts). */
export type GcpWiring = ProviderWiring & { readonly fsGroup: undefined };


/**
 * Decide the GCP wiring. Triggered by the provider annotation (with the email, unless
 * token-exchange-mode is direct-access). `problems` are what upstream denies the pod for,
 * checked in its order (webhooks/identityconfig.go NewGCPWorkloadIdentityConfig, then
 * mutatepod.go): an unparsable token-expiration or gcloud-run-as-user, an unknown
 * injection-mode (even on a ServiceAccount without the other annotations), one of provider
 * and email without the other, a malformed provider. The relaxed answer leaves a pod with
 * a configuration problem unwired, and one with a bad token-expiration wired with the next
 * source's value.
 *
 * `injection-mode: direct` gives upstream's direct mode exactly. Unset or `gcloud`
 * (upstream's gcloud-setup init container, which needs the gcloud image) is served the
 * same way, plus the gcloud CLI's config directory so gcloud works without that container.
 */
export function planGcp(input: GcpInput, settings: GcpSettings): PlanResult<GcpWiring> {
  const warnings: string[] = [];
  const problems: string[] = [];
  const sa = input.saAnnotations;
  const provider = sa[GCP_PROVIDER_ANNOTATION];
  let email = sa[GCP_SERVICE_ACCOUNT_EMAIL_ANNOTATION];
  const none = { wiring: undefined, warnings, problems };

  const saExpiration = sa[GCP_TOKEN_EXPIRATION_ANNOTATION];
  if (saExpiration !== undefined && parseGoInt(saExpiration) === undefined) {
    problems.push(`ServiceAccount ${GCP_TOKEN_EXPIRATION_ANNOTATION}: ${quoted(saExpiration)} is not an integer`);
  }
  const runAsUser = sa[GCP_RUN_AS_USER_ANNOTATION];
  if (runAsUser !== undefined && parseGoInt(runAsUser) === undefined) {
    problems.push(`ServiceAccount ${GCP_RUN_AS_USER_ANNOTATION}: ${quoted(runAsUser)} is not an integer`);
  }
  const injection = sa[GCP_INJECTION_MODE_ANNOTATION]?.toLowerCase();
  const badInjection = injection !== undefined && injection !== 'direct' && injection !== 'gcloud';
  if (badInjection) problems.push(`ServiceAccount ${GCP_INJECTION_MODE_ANNOTATION} must be direct or gcloud`);
  if (provider === undefined && email === undefined) return none;

  const exchange = (sa[GCP_TOKEN_EXCHANGE_MODE_ANNOTATION] ?? 'service-account').toLowerCase();
  if (exchange !== 'service-account' && exchange !== 'direct-access') {
    problems.push(`ServiceAccount ${GCP_TOKEN_EXCHANGE_MODE_ANNOTATION} must be service-account or direct-access`);
    return none;
  }
  if (exchange === 'direct-access') email = undefined; // no impersonation
  if (provider === undefined || (exchange === 'service-account' && email === undefined)) {
    problems.push('ServiceAccount needs both workload-identity-provider and service-account-email');
    return none;
  }
  if (!PROVIDER_FORMAT.test(provider)) {
    problems.push(`ServiceAccount ${GCP_PROVIDER_ANNOTATION} is not projects/…/providers/…`);
    return none;
  }
  if (badInjection) return none;
  const direct = injection === 'direct';
  if (injection === 'gcloud') warnings.push('mirrorgate: GCP injection-mode gcloud is not supported; credentials injected directly');

  const audience = sa[GCP_AUDIENCE_ANNOTATION] ?? settings.audience;
  const expirationSeconds = tokenExpiration(input, settings, warnings, problems);
  const project = sa[GCP_PROJECT_ID_ANNOTATION] ?? (email === undefined ? undefined : PROJECT_FROM_EMAIL.exec(email)?.[1]);
  const credentialsFile = `${GCP_CREDENTIALS_MOUNT_PATH}/${GCP_CREDENTIALS_FILE}`;

  // Recorded on the pod as upstream does; the credential JSON is what the downwardAPI
  // volume serves, and token-expiration keeps a reinvocation on the same value.
  const annotations: Record<string, string> = { [GCP_PROVIDER_ANNOTATION]: provider };
  if (email !== undefined) annotations[GCP_SERVICE_ACCOUNT_EMAIL_ANNOTATION] = email;
  annotations[GCP_AUDIENCE_ANNOTATION] = audience;
  annotations[GCP_TOKEN_EXPIRATION_ANNOTATION] = String(expirationSeconds);
  annotations[GCP_EXTERNAL_CREDENTIALS_ANNOTATION] = externalAccountJson(provider, email);

  // mutatepod_parts.go envVarsToAddOrReplace: replaced whatever the container had, so the
  // credential file is always ours; envVarsToAddIfNotPresent: the container's own wins.
  const envReplace: EnvVar[] = [{ name: GCP_ENV_APPLICATION_CREDENTIALS, value: credentialsFile }];
  if (!direct) envReplace.push({ name: GCP_ENV_CLOUDSDK_CONFIG, value: GCP_GCLOUD_CONFIG_MOUNT_PATH });
  const envGroups: EnvVar[][] = [];
  if (settings.region !== undefined) envGroups.push([{ name: GCP_ENV_COMPUTE_REGION, value: settings.region }]);
  if (project !== undefined && project !== '') envGroups.push([{ name: GCP_ENV_CORE_PROJECT, value: project }]);
  if (!direct) envGroups.push([{ name: GCP_ENV_CREDENTIAL_FILE_OVERRIDE, value: credentialsFile }]);

  // mutatepod_parts.go: k8sSATokenVolume, externalCredConfigVolume, gcloudConfigVolume.
  const mode = settings.tokenVolumeMode;
  const volumes: JsonObject[] = [
    {
      name: GCP_TOKEN_VOLUME_NAME,
      projected: {
        sources: [{ serviceAccountToken: { audience, expirationSeconds, path: GCP_TOKEN_PATH } }],
        defaultMode: mode,
      },
    },
    {
      name: GCP_CREDENTIALS_VOLUME_NAME,
      downwardAPI: {
        items: [{ path: GCP_CREDENTIALS_FILE, fieldRef: { apiVersion: 'v1', fieldPath: `metadata.annotations['${GCP_EXTERNAL_CREDENTIALS_ANNOTATION}']` } }],
        defaultMode: mode,
      },
    },
  ];
  const mounts = [
    { name: GCP_TOKEN_VOLUME_NAME, readOnly: true, mountPath: GCP_TOKEN_MOUNT_PATH },
    { name: GCP_CREDENTIALS_VOLUME_NAME, readOnly: true, mountPath: GCP_CREDENTIALS_MOUNT_PATH },
  ];
  if (!direct) {
    volumes.push({ name: GCP_GCLOUD_CONFIG_VOLUME_NAME, emptyDir: {} });
    // gcloud writes its state here, so this one is writable.
    mounts.push({ name: GCP_GCLOUD_CONFIG_VOLUME_NAME, mountPath: GCP_GCLOUD_CONFIG_MOUNT_PATH } as (typeof mounts)[number]);
  }
  const skip = new Set(splitNames(input.podAnnotations[GCP_SKIP_CONTAINERS_ANNOTATION], ','));
  skip.add(GCP_GCLOUD_SETUP_CONTAINER);
  return {
    wiring: {
      volumes,
      replaceVolumes: true,
      envReplace,
      envGroups,
      mounts,
      replaceMounts: true,
      skipContainers: skip,
      annotations,
      fsGroup: undefined,
    },
    warnings,
    problems,
  };
}

/**
 * The external_account credential configuration, byte for byte as upstream renders it
 * (webhooks/external_account_config.go NewExternalAccountCredentials + Render(false), Go's
 * encoding/json: struct field order, no spaces, <, > and & escaped).
 */
export function externalAccountJson(provider: string, email: string | undefined): string {
  const creds: Record<string, unknown> = {
    type: 'external_account',
    audience: `//iam.googleapis.com/${provider}`,
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    token_url: 'https://sts.googleapis.com/v1/token',
  };
  if (email !== undefined && email !== '') {
    creds.service_account_impersonation_url = `https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/${email}:generateAccessToken`;
  }
  creds.credential_source = { file: `${GCP_TOKEN_MOUNT_PATH}/${GCP_TOKEN_PATH}`, format: { type: 'text' } };
  return JSON.stringify(creds)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * Pod annotation, else ServiceAccount annotation, else config; raised to the 1h minimum as
 * upstream does. A non-integer is a problem (upstream denies); the relaxed answer takes the
 * next source.
 */
function tokenExpiration(input: GcpInput, settings: GcpSettings, warnings: string[], problems: string[]): number {
  let value = settings.tokenExpiration;
  for (const [from, annotations] of [['pod', input.podAnnotations], ['ServiceAccount', input.saAnnotations]] as const) {
    const raw = annotations[GCP_TOKEN_EXPIRATION_ANNOTATION];
    if (raw === undefined) continue;
    const parsed = parseGoInt(raw);
    if (parsed === undefined) {
      // The ServiceAccount's was reported with the configuration.
      if (from === 'pod') problems.push(`pod ${GCP_TOKEN_EXPIRATION_ANNOTATION}: ${quoted(raw)} is not an integer`);
      continue;
    }
    value = parsed;
    break;
  }
  if (value < GCP_MIN_TOKEN_EXPIRATION) {
    warnings.push(`mirrorgate: ${GCP_TOKEN_EXPIRATION_ANNOTATION} ${value} is below ${GCP_MIN_TOKEN_EXPIRATION}; using ${GCP_MIN_TOKEN_EXPIRATION}`);
    return GCP_MIN_TOKEN_EXPIRATION;
  }
  if (value > GCP_MAX_TOKEN_EXPIRATION) {
    warnings.push(`mirrorgate: ${GCP_TOKEN_EXPIRATION_ANNOTATION} ${value} is above ${GCP_MAX_TOKEN_EXPIRATION}; using ${GCP_MAX_TOKEN_EXPIRATION}`);
    return GCP_MAX_TOKEN_EXPIRATION;
  }
  return value;
}
