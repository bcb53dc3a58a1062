/**
 * Container image references, parsed and normalised as the container runtimes do.
 *
 * This follows the distribution reference grammar (github.com/distribution/reference:
 * `ParseNormalizedNamed`, `Parse` and `regexp.go`), which containerd, CRI-O's
 * libraries and Docker all share:
 *
 * ```
 * reference        := name [ ":" tag ] [ "@" digest ]
 * name             := [domain "/"] path
 * domain           := host [":" port-number]
 * host             := domain-name | "[" IPv6 hex and colons "]"
 * domain-name      := domain-component ("." domain-component)*
 * domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
 * path             := path-component ("/" path-component)*
 * path-component   := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
 * tag              := [\w][\w.-]{0,127}
 * digest           := algorithm ":" hex   (sha256: 64, sha384: 96, sha512: 128 lowercase hex)
 * ```
 *
 * It is a hand-written scanner rather than one big regular expression: it runs on the
 * admission hot path over untrusted input, so every step is a single linear pass and
 * nothing can backtrack.
 */
import { quoteClipped } from './text.js';

export interface ImageReference {
  /** Registry host exactly as written (case kept, as distribution and containerd keep it),
   *  with `:port` if given; IPv6 kept in brackets. No host and exactly `index.docker.io`
   *  both mean `docker.io`; `INDEX.DOCKER.IO` or `Docker.IO` stay as written. Compare
   *  hosts with {@link normaliseRegistryHost}, never by this text. */
  readonly registry: string;
  /** Repository path (lowercase by grammar). Single-component names on exactly `docker.io`
   *  (or no host, or exactly `index.docker.io`) get `library/`; on any other spelling not. */
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined; // 'sha256:<64 hex>'
  /** Tag and/or digest exactly as written in the input, with the leading ':' / '@'
   *  (':1.14.2', '@sha256:…', ':v1@sha256:…'), '' when neither. Rewrites keep it byte for byte. */
  readonly suffix: string;
}

export type ParseResult =
  | { readonly ok: true; readonly ref: ImageReference }
  | { readonly ok: false; readonly reason: string }; // human message, quotes the input

/** Docker Hub as the runtimes name it after normalisation. */
const DOCKER_HUB = 'docker.io';
/** The legacy "Docker Index" name of Docker Hub, folded into {@link DOCKER_HUB}. */
const LEGACY_DOCKER_HUB = 'index.docker.io';
/** Namespace of Docker Hub's official images (`nginx` is `library/nginx`). */
const OFFICIAL_PREFIX = 'library/';
/** distribution's RepositoryNameTotalLengthMax, applied to the normalised path. */
const MAX_REPOSITORY_LENGTH = 255;
const MAX_TAG_LENGTH = 128;
/**
 * Longer than any valid reference can be: a DNS host (253) with a port (6), a path of
 * 255, a tag of 128 (with ':') and the longest digest (`@sha512:` + 128 hex) add up to
 * 780 characters. Anything longer is refused before any cache or memo sees it.
 */
export const MAX_REFERENCE_LENGTH = 1024;
/** Only references up to this length are memoised, so the memo's bytes stay bounded. */
const MAX_MEMO_KEY_LENGTH = 512;

/** Hex length of each digest algorithm the runtimes accept (go-digest's registered ones). */
const DIGEST_HEX_LENGTH: ReadonlyMap<string, number> = new Map([
  ['sha256', 64],
  ['sha384', 96],
  ['sha512', 128],
]);

const WHITESPACE = /\s/;

