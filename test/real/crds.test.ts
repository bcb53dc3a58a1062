/**
 * The third-party objects mirrorgate ships, against the real API server with their real
 * CRDs (test/fixtures/crds/, vendored from cert-manager and prometheus-operator releases):
 * the chart's cert-manager Issuers and Certificates, ServiceMonitor and PrometheusRule
 * (the real helm) and manifests/overlays/cert-manager (the real `kubectl kustomize`) are
 * accepted by `kubectl apply --server-side --validate=strict` and stored as rendered, with
 * nothing pruned; and objects the schemas forbid are refused, so the check can fail.
 *
 * test/install/chart.test.ts and test/manifests.test.ts check the same renders offline
 * against kubernetes-models' copies of these schemas (types, required fields), but not
 * unknown fields; here the server's own validation decides, strictly.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { helmOk, kubectl, type RunResult } from '../support/k8s-tools.js';
import { realKubeTestOptions, startRealKube, type RealKube } from '../support/kube-apiserver.js';
import { eventually, renderManifests, type Obj } from '../support/real-cluster.js';
import { parseYamlStream } from '../support/render.js';

// This file starts a control plane (etcd, kube-apiserver) and runs kubectl and helm some
// twenty times on a machine that may be busy: more than package.json's per-file 120 s.
t.setTimeout(300_000);

const ROOT = join(import.meta.dirname, '..', '..');
const CRDS = join(ROOT, 'test', 'fixtures', 'crds');
const CHART = join(ROOT, 'charts', 'mirrorgate');
const OVERLAY = join(ROOT, 'manifests', 'overlays', 'cert-manager');
const NS = 'infra';
const NAME = 'gate-mirrorgate';
// The chart with everything that renders third-party kinds (charts/mirrorgate/values.yaml).
const VALUES = {
  certificates: { mode: 'certManager' },
  metrics: { serviceMonitor: { enabled: true }, prometheusRule: { enabled: true } },
};
const THIRD_PARTY = /^(cert-manager\.io|monitoring\.coreos\.com)\//;

const crds = readdirSync(CRDS)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseYamlStream(readFileSync(join(CRDS, f), 'utf8'), f));

const id = (o: Obj): string => `${o.kind as string}/${o.metadata.name as string}`;
const clone = (o: Obj): Obj => structuredClone(o);
const find = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata?.name === name);
  if (o === undefined) throw new Error(`the render has no ${kind}/${name}`);
  return o;
};

/** The API path of a namespaced custom object. */
function path(o: Obj): string {
  const plural = { Certificate: 'certificates', Issuer: 'issuers', ServiceMonitor: 'servicemonitors', PrometheusRule: 'prometheusrules' }[o.kind as string];
  if (plural === undefined) throw new Error(`no plural for ${o.kind as string}`);
  return `/apis/${o.apiVersion as string}/namespaces/${o.metadata.namespace as string}/${plural}/${o.metadata.name as string}`;
}

