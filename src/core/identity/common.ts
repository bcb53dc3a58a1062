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
  /** A group is added to a container whole, and only when none of its names is set there. */
  readonly envGroups: readonly (readonly EnvVar[])[];
  readonly mounts: readonly VolumeMount[];
  readonly skipContainers: ReadonlySet<string>;
  /**
   * A container is left untouched (no env, no mount) when, for every group here, its own
   * env already sets one of the group's names. Empty: always wired.
   */
  readonly completeWhen?: readonly (readonly string[])[];
  readonly annotations: Readonly<Record<string, string>>;
  readonly fsGroup: number | undefined;
}

/** Go's strconv.ParseInt(s, 10, 64): optional sign, decimal digits, int64 range. */
export function parseGoInt(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  if (n > 9223372036854775807n || n < -9223372036854775808n) return undefined;
  return Number(n);
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
