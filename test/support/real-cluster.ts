/**
 * A real API server with mirrorgate registered as its webhook: manifests/base rendered by the
 * real `kubectl kustomize` and applied with `kubectl apply --server-side` (the real
 * validation accepts it), a namespace `apps` for test pods, mirrorgate as its own process
 * with its ServiceAccount's TokenRequest token (so the manifests' RBAC is all it has), and
 * the rendered MutatingWebhookConfiguration with clientConfig turned into a `url` at that
 * process with its caBundle.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { kubectlOk } from './k8s-tools.js';
import { startRealKube, type RealKube } from './kube-apiserver.js';
import { startMirrorgate, type MirrorgateProcess } from './mirrorgate-process.js';

export type Obj = Record<string, any>;
export const MANIFESTS = join(import.meta.dirname, '..', '..', 'manifests', 'base');

export function pod(name: string, image: string, spec: Obj = {}, metadata: Obj = {}): Obj {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, ...metadata }, spec: { containers: [{ name: 'app', image }], ...spec } };
}

/**
 * Poll `probe` until it returns something other than false/undefined (true counts), with a
 * growing pause (50 ms up to 1 s); fails naming `what` after `timeoutMs`. For what the API
 * server does on its own time (it picks up webhook configurations from a watch).
 */
export async function eventually<T>(what: string, probe: () => Promise<T | false | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
    const v = await probe();
    if (v !== false && v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs / 1000} s`);
    await new Promise<void>((r) => setTimeout(r, pause));
  }
}

/** The objects `kubectl kustomize DIR` renders (manifests/base by default). */
export async function renderManifests(dir = MANIFESTS): Promise<Obj[]> {
  const out = await kubectlOk(['kustomize', dir]);
  return parseAllDocuments(out)
    .map((d) => d.toJSON() as Obj)
    .filter((o) => o !== null);
}

/** `kubectl apply --server-side` of these objects as admin; resolves kubectl's output. */
export function kubectlApply(kube: RealKube, objects: Obj[]): Promise<string> {
  const input = objects.map((o) => JSON.stringify(o)).join('\n---\n');
  return kubectlOk(['--kubeconfig', kube.adminKubeconfig, 'apply', '--server-side', '--field-manager=mirrorgate-test', '-f', '-'], { input });
}

export interface RealCluster {
  readonly kube: RealKube;
  readonly mg: MirrorgateProcess;
  /** What `kubectl apply --server-side` printed for the rendered manifests. */
  readonly applied: string;
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
    const rendered = await renderManifests();
    const isWebhook = (o: Obj): boolean => o.kind === 'MutatingWebhookConfiguration';
    // Everything but the webhook first: its url and caBundle come from the running process.
    let applied = await kubectlApply(kube, rendered.filter((o) => !isWebhook(o)));
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'apps' } });
    // No controller-manager here: the ServiceAccount admission plugin needs `default`.
    await kube.must('POST', '/api/v1/namespaces/apps/serviceaccounts', { metadata: { name: 'default' } });

    const configFile = join(kube.dir, 'config.yaml');
    writeFileSync(configFile, JSON.stringify(config));
    const certsDir = join(kube.dir, 'mirrorgate-certs');
    const kubeconfig = await kube.serviceAccountKubeconfig('mirrorgate', 'mirrorgate');
    mg = await startMirrorgate(['--config', configFile, '--certs-dir', certsDir, '--kubeconfig', kubeconfig]);
    const caBundle = readFileSync(join(certsDir, 'ca.crt')).toString('base64');

    const webhooks = rendered.filter(isWebhook);
    if (webhooks.length !== 1) throw new Error(`manifests/base renders ${webhooks.length} MutatingWebhookConfigurations, expected 1`);
    const webhook = webhooks[0] as Obj;
    for (const w of webhook.webhooks as Obj[]) w.clientConfig = { url: `${mg.url}/mutate`, caBundle };
    applied += await kubectlApply(kube, [webhook]);

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
    return { kube, mg, applied, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
