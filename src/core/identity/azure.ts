/**
 * Azure workload identity, compatible with Azure/azure-workload-identity v1.6.0 (v1.5.1
 * with `layout: v1.5`; checked by test/conformance/identity-webhooks.test.ts): a pod
 * labelled `azure.workload.identity/use: "true"` gets the projected token and the env the
 * Azure SDKs read. Pure.
 */
import { parseGoInt, quoted, splitNames, type PlanResult, type ProviderWiring } from './common.js';
import { isObject, type JsonObject } from '../json.js';
import { sha256Hex } from '../sha256.js';

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
 * Token layout of the current release, v1.6.0 (consts.go ProjectedVolumeNamePrefix,
 * TokenFilePath, VolumeMountPath): the volume is named per pod (the prefix and the first
 * 30 hex digits of the SHA-256 of the pod's name) and mounted at /var/run/secrets/azure/wi.
 */
export const AZURE_VOLUME_PREFIX = 'azure-workload-identity-reserved-';
export const AZURE_TOKEN_PATH = 'token/azure-identity-token';
export const AZURE_MOUNT_PATH = '/var/run/secrets/azure/wi';
/** v1.5.1's layout (TokenFilePathName, TokenFileMountPath), kept by `layout: v1.5`. */
export const AZURE_V15_VOLUME_NAME = 'azure-identity-token';
export const AZURE_V15_TOKEN_PATH = 'azure-identity-token';
export const AZURE_V15_MOUNT_PATH = '/var/run/secrets/azure/tokens';
/** Pod annotations of upstream's proxy sidecar, which mirrorgate does not inject; their values are still checked as upstream does. */
export const AZURE_INJECT_PROXY_ANNOTATION = 'azure.workload.identity/inject-proxy-sidecar';
export const AZURE_PROXY_PORT_ANNOTATION = 'azure.workload.identity/proxy-sidecar-port';
export const AZURE_LAYOUTS = ['v1.6', 'v1.5'] as const;
export type AzureLayout = (typeof AZURE_LAYOUTS)[number];

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
  /** Which release's token layout: v1.6 (default) or v1.5. */
  readonly layout: AzureLayout;
}

export interface AzureInput {
  readonly podLabels: Readonly<Record<string, string>>;
  readonly podAnnotations: Readonly<Record<string, string>>;
  readonly saAnnotations: Readonly<Record<string, string>>;
  /** metadata.name, else generateName; upstream names the volume after it. */
  readonly podName: string;
  readonly podGenerateName: string;
  readonly hostNetwork: boolean;
  /** The pod's spec.volumes as received (layout v1.5 looks for its token there). */
  readonly volumes: readonly unknown[];
}

/** What Azure needs in the pod; same shape as the other providers' (see wiring.ts). */
export type AzureWiring = ProviderWiring & { readonly fsGroup: undefined };


/**
 * The per-pod volume name of v1.6.0 (webhook.go buildVolumeName): the pod's name, or its
 * generateName followed by " (prefix)" when it has none yet.
 */
export function azureVolumeName(podName: string, generateName: string): string {
  const name = podName !== '' ? podName : `${generateName} (prefix)`;
  const hash = sha256Hex(name);
  return AZURE_VOLUME_PREFIX + hash.slice(0, 63 - AZURE_VOLUME_PREFIX.length);
}

/**
 * Decide the Azure wiring. Only a pod with the label is wired (the ServiceAccount's
 * annotations alone do nothing, as upstream's objectSelector). Each variable is added on its
 * own when the container lacks it and its value is not empty (webhook.go
 * addEnvironmentVariables). `problems` are what upstream denies the pod for (a token
 * expiration that is not an integer in 3600..86400; the proxy sidecar asked for with
 * hostNetwork or an unparsable port); the wiring beside them is the relaxed answer.
 */
