import t, { type Test } from 'tap';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli.js';
import { applyEdits, type Finding, type ScanSummary } from '../../src/scan/scan.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/scan/', import.meta.url));
const CONFIG = join(FIXTURES, 'config.yaml');
const POLICY_CONFIG = join(FIXTURES, 'config-policy.yaml');

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(['scan', ...argv], { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** A fresh copy of the input fixtures in a temporary folder. */
async function workspace(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorgate-scan-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(join(FIXTURES, 'input'), dir, { recursive: true });
  return dir;
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/** Every file of `dir` equals the expected fixture byte for byte, and no file is missing or extra. */
async function sameAsExpected(t: Test, dir: string): Promise<void> {
  const expectedDir = join(FIXTURES, 'expected');
  const files = await listFiles(expectedDir);
  t.same(await listFiles(dir), files, 'same files');
  for (const f of files) {
    const got = await readFile(join(dir, f));
    const want = await readFile(join(expectedDir, f));
    // On a mismatch, show a readable diff as well.
    if (!t.ok(got.equals(want), `${f} byte for byte`)) t.equal(got.toString('utf8'), want.toString('utf8'), f);
  }
}

type Json = { findings: Finding[]; summary: ScanSummary; problems: { file: string; message: string; fatal: boolean }[] };

t.test('--write rewrites in place exactly as expected, then changes nothing', async (t) => {
  const dir = await workspace(t);
  const first = await run('--config', CONFIG, '--write', dir);
  t.equal(first.code, 0, first.err);
  t.match(first.out, /wrote 15 references in 3 files; 1 third-party remaining/);
  t.match(first.err, /chart[/\\]templates[/\\]deployment\.yaml:1: a template, not YAML until rendered/);
  await sameAsExpected(t, dir);

  const second = await run('--config', CONFIG, '--write', '--output', 'json', dir);
  t.equal(second.code, 0);
  const json = JSON.parse(second.out) as Json;
  t.equal(json.summary.written, 0, 'nothing left to write');
  t.equal(json.summary.filesWritten, 0);
  await sameAsExpected(t, dir);
});

t.test('the expected files are a fixed point: scanning them finds nothing to rewrite', async (t) => {
  const r = await run('--config', CONFIG, '--output', 'json', join(FIXTURES, 'expected'));
  const json = JSON.parse(r.out) as Json;
  t.equal(json.summary.rewritable, 0);
  t.same(
    json.findings.filter((f) => f.thirdParty).map((f) => `${relative(join(FIXTURES, 'expected'), f.file)}:${f.line}`),
    [join('docker', 'tools.Dockerfile') + ':5'],
    'only the reference built from build args stays third-party',
  );
});

t.test('references that must not change', async (t) => {
  const r = await run('--config', CONFIG, '--output', 'json', join(FIXTURES, 'input'));
  const json = JSON.parse(r.out) as Json;
  const byImage = (image: string): Finding | undefined => json.findings.find((f) => f.image === image);
  t.match(byImage('registry.k8s.io/pause:3.9'), { status: 'no-rule', thirdParty: false, rewritten: null, registry: 'registry.k8s.io' });
  t.match(byImage('mirror.example.com/dockerhub/library/redis:7.2'), { status: 'on-target', thirdParty: false });
  t.match(byImage('quay.io/coreos/etcd:v3.5.9'), { status: 'no-rule', thirdParty: false, policy: 'none' });
  t.match(byImage('{{ .Values.exporter.image }}'), { status: 'templated', registry: null, thirdParty: false, note: /templated/ });
  t.match(byImage('Acme/UPPER:1'), { status: 'invalid', registry: null, note: /repository name must be lowercase/ });
  t.notOk(json.findings.some((f) => f.image.includes('heredoc')), 'heredoc body is not an instruction');
});

t.test('json output shape', async (t) => {
  const r = await run('--config', CONFIG, '--output', 'json', join(FIXTURES, 'input'));
  t.equal(r.code, 0);
  const json = JSON.parse(r.out) as Json;
  t.same(Object.keys(json).sort(), ['findings', 'problems', 'summary']);
  t.match(json.summary, {
    files: 6,
    references: 27,
    thirdParty: 16,
    rewritable: 15,
    written: 0,
    remaining: 16,
    invalid: 1,
    templated: 3,
    problems: 1,
    registries: {
      'docker.io': { references: 12, thirdParty: 12, targets: ['mirror.example.com/dockerhub'] },
      'gcr.io': { references: 2, thirdParty: 2, targets: ['mirror.example.com/gcr'] },
      'quay.io': { references: 4, thirdParty: 2, targets: ['mirror.example.com/prom'] },
      'registry.k8s.io': { references: 2, thirdParty: 0, targets: [] },
    },
  });
  const nginx = json.findings.find((f) => f.image === 'nginx:1.25-alpine');
  t.same(nginx, {
    file: join(FIXTURES, 'input', 'k8s', 'web.yaml'),
    line: 29,
    column: 18,
    type: 'manifest',
    context: 'Deployment/web containers[1] (proxy)',
    image: 'nginx:1.25-alpine',
    registry: 'docker.io',
    status: 'rewrite',
    rewritten: 'mirror.example.com/dockerhub/library/nginx:1.25-alpine',
    rule: 'rules[0] docker.io -> mirror.example.com/dockerhub',
    policy: 'none',
    thirdParty: true,
    rewritable: true,
    written: false,
    note: null,
  });
  t.match(json.findings.find((f) => f.image === 'node:20.11-bookworm'), { type: 'dockerfile', line: 7, context: 'FROM (stage deps)', note: /from ARG NODE_IMAGE/ });
  t.same(json.problems, [{ file: join(FIXTURES, 'input', 'chart', 'templates', 'deployment.yaml') + ':1', message: 'a template, not YAML until rendered: skipped (scan the rendered output)', fatal: false }]);
  // Findings come file by file (folders walked in name order), in line order within a file.
  const order = json.findings.map((f) => [relative(FIXTURES, f.file), f.line] as const);
  const sorted = [...order].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]));
  t.same(order, sorted);
});

