/** Shapes and parsers the three identity providers share. Pure. */
import type { JsonObject } from '../json.js';

export interface EnvVar {
  readonly name: string;
  readonly value: string;
}

export interface VolumeMount {
  readonly name: string;
  readonly readOnly?: boolean;
  readonly mountPath: string;
}

/** What a provider needs in the pod; wiring.ts turns it into patch operations. */
export interface ProviderWiring {
  readonly volumes: readonly JsonObject[];
  /**
   * A volume of the same name the pod already has is replaced (upstream's add-or-replace);
   * otherwise the pod's own is kept.
   */
  readonly replaceVolumes?: boolean;
  /** Set in every wired container whatever it had: an entry of the same name is replaced in place. Applied before envGroups. */
  readonly envReplace?: readonly EnvVar[];
  /** A group is added to a container whole, and only when none of its names is set there. */
  readonly envGroups: readonly (readonly EnvVar[])[];
  readonly mounts: readonly VolumeMount[];
  /** A mount of the same name the container already has is replaced in place; otherwise it is kept. */
  readonly replaceMounts?: boolean;
  readonly skipContainers: ReadonlySet<string>;
  /**
   * A container is left untouched (no env, no mount) when, for every group here, its own
   * env already sets one of the group's names. Empty: always wired.
   */
  readonly completeWhen?: readonly (readonly string[])[];
  readonly annotations: Readonly<Record<string, string>>;
  readonly fsGroup: number | undefined;
}

/**
 * What a planner decided. `problems` are the reasons the upstream webhook would deny the
 * pod (invalid annotations); the caller denies, or admits with them as warnings
 * (`identity.onInvalidAnnotation`), in which case `wiring` is what is applied regardless.
 */
export interface PlanResult<W extends ProviderWiring = ProviderWiring> {
  readonly wiring: W | undefined;
  readonly warnings: string[];
  readonly problems?: string[];
}

/** Go's strconv.ParseInt(s, 10, bits): optional sign, decimal digits, in range. */
export function parseGoInt(s: string, bits: 32 | 64 = 64): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  const max = (1n << BigInt(bits - 1)) - 1n;
  if (n > max || n < -max - 1n) return undefined;
  return Number(n);
}

/** A value as a message quotes it, cut so a hostile annotation cannot make it long. */
export function quoted(value: string): string {
  return JSON.stringify(value.length > 20 ? `${value.slice(0, 20)}…` : value);
}

/** Names separated by `separator`, each trimmed (and unquoted when `unquote`), empty ones dropped. */
export function splitNames(value: string | undefined, separator: string, unquote = false): ReadonlySet<string> {
  const names = new Set<string>();
  for (const part of (value ?? '').split(separator)) {
    const trimmed = part.trim();
    const name = unquote ? trimmed.replace(/^"(.*)"$/, '$1') : trimmed;
    if (name !== '') names.add(name);
  }
  return names;
}
