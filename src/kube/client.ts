/**
 * Kubernetes API access: a KubeConfig from `--kubeconfig FILE`, from the pod's service
 * account when running in a cluster, or from the usual default (`$KUBECONFIG`,
 * `~/.kube/config`), and the typed API clients made from it.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import { KubeConfigError } from './errors.js';
import { messageOf } from '../errors.js';

export { KubeConfigError };

/** Where the config came from, for the startup log. */
export type KubeConfigSource = 'file' | 'in-cluster' | 'KUBECONFIG' | 'home';

export interface KubeClient {
  readonly config: KubeConfig;
  readonly source: KubeConfigSource;
  /** The API server URL, for logs. */
  readonly server: string;
  readonly core: CoreV1Api;
  readonly watch: Watch;
}

export interface LoadKubeOptions {
  /** `--kubeconfig FILE`: used as is, an error when unreadable. */
  readonly file?: string | undefined;
  /** Environment to consult (KUBERNETES_SERVICE_HOST, KUBECONFIG); process.env by default. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
  /** Home directory for `~/.kube/config`; the user's by default. */
  readonly home?: string | undefined;
  /** Where the in-cluster service account token lives (tests). */
  readonly serviceAccountDir?: string | undefined;
}

const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * Load a KubeConfig: the file when given; else in-cluster when
 * `KUBERNETES_SERVICE_HOST` is set and the service account token is mounted; else
 * `$KUBECONFIG` or `~/.kube/config`. Throws KubeConfigError saying what was tried.
 */
export function loadKubeClient(opts: LoadKubeOptions = {}): KubeClient {
  const env = opts.env ?? process.env;
  const kc = new KubeConfig();
  let source: KubeConfigSource;
  try {
    if (opts.file !== undefined) {
      if (!existsSync(opts.file)) throw new KubeConfigError(`kubeconfig ${opts.file} does not exist`);
      kc.loadFromFile(opts.file);
      source = 'file';
    } else if (env.KUBERNETES_SERVICE_HOST && existsSync(join(opts.serviceAccountDir ?? IN_CLUSTER_DIR, 'token'))) {
      kc.loadFromCluster();
      source = 'in-cluster';
    } else if (env.KUBECONFIG) {
      const first = env.KUBECONFIG.split(process.platform === 'win32' ? ';' : ':').find((f) => f !== '');
      if (first === undefined || !existsSync(first)) throw new KubeConfigError(`KUBECONFIG names ${env.KUBECONFIG}, which does not exist`);
      kc.loadFromFile(first);
      source = 'KUBECONFIG';
    } else {
      const file = join(opts.home ?? homedir(), '.kube', 'config');
      if (!existsSync(file)) {
        throw new KubeConfigError(
          'no Kubernetes configuration: not in a cluster (KUBERNETES_SERVICE_HOST unset or no service account token), no KUBECONFIG, no ~/.kube/config; pass --kubeconfig FILE or --no-kube',
        );
      }
      kc.loadFromFile(file);
      source = 'home';
    }
  } catch (err) {
    if (err instanceof KubeConfigError) throw err;
    throw new KubeConfigError(`cannot load the Kubernetes configuration: ${messageOf(err)}`, { cause: err });
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new KubeConfigError('the Kubernetes configuration has no current cluster (check current-context)');
  return { config: kc, source, server: cluster.server, core: kc.makeApiClient(CoreV1Api), watch: new Watch(kc) };
}
