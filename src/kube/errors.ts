/**
 * Errors of the Kubernetes adapters that callers test for without loading the client
 * library, and the one reading of an API error: its HTTP status and a short description.
 */
import { isRecord } from '../core/json.js';
import { MirrorgateError } from '../errors.js';

/** No usable kubeconfig: a usage problem (exit 2), with a message naming the way out. */
export class KubeConfigError extends MirrorgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('MG_KUBECONFIG', message, options);
  }
}

/** HTTP status of a client-node error (ApiException `code`, Watch `statusCode`). */
export function statusOf(err: unknown): number | undefined {
  if (!isRecord(err)) return undefined;
  if (typeof err.statusCode === 'number') return err.statusCode;
  if (typeof err.code === 'number') return err.code;
  return undefined;
}

/** A short, log-friendly description of a client-node error. */
export function describe(err: unknown): string {
  if (!(err instanceof Error)) return typeof err === 'string' ? err : JSON.stringify(err);
  const status = statusOf(err);
  // ApiException messages embed the whole response; keep the Status message.
  const body = (err as { body?: unknown }).body;
  if (status !== undefined && typeof body === 'string') {
    try {
      const parsed: unknown = JSON.parse(body);
      if (isRecord(parsed) && typeof parsed.message === 'string') return `HTTP ${status}: ${parsed.message}`;
    } catch {
      // not JSON: fall through
    }
  }
  if (status !== undefined) return `HTTP ${status}: ${err.message.split('\n')[0] ?? ''}`;
  const cause = (err as { cause?: unknown }).cause;
  const code = isRecord(err) && typeof err.code === 'string' ? err.code : isRecord(cause) && typeof cause.code === 'string' ? cause.code : undefined;
  return code ? `${code}: ${err.message}` : err.message;
}
