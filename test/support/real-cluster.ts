/**
 * A real API server with mirrorgate registered as its webhook: the manifests' namespace,
 * ServiceAccount and RBAC applied server-side, a namespace `apps` for test pods, mirrorgate
 * as its own process with its ServiceAccount's TokenRequest token, and the manifests'
 * MutatingWebhookConfiguration with clientConfig turned into a `url` at that process.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { startRealKube, type RealKube } from './kube-apiserver.js';
import { startMirrorgate, type MirrorgateProcess } from './mirrorgate-process.js';

export type Obj = Record<string, any>;
export const MANIFESTS = join(import.meta.dirname, '..', '..', 'manifests');

export function manifestFile(name: string): Obj[] {
  return parseAllDocuments(readFileSync(join(MANIFESTS, name), 'utf8'))
    .map((d) => d.toJSON() as Obj)
    .filter((o) => o !== null);
}

/** The REST path of one object, for the kinds these tests apply. */
export function pathOf(o: Obj): string {
  const ns = o.metadata.namespace as string | undefined;
  const name = o.metadata.name as string;
  const apiVersion = o.apiVersion as string;
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const kind = (o.kind as string).toLowerCase();
  const plural = kind.endsWith('s') ? `${kind}es` : kind.endsWith('y') ? `${kind.slice(0, -1)}ies` : `${kind}s`;
  const base = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
  return `${base}${ns !== undefined ? `/namespaces/${ns}` : ''}/${plural}/${name}`;
}

/** Server-side apply of one object, as `kubectl apply --server-side` sends it. */
export function applyServerSide(kube: RealKube, o: Obj): Promise<Obj> {
  return kube.must('PATCH', `${pathOf(o)}?fieldManager=mirrorgate-test&force=true`, JSON.stringify(o), 'application/apply-patch+yaml');
}

export function pod(name: string, image: string, spec: Obj = {}, metadata: Obj = {}): Obj {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, ...metadata }, spec: { containers: [{ name: 'app', image }], ...spec } };
}

export interface RealCluster {
  readonly kube: RealKube;
  readonly mg: MirrorgateProcess;
  stop(): Promise<void>;
}

/**
 * Start it all with mirrorgate's `config`; resolves once the API server calls the
 * webhook (a dry-run pod in `apps` comes back with `probeImage` changed).
 */
export async function startRealCluster(config: Obj, probeImage = 'nginx:1.27'): Promise<RealCluster> {
  const kube = await startRealKube();
  let mg: MirrorgateProcess | undefined;
  const stop = async (): Promise<void> => {
    await mg?.stop();
    await kube.stop();
  };
  try {
    for (const file of ['namespace.yaml', 'serviceaccount.yaml', 'rbac.yaml']) for (const o of manifestFile(file)) await applyServerSide(kube, o);
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'apps' } });
    // No controller-manager here: the ServiceAccount admission plugin needs `default`.
    await kube.must('POST', '/api/v1/namespaces/apps/serviceaccounts', { metadata: { name: 'default' } });

    const configFile = join(kube.dir, 'config.yaml');
    writeFileSync(configFile, JSON.stringify(config));
    const certsDir = join(kube.dir, 'mirrorgate-certs');
    const kubeconfig = await kube.serviceAccountKubeconfig('mirrorgate', 'mirrorgate');
    mg = await startMirrorgate(['--config', configFile, '--certs-dir', certsDir, '--kubeconfig', kubeconfig]);
    const caBundle = readFileSync(join(certsDir, 'ca.crt')).toString('base64');

    const webhook = manifestFile('webhook.yaml')[0] as Obj;
    for (const w of webhook.webhooks as Obj[]) w.clientConfig = { url: `${mg.url}/mutate`, caBundle };
    await applyServerSide(kube, webhook);

    // The server picks the configuration up from its own watch: wait for a dry-run
    // creation to come back changed (dry runs leave no trace in mirrorgate's report).
    const deadline = Date.now() + 60_000;
    for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
      const a = await kube.request('POST', '/api/v1/namespaces/apps/pods?dryRun=All', pod('probe', probeImage));
      if (a.status === 201 && JSON.stringify((JSON.parse(a.body) as Obj).metadata.annotations ?? {}).includes('mirrorgate.io')) break;
      if ((a.warnings ?? []).length > 0) break;
      if (Date.now() > deadline) throw new Error(`the API server never called the webhook: ${a.status} ${a.body}\n${mg.output().slice(-4000)}`);
      await new Promise<void>((r) => setTimeout(r, pause));
    }
    return { kube, mg, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
