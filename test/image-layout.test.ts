/**
 * No Docker engine runs here, so the final image stage is rebuilt by hand the way the
 * Dockerfile does it: a clean folder with package.json, exactly the packages npm counts
 * as production dependencies of the lockfile (`npm ls --omit=dev`, copied from the
 * local install: tests download nothing), dist/ compiled into it by the local TypeScript
 * (so `npm test` alone works in a fresh clone, before any build), then `mirrorgate --help`.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;

t.test('Dockerfile: multi-stage, production deps only, numeric non-root user, no build tools at run time', async (t) => {
  const text = await readFile(join(root, 'Dockerfile'), 'utf8');
  const stages = [...text.matchAll(/^FROM\s+(\S+)\s+AS\s+(\S+)/gm)].map((m) => ({ image: m[1], name: m[2] }));
  t.ok(stages.length >= 2, 'multi-stage');
  const final = text.slice(text.lastIndexOf('\nFROM '));
  t.match(final, /distroless/, 'the runtime image has no shell or package manager');
  t.match(final, /^USER \d+:\d+$/m, 'numeric non-root user');
  t.notMatch(final, /^RUN /m, 'nothing is built in the final stage');
  t.match(text, /npm ci --omit=dev/, 'production dependencies only');
  const ignore = await readFile(join(root, '.dockerignore'), 'utf8');
  t.match(ignore, /^\*$/m, '.dockerignore excludes everything not named');
  t.notMatch(ignore, /^!.*certs/m, 'certs are never sent to the build');
});

t.test('the runtime layout installs from the lockfile and runs mirrorgate --help', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mg-image-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const f of ['package.json', 'package-lock.json']) await cp(join(root, f), join(dir, f));
  const { stdout } = await run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, timeout: 60_000 });
  const packages = stdout.split('\n').filter((p) => p.includes('/node_modules/'));
  t.ok(packages.length > 20, `${packages.length} production packages`);
  for (const p of packages) {
    const rel = p.slice(root.length);
    // Nested node_modules are listed (and copied) on their own when they are production deps.
    await cp(p, join(dir, rel), { recursive: true, filter: (src) => src === p || !src.slice(p.length).includes('/node_modules/') });
  }
  // The image's build stage runs `npm run build`; the same compiler and options here.
  await run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(dir, 'dist')], { cwd: root, timeout: 300_000 });
  await cp(join(root, 'config/example.yaml'), join(dir, 'config/example.yaml'));
  for (const dev of ['typescript', 'tap', 'eslint', 'tsx']) {
    await t.rejects(stat(join(dir, 'node_modules', dev)), `${dev} is not in the image`);
  }
  const help = await run(process.execPath, [join(dir, 'dist/cli.js'), '--help'], { cwd: dir, env: { ...process.env, NODE_ENV: 'production' } });
  t.match(help.stdout, /mirrorgate serve --config FILE/);
  const rewrite = await run(process.execPath, [join(dir, 'dist/cli.js'), 'rewrite', '--config', join(dir, 'config/example.yaml'), 'nginx:1.14.2'], { cwd: dir });
  t.match(rewrite.stdout, /nginx:1.14.2 -> mirror.example.com\/dockerhub\/library\/nginx:1.14.2/);
});
