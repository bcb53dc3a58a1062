/**
 * Request body parsing for the webhook. The API server always sends
 * `application/json`; we parse it ourselves so that depth is bounded and every
 * failure is a 400 with a message rather than an exception deeper in.
 */
import { MirrorgateError } from '../errors.js';

/** Deeper than any real Pod (managedFields included) by a wide margin. */
export const MAX_JSON_DEPTH = 100;

export class BodyError extends MirrorgateError {
  constructor(
    message: string,
    readonly statusCode: number,
    code: 'MG_BODY_EMPTY' | 'MG_BODY_MALFORMED' | 'MG_BODY_TOO_DEEP',
    /** The review's `request.uid`, when the body could be read far enough to find one. */
    readonly uid?: string,
  ) {
    super(code, message);
  }
}

/**
 * Does the nesting depth of a parsed JSON value exceed `limit` (the root object or array
 * is level 1)? V8's JSON.parse is not recursive, so any depth parses safely; this walk
 * stops at the limit, so it never recurses deeper than `limit` itself. Measured on the
 * benchmark's Pods: about 2 µs, a third of a scan over the text.
 */
export function depthExceeds(value: unknown, limit: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  return containerExceeds(value, 1, limit);
}

function containerExceeds(value: object, depth: number, limit: number): boolean {
  if (depth > limit) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (item !== null && typeof item === 'object' && containerExceeds(item, depth + 1, limit)) return true;
    }
    return false;
  }
  const record = value as Record<string, unknown>;
  for (const key in record) {
    const item = record[key];
    if (item !== null && typeof item === 'object' && containerExceeds(item, depth + 1, limit)) return true;
  }
  return false;
}

/**
 * Parse a JSON body. Plain JSON.parse is safe against prototype pollution here: it
 * defines `__proto__` as an own property and we never merge request objects into others.
 */
export function parseJsonBody(text: string): unknown {
  if (text.length === 0) throw new BodyError('empty body: expected an AdmissionReview', 400, 'MG_BODY_EMPTY');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new BodyError(`malformed JSON: ${(err as Error).message}`, 400, 'MG_BODY_MALFORMED', uidInText(text));
  }
  if (depthExceeds(value, MAX_JSON_DEPTH)) {
    throw new BodyError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`, 400, 'MG_BODY_TOO_DEEP', readableUid(value));
  }
  return value;
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

/** The longest uid answered back (as decodeReview: the API server's are 36-character UUIDs). */
const MAX_UID = 256;

/**
 * `request.uid` of a parsed review, when it is a non-empty string of at most 256
 * characters: the uid a too-deep review is answered with.
 */
export function readableUid(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const request = (value as { request?: unknown }).request;
  if (request === null || typeof request !== 'object' || Array.isArray(request)) return undefined;
  const uid = (request as { uid?: unknown }).uid;
  return typeof uid === 'string' && uid !== '' && uid.length <= MAX_UID ? uid : undefined;
}

/**
 * `request.uid` read from the text of a body that is not valid JSON, as far as it goes:
 * a scan over its tokens, keeping track of the keys of the two outer objects, that stops
 * at the first string it cannot read. The last string found at `request.uid` before
 * that (JSON.parse also keeps the last of duplicate keys), under the same conditions as
 * {@link readableUid}. Never recurses; linear in the text.
 */
export function uidInText(text: string): string | undefined {
  /** Per open container: whether it is an object, and its current key. */
  const objects: boolean[] = [];
  const keys: (string | undefined)[] = [];
  let expectKey = false;
  let found: string | undefined;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      objects.push(c === 0x7b);
      keys.push(undefined);
      expectKey = c === 0x7b;
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      objects.pop();
      keys.pop();
      expectKey = false;
      i++;
    } else if (c === 0x2c /* , */) {
      expectKey = objects[objects.length - 1] === true;
      i++;
    } else if (c === 0x22 /* " */) {
      // The closing quote: the next one not escaped.
      let j = i + 1;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) j += 2;
        else if (d === 0x22) break;
        else j++;
      }
      if (j >= n) break;
      const depth = objects.length;
      // Only keys and values of the two outer objects matter: decode nothing else.
      if (depth >= 1 && depth <= 2) {
        let s: string;
        try {
          s = JSON.parse(text.slice(i, j + 1)) as string;
        } catch {
          break;
        }
        if (expectKey) {
          keys[depth - 1] = s;
          expectKey = false;
        } else if (depth === 2 && objects[0] === true && objects[1] === true && keys[0] === 'request' && keys[1] === 'uid') {
          found = s;
        }
      } else expectKey = false;
      i = j + 1;
    } else i++;
  }
  return found !== undefined && found !== '' && found.length <= MAX_UID ? found : undefined;
}
