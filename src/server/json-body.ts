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
 * Does the nesting depth of a JSON text exceed `limit`? Counts brackets outside strings
 * in one pass; strings (most of a Pod) are skipped with indexOf rather than char by
 * char. Malformed text answers false: JSON.parse reports it.
 */
export function jsonDepthExceeds(text: string, limit: number): boolean {
  // Each level needs at least two characters: a short body cannot be too deep.
  if (text.length <= 2 * limit) return false;
  let depth = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let from = i + 1;
      for (;;) {
        const q = text.indexOf('"', from);
        if (q === -1) return false;
        // The quote closes the string unless an odd number of backslashes precede it.
        let backslashes = 0;
        for (let k = q - 1; k > i && text.charCodeAt(k) === 0x5c; k--) backslashes++;
        if (backslashes % 2 === 0) {
          i = q + 1;
          break;
        }
        from = q + 1;
      }
      continue;
    }
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > limit) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
    i++;
  }
  return false;
}

/**
 * Parse a JSON body. Plain JSON.parse is safe against prototype pollution here: it
 * defines `__proto__` as an own property and we never merge request objects into others.
 */
export function parseJsonBody(text: string): unknown {
  if (text.length === 0) throw new BodyError('empty body: expected an AdmissionReview', 400, 'MG_BODY_EMPTY');
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) {
    throw new BodyError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`, 400, 'MG_BODY_TOO_DEEP');
  }
  try {
    return JSON.parse(text);
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
