/**
 * The certificate rotation policy: how early the serving certificate and the CA are
 * renewed and how long both CAs overlap. One place for the figures that `serve
 * --manage-certs` and `mirrorgate certs --reconcile` both use, and the planner that
 * decides the next rotation step from facts about the Secret and the caBundle (the
 * adapter in kube/cert-rotation.ts reads the certificates and applies the steps). Pure.
 */
import { sha256Hex } from './sha256.js';

/** The names a serving certificate is valid for. */
export interface ServingNames {
  dnsNames: string[];
  ipAddresses: string[];
}

export interface RotationPolicy {
  readonly now: Date;
  readonly names: ServingNames;
  readonly renewBeforeDays: number;
  readonly caRenewBeforeDays: number;
  /** How long both CAs are trusted before the serving certificate moves to the new one. */
  readonly overlapMs: number;
  /** A replica whose served annotation is older than this is gone. */
  readonly liveWindowMs: number;
}

/** The serving certificate is renewed this many days before it expires. */
export const RENEW_BEFORE_DAYS = 30;
/** The CA is replaced this many days before it expires. */
export const CA_RENEW_BEFORE_DAYS = 90;
/** Both CAs are trusted this long before the serving certificate moves to the new one. */
export const CA_OVERLAP_MS = 10 * 60_000;
/** How often `serve --manage-certs` reconciles by default. */
export const DEFAULT_CERT_CHECK_INTERVAL_MS = 10 * 60_000;

/**
 * The policy at `now`. A replica counts as live while its served record is younger than
 * three check intervals (it records at every check).
 */
export function rotationPolicy(now: Date, names: ServingNames, checkIntervalMs = DEFAULT_CERT_CHECK_INTERVAL_MS): RotationPolicy {
  return { now, names, renewBeforeDays: RENEW_BEFORE_DAYS, caRenewBeforeDays: CA_RENEW_BEFORE_DAYS, overlapMs: CA_OVERLAP_MS, liveWindowMs: 3 * checkIntervalMs };
}

/** The Secret's keys. */
export const TLS_SECRET = 'mirrorgate-tls';
export const KEYS = { ca: 'ca.crt', caKey: 'ca.key', cert: 'tls.crt', key: 'tls.key', next: 'ca-next.crt', nextKey: 'ca-next.key', previous: 'ca-previous.crt' } as const;
export const ANNOTATION_STAGED = 'mirrorgate.io/ca-next-staged-at';
/** Each replica records what it serves: `served.mirrorgate.io/<pod>: <sha256> <ISO time>`. */
export const SERVED_PREFIX = 'served.mirrorgate.io/';
/** Served annotations older than this are dropped when a replica records (pod names change at every rollout). */
export const SERVED_KEEP_MS = 7 * 86_400_000;
/** The name part of an annotation key: at most 63 characters, alphanumeric at both ends. */
const ANNOTATION_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DAY_MS = 86_400_000;

/**
 * The annotation key for a replica: its pod name when that is a valid annotation name
 * (a Deployment's pod names are), else a digest of it, so that the API never refuses it.
 */
export function servedKey(replica: string): string {
  const name = ANNOTATION_NAME.test(replica) ? replica : `r-${sha256Hex(replica).slice(0, 32)}`;
  return `${SERVED_PREFIX}${name}`;
}

/** Split a PEM bundle into certificates. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** The caBundle the Secret calls for: previous, current and next CA, in that order. */
export function desiredBundle(data: Readonly<Record<string, string>>): string {
  const pems = [data[KEYS.previous], data[KEYS.ca], data[KEYS.next]].filter((p): p is string => p !== undefined && p.trim() !== '');
  return pems.map((p) => `${p.trim()}\n`).join('');
}

/** Live replicas and the fingerprints they serve. */
export function servedBy(annotations: Readonly<Record<string, string>>, now: Date, liveWindowMs: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(annotations)) {
    if (!k.startsWith(SERVED_PREFIX)) continue;
    const [fp, at] = v.split(' ');
    if (fp && at && now.getTime() - Date.parse(at) <= liveWindowMs) out.set(k.slice(SERVED_PREFIX.length), fp);
  }
  return out;
}

/** What the planner knows of one certificate. Reading X.509 is the adapter's (node:crypto). */
export interface CertFacts {
  /** SHA-256 fingerprint, lowercase hex without colons (as served annotations record it). */
  readonly fingerprint: string;
  /** As X.509 prints them (`Nov 24 00:00:00 2026 GMT`): Date.parse reads them. */
  readonly validFrom: string;
  readonly validTo: string;
}

