/**
 * The release pin (scripts/pin-image.sh, run by the CI workflow on a tag): on a copy of
 * charts/ and manifests/, the real helm and kubectl kustomize then render the image by
 * digest, everywhere it appears; a bad digest changes nothing.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { helm, helmOk } from '../support/k8s-tools.js';
import { kustomize, parseYamlStream, type Obj } from '../support/render.js';

const ROOT = join(import.meta.dirname, '../..');
const DIGEST = `sha256:${'0123456789abcdef'.repeat(4)}`;
const REPO = 'ghcr.io/acme/mirrorgate';

function pin(dir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['scripts/pin-image.sh', ...args], { cwd: dir }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

async function copy(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-release-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const d of ['charts', 'manifests', 'scripts']) await cp(join(ROOT, d), join(dir, d), { recursive: true });
  return dir;
}

const images = (objs: Obj[]): string[] => objs.filter((o) => o.kind === 'Deployment').flatMap((d) => (d.spec.template.spec.containers as Obj[]).map((c) => c.image as string));

t.test('a release pins the image by digest in the chart and in every kustomize build', async (t) => {
  const dir = await copy(t);
  const r = await pin(dir, REPO, DIGEST, 'v1.2.0');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, `pinned ${REPO}@${DIGEST} (1.2.0)`);

  const chart = join(dir, 'charts/mirrorgate');
  const lint = await helm(['lint', '--strict', chart]);
  t.equal(lint.code, 0, lint.stdout + lint.stderr);
  const rendered = parseYamlStream(await helmOk(['template', 'mirrorgate', chart, '--namespace', 'mirrorgate']), 'helm template');
  t.same(images(rendered), [`${REPO}@${DIGEST}`], 'helm renders the digest');
  t.equal(find(rendered, 'Deployment').metadata.labels['app.kubernetes.io/version'], '1.2.0', 'and the release version');

  const overlays = await readdir(join(dir, 'manifests/overlays'));
  for (const build of ['base', ...overlays.map((o) => `overlays/${o}`)]) {
    t.same(images(await kustomize(join(dir, 'manifests', build))), [`${REPO}@${DIGEST}`], `kustomize ${build} renders the digest`);
  }

  const again = await pin(dir, REPO, `sha256:${'f'.repeat(64)}`, '1.2.1');
  t.equal(again.code, 0, 'a later release pins again over a pinned tree');
  t.same(images(await kustomize(join(dir, 'manifests/base'))), [`${REPO}@sha256:${'f'.repeat(64)}`]);
});

t.test('a bad digest, repository or version is refused and changes nothing', async (t) => {
  const dir = await copy(t);
  const before = await readFile(join(dir, 'charts/mirrorgate/values.yaml'), 'utf8');
  for (const args of [[REPO, 'latest', '1.0.0'], [REPO, 'sha256:abc', '1.0.0'], ['Not A Repo', DIGEST, '1.0.0'], [REPO, DIGEST, 'main']]) {
    const r = await pin(dir, ...args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, /^pin-image: not a/);
  }
  t.equal(await readFile(join(dir, 'charts/mirrorgate/values.yaml'), 'utf8'), before);
});

t.test('the workflow publishes on a tag and pins with this script', async (t) => {
  const workflow = await readFile(join(ROOT, '.github/workflows/image.yml'), 'utf8');
  t.match(workflow, /scripts\/pin-image\.sh "\$\{image\}" "\$\{DIGEST\}" "\$\{GITHUB_REF_NAME\}"/);
  t.match(workflow, /sbom: true/);
  t.match(workflow, /provenance: mode=max/);
  t.match(workflow, /platforms: linux\/amd64,linux\/arm64/);
});

function find(objs: Obj[], kind: string): Obj {
  const o = objs.find((x) => x.kind === kind);
  if (!o) throw new Error(`no ${kind}`);
  return o;
}
