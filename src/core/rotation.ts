/**
 * The certificate rotation policy: how early the serving certificate and the CA are
 * renewed and how long both CAs overlap. One place for the figures that `serve
 * --manage-certs` and `mirrorgate certs --reconcile` both use. Pure.
 */

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