// Character classes over UTF-16 code units. Anything outside ASCII is simply not in
// any class, so look-alike letters (e.g. the Kelvin sign, which lowercases to `k`)
// can never pass as part of a host or path.
function isLowerAlnum(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
}
function isUpper(c: number): boolean {
  return c >= 0x41 && c <= 0x5a;
}
function isAlnum(c: number): boolean {
  return isLowerAlnum(c) || isUpper(c);
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
function isHex(c: number): boolean {
  return isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}
function isLowerHex(c: number): boolean {
  return isDigit(c) || (c >= 0x61 && c <= 0x66);
}
/** Go's RE2 `\w`: ASCII letters, digits and underscore. */
function isWord(c: number): boolean {
  return isAlnum(c) || c === 0x5f;
}

function hasUpper(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (isUpper(s.charCodeAt(i))) return true;
  return false;
}

/** ASCII-only lowercasing: `toLowerCase` would map some non-ASCII letters onto ASCII ones. */
function asciiLower(s: string): string {
  return hasUpper(s) ? s.replace(/[A-Z]/g, (ch) => String.fromCharCode(ch.charCodeAt(0) + 32)) : s;
}

/** `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]` over s[start, end). */
function isDomainComponent(s: string, start: number, end: number): boolean {
  if (end <= start) return false;
  if (!isAlnum(s.charCodeAt(start)) || !isAlnum(s.charCodeAt(end - 1))) return false;
  for (let i = start + 1; i < end - 1; i++) {
    const c = s.charCodeAt(i);
    if (!isAlnum(c) && c !== 0x2d) return false;
  }
  return true;
}

/** `(?::[0-9]+)?` starting at s[start] through the end of s. */
function isOptionalPort(s: string, start: number): boolean {
  if (start === s.length) return true;
  if (s.charCodeAt(start) !== 0x3a || start + 1 === s.length) return false;
  for (let i = start + 1; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return false;
  return true;
}

function isHost(host: string): boolean {
  if (host.length === 0) return false;
  if (host.charCodeAt(0) === 0x5b) {
    // `\[[a-fA-F0-9:]+\]`: bracketed IPv6. Zone identifiers (`%eth0`) and embedded
    // IPv4 (`::192.0.2.1`) are deliberately outside the grammar.
    const close = host.indexOf(']');
    if (close < 2) return false;
    for (let i = 1; i < close; i++) {
      const c = host.charCodeAt(i);
      if (!isHex(c) && c !== 0x3a) return false;
    }
    return isOptionalPort(host, close + 1);
  }
  const colon = host.indexOf(':');
  const nameEnd = colon === -1 ? host.length : colon;
  let start = 0;
  for (let i = 0; i <= nameEnd; i++) {
    if (i === nameEnd || host.charCodeAt(i) === 0x2e) {
      if (!isDomainComponent(host, start, i)) return false;
      start = i + 1;
    }
  }
  return isOptionalPort(host, nameEnd);
}

/**
 * `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` over s[start, end): alphanumeric runs
 * separated by exactly `.`, `_`, `__`, or any number of `-`.
 */
function isPathComponent(s: string, start: number, end: number): boolean {
  if (end <= start) return false;
  if (!isLowerAlnum(s.charCodeAt(start)) || !isLowerAlnum(s.charCodeAt(end - 1))) return false;
  let sepStart = -1;
  for (let i = start + 1; i < end; i++) {
    const c = s.charCodeAt(i);
    if (isLowerAlnum(c)) {
      if (sepStart !== -1) {
        if (!isSeparator(s, sepStart, i)) return false;
        sepStart = -1;
      }
    } else if (c === 0x2e || c === 0x5f || c === 0x2d) {
      if (sepStart === -1) sepStart = i;
    } else {
      return false;
    }
  }
  return true;
}

function isSeparator(s: string, start: number, end: number): boolean {
  const len = end - start;
  const first = s.charCodeAt(start);
  if (len === 1) return true; // `.`, `_` or `-`, checked by the caller
  if (first === 0x5f) return len === 2 && s.charCodeAt(start + 1) === 0x5f; // `__`
  if (first !== 0x2d) return false; // `..`, `._`, ...
  for (let i = start + 1; i < end; i++) if (s.charCodeAt(i) !== 0x2d) return false; // `-+`
  return true;
}

/** The first path component that breaks the grammar, or undefined when `path` is valid. */
function badPathComponent(path: string): string | undefined {
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path.charCodeAt(i) === 0x2f) {
      if (!isPathComponent(path, start, i)) return path.slice(start, i);
      start = i + 1;
    }
  }
  return undefined;
}

