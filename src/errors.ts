/**
 * Every error mirrorgate raises on purpose, in one table (as fastify's lib/errors.js
 * does): a stable code, what it means, and what the CLI exits with. The classes that
 * carry more than a message (a registry answer's status, a copy's retry hint) extend
 * {@link MirrorgateError} with their code; what went wrong within a code is their
 * `reason`. Anything else thrown is an internal error: exit 1, message as it is.
 */

export interface ErrorInfo {
  /** The CLI's exit status when a command ends with this error. */
  readonly exit: 1 | 2;
  /** The HTTP status, for errors answered to a request. */
  readonly http?: number;
  readonly means: string;
}

export const ERRORS = {
  MG_USAGE: { exit: 2, means: 'the command line cannot be run: an unknown command or flag, or a bad value' },
  MG_CONFIG_INVALID: { exit: 2, means: 'the config file, or a file or Secret it names, is invalid' },
  MG_KUBECONFIG: { exit: 2, means: 'no usable Kubernetes client configuration (in-cluster or kubeconfig)' },
  MG_BODY_EMPTY: { exit: 1, http: 400, means: 'a request without a body where an AdmissionReview was expected' },
  MG_BODY_MALFORMED: { exit: 1, http: 400, means: 'a request body that is not JSON' },
  MG_BODY_TOO_DEEP: { exit: 1, http: 400, means: 'a request body nested deeper than any Pod' },
  MG_CONFLICT: { exit: 1, means: 'a resourceVersion-checked write lost to another writer: read again and retry' },
  MG_REGISTRY: { exit: 1, means: 'a registry request failed (reason: unauthorized, timeout, unreachable, tls, token, invalid, credentials)' },
  MG_CREDENTIALS: { exit: 1, means: 'cloud registry credentials could not be had (the message names the step)' },
  MG_COPY: { exit: 1, means: 'an image copy failed (reason: not-found, unauthorized, digest-mismatch, unsupported, platform, registry, unreachable)' },
} as const satisfies Record<string, ErrorInfo>;

export type ErrorCode = keyof typeof ERRORS;

/** The base of mirrorgate's own errors: `code` is a key of {@link ERRORS}. */
export class MirrorgateError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The table's entry for an error of ours; undefined for anything else. */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  return err instanceof MirrorgateError ? ERRORS[err.code] : undefined;
}

/** The CLI's exit status for an error a command ended with. */
export function exitCodeOf(err: unknown): 1 | 2 {
  return errorInfo(err)?.exit ?? 1;
}

/** The message of anything thrown (an Error's message, else the value as text). */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Anything thrown, as an Error (for APIs that take one). */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
