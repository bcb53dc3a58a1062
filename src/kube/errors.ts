/** Errors of the Kubernetes adapters that callers test for without loading the client library. */

/** No usable kubeconfig: a usage problem (exit 2), with a message naming the way out. */
export class KubeConfigError extends Error {
  readonly code = 'MG_KUBECONFIG';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'KubeConfigError';
  }
}
