/**
 * Manifest checks: render with the real `kubectl kustomize` (test/support/k8s-tools) and
 * check every object strictly: unknown fields are errors against the Kubernetes API's own
 * models from @kubernetes/client-node (as with `kubectl apply --validate=strict`), types,
 * required fields and formats against kubernetes-models' schemas.
 */
import * as k8s from '@kubernetes/client-node';
import { dirname, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { kubectlOk } from './k8s-tools.js';

export type Obj = Record<string, any>;

/** Parse a multi-document YAML stream (as kubectl and helm print it); null documents dropped. */
export function parseYamlStream(text: string, source: string): Obj[] {
  return parseAllDocuments(text, { uniqueKeys: true }).map((d) => {
    if (d.errors.length > 0) throw new Error(`${source}: ${d.errors[0]?.message ?? 'invalid YAML'}`);
    return d.toJSON() as Obj;
  }).filter((o) => o !== null);
}

/** Build a kustomization directory with the real kubectl (its built-in kustomize). */
export async function kustomize(dir: string): Promise<Obj[]> {
  return parseYamlStream(await kubectlOk(['kustomize', dir]), `kubectl kustomize ${dir}`);
}

type AttributeMap = { name: string; baseName: string; type: string }[];
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeMap } | undefined>;

/** Model class name for an apiVersion/kind, e.g. apps/v1 Deployment -> V1Deployment. */
function modelName(apiVersion: string, kind: string): string {
  const version = apiVersion.split('/').pop() as string;
  return version.charAt(0).toUpperCase() + version.slice(1) + kind;
}

/** Unknown fields, by path, checked against the API models (strict validation). */
export function unknownFields(o: Obj): string[] {
  const root = modelName(o.apiVersion as string, o.kind as string);
  if (models[root]?.getAttributeTypeMap === undefined) throw new Error(`no API model for ${o.apiVersion as string} ${o.kind as string}`);
  const out: string[] = [];
  walk(o, root, '', out);
  return out;
}

function walk(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, arr[1] as string, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, map[1] as string, `${path}.${k}`, out);
    return;
  }
  const model = models[type]?.getAttributeTypeMap?.();
  if (model === undefined || typeof value !== 'object') return; // primitive, IntOrString, Quantity...
  const known = new Map(model.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value as Obj)) {
    const t = known.get(k);
    if (t === undefined) out.push(`${path}.${k}`.replace(/^\./, ''));
    else walk(v, t, `${path}.${k}`, out);
  }
}

/** Schema validation (types, required fields, formats) with kubernetes-models; throws with the path. */
export async function validateSchema(o: Obj): Promise<void> {
  const [group, version] = (o.apiVersion as string).includes('/') ? (o.apiVersion as string).split('/') : ['', o.apiVersion as string];
  const module: Record<string, new (data: Obj) => { validate(): void }> =
    group === 'cert-manager.io'
      ? ((await import('@kubernetes-models/cert-manager/cert-manager.io/v1')) as never)
      : group === 'monitoring.coreos.com'
        ? ((await import('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1')) as never)
        : ((await import(`kubernetes-models/${group === '' ? '' : `${group}/`}${version as string}`)) as never);
  const Model = module[o.kind as string];
  if (Model === undefined) throw new Error(`no schema for ${o.apiVersion as string} ${o.kind as string}`);
  new Model(o).validate();
}

export const MANIFESTS = resolve(dirname(new URL(import.meta.url).pathname), '../../manifests');
export const BASE = resolve(MANIFESTS, 'base');
export const OVERLAYS = resolve(MANIFESTS, 'overlays');
