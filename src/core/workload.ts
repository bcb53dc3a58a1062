/**
 * Which workload a pod belongs to, from the pod alone (no API call): its controlling owner
 * reference (`metadata.ownerReferences[]` with `controller: true`, else the first), kind
 * and name. A ReplicaSet owner is resolved to its Deployment by the naming convention of
 * the Deployment controller: the ReplicaSet is named `<deployment>-<pod-template-hash>` and
 * its pods carry the label `pod-template-hash` with that hash. When the name does not end
 * in the label's value (a ReplicaSet made by hand) it stays a ReplicaSet. A pod with no
 * owner is its own workload (`Pod/<name>`, or `Pod/<generateName>*` before it is named).
 * Pure.
 */

/** Kubernetes kinds are short; names are at most 253 characters; a review sent directly can carry any. */
const MAX_KIND = 63;
const MAX_NAME = 253;

export interface Workload {
  readonly kind: string;
  readonly name: string;
  /** How it was found: the owner reference as written, the ReplicaSet's name read by the pod-template-hash convention, or the pod itself. */
  readonly via: 'owner' | 'pod-template-hash' | 'pod';
}

function str(x: unknown): string | undefined {
  return typeof x === 'string' && x !== '' ? x : undefined;
}

function bounded(kind: string, name: string): boolean {
  return kind.length <= MAX_KIND && name.length <= MAX_NAME && !kind.includes('/') && !name.includes('/');
}

export function workloadOf(object: unknown): Workload | undefined {
  if (typeof object !== 'object' || object === null) return undefined;
  const meta = (object as { metadata?: unknown }).metadata;
  if (typeof meta !== 'object' || meta === null) return undefined;
  const m = meta as { name?: unknown; generateName?: unknown; labels?: unknown; ownerReferences?: unknown };
  const owners = Array.isArray(m.ownerReferences) ? m.ownerReferences.filter((o): o is Record<string, unknown> => typeof o === 'object' && o !== null) : [];
  const owner = owners.find((o) => o.controller === true) ?? owners[0];
  if (owner !== undefined) {
    const kind = str(owner.kind);
    const name = str(owner.name);
    if (kind === undefined || name === undefined || !bounded(kind, name)) return undefined;
    const labels = typeof m.labels === 'object' && m.labels !== null ? (m.labels as Record<string, unknown>) : {};
    const hash = str(labels['pod-template-hash']);
    const apps = typeof owner.apiVersion !== 'string' || owner.apiVersion.startsWith('apps/');
    if (kind === 'ReplicaSet' && apps && hash !== undefined && name.length > hash.length + 1 && name.endsWith(`-${hash}`)) {
      return { kind: 'Deployment', name: name.slice(0, -(hash.length + 1)), via: 'pod-template-hash' };
    }
    return { kind, name, via: 'owner' };
  }
  const name = str(m.name);
  if (name !== undefined) return bounded('Pod', name) ? { kind: 'Pod', name, via: 'pod' } : undefined;
  const generateName = str(m.generateName);
  if (generateName !== undefined && bounded('Pod', generateName)) return { kind: 'Pod', name: `${generateName}*`, via: 'pod' };
  return undefined;
}
