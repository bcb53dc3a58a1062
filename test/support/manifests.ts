/**
 * Offline manifest checks: a small kustomize (only the features manifests/ uses; any
 * other feature fails loudly) and a strict field check against the Kubernetes API's
 * own models from @kubernetes/client-node (unknown fields are errors, as with
 * `kubectl apply --validate=strict`). Type and required-field checks come from
 * kubernetes-models' schemas.
 */
import * as k8s from '@kubernetes/client-node';
import fjp from 'fast-json-patch';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type Obj = Record<string, any>;

function loadYamlDocs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, 'utf8'), { uniqueKeys: true }).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]?.message ?? 'invalid YAML'}`);
    return d.toJSON() as Obj;
  }).filter((o) => o !== null);
}

const SUPPORTED = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'configMapGenerator', 'generatorOptions', 'patches']);

/** Build a kustomization directory into a list of objects. */
export function kustomize(dir: string): Obj[] {
  const file = join(dir, 'kustomization.yaml');
  const kz = loadYamlDocs(file)[0] as Obj;
  for (const key of Object.keys(kz)) if (!SUPPORTED.has(key)) throw new Error(`${file}: kustomize feature "${key}" not supported by the test builder`);
  let objects: Obj[] = [];
  for (const r of (kz.resources ?? []) as string[]) {
    const path = resolve(dir, r);
    objects.push(...(r.endsWith('.yaml') ? loadYamlDocs(path) : kustomize(path)));
  }
  for (const gen of (kz.configMapGenerator ?? []) as Obj[]) {
    if (kz.generatorOptions?.disableNameSuffixHash !== true) throw new Error('hashed generator names not supported');
    const data: Record<string, string> = {};
    for (const f of gen.files as string[]) data[f.split('/').pop() as string] = readFileSync(resolve(dir, f), 'utf8');
    objects.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: gen.name, labels: { ...(kz.generatorOptions?.labels ?? {}) } }, data });
  }
  if (typeof kz.namespace === 'string') {
    objects = objects.map((o) => (isNamespaced(o) ? { ...o, metadata: { ...o.metadata, namespace: kz.namespace } } : o));
  }
  for (const p of (kz.patches ?? []) as Obj[]) {
    const targets = objects.filter((o) => o.kind === p.target.kind && o.metadata?.name === p.target.name);
    if (targets.length !== 1) throw new Error(`${file}: patch target ${p.target.kind}/${p.target.name} matched ${targets.length} objects`);
    const ops = loadYamlDocsFromString(p.patch as string);
    const target = targets[0] as Obj;
    const patched = fjp.applyPatch(structuredClone(target), ops as fjp.Operation[], true, false).newDocument;
    objects = objects.map((o) => (o === target ? patched : o));
  }
  return objects;
}

function loadYamlDocsFromString(text: string): unknown {
  return parseAllDocuments(text)[0]?.toJSON();
}

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration', 'CustomResourceDefinition']);
function isNamespaced(o: Obj): boolean {
  return !CLUSTER_SCOPED.has(o.kind as string);
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
      : ((await import(`kubernetes-models/${group === '' ? '' : `${group}/`}${version as string}`)) as never);
  const Model = module[o.kind as string];
  if (Model === undefined) throw new Error(`no schema for ${o.apiVersion as string} ${o.kind as string}`);
  new Model(o).validate();
}

export const MANIFESTS = resolve(dirname(new URL(import.meta.url).pathname), '../../manifests');
