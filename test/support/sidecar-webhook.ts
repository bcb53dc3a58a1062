/**
 * A second mutating webhook for the real API server, as clusters have them (service
 * meshes, log shippers): a small HTTPS server on 127.0.0.1 that adds a sidecar container
 * to every pod it is sent. Registered after mirrorgate (webhooks run in the order of their
 * configuration names), it makes the API server reinvoke mirrorgate for real
 * (`reinvocationPolicy: IfNeeded`), because the sidecar's image arrives after
 * mirrorgate's first call.
 *
 * It is a webhook in its own right, not a stand-in for anything: it answers real
 * AdmissionReviews from the real API server, and records each request it got.
 */
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { makeTestPki } from './certs.js';

export interface SidecarWebhook {
  /** https://127.0.0.1:PORT/inject */
  readonly url: string;
  /** base64 of the CA that signed its serving certificate (for the configuration). */
  readonly caBundle: string;
  /** Each pod it was sent (the object as the API server had it at that point), in order. */
  readonly seen: Record<string, any>[];
  /** The MutatingWebhookConfiguration that registers it for pod CREATEs in `namespace`. */
  configuration(name: string, namespace: string): Record<string, any>;
  close(): Promise<void>;
}

const BODY_LIMIT = 3 * 1024 * 1024;

/** Start it; every pod without a container named `name` gets one running `image`. */
export async function startSidecarWebhook(name: string, image: string): Promise<SidecarWebhook> {
  const pki = makeTestPki();
  const seen: Record<string, any>[] = [];
  const server: Server = createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > BODY_LIMIT) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      let review: Record<string, any>;
      try {
        review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, any>;
      } catch {
        res.writeHead(400).end();
        return;
      }
      const request = review.request as Record<string, any>;
      const pod = request.object as Record<string, any>;
      seen.push(structuredClone(pod));
      const containers = (pod.spec?.containers ?? []) as { name: string }[];
      const response: Record<string, any> = { uid: request.uid, allowed: true };
      if (!containers.some((c) => c.name === name)) {
        const patch = [{ op: 'add', path: '/spec/containers/-', value: { name, image } }];
        response.patchType = 'JSONPatch';
        response.patch = Buffer.from(JSON.stringify(patch)).toString('base64');
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `https://127.0.0.1:${port}/inject`;
  const caBundle = Buffer.from(pki.caCert).toString('base64');
  return {
    url,
    caBundle,
    seen,
    configuration: (configName, namespace) => ({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: configName },
      webhooks: [
        {
          name: 'sidecar.test.example',
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
          failurePolicy: 'Fail',
          reinvocationPolicy: 'Never',
          timeoutSeconds: 5,
          clientConfig: { url, caBundle },
          rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }],
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': namespace } },
        },
      ],
    }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
