/**
 * Platforms (`os/architecture[/variant]`) for platform-aware verification: which platforms
 * a pod can run on, what a manifest holds, and whether that covers the pod. Pure.
 *
 * A mirror index that holds only linux/arm64 is no use to an amd64 node (`no match for
 * platform in manifest`), so "the mirror has the tag" is not enough: an index counts only
 * if it has every platform the pod can run on, a single-platform image only for its own.
 */
import { isRecord } from './json.js';

/** The node labels the kubelet sets (https://kubernetes.io/docs/reference/labels-annotations-taints/). */
export const OS_LABEL = 'kubernetes.io/os';
export const ARCH_LABEL = 'kubernetes.io/arch';

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string | undefined;
}

const PART = /^[a-z0-9][a-z0-9._-]{0,31}$/;

/** Parse `os/arch[/variant]`; undefined when it is not one. */
export function parsePlatform(text: string): Platform | undefined {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || !parts.every((p) => PART.test(p))) return undefined;
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/**
 * Does `have` serve a node that needs `want`? OS and architecture must be equal; a wanted
 * variant must be equal too (`linux/arm/v7`), a want without one takes any variant (node
 * labels carry none). arm64's only variant v8 is the same as none.
 */
export function platformServes(have: Platform, want: Platform): boolean {
  if (have.os !== want.os || have.architecture !== want.architecture) return false;
  if (want.variant === undefined) return true;
  const norm = (p: Platform): string | undefined => (p.architecture === 'arm64' && p.variant === 'v8' ? undefined : p.variant);
  return norm(have) === norm(want);
}

/** The wanted platforms that none of `have` serves, as text (empty: all covered). */
export function missingPlatforms(have: readonly Platform[], want: readonly Platform[]): string[] {
  return want.filter((w) => !have.some((h) => platformServes(h, w))).map(formatPlatform);
}

/**
 * The platforms one pod can run on: those available (configured, or the cluster's nodes),
 * narrowed by the pod's nodeSelector on `kubernetes.io/os` / `kubernetes.io/arch`. A
 * nodeSelector naming a platform outside the available ones asks for just that one (when
 * it names both labels). Sorted, distinct.
 */
export function podPlatforms(available: readonly Platform[], nodeSelector: Readonly<Record<string, string>> | undefined): Platform[] {
  const os = nodeSelector?.[OS_LABEL];
  const arch = nodeSelector?.[ARCH_LABEL];
  let out = available.filter((p) => (os === undefined || p.os === os) && (arch === undefined || p.architecture === arch));
  if (out.length === 0 && os !== undefined && arch !== undefined && PART.test(os) && PART.test(arch)) out = [{ os, architecture: arch }];
  const seen = new Map<string, Platform>();
  for (const p of out) seen.set(formatPlatform(p), p);
  return [...seen.keys()].sort().map((k) => seen.get(k) as Platform);
}


function platformOf(v: unknown): Platform | undefined {
  if (!isRecord(v) || typeof v.os !== 'string' || typeof v.architecture !== 'string') return undefined;
  return typeof v.variant === 'string' && v.variant !== '' ? { os: v.os, architecture: v.architecture, variant: v.variant } : { os: v.os, architecture: v.architecture };
}

/** Media types of indexes (OCI image index, Docker manifest list). */
const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'];

/**
 * What a manifest says about platforms: an index lists its children's platforms; an image
 * manifest names its config blob, whose `os`/`architecture` is its platform.
 */
export type ManifestPlatforms =
  | { readonly kind: 'index'; readonly platforms: readonly Platform[] }
  | { readonly kind: 'image'; readonly configDigest: string }
  | { readonly kind: 'unknown'; readonly reason: string };

export function manifestPlatforms(manifest: unknown, contentType: string | undefined): ManifestPlatforms {
  if (!isRecord(manifest)) return { kind: 'unknown', reason: 'manifest is not a JSON object' };
  const mediaType = typeof manifest.mediaType === 'string' ? manifest.mediaType : contentType;
  if (Array.isArray(manifest.manifests) || (mediaType !== undefined && INDEX_TYPES.includes(mediaType))) {
    const list = Array.isArray(manifest.manifests) ? manifest.manifests : [];
    const platforms: Platform[] = [];
    for (const m of list) {
      const p = isRecord(m) ? platformOf(m.platform) : undefined;
      if (p !== undefined) platforms.push(p);
    }
    return { kind: 'index', platforms };
  }
  const config = manifest.config;
  if (isRecord(config) && typeof config.digest === 'string') return { kind: 'image', configDigest: config.digest };
  return { kind: 'unknown', reason: 'manifest names no platforms and no config' };
}

/** The platform an image config blob declares. */
export function configPlatform(config: unknown): Platform | undefined {
  return platformOf(config);
}
