/**
 * The JSON report's documented schema (schemas/report.schema.json, JSON Schema 2020-12)
 * checked by a real validator (ajv) against real output: GET /report of a running
 * `serve()` after admissions through /mutate, the value a replica stores in the ConfigMap
 * of a real API server (so the server's own storage and the client's round trip are in
 * between), and `mirrorgate report --output json`.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import t from 'tap';
import { main } from '../../src/cli.js';
import { REPORT_CONFIGMAP } from '../../src/kube/report-store.js';
import { REPORT_SCHEMA_VERSION, type Report } from '../../src/report/rewrites.js';
import { serve } from '../../src/serve.js';
import { review } from '../support/app.js';
import { pushImage, startRegistry } from '../support/registry.js';
import { realKubeTestOptions, startRealKube } from '../support/kube-apiserver.js';
import { serveOptions } from '../support/serve.js';

// This file starts etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

// A CommonJS module: the plugin is module.exports, which its types call `default`.
const addFormats = addFormatsModule.default;

/** quay.io goes to a real registry on loopback, verified, so the output says what the mirror holds. */
const config = (mirror: string): string => `mode: audit
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
  - from: quay.io
    to: ${mirror}/quay
    verify: true
registries:
  "${mirror}":
    insecure: true
policy:
  allowedRegistries: [mirror.example.com, registry.k8s.io]
report:
  flushSeconds: 3600
`;

function deploymentPod(images: string[], deployment: string, hash: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: `${deployment}-${hash}-`, labels: { 'pod-template-hash': hash }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${deployment}-${hash}`, uid: 'u', controller: true }] },
    spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) },
  };
}

t.test('the report matches its schema: /report, the stored value, the CLI', realKubeTestOptions(), async (t) => {
  const schema = JSON.parse(await readFile('schemas/report.schema.json', 'utf8')) as Record<string, unknown>;
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats(ajv);
  const validate = ajv.compile(schema);
  const check = (what: string, value: unknown): void => {
    const ok = validate(value);
    t.ok(ok, `${what} matches the schema${ok ? '' : `: ${ajv.errorsText(validate.errors)}`}`);
  };

  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  await kube.must('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mirrorgate' } });
  const dir = await mkdtemp(join(tmpdir(), 'mg-schema-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const mirror = await startRegistry();
  t.teardown(() => mirror.stop());
  await pushImage(mirror, 'quay/acme/app', '1');
  await writeFile(join(dir, 'config.yaml'), config(mirror.host));
  const running = await serve(serveOptions(dir, { noKube: false, kubeconfig: kube.adminKubeconfig, replica: 'pod-a' }));
  let stopped = false;
  t.teardown(() => (stopped ? undefined : running.shutdown('test over')));
  const admit = async (object: Record<string, unknown>, namespace: string): Promise<void> => {
    const res = await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ object, namespace }).body });
    t.equal(res.statusCode, 200);
  };
  await admit(deploymentPod(['nginx:1.14.2', 'quay.io/acme/app:1', 'quay.io/acme/gone:1'], 'web', '5d7f8c9b4'), 'team-a');
  await admit(deploymentPod(['nginx:1.14.2', 'evil.io/x:1', 'registry.k8s.io/pause:3.9'], 'api', '7c5ddbdf54'), 'team-b');
  await admit({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'debug' }, spec: { containers: [{ name: 'c', image: 'evil.io/"bad ref' }] } }, 'team-c');

  const res = await running.metricsApp.inject({ method: 'GET', url: '/report' });
  const report = res.json<Report>();
  t.equal(report.schemaVersion, REPORT_SCHEMA_VERSION);
  t.equal(report.schemaVersion, (schema.properties as { schemaVersion: { const: number } }).schemaVersion.const, 'the schema file describes this version');
  t.match(report.registries['docker.io']?.usage['docker.io/library/nginx:1.14.2'], { admissions: 2, workloads: ['team-a/Deployment/web', 'team-b/Deployment/api'] }, 'the output checked carries per-image usage');
  t.ok(report.trend.length > 0, 'and the trend');
  t.match(report.registries['quay.io']?.usage, { 'quay.io/acme/app:1': { mirror: 'present' } }, 'and what verification said: held by the mirror');
  t.match(report.registries['quay.io']?.usage, { 'quay.io/acme/gone:1': { mirror: 'absent' } }, 'or not');
  check('GET /report', report);

  const out: string[] = [];
  const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(`stderr: ${l}`) };
  t.equal(await main(['report', '--url', `http://127.0.0.1:${(running.metricsApp.server.address() as { port: number }).port}`, '--output', 'json'], io), 0);
  check('mirrorgate report --output json', JSON.parse(out.join('\n')));

  await running.shutdown('test over');
  stopped = true;
  const cm = await kube.must<{ data?: Record<string, string> }>('GET', `/api/v1/namespaces/mirrorgate/configmaps/${REPORT_CONFIGMAP}`);
  const stored = JSON.parse(cm.data?.['pod-a'] ?? '{}') as { report: unknown };
  check('the stored ConfigMap value', stored.report);

  // The check can fail: a report that breaks the schema is refused.
  t.notOk(validate({ ...report, schemaVersion: 1 }), 'another version is refused');
  t.notOk(validate({ ...report, registries: { x: { ...report.registries['docker.io'], rewritten: -1 } } }), 'a negative count is refused');
  t.notOk(validate({ ...report, surprise: true }), 'an undocumented field is refused');
});
