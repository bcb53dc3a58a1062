/**
 * `serve` with managed certificates (`--manage-certs`), in-process against the real API
 * server: the Secret and the caBundle are created, TLS is served with what the Secret
 * holds, a replaced serving certificate is picked up by new connections while keep-alive
 * connections go on, the served annotation and the expiry metric follow, and a serving
 * certificate put beside the wrong key is replaced, never served. One server for the file,
 * a namespace and a webhook configuration per test. (An API down at start is in
 * test/kube/manage-certs.test.ts: an outage at a chosen moment.)
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import t from 'tap';
import { createServingCert, defaultServingNames } from '../../src/certs.js';
import { fingerprint } from '../../src/kube/cert-rotation.js';
import { KEYS, servedKey, TLS_SECRET } from '../../src/core/rotation.js';
import { serve, type Running } from '../../src/serve.js';
import { LogSink } from '../support/app.js';
import { getText } from '../support/http.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import { eventually, type Obj } from '../support/real-cluster.js';
import { serveOptions } from '../support/serve.js';

// This file starts etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

const REPLICA = 'mirrorgate-7c9d6b5f4-q2x8z';
const CONFIG = `mode: enforce
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
`;

interface Api {
  readonly ns: string;
  secret(): Promise<Obj | undefined>;
  /**
   * Read the Secret, change it, write it back. The webhook writes this Secret too (its
   * served annotation, at every certificate check: 100 ms here), so a write may meet a newer
   * resourceVersion: read and try again on 409, as `kubectl edit` and every controller do.
   */
  updateSecret(change: (s: Obj) => Obj): Promise<void>;
  webhookConfiguration(): Promise<Obj>;
}

function start(ns: string, dir: string, kubeconfig: string, logs: LogSink): Promise<Running> {
  return serve(
    serveOptions(dir, {
      namespace: ns,
      replica: REPLICA,
      manageCerts: true,
      webhookName: ns,
      certCheckIntervalMs: 100,
      noKube: false,
      kubeconfig,
      logDestination: logs,
    }),
  );
}

const unb64 = (s: unknown): string => Buffer.from(String(s), 'base64').toString('utf8');

async function caBundle(api: Api): Promise<string> {
  const mwc = await api.webhookConfiguration();
  const [hook] = (mwc.webhooks ?? []) as { clientConfig: { caBundle?: string } }[];
  return hook?.clientConfig.caBundle === undefined ? '' : unb64(hook.clientConfig.caBundle);
}

async function secretData(api: Api): Promise<Record<string, string>> {
  const s = await api.secret();
  return Object.fromEntries(Object.entries((s?.data ?? {}) as Record<string, string>).map(([k, v]) => [k, unb64(v)]));
}

/**
 * GET over TLS trusting `ca` only, as the API server trusts the caBundle, for the service
 * name it calls: the serving certificate seen (on a new connection; Node does not expose
 * it on a reused one), the socket and whether it was reused.
 */