t.test('text output groups third-party references by registry', async (t) => {
  const dir = await workspace(t);
  const r = await run('--config', CONFIG, dir);
  t.equal(r.code, 0);
  const lines = r.out.split('\n');
  t.equal(lines[0], 'docker.io -> mirror.example.com/dockerhub: 12 third-party references');
  t.ok(lines.includes(`  ${join(dir, 'k8s', 'web.yaml')}:29  nginx:1.25-alpine -> mirror.example.com/dockerhub/library/nginx:1.25-alpine`));
  t.ok(lines.includes(`  ${join(dir, 'k8s', 'web.yaml')}:25  acme/web:2.4.1 -> mirror.example.com/dockerhub/acme/web:2.4.1  (from anchor &app (line 21))`));
  t.ok(lines.includes('gcr.io -> mirror.example.com/gcr: 2 third-party references'));
  t.match(r.out, /tools\.Dockerfile:5 {2}docker\.io\/library\/python:3\.12-slim -> \S+ {2}\(not rewritable; built from build arguments \(REGISTRY\)/);
  t.ok(lines.includes('not third-party: mcr.microsoft.com (1), mirror.example.com (2), quay.io (2), registry.k8s.io (2)'));
  t.match(r.out, /invalid: 1 reference\n {2}\S+batch\.yml:58 {2}invalid image reference "Acme\/UPPER:1"/);
  t.match(r.out, /skipped: 3 templated references/);
  t.match(r.out, /27 references in 6 files, 16 third-party \(15 rewritable\), 3 templated, 1 invalid\nrun with --write to rewrite 15 references in place$/);
  t.ok(lines.indexOf('gcr.io -> mirror.example.com/gcr: 2 third-party references') > lines.indexOf(lines[0] ?? ''), 'registries sorted');
});

t.test('--check exit codes', async (t) => {
  const dir = await workspace(t);
  const k8s = join(dir, 'k8s');
  t.equal((await run('--config', CONFIG, '--check', k8s)).code, 1, 'third-party references present');
  t.equal((await run('--config', CONFIG, '--check', '--write', k8s)).code, 0, 'all rewritten by --write: nothing remains');
  t.equal((await run('--config', CONFIG, '--check', k8s)).code, 0, 'clean afterwards');
  const withPolicy = await run('--config', POLICY_CONFIG, '--check', '--output', 'json', k8s);
  t.equal(withPolicy.code, 1, 'a policy makes disallowed registries third-party');
  const json = JSON.parse(withPolicy.out) as Json;
  t.same(
    json.findings.filter((f) => f.thirdParty).map((f) => [f.image, f.status, f.policy]),
    [
      ['quay.io/coreos/etcd:v3.5.9', 'no-rule', 'denied'],
      ['Acme/UPPER:1', 'invalid', 'denied'],
    ],
  );
  const docker = join(dir, 'docker');
  t.equal((await run('--config', CONFIG, '--check', '--write', docker)).code, 1, 'a reference --write cannot rewrite remains');
  t.equal((await run('--config', CONFIG, join(dir, 'docker', 'Containerfile'))).code, 0, 'no --check: 0');
});

t.test('walking folders: YAML and Dockerfile names only, node_modules and .git skipped', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorgate-scan-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const files: Record<string, string> = {
    'Dockerfile': 'FROM a:1\n',
    'Dockerfile.dev': 'FROM b:1\n',
    'api.Dockerfile': 'FROM c:1\n',
    'Containerfile': 'FROM d:1\n',
    'deploy/pod.yml': 'kind: Pod\nspec: {containers: [{image: e:1}]}\n',
    'deploy/notes.txt': 'FROM nope:1\n',
    'deploy/pod.json': '{"kind": "Pod", "spec": {"containers": [{"image": "nope:2"}]}}\n',
    'node_modules/pkg/Dockerfile': 'FROM nope:3\n',
    '.git/Dockerfile': 'FROM nope:4\n',
  };
  for (const [name, text] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  const r = await run('--config', CONFIG, '--output', 'json', dir);
  const json = JSON.parse(r.out) as Json;
  t.same(json.findings.map((f) => f.image).sort(), ['a:1', 'b:1', 'c:1', 'd:1', 'e:1']);
  const named = await run('--config', CONFIG, '--output', 'json', join(dir, 'deploy', 'pod.json'));
  t.same((JSON.parse(named.out) as Json).findings.map((f) => f.image), ['nope:2'], 'a file named explicitly is read as YAML (JSON is YAML)');
});

t.test('errors: usage and config errors exit 2, unreadable paths exit 1', async (t) => {
  const noPath = await run('--config', CONFIG);
  t.equal(noPath.code, 2);
  t.match(noPath.err, /scan needs at least one PATH/);
  t.equal((await run('--config', CONFIG, '--output', 'yaml', FIXTURES)).code, 2);
  t.match((await run(FIXTURES)).err, /--config FILE is required/);
  t.equal((await run('--config', CONFIG, '--frobnicate', FIXTURES)).code, 2);
  t.equal((await run('--config', join(FIXTURES, 'input', 'k8s', 'web.yaml'), FIXTURES)).code, 2, 'not a config file');

  const missing = join(tmpdir(), 'mirrorgate-scan-does-not-exist');
  const r = await run('--config', CONFIG, join(FIXTURES, 'input', 'docker'), missing);
  t.equal(r.code, 1);
  t.match(r.err, `${missing}: cannot read`);
  t.match(r.out, /docker\.io -> mirror\.example\.com\/dockerhub/, 'the readable paths are still reported');

  const dir = await mkdtemp(join(tmpdir(), 'mirrorgate-scan-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'broken.yaml'), 'kind: Pod\nspec: {containers: [\n');
  const broken = await run('--config', CONFIG, dir);
  t.equal(broken.code, 1, 'YAML that is not a template and does not parse makes the scan incomplete');
  t.match(broken.err, /broken\.yaml:\d+: not valid YAML/);
});

t.test('applyEdits', async (t) => {
  t.equal(applyEdits('a b c', [{ start: 4, end: 5, text: 'Z' }, { start: 0, end: 1, text: 'X' }]), 'X b Z');
  t.equal(applyEdits('abc', [{ start: 1, end: 2, text: 'Q' }, { start: 1, end: 2, text: 'Q' }]), 'aQc', 'same edit twice counts once');
  t.throws(() => applyEdits('abc', [{ start: 1, end: 2, text: 'Q' }, { start: 1, end: 2, text: 'R' }]), /conflicting/);
  t.throws(() => applyEdits('abc', [{ start: 0, end: 2, text: 'Q' }, { start: 1, end: 3, text: 'R' }]), /overlapping/);
});