function isTag(tag: string): boolean {
  if (tag.length === 0 || tag.length > MAX_TAG_LENGTH) return false;
  if (!isWord(tag.charCodeAt(0))) return false;
  for (let i = 1; i < tag.length; i++) {
    const c = tag.charCodeAt(i);
    if (!isWord(c) && c !== 0x2e && c !== 0x2d) return false;
  }
  return true;
}

/** Why `digest` is not acceptable, or undefined when it is. */
function digestProblem(digest: string): string | undefined {
  if (digest.length === 0) return 'missing digest after "@"';
  const colon = digest.indexOf(':');
  if (colon <= 0) return `digest "${digest}" must be "algorithm:hex"`;
  const algorithm = digest.slice(0, colon);
  const expected = DIGEST_HEX_LENGTH.get(algorithm);
  if (expected === undefined) {
    return `unsupported digest algorithm "${algorithm}" (expected sha256, sha384 or sha512)`;
  }
  const hexLength = digest.length - colon - 1;
  let lowerHex = true;
  for (let i = colon + 1; i < digest.length && lowerHex; i++) lowerHex = isLowerHex(digest.charCodeAt(i));
  if (hexLength !== expected || !lowerHex) {
    return `${algorithm} digest must be ${expected} lowercase hexadecimal characters`;
  }
  return undefined;
}

/** A bare 64-character hex string is an image ID, never a name (distribution refuses it). */
function isIdentifier(s: string): boolean {
  if (s.length !== 64) return false;
  for (let i = 0; i < 64; i++) if (!isLowerHex(s.charCodeAt(i))) return false;
  return true;
}

/** Quoted whole when it could be a valid reference, cut with a marker beyond that. */
function quote(input: string): string {
  return quoteClipped(input, MAX_REFERENCE_LENGTH);
}

function fail(input: string, detail: string): ParseResult {
  // JSON quoting escapes newlines and quotes, so a hostile image string cannot forge
  // extra lines in logs or admission messages.
  return { ok: false, reason: `invalid image reference ${quote(input)}: ${detail}` };
}

/**
 * Parse and normalise one reference as the container runtimes do. Never throws.
 *
 * Normalisation matches distribution's `ParseNormalizedNamed`: no host means Docker Hub,
 * `index.docker.io` is `docker.io`, and a single-component Docker Hub name gains the
 * `library/` namespace. The first path component is taken as the registry host only when
 * it contains `.` or `:`, is `localhost`, or contains uppercase letters (namespaces cannot).
 * The host is kept as written: Docker Hub's rules apply to exactly `docker.io` and
 * `index.docker.io` only, as in distribution and containerd, so `Docker.IO/nginx` is host
 * `Docker.IO` with repository `nginx` (no `library/`), and `Foo/bar` is host `Foo`.
 *
 * Answers are memoised (results are immutable and depend on the input only): the same
 * images come back in pod after pod, and the admission path parses each one up to
 * three times (rule, policy, report).
 *
 * @param input an image reference as written in a pod spec, e.g. `nginx:1.14.2`
 * @returns the normalised reference, or a reason that quotes the input
 */
export function parseReference(input: string): ParseResult {
  if (typeof input !== 'string') return parseUncached(input);
  // Hostile sizes never reach the memo: a distinct 1 MiB image per pod would otherwise
  // keep 4,096 MiB alive.
  if (input.length > MAX_MEMO_KEY_LENGTH) return parseUncached(input);
  let result = memo.get(input);
  if (result === undefined) {
    result = Object.freeze(parseUncached(input));
    if (result.ok) Object.freeze(result.ref);
    // Bounded whatever the input: when full, start over (cheaper than LRU bookkeeping,
    // and a working set of images is far smaller than the bound).
    if (memo.size >= MEMO_MAX) memo.clear();
    memo.set(input, result);
  }
  return result;
}

