/**
 * Bounding untrusted text before it is kept or repeated. Whatever a pod, a review or a
 * config file carries, a message, a log line or a report entry quotes at most
 * {@link MAX_QUOTED} characters of it, followed by a visible marker with the original
 * length: `aaaa…(1048580 chars)`. Pure.
 */

/** How much of one untrusted string a message, log line or report entry repeats. */
export const MAX_QUOTED = 256;

/**
 * `text` when it has at most `max` characters, else its first `max` characters and the
 * marker `…(N chars)` with the original length N.
 */
export function clip(text: string, max: number = MAX_QUOTED): string {
  if (text.length <= max) return text;
  return `${detached(text.slice(0, max))}…(${text.length} chars)`;
}

/**
 * A copy of `part` that holds no reference to the string it was cut from. V8 represents
 * a slice of a long string as a view on it, so a 256-character cut kept in the report
 * would keep the whole megabyte it came from alive. JSON round-trips every string
 * exactly (lone surrogates included).
 */
function detached(part: string): string {
  return JSON.parse(JSON.stringify(part)) as string;
}

/** {@link clip}, then JSON-quoted, so a hostile string cannot forge lines or quotes. */
export function quoteClipped(text: string, max: number = MAX_QUOTED): string {
  if (text.length <= max) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, max))}…(${text.length} chars)`;
}