export interface ServingFacts extends CertFacts {
  /** The Secret's key is this certificate's private key. */
  readonly keyMatches: boolean;
  /** Issued and signed by the Secret's current CA. */
  readonly issuedByCa: boolean;
  /** Valid for every name of the policy's ServingNames. */
  readonly coversNames: boolean;
}

/** The state of the Secret and the caBundle, as facts. A certificate that cannot be read is undefined. */
export interface RotationFacts {
  readonly secret:
    | {
        readonly annotations: Readonly<Record<string, string>>;
        readonly ca: CertFacts | undefined;
        readonly hasCaKey: boolean;
        readonly next: CertFacts | undefined;
        readonly hasPrevious: boolean;
        readonly serving: ServingFacts | undefined;
        /** {@link desiredBundle} of the Secret, and the fingerprints of its certificates. */
        readonly desiredBundle: string;
        readonly desiredFingerprints: readonly string[];
      }
    | undefined;
  /** Fingerprints of the certificates in the webhook configuration's caBundle. */
  readonly bundleFingerprints: readonly string[];
}

export type RotationStep =
  | { readonly kind: 'none' }
  | { readonly kind: 'create'; readonly reason: string }
  | { readonly kind: 'publish-bundle'; readonly bundle: string }
  | { readonly kind: 'renew-serving'; readonly reason: string }
  | { readonly kind: 'stage-next-ca' }
  | { readonly kind: 'promote-next-ca' }
  | { readonly kind: 'retire-previous-ca' };

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = [...a].sort();
  const sb = [...b].sort();
  return sa.length === sb.length && sa.every((f, i) => f === sb[i]);
}

/** The next step towards a healthy state. The caller applies it and asks again. */
export function planRotation(facts: RotationFacts, p: RotationPolicy): RotationStep {
  const s = facts.secret;
  if (s === undefined) return { kind: 'create', reason: `no Secret ${TLS_SECRET}` };
  const { ca, serving: cert, next } = s;
  if (ca === undefined || !s.hasCaKey) return { kind: 'create', reason: 'CA missing or unreadable' };
  const now = p.now.getTime();
  if (ca.validTo && Date.parse(ca.validTo) <= now) return { kind: 'create', reason: 'CA expired' };
  if (!sameSet(s.desiredFingerprints, facts.bundleFingerprints)) return { kind: 'publish-bundle', bundle: s.desiredBundle };

  const tlsFp = cert?.fingerprint ?? '';
  if (s.hasPrevious) {
    const served = servedBy(s.annotations, p.now, p.liveWindowMs);
    if (served.size > 0 && [...served.values()].every((fp) => fp === tlsFp)) return { kind: 'retire-previous-ca' };
  }
  if (next !== undefined) {
    // Without the annotation (lost to a hand edit), the next CA's own start time stands in:
    // otherwise the staged CA would never be promoted.
    const annotated = Date.parse(s.annotations[ANNOTATION_STAGED] ?? '');
    const stagedAt = Number.isNaN(annotated) ? Date.parse(next.validFrom) : annotated;
    if (!Number.isNaN(stagedAt) && now - stagedAt >= p.overlapMs) return { kind: 'promote-next-ca' };
  } else if (!s.hasPrevious && Date.parse(ca.validTo) - now < p.caRenewBeforeDays * DAY_MS) {
    return { kind: 'stage-next-ca' };
  }
  if (cert === undefined) return { kind: 'renew-serving', reason: 'serving certificate missing or unreadable' };
  if (!cert.keyMatches) return { kind: 'renew-serving', reason: 'serving key missing or not the key of the certificate' };
  if (!cert.issuedByCa) return { kind: 'renew-serving', reason: 'serving certificate not issued by the CA' };
  if (!cert.coversNames) return { kind: 'renew-serving', reason: 'serving certificate does not cover the service names' };
  // A serving certificate never outlives its CA: when it already ends with the CA, a new one
  // would end there too, and renewing would only repeat itself (the CA rotation is the cure).
  const certEnd = Date.parse(cert.validTo);
  if (certEnd - now < p.renewBeforeDays * DAY_MS && certEnd < Date.parse(ca.validTo)) return { kind: 'renew-serving', reason: `serving certificate expires ${cert.validTo}` };
  return { kind: 'none' };
}
