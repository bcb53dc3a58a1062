/**
 * The test helper that provides the real kubectl and helm: the binaries run and are the
 * versions the layer package promises, and concurrent first uses against an empty cache
 * (as tap's parallel test processes do) end with one complete copy and no leftovers.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { helmOk, helmPath, kubectlOk, kubectlPath, toolsCacheDir } from '../support/k8s-tools.js';

t.test('kubectl (with kustomize) and helm run from the cache, outside the repository', async (t) => {
  const kc = await kubectlPath();
  t.ok(kc.startsWith(toolsCacheDir()), 'unpacked under the tools cache');
  t.notOk(kc.includes('node_modules'), 'not inside node_modules');
  t.equal(await kubectlPath(), kc, 'unpacked once per process');
  const v = JSON.parse(await kubectlOk(['version', '--client', '-o', 'json']));
  t.match(v.clientVersion.gitVersion, /^v1\.35\.\d+$/);
  t.match(v.kustomizeVersion, /^v5\.\d+\.\d+$/);
  t.match((await helmOk(['version', '--short'])).trim(), /^v[34]\.\d+\.\d+/);
  t.ok((await helmPath()).endsWith('/helm/helm'));
});

t.test('two processes unpacking into an empty cache at once both get one complete copy', async (t) => {
  const cache = await mkdtemp(join(tmpdir(), 'mg-tools-cache-'));
  t.teardown(() => rm(cache, { recursive: true, force: true }));
  const helper = fileURLToPath(new URL('../support/k8s-tools.ts', import.meta.url));
  const script = `import(${JSON.stringify(helper)}).then(async (m) => { console.log(await m.kubectlPath()); })`;
  const one = (): Promise<string> => new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '-e', script], { env: { ...process.env, MIRRORGATE_TOOLS_CACHE: cache } },
      (err, stdout, stderr) => (err === null ? resolve(stdout.trim()) : reject(new Error(`${err.message}\n${stderr}`))));
  });
  const [a, b] = await Promise.all([one(), one()]);
  t.equal(a, b, 'the same path');
  t.ok(a.startsWith(cache));
  const entries = await readdir(join(cache, 'k8s-tools'));
  t.equal(entries.length, 1, `one folder, no temporary leftovers: ${entries.join(', ')}`);
  const v = JSON.parse(await new Promise<string>((resolve, reject) => {
    execFile(a, ['version', '--client', '-o', 'json'], (err, out) => (err === null ? resolve(out) : reject(new Error(err.message))));
  }));
  t.match(v.clientVersion.gitVersion, /^v1\.35\./, 'the copy runs');
});