/**
 * Distinct references remembered by {@link parseReference}. Keys are at most 512
 * characters and reasons quote at most 256 of them, so the memo holds about 5 MB at
 * the very worst, typically a few hundred kilobytes.
 */
const MEMO_MAX = 4096;
const memo = new Map<string, ParseResult>();

/** How many references the parse memo holds now (for tests and the benchmark). */
export function referenceMemoSize(): number {
  return memo.size;
}

function parseUncached(input: string): ParseResult {
  if (typeof input !== 'string') {
    return { ok: false, reason: `invalid image reference: expected a string, got ${input === null ? 'null' : typeof input}` };
  }
  if (input.length === 0) return fail(input, 'the reference is empty');
  if (input.length > MAX_REFERENCE_LENGTH) {
    return fail(input, `longer than ${MAX_REFERENCE_LENGTH} characters, more than any valid reference can be`);
  }
  if (WHITESPACE.test(input)) return fail(input, 'contains whitespace');
  if (input.includes('://')) return fail(input, 'must be a registry host and path, not a URL');
  if (isIdentifier(input)) return fail(input, 'cannot specify 64-byte hexadecimal strings (an image ID is not a name)');

  // Split off the host the way distribution's splitDockerDomain does: only the text
  // before the first '/' can be a host, and only if it looks like one.
  let registry = DOCKER_HUB;
  let remainder = input;
  const slash = input.indexOf('/');
  if (slash !== -1) {
    const first = input.slice(0, slash);
    const upper = hasUpper(first);
    if (first === 'localhost' || first.includes('.') || first.includes(':') || upper) {
      if (!isHost(first)) {
        // An all-lowercase version that is a valid path means the uppercase was the
        // only reason to read it as a host: report it as distribution does.
        if (upper && !first.includes('.') && !first.includes(':') && isPathComponent(asciiLower(first), 0, first.length)) {
          return fail(input, 'repository name must be lowercase');
        }
        return fail(input, `"${first}" is not a valid registry host`);
      }
      // Exactly `index.docker.io` is Docker Hub; any other spelling is a host of its own.
      registry = first === LEGACY_DOCKER_HUB ? DOCKER_HUB : first;
      remainder = input.slice(slash + 1);
    }
  }

  // The path holds neither ':' nor '@', the tag holds no '@', so the first ':' before
  // any '@' starts the tag and the first '@' starts the digest.
  const at = remainder.indexOf('@');
  const colon = remainder.indexOf(':');
  const hasTag = colon !== -1 && (at === -1 || colon < at);
  const nameEnd = hasTag ? colon : at === -1 ? remainder.length : at;
  const path = remainder.slice(0, nameEnd);
  const suffix = remainder.slice(nameEnd);

  if (hasUpper(path)) return fail(input, 'repository name must be lowercase');
  if (path.length === 0) return fail(input, 'missing repository name');
  const repository = registry === DOCKER_HUB && !path.includes('/') ? OFFICIAL_PREFIX + path : path;
  // Current distribution counts the normalised path only (the host is excluded since
  // distribution/reference#9; `library/` is included). Checked before the component scan
  // so an oversized path is refused without walking it.
  if (repository.length > MAX_REPOSITORY_LENGTH) {
    return fail(input, `repository name must not be more than ${MAX_REPOSITORY_LENGTH} characters`);
  }
  const bad = badPathComponent(path);
  if (bad !== undefined) {
    if (bad.length === 0) return fail(input, 'empty path component (leading, trailing or double "/")');
    return fail(
      input,
      `invalid path component "${bad}" (lowercase letters and digits, separated by ".", "_", "__" or "-")`,
    );
  }

  let tag: string | undefined;
  let digest: string | undefined;
  if (hasTag) {
    tag = remainder.slice(colon + 1, at === -1 ? remainder.length : at);
    if (tag.length === 0) return fail(input, 'missing tag after ":"');
    if (!isTag(tag)) {
      return fail(input, `invalid tag "${tag}" (letters, digits, "_", "." and "-", not starting with "." or "-", at most ${MAX_TAG_LENGTH} characters)`);
    }
  }
  if (at !== -1) {
    digest = remainder.slice(at + 1);
    const problem = digestProblem(digest);
    if (problem !== undefined) return fail(input, problem);
  }

  return { ok: true, ref: { registry, repository, tag, digest, suffix } };
}

