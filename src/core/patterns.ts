/**
 * Registry patterns: `host[:port][/path/prefix]` or `*.domain[/path/prefix]`.
 *
 * One matcher serves rewrite rules (`from`), policy (`allowedRegistries`) and pull
 * secrets (`registries`), so a host means the same thing everywhere:
 * - hosts compare exactly and case-insensitively (`index.docker.io` is `docker.io`); the
 *   reference keeps its host as written (`DOCKER.IO/evil` is repository `evil`, not
 *   `library/evil`), only the comparison ignores case;
 * - `*.example.com` matches any subdomain (`a.example.com`, `a.b.example.com`), never
 *   `example.com` itself and never `example.com.evil.io`;
 * - a port is part of the host: `mirror.example.com` does not match `mirror.example.com:5000`;
 * - a path prefix matches whole components only: `gcr.io/google-samples` never matches
 *   `gcr.io/google-samples-evil/app`.
 */
import { isValidRegistryHost, isValidRepositoryPath, normaliseRegistryHost } from './reference.js';

export interface RegistryPattern {
  /** The pattern as written in the config. */
  readonly source: string;
  /** Exact host (normalised), or the suffix `.example.com` for a wildcard. */
  readonly host: string;
  readonly wildcard: boolean;
  /** Path prefix components; empty for a whole registry. */
  readonly path: readonly string[];
}

export type PatternParse = { ok: true; pattern: RegistryPattern } | { ok: false; reason: string };

/** Parse a registry pattern; `allowWildcard` is false for rule targets. Never throws. */
export function parsePattern(source: string, allowWildcard: boolean): PatternParse {
  if (typeof source !== 'string' || source.length === 0) return { ok: false, reason: 'must be a non-empty string' };
  if (source.trim() !== source || /\s/.test(source)) return { ok: false, reason: `"${source}" contains whitespace` };
  if (source.includes('://')) return { ok: false, reason: `"${source}" must be a registry host, not a URL` };
  if (source.endsWith('/')) return { ok: false, reason: `"${source}" must not end with "/"` };
  const slash = source.indexOf('/');
  const hostPart = slash === -1 ? source : source.slice(0, slash);
  const pathPart = slash === -1 ? '' : source.slice(slash + 1);
  let wildcard = false;
  let host = hostPart;
  if (hostPart.startsWith('*.')) {
    if (!allowWildcard) return { ok: false, reason: `"${source}": wildcards are not allowed here` };
    wildcard = true;
    host = hostPart.slice(2);
  }
  if (host.includes('*')) return { ok: false, reason: `"${source}": "*" is only allowed as the first label ("*.example.com")` };
  if (!isValidRegistryHost(host)) return { ok: false, reason: `"${source}": "${host}" is not a registry host` };
  if (pathPart !== '' && !isValidRepositoryPath(pathPart)) {
    return { ok: false, reason: `"${source}": "${pathPart}" is not a repository path (lowercase components separated by "/")` };
  }
  const normalised = normaliseRegistryHost(host);
  return {
    ok: true,
    pattern: {
      source,
      host: wildcard ? `.${normalised}` : normalised,
      wildcard,
      path: pathPart === '' ? [] : pathPart.split('/'),
    },
  };
}

/** Does the pattern's host part match this registry host (as written, or normalised)? */
export function hostMatches(pattern: RegistryPattern, host: string): boolean {
  const registry = normaliseRegistryHost(host);
  if (!pattern.wildcard) return pattern.host === registry;
  // `.example.com` as a suffix with at least one label before it. A port on the
  // registry host makes it a different host: `a.example.com:5000` ends with
  // `:5000`, so it cannot end with the suffix.
  return registry.length > pattern.host.length && registry.endsWith(pattern.host);
}

/**
 * Number of path components matched (>= 0), or -1 when the pattern does not match
 * `registry` + `repository`. Whole components only.
 */
export function matchLength(pattern: RegistryPattern, registry: string, repository: string): number {
  if (!hostMatches(pattern, registry)) return -1;
  const n = pattern.path.length;
  if (n === 0) return 0;
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const comp = pattern.path[i] as string;
    if (!repository.startsWith(comp, pos)) return -1;
    pos += comp.length;
    const next = repository.charCodeAt(pos);
    // The component must end here: at the end of the repository or at a '/'.
    if (pos !== repository.length && next !== 47 /* '/' */) return -1;
    pos += 1;
  }
  return n;
}

/**
 * Ranks matches so that the most specific pattern wins: more path components first,
 * then an exact host over a wildcard, then a longer wildcard suffix.
 */
export function specificity(pattern: RegistryPattern, matched: number): number {
  return matched * 1_000_000 + (pattern.wildcard ? pattern.host.length : 500_000);
}

/**
 * Do two patterns overlap, i.e. could one image be matched by both in a way that
 * makes one's prefix contain the other's? Used to reject rule loops: a target
 * that some rule's `from` would match again.
 */
export function patternsOverlap(a: RegistryPattern, b: RegistryPattern): boolean {
  const hostsOverlap =
    (!a.wildcard && !b.wildcard && a.host === b.host) ||
    (a.wildcard && !b.wildcard && hostMatches(a, b.host)) ||
    (!a.wildcard && b.wildcard && hostMatches(b, a.host)) ||
    (a.wildcard && b.wildcard && (a.host.endsWith(b.host) || b.host.endsWith(a.host)));
  if (!hostsOverlap) return false;
  const n = Math.min(a.path.length, b.path.length);
  for (let i = 0; i < n; i++) if (a.path[i] !== b.path[i]) return false;
  return true;
}

/** The pattern as a display string with the normalised host. */
export function formatPattern(p: RegistryPattern): string {
  const host = p.wildcard ? `*${p.host}` : p.host;
  return p.path.length === 0 ? host : `${host}/${p.path.join('/')}`;
}
