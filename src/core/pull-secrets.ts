/**
 * Which configured pull secrets a pod needs: a secret is needed when any final image
 * of the pod is on one of its registries.
 */
import { matchLength, parsePattern, type RegistryPattern } from './patterns.js';
import type { ImageReference } from './reference.js';
import { compileScope, scopeAdmits, type Problem, type RuleScope, type ScopeContext } from './rules.js';

export interface PullSecretInput {
  readonly name: string;
  readonly registries: readonly string[];
  /** Only pods in these namespaces. */
  readonly namespaces?: readonly string[] | undefined;
  /** Only pods in namespaces whose labels match (a label selector, as written). */
  readonly namespaceSelector?: unknown;
}

export interface PullSecret {
  readonly name: string;
  readonly registries: readonly RegistryPattern[];
  /** Undefined: every namespace. */
  readonly scope?: RuleScope | undefined;
}

/** Kubernetes object names (RFC 1123 subdomain), as Secret names must be. */
const SECRET_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function compilePullSecrets(
  inputs: readonly PullSecretInput[],
  basePath = 'pullSecrets',
): { ok: true; pullSecrets: PullSecret[] } | { ok: false; problems: Problem[] } {
  const problems: Problem[] = [];
  const out: PullSecret[] = [];
  const seen = new Set<string>();
  inputs.forEach((input, i) => {
    const at = `${basePath}[${i}]`;
    if (!SECRET_NAME.test(input.name) || input.name.length > 253) {
      problems.push({ path: `${at}.name`, message: `"${input.name}" is not a valid Secret name` });
    } else if (seen.has(input.name)) {
      problems.push({ path: `${at}.name`, message: `"${input.name}" is listed twice` });
    }
    seen.add(input.name);
    if (input.registries.length === 0) problems.push({ path: `${at}.registries`, message: 'must list at least one registry' });
    const registries: RegistryPattern[] = [];
    input.registries.forEach((r, j) => {
      const p = parsePattern(r, true);
      if (p.ok) registries.push(p.pattern);
      else problems.push({ path: `${at}.registries[${j}]`, message: p.reason });
    });
    const scope = compileScope({ namespaces: input.namespaces, namespaceSelector: input.namespaceSelector }, at, problems);
    out.push({ name: input.name, registries, ...(scope !== undefined ? { scope } : {}) });
  });
  return problems.length > 0 ? { ok: false, problems } : { ok: true, pullSecrets: out };
}

/** Names of the secrets needed for these final images, in config order (scoped ones only where they apply). */
export function secretsNeeded(pullSecrets: readonly PullSecret[], images: readonly ImageReference[], ctx?: ScopeContext): string[] {
  const names: string[] = [];
  for (const secret of pullSecrets) {
    if (!scopeAdmits(secret.scope, ctx)) continue;
    const needed = images.some((ref) => secret.registries.some((p) => matchLength(p, ref.registry, ref.repository) >= 0));
    if (needed) names.push(secret.name);
  }
  return names;
}
