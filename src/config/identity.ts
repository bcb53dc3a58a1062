/**
 * The `identity:` section of the config: which Workload Identity providers are on and
 * their defaults. Every provider is on by default (wiring is driven by annotations alone);
 * `enabled: false` turns one off. Problems are listed by path, unknown keys included, so
 * a typo never silently changes behaviour.
 */
import {
  AWS_DEFAULT_AUDIENCE,
  AWS_DEFAULT_TOKEN_EXPIRATION,
  AWS_MAX_TOKEN_EXPIRATION,
  AWS_MIN_TOKEN_EXPIRATION,
  type AwsSettings,
} from '../core/identity/aws.js';
import {
  AZURE_DEFAULT_AUDIENCE,
  AZURE_DEFAULT_AUTHORITY_HOST,
  AZURE_DEFAULT_TOKEN_EXPIRATION,
  AZURE_MAX_TOKEN_EXPIRATION,
  AZURE_MIN_TOKEN_EXPIRATION,
  AZURE_LAYOUTS,
  type AzureLayout,
  type AzureSettings,
} from '../core/identity/azure.js';
import {
  GCP_DEFAULT_AUDIENCE,
  GCP_DEFAULT_TOKEN_EXPIRATION,
  GCP_MAX_TOKEN_EXPIRATION,
  GCP_MIN_TOKEN_EXPIRATION,
  GCP_VOLUME_MODE,
  type GcpSettings,
} from '../core/identity/gcp.js';
import type { IdentitySettings } from '../core/identity/wiring.js';
import type { Problem } from '../core/rules.js';
import { isRecord } from '../core/json.js';

export const IDENTITY_KEYS = ['aws', 'gcp', 'azure', 'onUnknownServiceAccount', 'serviceAccountWaitMs', 'onInvalidAnnotation'] as const;
export const AWS_KEYS = ['enabled', 'region', 'tokenExpiration', 'audience', 'fsGroup', 'stsRegionalEndpoints'] as const;
export const GCP_KEYS = ['enabled', 'tokenExpiration', 'audience', 'region', 'tokenVolumeMode'] as const;
export const AZURE_KEYS = ['enabled', 'authorityHost', 'tokenExpiration', 'audience', 'tenantId', 'layout'] as const;

type Raw = Record<string, unknown>;


/** Collects problems; each reader returns the default when the value is absent or bad. */
class Reader {
  readonly problems: Problem[] = [];
  constructor(private readonly base: string) {}

  at(key: string): string {
    return `${this.base}.${key}`;
  }
  /** The mapping at `key`, or undefined when absent; anything else is a problem. */
  section(obj: Raw, key: string, allowed: readonly string[]): Raw | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!isRecord(v)) {
      this.problems.push({ path: this.at(key), message: 'must be a mapping' });
      return undefined;
    }
    this.unknownKeys(v, this.at(key), allowed);
    return v;
  }
  unknownKeys(obj: Raw, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) this.problems.push({ path: `${path}.${k}`, message: `unknown key (allowed: ${allowed.join(', ')})` });
    }
  }
  bool(obj: Raw, key: string, path: string, dflt: boolean): boolean {
    const v = obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v === 'boolean') return v;
    this.problems.push({ path, message: `must be true or false (got ${JSON.stringify(v)})` });
    return dflt;
  }
  string(obj: Raw, key: string, path: string): string | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string' && v.trim() !== '' && v === v.trim()) return v;
    this.problems.push({ path, message: `must be a non-empty string without surrounding spaces (got ${JSON.stringify(v)})` });
    return undefined;
  }
  oneOf<T extends string>(obj: Raw, key: string, path: string, allowed: readonly T[], dflt: T): T {
    const v = obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
    this.problems.push({ path, message: `must be one of ${allowed.join(', ')} (got ${JSON.stringify(v)})` });
    return dflt;
  }
  integer(obj: Raw, key: string, path: string, min: number, max: number): number | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    this.problems.push({ path, message: `must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})` });
    return undefined;
  }
}

/**
 * Validate the `identity` section (`raw` is its value; undefined means every provider on
 * with upstream defaults). Returns the settings (bad fields replaced by their defaults)
 * and every problem by path; the caller rejects the config when there are problems.
 */
/** What to do when a pod's ServiceAccount is not in the cache and a direct lookup fails too. */
export interface IdentityLookup {
  /** admit: without wiring, with a warning and a metric; deny: the pod is denied (retry later). */
  readonly onUnknown: 'admit' | 'deny';
  /** Bound on the direct lookup after a cache miss (the ServiceAccount created a moment ago). */
  readonly waitMs: number;
  /**
   * An identity annotation the upstream webhook rejects (a token expiration out of range,
   * a half-configured GCP ServiceAccount): deny the pod as upstream does, or admit it with
   * a warning (the provider's relaxed answer: clamped, or unwired).
   */
  readonly onInvalid: 'deny' | 'warn';
}