function getTls(url: string, ca: string, agent: Agent | false, ns: string): Promise<{ status: number; cert: string; socket: unknown; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpsRequest({ hostname: u.hostname, port: u.port, path: u.pathname, ca, agent, servername: `mirrorgate.${ns}.svc` }, (res) => {
      const cert = (res.socket as TLSSocket).getPeerX509Certificate()?.toString() ?? '';
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cert, socket: res.socket, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function servingExpiryMetric(running: Running): Promise<number | undefined> {
  const m = /^mirrorgate_certificate_expiry_timestamp_seconds\{certificate="serving"\} (\d+(?:\.\d+)?)$/m.exec(await getText(`${running.metricsUrl}/metrics`));
  return m ? Number(m[1]) : undefined;
}

const samePem = (a: string, b: string): boolean => new X509Certificate(a).fingerprint256 === new X509Certificate(b).fingerprint256;

t.test('managed certificates against the real API server', realKubeTestOptions(), async (t) => {
  const kube: RealKube = await startRealKube();
  t.teardown(() => kube.stop());
  let n = 0;
  const setup = async (): Promise<{ api: Api; dir: string; kubeconfig: string }> => {
    const ns = `mg-${++n}`;
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    await kube.must('POST', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations', {
      metadata: { name: ns },
      webhooks: [{ name: 'pods.mirrorgate.io', admissionReviewVersions: ['v1'], sideEffects: 'NoneOnDryRun', clientConfig: { service: { name: 'mirrorgate', namespace: ns, path: '/mutate' } } }],
    });
    const dir = await mkdtemp(join(tmpdir(), 'mg-manage-certs-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'config.yaml'), CONFIG);
    const api: Api = {
      ns,
      secret: async () => {
        const a = await kube.request('GET', `/api/v1/namespaces/${ns}/secrets/${TLS_SECRET}`);
        return a.status === 200 ? (JSON.parse(a.body) as Obj) : undefined;
      },
      updateSecret: async (change) => {
        for (let attempt = 1; ; attempt++) {
          const a = await kube.request('GET', `/api/v1/namespaces/${ns}/secrets/${TLS_SECRET}`);
          if (a.status !== 200) throw new Error(`GET secret: ${a.status} ${a.body}`);
          const put = await kube.request('PUT', `/api/v1/namespaces/${ns}/secrets/${TLS_SECRET}`, change(JSON.parse(a.body) as Obj));
          if (put.status >= 200 && put.status <= 299) return;
          if (put.status !== 409 || attempt >= 20) throw new Error(`PUT secret: ${put.status} ${put.body}`);
        }
      },
      webhookConfiguration: () => kube.must<Obj>('GET', `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${ns}`),
    };
    return { api, dir, kubeconfig: kube.adminKubeconfig };
  };

  await t.test('creates the Secret and caBundle, serves it, and follows a replaced serving certificate', async (t) => {
    const { api, dir, kubeconfig } = await setup();
    const logs = new LogSink();
    const running = await start(api.ns, dir, kubeconfig, logs);
    t.teardown(() => running.shutdown('test over'));

    const data = await secretData(api);
    t.equal((await api.secret())?.type, 'kubernetes.io/tls');
    const bundle = await caBundle(api);
    t.ok(samePem(bundle, data[KEYS.ca]!), 'the caBundle holds the CA of the Secret');

    // A client that trusts only the caBundle, for the service name the API server calls.
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: bundle });
    t.teardown(() => agent.destroy());
    const first = await getTls(`${running.url}/healthz`, bundle, agent, api.ns);
    t.equal(first.status, 200);
    t.ok(samePem(first.cert, data[KEYS.cert]!), 'serves the certificate of the Secret');

    t.equal(await servingExpiryMetric(running), Date.parse(new X509Certificate(data[KEYS.cert]!).validTo) / 1000, 'expiry metric matches the certificate');
    const served = (await api.secret())?.metadata.annotations?.[servedKey(REPLICA)];
    t.match(served, new RegExp(`^${fingerprint(data[KEYS.cert]!)} \\d{4}-`), 'served annotation recorded');

    // Someone (another replica, an operator) renews the serving certificate in the Secret.
    const renewed = createServingCert({ cert: data[KEYS.ca]!, key: data[KEYS.caKey]! }, defaultServingNames('mirrorgate', api.ns), { days: 200 });
    await api.updateSecret((secret) => ({ ...secret, data: { ...(secret.data as Record<string, string>), [KEYS.cert]: Buffer.from(renewed.cert).toString('base64'), [KEYS.key]: Buffer.from(renewed.key).toString('base64') } }));

    await eventually('new connections see the renewed certificate', async () => samePem((await getTls(`${running.url}/healthz`, bundle, false, api.ns)).cert, renewed.cert));
    const old = await getTls(`${running.url}/healthz`, bundle, agent, api.ns);
    t.equal(old.status, 200, 'the keep-alive connection still works');
    t.ok(old.reused && old.socket === first.socket, 'on the connection opened with the first certificate');
    t.ok(samePem((await secretData(api))[KEYS.cert]!, renewed.cert), 'the renewed certificate is accepted as is, not replaced');

    const expected = Date.parse(new X509Certificate(renewed.cert).validTo) / 1000;
    await eventually('expiry metric follows', async () => (await servingExpiryMetric(running)) === expected);
    await eventually('served annotation follows', async () => ((await api.secret())?.metadata.annotations?.[servedKey(REPLICA)] as string | undefined)?.startsWith(fingerprint(renewed.cert)));
    t.equal(logs.find('serving certificate reloaded').length, 1);

    const ready = await running.app.inject({ method: 'GET', url: '/readyz' });
    t.notMatch(ready.json<{ degraded: string[] }>().degraded.join('\n'), /certificates/, 'certificates not reported degraded');
  });

  await t.test('a serving certificate put beside the wrong key is replaced, never served nor recorded', async (t) => {
    const { api, dir, kubeconfig } = await setup();
    const logs = new LogSink();
    const running = await start(api.ns, dir, kubeconfig, logs);
    t.teardown(() => running.shutdown('test over'));
    const data = await secretData(api);
    const bundle = await caBundle(api);

    // A valid certificate with a key that is not its own: no TLS context can be built from it.
    const broken = createServingCert({ cert: data[KEYS.ca]!, key: data[KEYS.caKey]! }, defaultServingNames('mirrorgate', api.ns), { days: 200 });
    await api.updateSecret((secret) => ({ ...secret, data: { ...(secret.data as Record<string, string>), [KEYS.cert]: Buffer.from(broken.cert).toString('base64') } }));

    const fresh = await eventually('a new pair issued', async () => {
      const cert = (await getTls(`${running.url}/healthz`, bundle, false, api.ns)).cert;
      return !samePem(cert, data[KEYS.cert]!) && cert;
    });
    t.notOk(samePem(fresh, broken.cert), 'the broken certificate was never served');
    const now = await secretData(api);
    t.ok(new X509Certificate(now[KEYS.cert]!).checkPrivateKey(createPrivateKey(now[KEYS.key]!)), 'the Secret holds a matching pair again');
    t.ok(samePem(fresh, now[KEYS.cert]!));
    t.match(logs.find('certificates: step applied'), [{ step: 'create' }, { step: 'publish-bundle' }, { step: 'renew-serving', reason: /key/ }]);
    await eventually('served annotation follows', async () => ((await api.secret())?.metadata.annotations?.[servedKey(REPLICA)] as string | undefined)?.startsWith(fingerprint(now[KEYS.cert]!)));
  });
});
