/**
 * mirrorgate as the manifests deploy it, two replicas against one real API server, each
 * with only the RBAC from manifests/base (a TokenRequest token of its ServiceAccount):
 * - managed certificates (`--manage-certs`): the replicas fill the Secret and write the
 *   caBundle, and the API server then uses that caBundle to call them (before, it could
 *   not: the base's failurePolicy Ignore let pods through unchanged);
 * - least privilege: the caches, the caBundle, the Secret and the report ConfigMap all
 *   work with those roles, and the same token may not read a Secret elsewhere;
 * - the report ConfigMap: counts summed over replicas are neither lost nor doubled when a
 *   replica exits, when its key is adopted (by a replica that was there, then by one that
 *   started later), and when another takes over;
 * - a CA rotation while pods are created without pause: not one creation fails.
 *
 * The webhook's URL is a loopback TCP balancer standing in for the Service (see
 * test/support/tcp-balancer.ts). The replicas run as their own processes; the rotation
 * replica runs in this process because a rotation's 10-minute overlap needs an injected
 * clock (its RBAC is still only the ServiceAccount's: it uses the same kind of token).
 */
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import t from 'tap';
import { createCa, createServingCert, defaultServingNames } from '../../src/certs.js';
import { serve } from '../../src/serve.js';
import { getText } from '../support/http.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import { startMirrorgate, type MirrorgateProcess } from '../support/mirrorgate-process.js';
import { eventually, kubectlApply, pod, renderManifests, type Obj } from '../support/real-cluster.js';
import { serveOptions } from '../support/serve.js';
import { startSidecarWebhook } from '../support/sidecar-webhook.js';
import { startTcpBalancer } from '../support/tcp-balancer.js';

// This file starts a whole control plane and several mirrorgate processes on a machine
// that may be busy, and waits twice for a report key to go stale (15 s each, see CONFIG).
t.setTimeout(300_000);

const NS = 'mirrorgate';
const MIRROR = 'mirror.example.com/dockerhub';
const CONFIG = {
  mode: 'enforce',
  rules: [{ from: 'docker.io', to: MIRROR }],
  // The shortest interval, and the shortest staleness it allows (3 intervals), so that the
  // keys of replicas that exited are adopted within seconds, not the default 2 minutes.
  report: { flushSeconds: 5, staleAfterSeconds: 15 },
};

const unb64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');
const fp = (pem: string): string => new X509Certificate(pem).fingerprint256;
const pems = (bundle: string): string[] => bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

async function tlsSecret(kube: RealKube): Promise<{ data: Record<string, string>; annotations: Record<string, string> }> {
  const s = await kube.must<Obj>('GET', `/api/v1/namespaces/${NS}/secrets/mirrorgate-tls`);
  return {
    data: Object.fromEntries(Object.entries((s.data ?? {}) as Record<string, string>).map(([k, v]) => [k, unb64(v)])),
    annotations: (s.metadata.annotations ?? {}) as Record<string, string>,
  };
}

