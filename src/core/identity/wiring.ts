/**
 * Workload Identity wiring for a pod: asks each cloud's planner (aws.ts, gcp.ts, azure.ts)
 * what the pod needs and turns the union into minimal JSONPatch operations on the pod as
 * received. Never rewrites a whole container or list, never duplicates or overwrites an
 * env var or a mount a container already has, and a second pass over the patched pod
 * plans nothing (the API server may call again under `reinvocationPolicy: IfNeeded`).
 * Pure: no I/O.
 */
import type { PlanResult, ProviderWiring } from './common.js';
import type { Operation } from 'fast-json-patch';
import { isObject, type JsonObject } from '../json.js';
import { planAws, type AwsSettings } from './aws.js';
import { planAzure, type AzureSettings } from './azure.js';
import { planGcp, type GcpSettings } from './gcp.js';

export type { AwsSettings } from './aws.js';
export type { AzureSettings } from './azure.js';
export type { GcpSettings } from './gcp.js';

export interface ServiceAccountInfo {
  readonly namespace: string;
  readonly name: string;
  readonly annotations: Readonly<Record<string, string>>;
}

/** Each provider's defaults; undefined turns the provider off. */
export interface IdentitySettings {
  readonly aws: AwsSettings | undefined;
  readonly gcp: GcpSettings | undefined;
  readonly azure: AzureSettings | undefined;
}

export type IdentityProvider = 'aws' | 'gcp' | 'azure';

export interface IdentityPlan {
  /** JSONPatch operations on the pod as received: env entries, volumeMounts, volumes, securityContext. */
  readonly operations: Operation[];
  /** Pod annotations to add or set (only those that differ from the pod's); the caller merges them into its own annotation operation. */
  readonly annotations: Record<string, string>;
  /** For the admission response, each under 120 characters. */
  readonly warnings: string[];
  /**
   * Why the upstream webhook would deny this pod (invalid identity annotations), each under
   * 110 characters; the caller denies or, relaxed, admits with them as warnings. The
   * operations are the relaxed answer.
   */
  readonly problems: string[];
  /** Providers that changed something in this pod (empty on a second pass). */
  readonly applied: IdentityProvider[];
}


/** Ephemeral containers are never wired: they cannot mount volumes the pod did not have. */
const LISTS = ['initContainers', 'containers'] as const;

/**
 * Plan the identity wiring of a pod. `pod` is the raw Pod JSON as received (read with type
 * guards; malformed parts are skipped, never rewritten); `sa` is the pod's ServiceAccount
 * from the cache, undefined when unknown (then nothing is wired: the caller decides whether
 * to admit with a warning or deny). Providers apply in the order aws, gcp, azure; when two
 * want the same env name or mount path in a container, the first one wins.
 */
