/**
 * `mirrorgate report`: from a running instance (--url, its metrics port) and from the
 * cluster's ConfigMap (--kubeconfig), as a table, as JSON, the list of images still to
 * copy and the copy commands; usage errors exit 2, an unreachable instance exits 1.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { main } from '../../src/cli.js';
import { REPORT_CONFIGMAP } from '../../src/kube/report-store.js';
import type { Report } from '../../src/report/rewrites.js';
import { serve, type Running } from '../../src/serve.js';
import { review } from '../support/app.js';
import { realKubeTestOptions, startRealKube } from '../support/kube-apiserver.js';
import { serveOptions } from '../support/serve.js';

// One test here starts a real etcd and kube-apiserver on a machine that may be busy.
t.setTimeout(300_000);

// Audit mode: nothing is rewritten, so every matched image is still to be copied.
const CONFIG = `mode: audit
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
  - from: quay.io
    to: mirror.example.com/quay
`;
const DIGEST = `sha256:${'ab'.repeat(32)}`;

function capture(): { out: string[]; err: string[]; io: { out(l: string): void; err(l: string): void } } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l) => out.push(l), err: (l) => err.push(l) } };
}

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-report-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function instance(t: Test): Promise<Running> {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.yaml'), CONFIG);
  const running = await serve(serveOptions(dir));
  t.teardown(() => running.shutdown('test over'));
  const admit = async (images: string[], namespace: string): Promise<void> => {
    const object = { apiVersion: 'v1', kind: 'Pod', metadata: { generateName: 'p-' }, spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } };
    await running.app.inject({ method: 'POST', url: '/mutate', payload: review({ object, namespace }).body });
  };
  await admit(['nginx:1.14.2', 'quay.io/acme/app:2'], 'team-a');
  await admit(['nginx:1.14.2', `redis:7@${DIGEST}`], 'team-b');
  await admit(['registry.k8s.io/pause:3.9'], 'team-b');
  return running;
}

t.test('report --url: a running instance', async (t) => {
  const running = await instance(t);
  const url = running.metricsUrl;

  t.test('table', async (t) => {
    const c = capture();
    t.equal(await main(['report', '--url', url], c.io), 0, c.err.join('\n'));
    const text = c.out.join('\n');
    t.match(text, /^mode: audit {3}generated: \d{4}-/);
    t.match(text, /REGISTRY\s+TARGET\s+REWRITTEN\s+WOULD\s+WOULD-DENY\s+SKIPPED\s+UNCHANGED\s+PENDING\s+MISSING\s+IMAGES\s+LAST SEEN/);
    t.notMatch(text, /\bDENIED\b/, 'audit denies nothing: no DENIED column');
    t.match(text, /\ndocker\.io\s+mirror\.example\.com\/dockerhub\s+0\s+3\s+0\s+0\s+0\s+2\s+0\s+2\s+\d{4}-/);
    t.match(text, /\nquay\.io\s+mirror\.example\.com\/quay\s+0\s+1\s+0\s+0\s+0\s+1\s+0\s+1\s/);
    t.match(text, /\nregistry\.k8s\.io\s+-\s+0\s+0\s+0\s+0\s+1\s+0\s+0\s+1\s/);
  });

  t.test('json: the report as GET /report has it', async (t) => {
    const c = capture();
    t.equal(await main(['report', '--url', `${url}/`, '--output', 'json'], c.io), 0, c.err.join('\n'));
    const report = JSON.parse(c.out.join('\n')) as Report;
    t.equal(report.mode, 'audit');
    t.match(report.registries['docker.io'], { wouldRewrite: 3, namespaces: ['team-a', 'team-b'] });
    t.same(Object.keys(report.registries), ['docker.io', 'quay.io', 'registry.k8s.io']);
  });

  t.test('--images: what is still pulled from outside, with its target', async (t) => {
    const c = capture();
    t.equal(await main(['report', '--url', url, '--images'], c.io), 0);
    t.same(c.out, [
      'docker.io/library/nginx:1.14.2 -> mirror.example.com/dockerhub/library/nginx:1.14.2',
      `docker.io/library/redis:7@${DIGEST} -> mirror.example.com/dockerhub/library/redis:7@${DIGEST}`,
      'quay.io/acme/app:2 -> mirror.example.com/quay/acme/app:2',
    ]);
    const j = capture();
    t.equal(await main(['report', '--url', url, '--images', '--output', 'json'], j.io), 0);
    t.same(JSON.parse(j.out.join('\n')), [
      { source: 'docker.io/library/nginx:1.14.2', target: 'mirror.example.com/dockerhub/library/nginx:1.14.2', registry: 'docker.io' },
      { source: `docker.io/library/redis:7@${DIGEST}`, target: `mirror.example.com/dockerhub/library/redis:7@${DIGEST}`, registry: 'docker.io' },
      { source: 'quay.io/acme/app:2', target: 'mirror.example.com/quay/acme/app:2', registry: 'quay.io' },
    ]);
  });

  const tools = [
    {
      tool: 'gcrane',
      want: [
        'gcrane cp docker.io/library/nginx:1.14.2 mirror.example.com/dockerhub/library/nginx:1.14.2',
        `gcrane cp docker.io/library/redis:7@${DIGEST} mirror.example.com/dockerhub/library/redis:7@${DIGEST}`,
        'gcrane cp quay.io/acme/app:2 mirror.example.com/quay/acme/app:2',
      ],
    },
    {
      tool: 'crane',
      want: [
        'crane copy docker.io/library/nginx:1.14.2 mirror.example.com/dockerhub/library/nginx:1.14.2',
        `crane copy docker.io/library/redis:7@${DIGEST} mirror.example.com/dockerhub/library/redis:7@${DIGEST}`,
        'crane copy quay.io/acme/app:2 mirror.example.com/quay/acme/app:2',
      ],
    },
    {
      tool: 'skopeo',
      want: [
        'skopeo copy --all --preserve-digests docker://docker.io/library/nginx:1.14.2 docker://mirror.example.com/dockerhub/library/nginx:1.14.2',
        // skopeo takes a tag or a digest, not both: pull by digest, push to the tag.
        `skopeo copy --all --preserve-digests docker://docker.io/library/redis@${DIGEST} docker://mirror.example.com/dockerhub/library/redis:7`,
        'skopeo copy --all --preserve-digests docker://quay.io/acme/app:2 docker://mirror.example.com/quay/acme/app:2',
      ],
    },
  ];
  for (const c of tools) {
    t.test(`--copy-commands ${c.tool}`, async (t) => {
      const o = capture();
      t.equal(await main(['report', '--url', url, '--copy-commands', c.tool], o.io), 0);
      t.same(o.out, c.want);
    });
  }
});

t.test('report --copy-commands with nothing left to copy says so', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'config.yaml'), 'mode: enforce\nrules: []\n');
  const running = await serve(serveOptions(dir));
  t.teardown(() => running.shutdown('test over'));
  const c = capture();
  t.equal(await main(['report', '--url', running.metricsUrl, '--copy-commands', 'crane'], c.io), 0);
  t.same(c.out, []);
  t.match(c.err, [/nothing left to copy/]);
  const table = capture();
  t.equal(await main(['report', '--url', running.metricsUrl], table.io), 0);
  t.match(table.out.join('\n'), /\(no admissions recorded yet\)/);
});

function entry(over: Record<string, unknown>): Record<string, unknown> {
  return {
    target: 'mirror.example.com/dockerhub',
    rewritten: 0,
    wouldRewrite: 0,
    denied: 0,
    skipped: 0,
    unchanged: 0,
    images: [],
    imagesOverflow: 0,
    missing: [],
    missingOverflow: 0,
    namespaces: [],
    namespacesOverflow: 0,
    pending: {},
    pendingOverflow: 0,
    copied: 0,
    copyFailed: 0,
    firstSeen: '2026-11-22T10:00:00.000Z',
    lastSeen: '2026-11-22T10:00:00.000Z',
    ...over,
  };
}

function key(registries: Record<string, unknown>): string {
  return JSON.stringify({ updatedAt: new Date().toISOString(), report: { generatedAt: new Date().toISOString(), mode: 'enforce', registries } });
}

// Against the real API server, stopped at the end to show an unreachable cluster.
t.test('report --kubeconfig: the merged report from the ConfigMap', realKubeTestOptions(), async (t) => {
  const kube = await startRealKube();
  t.teardown(() => kube.stop());
  await kube.must('POST', '/api/v1/namespaces', { metadata: { name: 'mg-system' } });
  // Outside the server's folder (which stop() removes), the CA inline: the same kubeconfig
  // must still exist once the server is gone.
  const kcDir = await mkdtemp(join(tmpdir(), 'mg-report-kc-'));
  t.teardown(() => rm(kcDir, { recursive: true, force: true }));
  const kc = JSON.parse(readFileSync(kube.adminKubeconfig, 'utf8')) as { clusters: { cluster: Record<string, string> }[] };
  for (const c of kc.clusters) {
    c.cluster['certificate-authority-data'] = readFileSync(c.cluster['certificate-authority'] as string).toString('base64');
    delete c.cluster['certificate-authority'];
  }
  const kubeconfig = join(kcDir, 'kubeconfig');
  await writeFile(kubeconfig, JSON.stringify(kc), { mode: 0o600 });

  const none = capture();
  t.equal(await main(['report', '--kubeconfig', kubeconfig, '--namespace', 'mg-system'], none.io), 1, 'no ConfigMap yet: exit 1');
  t.match(none.err.join('\n'), /no ConfigMap mirrorgate-report yet/);

  await kube.must('POST', '/api/v1/namespaces/mg-system/configmaps', {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: REPORT_CONFIGMAP, namespace: 'mg-system' },
    data: {
      'pod-a': key({ 'docker.io': entry({ rewritten: 4, images: ['docker.io/library/nginx:1.14.2'], namespaces: ['team-a'] }) }),
      'pod-b': key({
        'docker.io': entry({ rewritten: 3, skipped: 1, namespaces: ['team-b'], pending: { 'docker.io/library/redis:7': 'mirror.example.com/dockerhub/library/redis:7' }, lastSeen: '2026-11-22T11:00:00.000Z' }),
        'ghcr.io': entry({ target: undefined, denied: 2, unchanged: 2 }),
      }),
      'pod-junk': 'not a report',
    },
  });

  const c = capture();
  t.equal(await main(['report', '--kubeconfig', kubeconfig, '--namespace', 'mg-system'], c.io), 0, c.err.join('\n'));
  t.match(c.out.join('\n'), /\ndocker\.io\s+mirror\.example\.com\/dockerhub\s+7\s+0\s+0\s+1\s+0\s+1\s+0\s+1\s+2026-11-22T11:00:00\.000Z/);
  t.match(c.out.join('\n'), /\nghcr\.io\s+-\s+0\s+0\s+2\s+0\s+2\s/);

  const j = capture();
  t.equal(await main(['report', '--kubeconfig', kubeconfig, '--namespace', 'mg-system', '--output', 'json'], j.io), 0);
  const report = JSON.parse(j.out.join('\n')) as Report;
  t.match(report.registries['docker.io'], { rewritten: 7, skipped: 1, namespaces: ['team-a', 'team-b'] });

  const s = capture();
  t.equal(await main(['report', '--kubeconfig', kubeconfig, '--namespace', 'mg-system', '--copy-commands', 'skopeo'], s.io), 0);
  t.same(s.out, ['skopeo copy --all --preserve-digests docker://docker.io/library/redis:7 docker://mirror.example.com/dockerhub/library/redis:7']);

  await kube.stop();
  const down = capture();
  t.equal(await main(['report', '--kubeconfig', kubeconfig, '--namespace', 'mg-system'], down.io), 1, 'API down: exit 1');
  t.match(down.err.join('\n'), /^mirrorgate: .+/);
});

t.test('an unreachable instance exits 1 with a clear message', async (t) => {
  const running = await instance(t);
  const url = running.metricsUrl;
  await running.shutdown('gone');
  const c = capture();
  t.equal(await main(['report', '--url', url], c.io), 1);
  t.match(c.err.join('\n'), new RegExp(`^mirrorgate: cannot reach ${url}/report: ECONNREFUSED`));

  const notReport = capture();
  t.equal(await main(['report', '--url', 'http://127.0.0.1:1'], notReport.io), 1);
});

t.test('an instance that answers something else exits 1 naming it', async (t) => {
  const running = await instance(t);
  // /metrics is not a report: point --url at a path under which /report is 404.
  const c = capture();
  t.equal(await main(['report', '--url', `${running.metricsUrl}/metrics/`], c.io), 1);
  t.match(c.err.join('\n'), /\/metrics\/report: HTTP 404/);
});

const usage = [
  { name: 'both sources', args: ['report', '--url', 'http://127.0.0.1:9090', '--kubeconfig', 'k'], want: /--url and --kubeconfig exclude each other/ },
  { name: 'bad output', args: ['report', '--url', 'http://x', '--output', 'yaml'], want: /--output: table, json or csv \(got yaml\)/ },
  { name: 'bad tool', args: ['report', '--url', 'http://x', '--copy-commands', 'docker'], want: /--copy-commands: gcrane, skopeo or crane \(got docker\)/ },
  { name: 'arguments', args: ['report', 'extra'], want: /report takes no arguments/ },
  { name: 'unknown option', args: ['report', '--bogus'], want: /Unknown option '--bogus'/ },
  { name: 'bad namespace', args: ['report', '--kubeconfig', 'k', '--namespace', 'Not_A_Name'], want: /--namespace: not a Kubernetes name/ },
  { name: 'not a URL', args: ['report', '--url', 'not a url'], want: /--url: not an http or https URL/ },
  { name: 'not http', args: ['report', '--url', 'ftp://127.0.0.1/'], want: /--url: not an http or https URL/ },
];
for (const c of usage) {
  t.test(`usage: ${c.name} exits 2`, async (t) => {
    const o = capture();
    t.equal(await main(c.args, o.io), 2);
    t.match(o.err.join('\n'), c.want);
  });
}

t.test('a kubeconfig that does not exist exits 2 naming it', async (t) => {
  const dir = await tempDir(t);
  const o = capture();
  t.equal(await main(['report', '--kubeconfig', join(dir, 'nope')], o.io), 2);
  t.match(o.err.join('\n'), /kubeconfig .*nope does not exist/);
});