/**
 * Fully-qualified form `registry/repository` + suffix, e.g. `docker.io/library/nginx:1.14.2`.
 * The host, tag and digest are kept exactly as they were written. Parsing the result
 * gives the same reference back.
 */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.suffix}`;
}

/** `registry/repository` without tag or digest, e.g. `docker.io/library/nginx`. */
export function repositoryName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/**
 * True when `host` is a valid registry `host[:port]` per the grammar: DNS-like names and
 * IPv4 (`registry.example.com`, `10.0.0.1:5000`, `localhost`), or bracketed IPv6
 * (`[::1]:5000`). Case-insensitive. Used to validate configuration.
 *
 * Note: the grammar alone also admits single labels such as `mirror`, which an image
 * reference would read as a Docker Hub namespace, not a host, unless it has a port.
 */
export function isValidRegistryHost(host: string): boolean {
  return typeof host === 'string' && host.length <= MAX_REFERENCE_LENGTH && isHost(host);
}

/** True when `path` is a valid repository path: '/'-joined lowercase path components. */
export function isValidRepositoryPath(path: string): boolean {
  return typeof path === 'string' && path.length > 0 && path.length <= MAX_REFERENCE_LENGTH && badPathComponent(path) === undefined;
}

/**
 * The host as rules and policy compare it: lowercased (ASCII only; DNS is
 * case-insensitive) with the legacy `index.docker.io` folded into `docker.io`. This only
 * compares hosts: which image a reference means is decided by {@link parseReference},
 * which keeps the host as written.
 */
export function normaliseRegistryHost(host: string): string {
  const lower = asciiLower(host);
  return lower === LEGACY_DOCKER_HUB ? DOCKER_HUB : lower;
}

/**
 * Every name Docker Hub goes by: references say `docker.io` (or `index.docker.io`), docker
 * config files say `https://index.docker.io/v1/`, and the API lives on
 * `registry-1.docker.io` (`registry.hub.docker.com` is an older API name).
 */
const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set([DOCKER_HUB, LEGACY_DOCKER_HUB, 'registry-1.docker.io', 'registry.hub.docker.com']);

/**
 * The key under which a registry's settings (`registries:`, credentials) are kept and
 * looked up: {@link normaliseRegistryHost} with every Docker Hub alias folded into
 * `docker.io`, so `registries: {registry-1.docker.io: ...}` serves `nginx:1`.
 */
export function registrySettingsKey(host: string): string {
  const lower = asciiLower(host);
  return DOCKER_HUB_ALIASES.has(lower) ? DOCKER_HUB : lower;
}

/** True when `tag` is a valid tag (`[\w][\w.-]{0,127}`). */
export function isValidTag(tag: string): boolean {
  return typeof tag === 'string' && isTag(tag);
}

/**
 * The algorithm of a valid digest (`sha256`, `sha384` or `sha512` with its exact number of
 * lowercase hex characters), or undefined when `digest` is not one.
 */
export function digestAlgorithm(digest: string): string | undefined {
  if (typeof digest !== 'string' || digest.length > MAX_REFERENCE_LENGTH || digestProblem(digest) !== undefined) return undefined;
  return digest.slice(0, digest.indexOf(':'));
}

/** True when `digest` is a valid digest (see {@link digestAlgorithm}). */
export function isValidDigest(digest: string): boolean {
  return digestAlgorithm(digest) !== undefined;
}
