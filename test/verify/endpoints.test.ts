import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { parseReference } from '../../src/core/reference.js';
import { endpointFor, loadEndpoints } from '../../src/verify/endpoints.js';

function hostOf(image: string): string {
  const r = parseReference(image);
  if (!r.ok) throw new Error(r.reason);
  return r.ref.registry;
}

t.test('registry settings are found under every name of a registry', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorgate-endpoints-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.json');
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  await writeFile(file, JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64('hub:pw') }, 'Mirror.Example.com': { auth: b64('m:pw') } } }));
  const config = validateConfig({
    registries: {
      'registry-1.docker.io': { auth: { file } },
      'MIRROR.example.com': { auth: { file } },
    },
  });
  t.same(Object.keys(config.registries).sort(), ['docker.io', 'mirror.example.com'], 'kept under the settings key');
  const warnings: string[] = [];
  const table = await loadEndpoints(config.registries, { log: { warn: (_o, msg) => warnings.push(msg) } });
  t.same(warnings, []);
  for (const image of ['nginx:1', 'docker.io/library/nginx:1', 'index.docker.io/bitnami/redis', 'DOCKER.IO/evil']) {
    t.same(endpointFor(table, hostOf(image)).auth, { username: 'hub', password: 'pw' }, `${image}: registries[registry-1.docker.io] applies`);
  }
  t.same(endpointFor(table, hostOf('Mirror.EXAMPLE.com/x:1')).auth, { username: 'm', password: 'pw' }, 'host case ignored');
  t.same(endpointFor(table, hostOf('docker.io.evil.com/x:1')), { host: 'docker.io.evil.com' }, 'a look-alike gets no settings');
  t.same(endpointFor(table, hostOf('Other.example.com:5000/x')), { host: 'Other.example.com:5000' }, 'unconfigured: the host as written');
});

t.test('two spellings of one registry are one entry', async (t) => {
  t.throws(() => validateConfig({ registries: { 'docker.io': null, 'registry-1.docker.io': null } }), /the same registry as registries\["docker.io"\]/);
});