/** Fingerprints of the CAs in the webhook's caBundle, one list per webhook. */
async function bundleFingerprints(kube: RealKube): Promise<string[]> {
  const mwc = await kube.must<Obj>('GET', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mirrorgate');
  const bundles = (mwc.webhooks as Obj[]).map((w) => (w.clientConfig.caBundle === undefined ? '' : unb64(w.clientConfig.caBundle as string)));
  if (new Set(bundles).size !== 1) throw new Error(`webhooks with different caBundles: ${bundles.length}`);
  return pems(bundles[0] as string).map(fp).sort();
}

/** GET over TLS trusting only `ca`. */
function getTrusting(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, agent: new Agent({ keepAlive: false }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

const portOf = (url: string): number => Number(new URL(url).port);
const rewrittenOf = async (metricsUrl: string): Promise<number> => {
  const r = JSON.parse(await getText(`${metricsUrl}/report`)) as Obj;
  return (r.registries?.['docker.io']?.rewritten as number | undefined) ?? 0;
};

t.test('two replicas with managed certificates against one real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  const lb = await startTcpBalancer();
  t.teardown(() => lb.close());
  const procs: MirrorgateProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
  });

  const rendered = await renderManifests();
  const isWebhook = (o: Obj): boolean => o.kind === 'MutatingWebhookConfiguration';
  await kubectlApply(kube, rendered.filter((o) => !isWebhook(o)));
  const webhook = rendered.find(isWebhook) as Obj;
  // The Service's place is taken by the balancer; no caBundle: the replicas write it.
  for (const w of webhook.webhooks as Obj[]) w.clientConfig = { url: `https://${lb.address}/mutate` };
  await kubectlApply(kube, [webhook]);
  for (const ns of ['apps', 'canary']) {
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    // No controller-manager here: the ServiceAccount admission plugin needs `default`.
    await kube.must('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name: 'default' } });
  }
  const configFile = join(kube.dir, 'config.yaml');
  writeFileSync(configFile, JSON.stringify(CONFIG));
  const startReplica = async (name: string): Promise<MirrorgateProcess> => {
    const kubeconfig = await kube.serviceAccountKubeconfig(NS, 'mirrorgate');
    const p = await startMirrorgate(['--config', configFile, '--manage-certs', '--webhook-name', 'mirrorgate', '--kubeconfig', kubeconfig, '--shutdown-delay', '1s'], {
      env: { POD_NAME: name, POD_NAMESPACE: NS },
    });
    procs.push(p);
    return p;
  };
  let podNumber = 0;
  /** Create a pod in `apps` through the API server; resolves the stored image. */
  const createPod = async (): Promise<string> => {
    const body = await kube.must<Obj>('POST', '/api/v1/namespaces/apps/pods', pod(`p-${++podNumber}`, 'nginx:1.27'));
    return body.spec.containers[0].image as string;
  };
  const dryRunRewritten = async (): Promise<boolean> => {
    const a = await kube.must<Obj>('POST', '/api/v1/namespaces/apps/pods?dryRun=All', pod('probe', 'nginx:1.27'));
    return a.spec.containers[0].image === `${MIRROR}/library/nginx:1.27`;
  };

  let a: MirrorgateProcess | undefined;
  let b: MirrorgateProcess | undefined;

  await t.test('managed certificates: the replicas write a caBundle the API server then uses', async (t) => {
    t.notOk(await dryRunRewritten(), 'before: no caBundle, the server cannot call the webhook (failurePolicy Ignore lets the pod through unchanged)');
    [a, b] = await Promise.all([startReplica('mirrorgate-a'), startReplica('mirrorgate-b')]);
    lb.setEndpoints([portOf(a.url), portOf(b.url)]);
    const secret = await tlsSecret(kube);
    t.ok(secret.data['ca.crt'] && secret.data['tls.crt'] && secret.data['tls.key'], 'the Secret mirrorgate-tls was created');
    t.same(await bundleFingerprints(kube), [fp(secret.data['ca.crt'] as string)], 'the caBundle holds its CA');
    for (const r of [a, b]) {
      const ready = await getTrusting(`${r.url}/readyz`, secret.data['ca.crt'] as string);
      t.equal(ready.status, 200, ready.body);
      t.same((JSON.parse(ready.body) as Obj).degraded, [], 'both serve the Secret\'s certificate, caches synced, nothing degraded');
    }
    await eventually('the API server calls the webhook with the new caBundle', dryRunRewritten);
    t.equal(await createPod(), `${MIRROR}/library/nginx:1.27`);
  });

  await t.test("least privilege: the manifests' roles are enough, and no more", async (t) => {
    const token = await kube.serviceAccountToken(NS, 'mirrorgate');
    await kube.must('POST', '/api/v1/namespaces/apps/secrets', { metadata: { name: 'db' }, stringData: { password: 'x' } });
    const other = await kube.requestAs(token, 'GET', '/api/v1/namespaces/apps/secrets/db');
    t.equal(other.status, 403, 'a Secret in another namespace is forbidden');
    t.match(other.body, /system:serviceaccount:mirrorgate:mirrorgate/);
    t.equal((await kube.requestAs(token, 'GET', `/api/v1/namespaces/${NS}/secrets`)).status, 403, 'listing the secrets of its own namespace is forbidden');
    t.equal((await kube.requestAs(token, 'GET', `/api/v1/namespaces/${NS}/configmaps/mirrorgate-config`)).status, 403, 'reading another ConfigMap is forbidden');
    t.equal((await kube.requestAs(token, 'DELETE', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mirrorgate')).status, 403, 'deleting its webhook configuration is forbidden');
    t.equal((await kube.requestAs(token, 'GET', `/api/v1/namespaces/${NS}/secrets/mirrorgate-tls`)).status, 200, 'its own Secret it may read');
    const logs = `${a?.output() ?? ''}${b?.output() ?? ''}`;
    t.notMatch(logs, /forbidden/i, 'no request of the replicas was refused');
  });

  await t.test("report counts across a replica's exit: neither lost nor doubled", async (t) => {
    if (a === undefined || b === undefined) throw new Error('replicas not started');
    const [ra, rb] = [a, b];
    let expected = 1; // the pod created in the first subtest
    for (let i = 0; i < 6; i++) t.equal(await createPod(), `${MIRROR}/library/nginx:1.27`);
    expected += 6;
    const exact = (url: string, n: number) => async (): Promise<boolean> => {
      const got = await rewrittenOf(url);
      if (got > n) throw new Error(`report counts ${got} rewritten, more than the ${n} pods created`);
      return got === n;
    };
    // Each replica's /report is its own live counts plus the others' flushed keys.
    await eventually('both replicas flushed', async () => (await exact(ra.metricsUrl, expected)()) && exact(rb.metricsUrl, expected)());

    lb.setEndpoints([portOf(rb.url)]);
    t.equal(await ra.stop(), 0, 'replica a exits cleanly (and flushes)');
    const cm = await kube.must<Obj>('GET', `/api/v1/namespaces/${NS}/configmaps/mirrorgate-report`);
    t.ok(cm.data['mirrorgate-a'], "a's counts stay in its key");
    t.equal(await rewrittenOf(rb.metricsUrl), expected, 'after the exit: nothing lost, nothing doubled');

    await eventually('b sends pods again', dryRunRewritten);
    for (let i = 0; i < 3; i++) t.equal(await createPod(), `${MIRROR}/library/nginx:1.27`);
    expected += 3;
    t.equal(await rewrittenOf(rb.metricsUrl), expected);
    const reportData = async (): Promise<Obj> => (await kube.must<Obj>('GET', `/api/v1/namespaces/${NS}/configmaps/mirrorgate-report`)).data as Obj;
    await eventually("a's key adopted by b (report.staleAfterSeconds: 15)", async () => (await reportData())['mirrorgate-a'] === undefined);
    t.equal(await rewrittenOf(rb.metricsUrl), expected, 'after the adoption: still every pod once');

    const c = await startReplica('mirrorgate-c');
    t.equal(await rewrittenOf(c.metricsUrl), expected, 'a new replica sees the same sum');
    lb.setEndpoints([portOf(c.url)]);
    t.equal(await rb.stop(), 0);
    await eventually('c sends pods', dryRunRewritten);
    for (let i = 0; i < 2; i++) t.equal(await createPod(), `${MIRROR}/library/nginx:1.27`);
    expected += 2;
    await eventually('c counts every pod once', exact(c.metricsUrl, expected));
    // b has exited: its key goes stale and c adopts it, as b adopted a's.
    await eventually("b's key adopted by c", async () => (await reportData())['mirrorgate-b'] === undefined);
    t.equal(await rewrittenOf(c.metricsUrl), expected, 'after the second adoption: still every pod once');
    t.equal(await c.stop(), 0);
    const data = await reportData();
    t.same(Object.keys(data), ['mirrorgate-c'], 'one key, of the last replica; those of replicas that are gone were adopted');
    t.equal((JSON.parse(data['mirrorgate-c'] as string) as Obj).report.registries['docker.io'].rewritten, expected, 'its stored counts: every pod once');
  });

  await t.test('a CA rotation while pods are created: not one creation fails', async (t) => {
    // An installation whose CA expires in 80 days (rotation starts 90 days before): its
    // Secret and caBundle as a replica would have left them.
    const names = defaultServingNames('mirrorgate', NS);
    const oldCa = createCa({ commonName: 'mirrorgate-ca', now: new Date(Date.now() - (3650 - 80) * 86_400_000) });
    const oldLeaf = createServingCert(oldCa, names);
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const current = await kube.must<Obj>('GET', `/api/v1/namespaces/${NS}/secrets/mirrorgate-tls`);
    await kube.must('PUT', `/api/v1/namespaces/${NS}/secrets/mirrorgate-tls`, {
      metadata: { name: 'mirrorgate-tls', namespace: NS, resourceVersion: current.metadata.resourceVersion },
      type: current.type,
      data: { 'ca.crt': b64(oldCa.cert), 'ca.key': b64(oldCa.key), 'tls.crt': b64(oldLeaf.cert), 'tls.key': b64(oldLeaf.key) },
    });
    const mwc = await kube.must<Obj>('GET', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mirrorgate');
    const patch = (mwc.webhooks as Obj[]).map((_w, i) => ({ op: 'replace', path: `/webhooks/${i}/clientConfig/caBundle`, value: b64(oldCa.cert) }));
    await kube.must('PATCH', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mirrorgate', JSON.stringify(patch), 'application/json-patch+json');

    // The replica's clock starts 11 minutes back, so that moving it to now passes the
    // overlap (certificates it makes are backdated 5 minutes, so the API server's clock,
    // the real one, accepts them throughout).
    let offsetMs = -11 * 60_000;
    const kubeconfig = await kube.serviceAccountKubeconfig(NS, 'mirrorgate');
    const running = await serve(
      serveOptions(kube.dir, {
        configPath: configFile,
        certsDir: join(kube.dir, 'unused-certs'),
        noKube: false,
        kubeconfig,
        manageCerts: true,
        webhookName: 'mirrorgate',
        replica: 'mirrorgate-r',
        namespace: NS,
        certCheckIntervalMs: 500,
        clock: () => new Date(Date.now() + offsetMs),
      }),
    );
    t.teardown(() => running.shutdown('test over'));
    lb.setEndpoints([portOf(running.url)]);
    const staged = await tlsSecret(kube);
    t.ok(staged.data['ca-next.crt'], 'the first reconcile staged a new CA');
    const nextCa = staged.data['ca-next.crt'] as string;
    t.same(await bundleFingerprints(kube), [fp(oldCa.cert), fp(nextCa)].sort(), 'and published old + new in the caBundle');

    // The API server reads webhook configurations from one watch, in order: once a
    // configuration created after the caBundle write is in use, so is that caBundle.
    const canary = await startSidecarWebhook('canary', 'registry.k8s.io/pause:3.10');
    t.teardown(() => canary.close());
    await kubectlApply(kube, [canary.configuration('canary', 'canary')]);
    const canaryPod = async (): Promise<number> =>
      ((await kube.must<Obj>('POST', '/api/v1/namespaces/canary/pods?dryRun=All', pod('probe', 'nginx:1.27'))).spec.containers as Obj[]).length;
    await eventually('the API server uses configurations written after the staged caBundle', async () => (await canaryPod()) === 2);
    await eventually('the replica serves', dryRunRewritten);

    // Pods created one after the other, all through the rotation.
    const results: string[] = [];
    let stop = false;
    const creating = (async () => {
      while (!stop) results.push(await createPod().catch((err: unknown) => `failed: ${(err as Error).message}`));
    })();
    const created = async (n: number): Promise<void> => {
      const target = results.length + n;
      await eventually(`${n} more pods created`, async () => results.length >= target);
    };
    await created(3);
    offsetMs = 0;
    await eventually('the serving certificate moved to the new CA', async () => fp((await tlsSecret(kube)).data['tls.crt'] as string) !== fp(oldLeaf.cert));
    await created(3);
    // Retiring is two writes (the Secret, then the caBundle): wait for both.
    await eventually('the old CA retired', async () => {
      const s = await tlsSecret(kube);
      return s.data['ca-previous.crt'] === undefined && s.data['ca-next.crt'] === undefined && (await bundleFingerprints(kube)).length === 1;
    });
    const done = await tlsSecret(kube);
    t.equal(fp(done.data['ca.crt'] as string), fp(nextCa), 'the staged CA is the CA now');
    // Retiring is two writes (the Secret, then the caBundle): wait for the second.
    await eventually('the caBundle drops the old CA', async () => (await bundleFingerprints(kube)).length === 1);
    t.same(await bundleFingerprints(kube), [fp(nextCa)], 'the caBundle holds only the new CA');
    await kube.must('DELETE', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/canary');
    await eventually('the API server uses configurations written after the retirement', async () => (await canaryPod()) === 1);
    await created(3);
    stop = true;
    await creating;
    const failed = results.filter((r) => r !== `${MIRROR}/library/nginx:1.27`);
    t.same(failed, [], `${results.length} pods created through the rotation, each rewritten`);
    t.ok(results.length >= 9);
  });
});
