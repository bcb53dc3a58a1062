/**
 * Azure workload identity, compatible with Azure/azure-workload-identity: a pod labelled
 * `azure.workload.identity/use: "true"` gets the projected token and the env the Azure
 * SDKs read. Pure.
 */
import { parseGoInt, splitNames, type ProviderWiring } from './common.js';

// Label and annotation names: pkg/webhook/consts.go.
/** Pod label; upstream selects pods with it in its webhook's objectSelector. */
export const AZURE_USE_LABEL = 'azure.workload.identity/use';
/** ServiceAccount: the client ID of the identity. */
export const AZURE_CLIENT_ID_ANNOTATION = 'azure.workload.identity/client-id';
/** ServiceAccount: the tenant ID (else the configured tenant). */
export const AZURE_TENANT_ID_ANNOTATION = 'azure.workload.identity/tenant-id';
/** ServiceAccount and pod (the pod wins): token lifetime in seconds, 3600..86400. */
export const AZURE_TOKEN_EXPIRATION_ANNOTATION = 'azure.workload.identity/service-account-token-expiration';
/** Pod: semicolon-separated container names to leave alone. */
export const AZURE_SKIP_CONTAINERS_ANNOTATION = 'azure.workload.identity/skip-containers';

// pkg/webhook/consts.go.
export const AZURE_DEFAULT_AUDIENCE = 'api://AzureADTokenExchange';
export const AZURE_MIN_TOKEN_EXPIRATION = 3600;
export const AZURE_MAX_TOKEN_EXPIRATION = 86400;
export const AZURE_DEFAULT_TOKEN_EXPIRATION = 3600;
/** go-autorest azure.PublicCloud.ActiveDirectoryEndpoint, upstream's default (pkg/webhook/webhook.go getAzureAuthorityHost). */
export const AZURE_DEFAULT_AUTHORITY_HOST = 'https://login.microsoftonline.com/';
/**
 * Released versions (v1.x, TokenFilePathName / TokenFileMountPath) name the volume and the
 * token file `azure-identity-token` under /var/run/secrets/azure/tokens. Upstream's main
 * branch is moving to per-pod names; workloads read the path from AZURE_FEDERATED_TOKEN_FILE,
 * so either is compatible.
 */
export const AZURE_VOLUME_NAME = 'azure-identity-token';
export const AZURE_TOKEN_PATH = 'azure-identity-token';
export const AZURE_MOUNT_PATH = '/var/run/secrets/azure/tokens';

export const AZURE_ENV_CLIENT_ID = 'AZURE_CLIENT_ID';
export const AZURE_ENV_TENANT_ID = 'AZURE_TENANT_ID';
export const AZURE_ENV_TOKEN_FILE = 'AZURE_FEDERATED_TOKEN_FILE';
export const AZURE_ENV_AUTHORITY_HOST = 'AZURE_AUTHORITY_HOST';

/** Config defaults for Azure (validated by src/config/identity.ts). */
export interface AzureSettings {
  readonly audience: string;
  readonly tokenExpiration: number;
  readonly authorityHost: string;
  /** The cluster's tenant, used when the ServiceAccount names none (upstream AZURE_TENANT_ID). */
  readonly tenantId: string | undefined;
}

export interface AzureInput {
  readonly podLabels: Readonly<Record<string, string>>;
  readonly podAnnotations: Readonly<Record<string, string>>;
  readonly saAnnotations: Readonly<Record<string, string>>;
}

/** What Azure needs in the pod; same shape as the other providers' (see wiring.ts). */
export type AzureWiring = ProviderWiring & { readonly fsGroup: undefined };


/**
 * Decide the Azure wiring. Only a pod with the label is wired (the ServiceAccount's
 * annotations alone do nothing, as upstream). Each variable is added on its own when the
 * container lacks it and its value is not empty (pkg/webhook/webhook.go addEnvironmentVariables).
 */
export function planAzure(input: AzureInput, settings: AzureSettings): { wiring: AzureWiring | undefined; warnings: string[] } {
  const warnings: string[] = [];
  if (input.podLabels[AZURE_USE_LABEL] !== 'true') return { wiring: undefined, warnings };

  const clientId = input.saAnnotations[AZURE_CLIENT_ID_ANNOTATION] ?? '';
  // Upstream takes the annotation whenever present, even empty (getTenantID).
  const tenantId = input.saAnnotations[AZURE_TENANT_ID_ANNOTATION] ?? settings.tenantId ?? '';
  const expirationSeconds = tokenExpiration(input, settings, warnings);

  const envGroups = [
    { name: AZURE_ENV_CLIENT_ID, value: clientId },
    { name: AZURE_ENV_TENANT_ID, value: tenantId },
    { name: AZURE_ENV_TOKEN_FILE, value: `${AZURE_MOUNT_PATH}/${AZURE_TOKEN_PATH}` },
    { name: AZURE_ENV_AUTHORITY_HOST, value: settings.authorityHost },
  ]
    .filter((e) => e.value !== '')
    .map((e) => [e]);

  return {
    wiring: {
      volumes: [
        {
          name: AZURE_VOLUME_NAME,
          projected: {
            sources: [{ serviceAccountToken: { path: AZURE_TOKEN_PATH, expirationSeconds, audience: settings.audience } }],
          },
        },
      ],
      envGroups,
      mounts: [{ name: AZURE_VOLUME_NAME, mountPath: AZURE_MOUNT_PATH, readOnly: true }],
      skipContainers: splitNames(input.podAnnotations[AZURE_SKIP_CONTAINERS_ANNOTATION], ';'),
      annotations: {},
      fsGroup: undefined,
    },
    warnings,
  };
}

/**
 * Pod annotation, else ServiceAccount annotation (empty counts as unset), else config.
 * Upstream rejects the pod when the value is not an integer in 3600..86400; we admit it
 * with the nearest bound (or the next source for a non-integer) and a warning.
 */
function tokenExpiration(input: AzureInput, settings: AzureSettings, warnings: string[]): number {
  let value = settings.tokenExpiration;
  for (const [from, annotations] of [['pod', input.podAnnotations], ['ServiceAccount', input.saAnnotations]] as const) {
    const raw = annotations[AZURE_TOKEN_EXPIRATION_ANNOTATION];
    if (raw === undefined || raw === '') continue;
    const parsed = parseGoInt(raw);
    if (parsed === undefined) {
      warnings.push(`mirrorgate: Azure token expiration on the ${from} is not an integer; ignored`);
      continue;
    }
    value = parsed;
    break;
  }
  const bounded = Math.min(AZURE_MAX_TOKEN_EXPIRATION, Math.max(AZURE_MIN_TOKEN_EXPIRATION, value));
  if (bounded !== value) {
    warnings.push(`mirrorgate: Azure token expiration ${value} is outside ${AZURE_MIN_TOKEN_EXPIRATION}..${AZURE_MAX_TOKEN_EXPIRATION}; using ${bounded}`);
  }
  return bounded;
}


