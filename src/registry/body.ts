/**
 * Response bodies and headers of registry answers, for the client and the copier alike:
 * read a body up to a bound, discard one so its keep-alive socket is free again, read a
 * header that may come as a list. What an overlong body means is the caller's error.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';

/** The body, at most `limit` bytes; past that the stream is destroyed and `tooLarge()` thrown. */
export async function readUpTo(body: Readable, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Discard a body and wait until it ended, so its keep-alive socket is free again. */
export async function discard(body: Readable): Promise<void> {
  body.resume();
  try {
    await finished(body);
  } catch {
    // The status is what mattered; a broken body only costs the connection.
  }
}

/** A header's first value; undefined when absent or empty. */
export function firstHeader(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return typeof s === 'string' && s !== '' ? s : undefined;
}
