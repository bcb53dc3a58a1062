/**
 * Registry policy: which registries (and optionally repository prefixes) final images
 * may come from. Judged on the final reference as the runtime reads it, so look-alike hosts
 * (`docker.io.evil.com`) and spelling tricks (`DOCKER.IO/evil`, which is repository `evil`,
 * not `library/evil`) cannot slip through; hosts compare case-insensitively.
 */
import { matchLength, parsePattern, type RegistryPattern } from './patterns.js';
import { normaliseRegistryHost, parseReference, type ImageReference } from './reference.js';
import type { Problem } from './rules.js';

export interface Policy {
  readonly allowed: readonly RegistryPattern[];
  /** The allowed list as written, for messages. */
  readonly allowedText: string;
}

export type PolicyCompile = { ok: true; policy: Policy } | { ok: false; problems: Problem[] };

/** Compile `policy.allowedRegistries`; every bad entry is reported by path. */
export function compilePolicy(allowedRegistries: readonly string[], basePath = 'policy.allowedRegistries', fileIndexes?: readonly number[]): PolicyCompile {
  const problems: Problem[] = [];
  const allowed: RegistryPattern[] = [];
  allowedRegistries.forEach((entry, i) => {
    const p = parsePattern(entry, true);
    if (p.ok) allowed.push(p.pattern);
    else problems.push({ path: `${basePath}[${fileIndexes?.[i] ?? i}]`, message: p.reason });
  });
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, policy: { allowed, allowedText: allowedRegistries.join(', ') } };
}

export type PolicyVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly reason: 'invalid' | 'registry'; readonly registry: string; readonly message: string };

/**
 * Judge one final image. `registry` in a denial is the normalised source registry
 * (or `invalid` when the reference does not parse) for bounded metric labels.
 */
export function judgeImage(policy: Policy, image: string): PolicyVerdict {
  const parsed = parseReference(image);
  if (!parsed.ok) {
    return { allowed: false, reason: 'invalid', registry: 'invalid', message: parsed.reason };
  }
  return judgeRef(policy, parsed.ref, image);
}

/** Judge an image already parsed (`image` is its text, for the message). */
export function judgeRef(policy: Policy, ref: ImageReference, image: string): PolicyVerdict {
  const { registry, repository } = ref;
  for (const pattern of policy.allowed) {
    if (matchLength(pattern, registry, repository) >= 0) return { allowed: true };
  }
  return {
    allowed: false,
    reason: 'registry',
    // Compared (and counted) case-insensitively, so metric labels stay one per host.
    registry: normaliseRegistryHost(registry),
    message: `"${image}" is not from an allowed registry (allowed: ${policy.allowedText})`,
  };
}