export function planAzure(input: AzureInput, settings: AzureSettings): PlanResult<AzureWiring> {
  const warnings: string[] = [];
  const problems: string[] = [];
  if (input.podLabels[AZURE_USE_LABEL] !== 'true') return { wiring: undefined, warnings, problems };

  if (input.podAnnotations[AZURE_INJECT_PROXY_ANNOTATION] !== undefined) {
    // Upstream checks these before anything else (Handle, getProxyPort); mirrorgate
    // injects no proxy, but a pod upstream refuses is refused here too.
    if (input.hostNetwork) problems.push(`pod has hostNetwork and ${AZURE_INJECT_PROXY_ANNOTATION}: no proxy sidecar possible`);
    const port = input.podAnnotations[AZURE_PROXY_PORT_ANNOTATION];
    if (port !== undefined && parseGoInt(port, 32) === undefined) problems.push(`pod ${AZURE_PROXY_PORT_ANNOTATION}: ${quoted(port)} is not an integer`);
    warnings.push('mirrorgate: Azure proxy sidecar not injected: inject-proxy-sidecar is not supported');
  }

  const clientId = input.saAnnotations[AZURE_CLIENT_ID_ANNOTATION] ?? '';
  // Upstream takes the annotation whenever present, even empty (getTenantID).
  const tenantId = input.saAnnotations[AZURE_TENANT_ID_ANNOTATION] ?? settings.tenantId ?? '';
  const expirationSeconds = tokenExpiration(input, settings, problems);

  const v15 = settings.layout === 'v1.5';
  const volumeName = v15 ? AZURE_V15_VOLUME_NAME : azureVolumeName(input.podName, input.podGenerateName);
  const tokenPath = v15 ? AZURE_V15_TOKEN_PATH : AZURE_TOKEN_PATH;
  const mountPath = v15 ? AZURE_V15_MOUNT_PATH : AZURE_MOUNT_PATH;

  const envGroups = [
    { name: AZURE_ENV_CLIENT_ID, value: clientId },
    { name: AZURE_ENV_TENANT_ID, value: tenantId },
    { name: AZURE_ENV_TOKEN_FILE, value: `${mountPath}/${tokenPath}` },
    { name: AZURE_ENV_AUTHORITY_HOST, value: settings.authorityHost },
  ]
    .filter((e) => e.value !== '')
    .map((e) => [e]);

  const volume: JsonObject = {
    name: volumeName,
    projected: { sources: [{ serviceAccountToken: { path: tokenPath, expirationSeconds, audience: settings.audience } }] },
  };
  // v1.5.1 (addProjectedServiceAccountTokenVolume) adds no volume when any projected volume
  // already serves a token at its path; v1.6.0 replaces the volume of its name.
  const volumes = v15 && input.volumes.some(servesV15Token) ? [] : [volume];
  return {
    wiring: {
      volumes,
      replaceVolumes: !v15,
      envGroups,
      mounts: [{ name: volumeName, mountPath, readOnly: true }],
      replaceMounts: !v15,
      skipContainers: splitNames(input.podAnnotations[AZURE_SKIP_CONTAINERS_ANNOTATION], ';'),
      annotations: {},
      fsGroup: undefined,
    },
    warnings,
    problems,
  };
}

/** A projected volume with a serviceAccountToken source at v1.5's path, whatever its name. */
function servesV15Token(volume: unknown): boolean {
  if (!isObject(volume) || !isObject(volume.projected) || !Array.isArray(volume.projected.sources)) return false;
  return (volume.projected.sources as unknown[]).some((s) => isObject(s) && isObject(s.serviceAccountToken) && s.serviceAccountToken.path === AZURE_V15_TOKEN_PATH);
}

/**
 * Pod annotation, else ServiceAccount annotation (empty counts as unset), else config
 * (getServiceAccountTokenExpiration). Upstream rejects a value that is not an integer in
 * 3600..86400; the relaxed answer takes the nearest bound, or the next source for a
 * non-integer.
 */
function tokenExpiration(input: AzureInput, settings: AzureSettings, problems: string[]): number {
  let value = settings.tokenExpiration;
  let source = 'identity.azure.tokenExpiration:';
  for (const [from, annotations] of [['pod', input.podAnnotations], ['ServiceAccount', input.saAnnotations]] as const) {
    const raw = annotations[AZURE_TOKEN_EXPIRATION_ANNOTATION];
    if (raw === undefined || raw === '') continue;
    const parsed = parseGoInt(raw);
    if (parsed === undefined) {
      problems.push(`${from} ${AZURE_TOKEN_EXPIRATION_ANNOTATION}: ${quoted(raw)} is not an integer`);
      continue;
    }
    value = parsed;
    source = `${from} ${AZURE_TOKEN_EXPIRATION_ANNOTATION}:`;
    break;
  }
  const bounded = Math.min(AZURE_MAX_TOKEN_EXPIRATION, Math.max(AZURE_MIN_TOKEN_EXPIRATION, value));
  if (bounded !== value) {
    problems.push(`${source} ${value} is outside ${AZURE_MIN_TOKEN_EXPIRATION}..${AZURE_MAX_TOKEN_EXPIRATION}`);
  }
  return bounded;
}
