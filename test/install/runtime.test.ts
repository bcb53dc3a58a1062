/**
 * One supported runtime, said the same everywhere: package.json's engines (and the
 * lockfile's copy), the image's build and runtime stages, and the Node.js that
 * `make test` runs the suite on a second time (scripts/node24.sh).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

const ROOT = join(import.meta.dirname, '../..');
const read = (f: string): string => readFileSync(join(ROOT, f), 'utf8');

t.test('engines, lockfile, image and the second test run name one Node.js major', async (t) => {
  const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
  const major = Number(/^>=(\d+)$/.exec(engines)?.[1]);
  t.equal(major, 24, `engines ${engines}: Node.js 24 LTS and later`);
  const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { engines?: { node?: string } }> };
  t.equal(lock.packages['']?.engines?.node, engines, 'the lockfile says the same (npm ci reads it)');

  const dockerfile = read('Dockerfile');
  const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1] as string);
  t.ok(froms.length >= 2, froms.join(', '));
  for (const from of froms) t.match(from, new RegExp(`(^node:${major}-|/nodejs${major}-)`), `${from} is Node.js ${major}`);

  const pinned = /^version=(\d+)\.(\d+)\.(\d+)$/m.exec(read('scripts/node24.sh'));
  t.equal(Number(pinned?.[1]), major, `the second test run is on ${pinned?.slice(1).join('.') ?? '?'}`);
  t.match(read('Makefile'), /bash scripts\/node24\.sh/, 'make test runs it');
});
