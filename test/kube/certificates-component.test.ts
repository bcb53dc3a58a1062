/**
 * The certificates component on its own, with `--manage-certs`' source over the loopback
 * Kubernetes API: the first reconcile is retried on the injected timers with a doubling
 * backoff until the Secret can be read, then the pair is served and its expiry exported;
 * stop() ends the retries. The API answers 500 to the first Secret reads: a fault a real
 * API server cannot be made to show on demand.
 */
import t from 'tap';
import { defaultServingNames } from '../../src/certs.js';
import { rotationPolicy } from '../../src/core/rotation.js';
import { loadKubeClient } from '../../src/kube/client.js';
import { kubeCertStore, reconcile } from '../../src/kube/cert-rotation.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { Certificates, FIRST_RECONCILE_BACKOFF, type ManagedSource } from '../../src/server/certificates.js';
import { LogSink } from '../support/app.js';
import { FakeTimers } from '../support/fake-timers.js';
import { kubeconfigFor, startKubeApi } from '../support/kube-api.js';
import { waitFor } from '../support/wait.js';

const NS = 'mirrorgate';

async function managed(t: { teardown(fn: () => unknown): void }) {
  const api = await startKubeApi();
  t.teardown(() => api.close());
  api.put({ kind: 'Namespace', metadata: { name: NS } });
  api.put({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: 'mirrorgate' },
    webhooks: [{ name: 'pods.mirrorgate.io', admissionReviewVersions: ['v1'], sideEffects: 'NoneOnDryRun', clientConfig: { service: { name: 'mirrorgate', namespace: NS, path: '/mutate', port: 443 } } }],
  });
  const store = kubeCertStore(loadKubeClient({ file: await kubeconfigFor(api) }).config, { namespace: NS, webhook: 'mirrorgate' });
  const logs = new LogSink();
  const log = createLogger({ level: 'debug', destination: logs });
  const names = defaultServingNames('mirrorgate', NS);
  const source: ManagedSource = {
    kind: 'managed',
    where: `Secret ${NS}/mirrorgate-tls`,
    intervalMs: 600_000,
    reconcile: () => reconcile(store, () => rotationPolicy(new Date(), names), log),
    read: async () => {
      const s = await store.readSecret();
      const cert = s?.data['tls.crt'];
      const key = s?.data['tls.key'];
      return cert && key ? { pair: { cert, key }, ca: s.data['ca.crt'] ?? '' } : undefined;
    },
  };
  return { api, source, logs, log };
}

t.test('the first reconcile is retried with a doubling backoff on the injected timers', async (t) => {
  const { api, source, logs, log } = await managed(t);
  api.onNext({ method: 'GET', path: '/secrets/mirrorgate-tls', status: 500, times: 2 });
  const timers = new FakeTimers();
  const metrics = createMetrics({ defaultMetrics: false });
  const certs = new Certificates({ source, metrics, log, timers });
  let started = false;
  const starting = certs.start().then(() => (started = true));
  t.teardown(() => certs.stop());
  const retries = (): number => logs.find('certificates: cannot reach the Secret or the webhook configuration yet').length;
  await waitFor('the first failure', () => retries() === 1);
  t.same(timers.delays, [FIRST_RECONCILE_BACKOFF.initialMs * 2], 'first retry after 1 s');
  timers.advance(999);
  t.equal(timers.pending, 1, 'still waiting');
  timers.advance(1);
  await waitFor('the second failure', () => retries() === 2);
  t.same(timers.delays, [1000, 2000], 'doubled');
  t.equal(started, false, 'nothing to serve yet');
  timers.advance(2000);
  await starting;
  t.match(certs.initial.cert, /BEGIN CERTIFICATE/);
  t.same(certs.degraded(), []);
  const expiry = await metrics.certificateExpiry.get();
  t.same(expiry.values.map((v) => v.labels.certificate).sort(), ['ca', 'serving'], 'both expiries exported');
  t.equal(timers.pending, 1, 'the periodic reconcile is scheduled');
});

t.test('stop() ends the first-reconcile retries: start() fails instead of waiting forever', async (t) => {
  const { api, source, logs, log } = await managed(t);
  api.onNext({ method: 'GET', path: '/secrets/mirrorgate-tls', status: 500, times: 100 });
  const timers = new FakeTimers();
  const certs = new Certificates({ source, metrics: createMetrics({ defaultMetrics: false }), log, timers });
  const starting = certs.start();
  await waitFor('the first failure', () => logs.find('certificates: cannot reach the Secret or the webhook configuration yet').length === 1);
  certs.stop();
  await t.rejects(starting, /stopped before the first certificate was reconciled/);
});