export function planIdentity(pod: JsonObject, sa: ServiceAccountInfo | undefined, settings: IdentitySettings): IdentityPlan {
  const plan: IdentityPlan = { operations: [], annotations: {}, warnings: [], problems: [], applied: [] };
  const spec = pod.spec;
  if (sa === undefined || !isObject(spec)) return plan;
  const metadata = isObject(pod.metadata) ? pod.metadata : {};
  const podAnnotations = stringMap(metadata.annotations);
  const podLabels = stringMap(metadata.labels);
  const volumes: readonly unknown[] = Array.isArray(spec.volumes) ? (spec.volumes as unknown[]) : [];

  const wirings: { provider: IdentityProvider; wiring: ProviderWiring }[] = [];
  const take = (provider: IdentityProvider, result: PlanResult): void => {
    plan.warnings.push(...result.warnings);
    plan.problems.push(...(result.problems ?? []));
    if (result.wiring !== undefined) wirings.push({ provider, wiring: result.wiring });
  };
  const saAnnotations = sa.annotations;
  if (settings.aws !== undefined) {
    take('aws', planAws({ podAnnotations, saAnnotations, nodeSelector: stringMap(spec.nodeSelector), volumes }, settings.aws));
  }
  if (settings.gcp !== undefined) take('gcp', planGcp({ podAnnotations, saAnnotations }, settings.gcp));
  if (settings.azure !== undefined) {
    const podName = typeof metadata.name === 'string' ? metadata.name : '';
    const podGenerateName = typeof metadata.generateName === 'string' ? metadata.generateName : '';
    take('azure', planAzure({ podLabels, podAnnotations, saAnnotations, podName, podGenerateName, hostNetwork: spec.hostNetwork === true, volumes }, settings.azure));
  }
  if (wirings.length === 0) return plan;

  const changed = new Set<IdentityProvider>();
  for (const list of LISTS) {
    const containers = spec[list];
    if (!Array.isArray(containers)) continue;
    (containers as unknown[]).forEach((c, index) => {
      if (!isObject(c) || typeof c.name !== 'string') return;
      const at = `/spec/${list}/${index}`;
      const env = c.env;
      const mounts = c.volumeMounts;
      // A non-list here is malformed (the API server never sends one); leave it alone.
      if ((env !== undefined && env !== null && !Array.isArray(env)) || (mounts !== undefined && mounts !== null && !Array.isArray(mounts))) {
        plan.warnings.push(`mirrorgate: container "${c.name}": malformed env or volumeMounts; identity not wired`);
        return;
      }
      const ownEnvList: readonly unknown[] = Array.isArray(env) ? (env as unknown[]) : [];
      const ownMountList: readonly unknown[] = Array.isArray(mounts) ? (mounts as unknown[]) : [];
      const envNames = new Set(namesOf(env, 'name'));
      const ownEnv = new Set(envNames);
      const mountNames = new Set(namesOf(mounts, 'name'));
      const mountPaths = new Set(namesOf(mounts, 'mountPath'));
      const newEnv: JsonObject[] = [];
      const newMounts: JsonObject[] = [];
      for (const { provider, wiring } of wirings) {
        if (wiring.skipContainers.has(c.name)) continue;
        const complete = wiring.completeWhen;
        if (complete !== undefined && complete.length > 0 && complete.every((g) => g.some((n) => ownEnv.has(n)))) continue;
        for (const e of wiring.envReplace ?? []) {
          if (envNames.has(e.name) && !ownEnv.has(e.name)) continue; // an earlier provider's
          envNames.add(e.name);
          const value = { name: e.name, value: e.value };
          const i = indexByName(ownEnvList, e.name);
          if (i === -1) newEnv.push(value);
          else if (!sameJson(ownEnvList[i], value)) plan.operations.push({ op: 'replace', path: `${at}/env/${i}`, value });
          else continue;
          changed.add(provider);
        }
        for (const group of wiring.envGroups) {
          if (group.some((e) => envNames.has(e.name))) continue;
          for (const e of group) {
            envNames.add(e.name);
            newEnv.push({ name: e.name, value: e.value });
          }
          changed.add(provider);
        }
        for (const m of wiring.mounts) {
          const i = wiring.replaceMounts === true ? indexByName(ownMountList, m.name) : -1;
          if (i !== -1) {
            // Replaced in place, unless its new path is another mount's (the API server
            // rejects two mounts at one path).
            const own = ownMountList[i] as JsonObject;
            if (sameJson(own, m) || (own.mountPath !== m.mountPath && mountPaths.has(m.mountPath))) continue;
            mountPaths.add(m.mountPath);
            plan.operations.push({ op: 'replace', path: `${at}/volumeMounts/${i}`, value: { ...m } });
            changed.add(provider);
            continue;
          }
          // The API server rejects two mounts at one path, so an existing mount there wins.
          if (mountNames.has(m.name) || mountPaths.has(m.mountPath)) continue;
          mountNames.add(m.name);
          mountPaths.add(m.mountPath);
          newMounts.push({ ...m });
          changed.add(provider);
        }
      }
      plan.operations.push(...appendOps(`${at}/env`, Array.isArray(env), newEnv));
      plan.operations.push(...appendOps(`${at}/volumeMounts`, Array.isArray(mounts), newMounts));
    });
  }

  // Volumes are added whenever a provider applies, even if every container was skipped,
  // as upstream does; an existing volume of the same name is replaced when the provider
  // says so (upstream's add-or-replace), else kept as it is.
  const volumeNames = new Set(namesOf(volumes, 'name'));
  const newVolumes: JsonObject[] = [];
  const replacedVolumes = new Set<string>();
  for (const { provider, wiring } of wirings) {
    for (const v of wiring.volumes) {
      const name = v.name;
      if (typeof name !== 'string') continue;
      const i = wiring.replaceVolumes === true && !replacedVolumes.has(name) ? indexByName(volumes, name) : -1;
      if (i !== -1) {
        replacedVolumes.add(name);
        if (sameJson(volumes[i], v)) continue;
        plan.operations.push({ op: 'replace', path: `/spec/volumes/${i}`, value: v });
        changed.add(provider);
        continue;
      }
      if (volumeNames.has(name)) continue;
      volumeNames.add(name);
      newVolumes.push(v);
      changed.add(provider);
    }
  }
  // One add of the whole list when the pod has none, so several providers never race to create it.
  plan.operations.push(...appendOps('/spec/volumes', Array.isArray(spec.volumes), newVolumes));

  for (const { provider, wiring } of wirings) {
    if (wiring.fsGroup === undefined) continue;
    const sc = spec.securityContext;
    if (isObject(sc) && sc.fsGroup !== undefined && sc.fsGroup !== null) break;
    plan.operations.push(
      isObject(sc)
        ? { op: 'add', path: '/spec/securityContext/fsGroup', value: wiring.fsGroup }
        : { op: 'add', path: '/spec/securityContext', value: { fsGroup: wiring.fsGroup } },
    );
    changed.add(provider);
    break;
  }

  for (const { provider, wiring } of wirings) {
    for (const [key, value] of Object.entries(wiring.annotations)) {
      if (podAnnotations[key] === value || plan.annotations[key] !== undefined) continue;
      plan.annotations[key] = value;
      changed.add(provider);
    }
  }

  for (const { provider } of wirings) if (changed.has(provider)) plan.applied.push(provider);
  return plan;
}

/** Append to an existing list one `-` operation per item, or create the list with one operation. */
function appendOps(path: string, exists: boolean, items: readonly JsonObject[]): Operation[] {
  if (items.length === 0) return [];
  if (!exists) return [{ op: 'add', path, value: items }];
  return items.map((value) => ({ op: 'add', path: `${path}/-`, value }));
}

/** Index of the first object in `list` whose name is `name`, or -1. */
function indexByName(list: readonly unknown[], name: string): number {
  return list.findIndex((item) => isObject(item) && item.name === name);
}

/** Same JSON value (key order ignored). */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  if (!isObject(a) || !isObject(b)) return false;
  const ka = Object.keys(a).filter((k) => a[k] !== undefined);
  const kb = Object.keys(b).filter((k) => b[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => sameJson(a[k], b[k]));
}

/** The string `field` of each object in a list (others ignored). */
function namesOf(list: unknown, field: string): string[] {
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  for (const item of list as unknown[]) {
    if (isObject(item) && typeof item[field] === 'string') out.push(item[field]);
  }
  return out;
}

/** A string-to-string map (labels, annotations, nodeSelector); non-string values are ignored. */
function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObject(v)) return out;
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  return out;
}