t.test('cert-manager and prometheus-operator objects on the real API server', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  // kubectl keeps discovery under HOME unless told: this server's own, removed with it.
  const cacheDir = join(kube.dir, 'kubectl-cache');
  const run = (args: string[], objects?: Obj[]): Promise<RunResult> =>
    kubectl(['--kubeconfig', kube.adminKubeconfig, '--cache-dir', cacheDir, ...args], objects === undefined ? {} : { input: objects.map((o) => JSON.stringify(o)).join('\n---\n') });
  const apply = async (objects: Obj[], ...extra: string[]): Promise<RunResult> =>
    run(['apply', '--server-side', '--validate=strict', '--field-manager=mirrorgate-test', ...extra, '-f', '-'], objects);
  const applyOk = async (objects: Obj[]): Promise<string> => {
    const r = await apply(objects);
    if (r.code !== 0) throw new Error(`kubectl apply --server-side exited ${r.code}:\n${r.stderr}`);
    return r.stdout;
  };
  const appliedEach = (t: Test, out: string, objects: Obj[]): void => {
    for (const o of objects) t.match(out, new RegExp(`^${(o.kind as string).toLowerCase()}[^ ]*/${o.metadata.name as string} serverside-applied$`, 'm'), id(o));
  };

  await t.test('the vendored CRDs are accepted and become Established', async (t) => {
    t.same(crds.map((c) => c.metadata.name as string).sort(), [
      'certificates.cert-manager.io', 'issuers.cert-manager.io', 'prometheusrules.monitoring.coreos.com', 'servicemonitors.monitoring.coreos.com',
    ]);
    for (const c of crds) t.equal(c.apiVersion, 'apiextensions.k8s.io/v1', `${c.metadata.name as string} is an apiextensions.k8s.io/v1 CRD`);
    // Server-side, like every apply here: no last-applied annotation (the Issuer CRD's
    // JSON alone is about 150 KB of the 256 KB annotations may hold).
    appliedEach(t, await applyOk(crds), crds);
    const waited = await run(['wait', '--for=condition=Established', '--timeout=90s', ...crds.map((c) => `crd/${c.metadata.name as string}`)]);
    t.equal(waited.code, 0, waited.stderr);
    // Established is the server's; kubectl also needs the kinds in its discovery.
    await eventually('kubectl discovers the new kinds', async () => (await run(['get', 'certificates,issuers,servicemonitors,prometheusrules', '-A'])).code === 0);
  });

  await t.test('the chart with cert-manager certificates, ServiceMonitor and PrometheusRule', async (t) => {
    const valuesFile = join(kube.dir, 'values.json');
    writeFileSync(valuesFile, JSON.stringify(VALUES));
    const rendered = parseYamlStream(await helmOk(['template', 'gate', CHART, '--namespace', NS, '-f', valuesFile]), 'helm template');
    const custom = rendered.filter((o) => THIRD_PARTY.test(o.apiVersion as string));
    t.same(custom.map(id).sort(), [
      `Certificate/${NAME}-ca`, `Certificate/${NAME}-tls`, `Issuer/${NAME}-ca`, `Issuer/${NAME}-selfsigned`, `PrometheusRule/${NAME}`, `ServiceMonitor/${NAME}`,
    ], 'the render holds every third-party kind the chart makes');
    await kube.must('POST', '/api/v1/namespaces', { metadata: { name: NS } });
    appliedEach(t, await applyOk(rendered), rendered);
    await storedAsRendered(t, kube, custom);
    const tls = await kube.must<Obj>('GET', path(find(rendered, 'Certificate', `${NAME}-tls`)));
    t.same(tls.spec.dnsNames, [NAME, `${NAME}.${NS}`, `${NAME}.${NS}.svc`, `${NAME}.${NS}.svc.cluster.local`]);
    t.same(tls.spec.issuerRef, { name: `${NAME}-ca`, kind: 'Issuer' });
    const rule = await kube.must<Obj>('GET', path(find(rendered, 'PrometheusRule', NAME)));
    t.same((rule.spec.groups[0].rules as Obj[]).map((r) => r.alert), ['MirrorgateCertificateExpiring', 'MirrorgateAdmissionsFailing', 'MirrorgateMirrorUnreachable', 'MirrorgateCopiesFailing']);
    const mwc = await kube.must<Obj>('GET', `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${NAME}`);
    t.equal(mwc.metadata.annotations['cert-manager.io/inject-ca-from'], `${NS}/${NAME}-tls`, 'the CA injector is pointed at the stored Certificate');

    // Your own issuer (certificates.certManager.issuerRef), e.g. a ClusterIssuer: a dry run.
    const own = parseYamlStream(await helmOk(['template', 'gate', CHART, '--namespace', NS, '-f', valuesFile,
      '--set', 'certificates.certManager.issuerRef.name=corp-ca', '--set', 'certificates.certManager.issuerRef.kind=ClusterIssuer',
      '--set', 'certificates.certManager.issuerRef.group=cert-manager.io']), 'helm template');
    const ownCustom = own.filter((o) => (o.apiVersion as string).startsWith('cert-manager.io/'));
    t.same(ownCustom.map(id), [`Certificate/${NAME}-tls`], 'no issuers of the chart\'s own');
    t.same(ownCustom[0]?.spec.issuerRef, { name: 'corp-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' });
    const dry = await apply(ownCustom, '--dry-run=server');
    t.equal(dry.code, 0, dry.stderr);
    t.match(dry.stdout, new RegExp(`certificate.cert-manager.io/${NAME}-tls serverside-applied \\(server dry run\\)`));
  });

  await t.test('manifests/overlays/cert-manager rendered by kubectl kustomize', async (t) => {
    const rendered = await renderManifests(OVERLAY);
    const custom = rendered.filter((o) => THIRD_PARTY.test(o.apiVersion as string));
    t.same(custom.map(id).sort(), ['Certificate/mirrorgate-ca', 'Certificate/mirrorgate-tls', 'Issuer/mirrorgate-ca', 'Issuer/mirrorgate-selfsigned']);
    appliedEach(t, await applyOk(rendered), rendered);
    await storedAsRendered(t, kube, custom);
    const tls = await kube.must<Obj>('GET', '/apis/cert-manager.io/v1/namespaces/mirrorgate/certificates/mirrorgate-tls');
    t.match(tls.spec, { secretName: 'mirrorgate-tls', duration: '2160h', renewBefore: '720h', privateKey: { algorithm: 'ECDSA', rotationPolicy: 'Always' }, issuerRef: { name: 'mirrorgate-ca', kind: 'Issuer' } });
    t.same(tls.spec.dnsNames, ['mirrorgate', 'mirrorgate.mirrorgate', 'mirrorgate.mirrorgate.svc', 'mirrorgate.mirrorgate.svc.cluster.local']);
    const ca = await kube.must<Obj>('GET', '/apis/cert-manager.io/v1/namespaces/mirrorgate/issuers/mirrorgate-ca');
    t.same(ca.spec, { ca: { secretName: 'mirrorgate-ca' } }, 'the CA Issuer signs with the CA Certificate\'s Secret');
  });

  await t.test('objects the schemas forbid are refused, and nothing is stored', async (t) => {
    // Each from a good rendered object with one defect, under a name not yet taken.
    const rendered = parseYamlStream(await helmOk(['template', 'gate', CHART, '--namespace', NS, '-f', join(kube.dir, 'values.json')]), 'helm template');
    // The good object each bad one is made from, under the bad one's name.
    const base = new Map<string, Obj>();
    const bad = (kind: string, name: string, defect: (o: Obj) => void): Obj => {
      const o = clone(find(rendered, kind, name));
      o.metadata.name = `bad-${kind.toLowerCase()}`;
      base.set(id(o), clone(o));
      defect(o);
      return o;
    };
    // What each write path says: server-side apply refuses a wrong type or an undeclared
    // field while building its typed patch, before the schema validation a create meets
    // (kubectl create --validate=strict: field validation Strict).
    interface Case { what: string; o: Obj; apply: RegExp; create: RegExp }
    const same = (what: string, o: Obj, message: RegExp): Case => ({ what, o, apply: message, create: message });
    const cases: Case[] = [
      {
        what: 'a Certificate whose duration is a number',
        o: bad('Certificate', `${NAME}-tls`, (o) => {
          o.spec.duration = 2160;
        }),
        apply: /\.spec\.duration: expected string, got/,
        create: /spec\.duration: Invalid value: "integer": spec\.duration in body must be of type string/,
      },
      same('a Certificate with a key algorithm cert-manager does not know', bad('Certificate', `${NAME}-tls`, (o) => {
        o.spec.privateKey.algorithm = 'DSA';
      }), /spec\.privateKey\.algorithm: Unsupported value: "DSA": supported values: "RSA", "ECDSA", "Ed25519"/),
      same('a Certificate without an issuerRef', bad('Certificate', `${NAME}-tls`, (o) => {
        delete o.spec.issuerRef;
      }), /spec\.issuerRef: Required value/),
      same('a PrometheusRule whose rule has no expr', bad('PrometheusRule', NAME, (o) => {
        delete o.spec.groups[0].rules[0].expr;
      }), /spec\.groups\[0\]\.rules\[0\]\.expr: Required value/),
      same('a PrometheusRule whose for is not a duration', bad('PrometheusRule', NAME, (o) => {
        o.spec.groups[0].rules[0].for = '1 hour';
      }), /spec\.groups\[0\]\.rules\[0\]\.for in body should match/),
      {
        what: 'a ServiceMonitor endpoint with a misspelt field',
        o: bad('ServiceMonitor', NAME, (o) => {
          o.spec.endpoints[0].intreval = o.spec.endpoints[0].interval;
        }),
        apply: /\.spec\.endpoints\[0\]\.intreval: field not declared in schema/,
        create: /unknown field "spec\.endpoints\[0\]\.intreval"/,
      },
      {
        what: 'an Issuer of a misspelt kind',
        o: bad('Issuer', `${NAME}-selfsigned`, (o) => {
          o.spec = { selfsigned: {} };
        }),
        apply: /\.spec\.selfsigned: field not declared in schema/,
        create: /unknown field "spec\.selfsigned"/,
      },
    ];
    for (const c of cases) {
      const dry = await apply([c.o], '--dry-run=server');
      t.not(dry.code, 0, `${c.what}: refused by a server-side apply dry run`);
      t.match(dry.stderr, c.apply, `${c.what}: ${c.apply.source}`);
      const create = await run(['create', '--validate=strict', '--dry-run=server', '-f', '-'], [c.o]);
      t.not(create.code, 0, `${c.what}: refused by a create dry run`);
      t.match(create.stderr, c.create, `${c.what}: ${c.create.source}`);
      // Without the dry run too: the real write path refuses it, and stores nothing.
      const real = await apply([c.o]);
      t.not(real.code, 0, `${c.what}: refused`);
      t.equal((await kube.request('GET', path(c.o))).status, 404, `${c.what}: not stored`);
    }
    // The same objects without their defects pass: the refusals are the defects'.
    const good = [...base.values()];
    const dry = await apply(good, '--dry-run=server');
    t.equal(dry.code, 0, `the same objects without their defects pass: ${dry.stderr}`);
  });
});

/** Each object is stored with its spec exactly as rendered: nothing pruned or changed. */
async function storedAsRendered(t: Test, kube: RealKube, objects: Obj[]): Promise<void> {
  for (const o of objects) {
    const stored = await kube.must<Obj>('GET', path(o));
    t.same(stored.spec, o.spec, `${id(o)} is stored as rendered`);
    t.match(stored.metadata.labels ?? {}, o.metadata.labels ?? {}, `${id(o)} keeps its labels`);
  }
}
