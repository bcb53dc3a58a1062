/**
 * Request body parsing for the webhook. The API server always sends
 * `application/json`; we parse it ourselves so that depth is bounded and every
 * failure is a 400 with a message rather than an exception deeper in.
 */

/** Deeper than any real Pod (managedFields included) by a wide margin. */
export const MAX_JSON_DEPTH = 100;

export class BodyError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
    readonly code: string,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

/**
 * Nesting depth of a JSON text, counting brackets outside strings. One linear pass
 * over the bytes; stops early once `limit` is exceeded.
 */
export function jsonDepthExceeds(buf: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > limit) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
  }
  return false;
}

/**
 * Parse a JSON body. Plain JSON.parse is safe against prototype pollution here: it
 * defines `__proto__` as an own property and we never merge request objects into others.
 */
export function parseJsonBody(buf: Buffer): unknown {
  if (buf.length === 0) throw new BodyError('empty body: expected an AdmissionReview', 400, 'MG_BODY_EMPTY');
  if (jsonDepthExceeds(buf, MAX_JSON_DEPTH)) {
    throw new BodyError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`, 400, 'MG_BODY_TOO_DEEP');
  }
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw new BodyError(`malformed JSON: ${(err as Error).message}`, 400, 'MG_BODY_MALFORMED');
  }
}

/** `?timeout=10s` as sent by the API server (a Go duration, whole seconds in practice), in ms. */
export function parseTimeoutParam(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000;
  return n * unit;
}