export function validateIdentityConfig(raw: unknown, path = 'identity'): { settings: IdentitySettings; lookup: IdentityLookup; problems: Problem[] } {
  const r = new Reader(path);
  let root: Raw = {};
  if (raw !== undefined && raw !== null) {
    if (isRecord(raw)) {
      root = raw;
      r.unknownKeys(root, path, IDENTITY_KEYS);
    } else r.problems.push({ path, message: 'must be a mapping with aws, gcp and azure' });
  }

  const awsRaw = r.section(root, 'aws', AWS_KEYS) ?? {};
  const awsAt = (k: string): string => `${r.at('aws')}.${k}`;
  const aws: AwsSettings = {
    audience: r.string(awsRaw, 'audience', awsAt('audience')) ?? AWS_DEFAULT_AUDIENCE,
    tokenExpiration: r.integer(awsRaw, 'tokenExpiration', awsAt('tokenExpiration'), AWS_MIN_TOKEN_EXPIRATION, AWS_MAX_TOKEN_EXPIRATION) ?? AWS_DEFAULT_TOKEN_EXPIRATION,
    region: r.string(awsRaw, 'region', awsAt('region')),
    stsRegionalEndpoints: r.bool(awsRaw, 'stsRegionalEndpoints', awsAt('stsRegionalEndpoints'), false),
    // A group ID as the API takes it (int64); 0 is root's group and allowed.
    fsGroup: r.integer(awsRaw, 'fsGroup', awsAt('fsGroup'), 0, Number.MAX_SAFE_INTEGER),
  };

  const gcpRaw = r.section(root, 'gcp', GCP_KEYS) ?? {};
  const gcpAt = (k: string): string => `${r.at('gcp')}.${k}`;
  const gcp: GcpSettings = {
    audience: r.string(gcpRaw, 'audience', gcpAt('audience')) ?? GCP_DEFAULT_AUDIENCE,
    tokenExpiration: r.integer(gcpRaw, 'tokenExpiration', gcpAt('tokenExpiration'), GCP_MIN_TOKEN_EXPIRATION, GCP_MAX_TOKEN_EXPIRATION) ?? GCP_DEFAULT_TOKEN_EXPIRATION,
    region: r.string(gcpRaw, 'region', gcpAt('region')),
    tokenVolumeMode: fileMode(r, gcpRaw, gcpAt('tokenVolumeMode')),
  };

  const azureRaw = r.section(root, 'azure', AZURE_KEYS) ?? {};
  const azureAt = (k: string): string => `${r.at('azure')}.${k}`;
  const azure: AzureSettings = {
    audience: r.string(azureRaw, 'audience', azureAt('audience')) ?? AZURE_DEFAULT_AUDIENCE,
    tokenExpiration: r.integer(azureRaw, 'tokenExpiration', azureAt('tokenExpiration'), AZURE_MIN_TOKEN_EXPIRATION, AZURE_MAX_TOKEN_EXPIRATION) ?? AZURE_DEFAULT_TOKEN_EXPIRATION,
    authorityHost: authorityHost(r, azureRaw, azureAt('authorityHost')),
    tenantId: r.string(azureRaw, 'tenantId', azureAt('tenantId')),
    layout: r.oneOf<AzureLayout>(azureRaw, 'layout', azureAt('layout'), AZURE_LAYOUTS, 'v1.6'),
  };

  const settings: IdentitySettings = Object.freeze({
    aws: r.bool(awsRaw, 'enabled', awsAt('enabled'), true) ? Object.freeze(aws) : undefined,
    gcp: r.bool(gcpRaw, 'enabled', gcpAt('enabled'), true) ? Object.freeze(gcp) : undefined,
    azure: r.bool(azureRaw, 'enabled', azureAt('enabled'), true) ? Object.freeze(azure) : undefined,
  });
  const onUnknown = root.onUnknownServiceAccount ?? 'admit';
  if (onUnknown !== 'admit' && onUnknown !== 'deny') {
    r.problems.push({ path: r.at('onUnknownServiceAccount'), message: `must be one of admit, deny (got ${JSON.stringify(onUnknown)})` });
  }
  // The whole admission has the API server's timeout (10 s by default); a lookup must
  // stay a small part of it.
  const waitMs = r.integer(root, 'serviceAccountWaitMs', r.at('serviceAccountWaitMs'), 0, 5000) ?? 200;
  const onInvalid = r.oneOf(root, 'onInvalidAnnotation', r.at('onInvalidAnnotation'), ['deny', 'warn'] as const, 'deny');
  const lookup: IdentityLookup = Object.freeze({ onUnknown: onUnknown === 'deny' ? 'deny' : 'admit', waitMs, onInvalid });
  return { settings, lookup, problems: r.problems };
}

/** An https URL, written as the Azure SDKs read AZURE_AUTHORITY_HOST. */
function authorityHost(r: Reader, obj: Raw, path: string): string {
  const v = r.string(obj, 'authorityHost', path);
  if (v === undefined) return AZURE_DEFAULT_AUTHORITY_HOST;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    r.problems.push({ path, message: `must be an https URL (got ${JSON.stringify(v)})` });
    return AZURE_DEFAULT_AUTHORITY_HOST;
  }
  if (url.protocol !== 'https:') {
    r.problems.push({ path, message: `must be an https URL (got ${JSON.stringify(v)})` });
    return AZURE_DEFAULT_AUTHORITY_HOST;
  }
  return v;
}

/**
 * A file mode written as a quoted octal string ("0440"): a YAML number would be read as
 * decimal (0440 is 440, mode 0670) without a word, so numbers are refused.
 */
function fileMode(r: Reader, obj: Raw, path: string): number {
  const v = obj.tokenVolumeMode;
  if (v === undefined || v === null) return GCP_VOLUME_MODE;
  if (typeof v === 'string' && /^0?[0-7]{3}$/.test(v)) return parseInt(v, 8);
  r.problems.push({ path, message: `must be an octal mode as a quoted string, such as "0440" or "0400" (got ${JSON.stringify(v)})` });
  return GCP_VOLUME_MODE;
}
