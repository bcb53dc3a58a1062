import t from 'tap';
import { ConfigError, validateConfig } from '../../src/config/schema.js';

function problems(raw: unknown): string[] {
  try {
    validateConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

t.test('defaults: no registries, timeoutMs 500, cache 3600/30, onUnreachable original', async (t) => {
  const c = validateConfig({});
  t.same(c.registries, {});
  t.same(c.verification, { timeoutMs: 500, cacheSeconds: { present: 3600, absent: 30 }, refreshSeconds: 60, onUnreachable: 'original', platforms: 'nodes' });
  t.same(validateConfig({ verification: {} }).verification, c.verification, 'an empty section is the defaults');
  t.same(validateConfig({ verification: { cacheSeconds: { absent: 5 } } }).verification.cacheSeconds, { present: 3600, absent: 5 }, 'keys default one by one');
});

t.test('refreshSeconds and pinDigest: the README example is valid and compiled as written', async (t) => {
  const c = validateConfig({
    rules: [{ from: 'docker.io', to: ['mirror-a.example.com/hub', 'mirror-b.example.com/hub'], verify: true, pinDigest: true }],
    verification: { refreshSeconds: 30, cacheSeconds: { present: 600 } },
  });
  t.equal(c.verification.refreshSeconds, 30);
  t.equal(c.ruleSet.rules[0]?.pinDigest, true);
  t.equal(validateConfig({ verification: { refreshSeconds: 0 } }).verification.refreshSeconds, 0, '0: off');
  t.equal(validateConfig({ rules: [{ from: 'docker.io', to: 'm.example.com/hub', verify: true }] }).ruleSet.rules[0]?.pinDigest, false, 'off by default');
});

t.test('the README example is valid and compiled as written', async (t) => {
  const c = validateConfig({
    rules: [{ from: 'docker.io', to: 'mirror.example.com/dockerhub', verify: true }],
    registries: {
      'mirror.example.com': { ca: '/etc/mirrorgate/ca/mirror.crt', insecure: false, auth: { secret: 'mirror-pull' } },
      'Registry.Local:5000': { insecure: true, auth: { file: 'docker-config.json' } },
      'index.docker.io': null,
    },
    verification: { timeoutMs: 500, cacheSeconds: { present: 3600, absent: 30 }, onUnreachable: 'deny' },
  });
  t.same(c.registries, {
    'mirror.example.com': { ca: '/etc/mirrorgate/ca/mirror.crt', insecure: false, auth: { secret: 'mirror-pull' } },
    'registry.local:5000': { ca: undefined, insecure: true, auth: { file: 'docker-config.json' } },
    'docker.io': { ca: undefined, insecure: false, auth: undefined },
  }, 'hosts normalised as image references name them');
  t.equal(c.verification.onUnreachable, 'deny');
  t.ok(Object.isFrozen(c.registries) && Object.isFrozen(c.verification.cacheSeconds), 'frozen');
  t.equal(c.ruleSet.rules[0]?.verify, true);
});

t.test('cloud identity sources are compiled as written', async (t) => {
  const c = validateConfig({
    registries: {
      'us-docker.pkg.dev': { auth: { google: {} } },
      '123456789012.dkr.ecr.eu-west-1.amazonaws.com': { auth: { aws: {} } },
      'ecr-proxy.example.com': { auth: { aws: { region: 'us-gov-west-1' } } },
      'acme.azurecr.io': { auth: { azure: {} } },
      'acme.azurecr.cn': { auth: { azure: { scope: 'https://management.chinacloudapi.cn/.default' } } },
    },
  });
  t.same(c.registries['us-docker.pkg.dev']?.auth, { google: {} });
  t.same(c.registries['123456789012.dkr.ecr.eu-west-1.amazonaws.com']?.auth, { aws: {} });
  t.same(c.registries['ecr-proxy.example.com']?.auth, { aws: { region: 'us-gov-west-1' } });
  t.same(c.registries['acme.azurecr.io']?.auth, { azure: {} });
  t.same(c.registries['acme.azurecr.cn']?.auth, { azure: { scope: 'https://management.chinacloudapi.cn/.default' } });
  t.same(problems({ registries: { 'gcr.io': { auth: { google: null } } } }), ['registries["gcr.io"].auth: needs secret: NAME (a dockerconfigjson Secret), file: PATH (a docker config file), or a cloud identity: google: {}, aws: {} or azure: {}'], 'google: with nothing after it is not google: {}');
});

const bad: { name: string; raw: unknown; expect: string[] }[] = [
  { name: 'platforms not os/arch', raw: { verification: { platforms: ['linux/amd64', 'amd64'] } }, expect: ['verification.platforms[1]: "amd64" is not os/architecture[/variant]'] },
  { name: 'platforms empty', raw: { verification: { platforms: [] } }, expect: ['verification.platforms: is empty: use off'] },
  { name: 'platforms a word', raw: { verification: { platforms: 'all' } }, expect: ['verification.platforms: must be nodes, off or a list'] },
  { name: 'registries not a mapping', raw: { registries: ['m.io'] }, expect: ['registries: must be a mapping of registry hosts'] },
  { name: 'a URL as host', raw: { registries: { 'https://m.io': {} } }, expect: ['registries["https://m.io"]: "https://m.io" is not a registry host'] },
  { name: 'a path in the host', raw: { registries: { 'm.io/dockerhub': {} } }, expect: ['registries["m.io/dockerhub"]: "m.io/dockerhub" is not a registry host'] },
  { name: 'a wildcard host', raw: { registries: { '*.m.io': {} } }, expect: ['registries["*.m.io"]: "*.m.io" is not a registry host'] },
  { name: 'a single label', raw: { registries: { mirror: {} } }, expect: ['registries["mirror"]: "mirror": the host must contain "." or ":" or be localhost'] },
  { name: 'the same registry twice', raw: { registries: { 'docker.io': {}, 'index.docker.io': {} } }, expect: ['registries["index.docker.io"]: the same registry as registries["docker.io"]'] },
  { name: 'entry not a mapping', raw: { registries: { 'm.io': 'yes' } }, expect: ['registries["m.io"]: must be a mapping with ca, insecure, auth'] },
  { name: 'unknown entry key', raw: { registries: { 'm.io': { tls: {} } } }, expect: ['registries["m.io"].tls: unknown key (allowed: ca, insecure, auth)'] },
  { name: 'insecure not a boolean', raw: { registries: { 'm.io': { insecure: 'true' } } }, expect: ['registries["m.io"].insecure: must be true or false'] },
  { name: 'ca empty', raw: { registries: { 'm.io': { ca: '' } } }, expect: ['registries["m.io"].ca: must be a non-empty string'] },
  { name: 'ca with insecure', raw: { registries: { 'm.io': { ca: 'ca.pem', insecure: true } } }, expect: ['registries["m.io"].ca: has no use with insecure: true'] },
  { name: 'auth not a mapping', raw: { registries: { 'm.io': { auth: 'robot' } } }, expect: ['registries["m.io"].auth: must be a mapping with one of secret: NAME, file: PATH, google: {}, aws: {}, azure: {}'] },
  { name: 'auth empty', raw: { registries: { 'm.io': { auth: {} } } }, expect: ['registries["m.io"].auth: needs secret: NAME'] },
  { name: 'auth both', raw: { registries: { 'm.io': { auth: { secret: 's', file: 'f' } } } }, expect: ['registries["m.io"].auth: set either secret or file, not both'] },
  { name: 'auth unknown key', raw: { registries: { 'm.io': { auth: { password: 'x' } } } }, expect: ['registries["m.io"].auth.password: unknown key (allowed: secret, file, google, aws, azure)'] },
  { name: 'auth a Secret and a cloud', raw: { registries: { 'm.io': { auth: { secret: 's', google: {} } } } }, expect: ['registries["m.io"].auth: set either secret or google, not both'] },
  { name: 'auth two clouds and a file', raw: { registries: { 'm.io': { auth: { file: 'f', aws: {}, azure: {} } } } }, expect: ['registries["m.io"].auth: set one of file, aws, azure, not several'] },
  { name: 'google not a mapping', raw: { registries: { 'm.io': { auth: { google: true } } } }, expect: ['registries["m.io"].auth.google: must be a mapping (google: {}'] },
  { name: 'google takes no settings', raw: { registries: { 'm.io': { auth: { google: { key: 'k.json' } } } } }, expect: ['registries["m.io"].auth.google.key: unknown key (allowed: )'] },
  { name: 'aws unknown key', raw: { registries: { 'm.io': { auth: { aws: { accessKeyId: 'AKIA' } } } } }, expect: ['registries["m.io"].auth.aws.accessKeyId: unknown key (allowed: region)'] },
  { name: 'aws region malformed', raw: { registries: { 'm.io': { auth: { aws: { region: 'US East' } } } } }, expect: ['registries["m.io"].auth.aws.region: "US East" is not an AWS region name'] },
  { name: 'azure scope not a .default scope', raw: { registries: { 'm.io': { auth: { azure: { scope: 'acrpull' } } } } }, expect: ['registries["m.io"].auth.azure.scope: "acrpull" is not an Entra ID scope'] },
  { name: 'azure unknown key', raw: { registries: { 'm.io': { auth: { azure: { clientSecret: 'x' } } } } }, expect: ['registries["m.io"].auth.azure.clientSecret: unknown key (allowed: scope)'] },
  { name: 'auth bad Secret name', raw: { registries: { 'm.io': { auth: { secret: 'Mirror_Pull' } } } }, expect: ['registries["m.io"].auth.secret: "Mirror_Pull" is not a valid Secret name'] },
  { name: 'auth file not a string', raw: { registries: { 'm.io': { auth: { file: 3 } } } }, expect: ['registries["m.io"].auth.file: must be a non-empty string'] },
  { name: 'verification not a mapping', raw: { verification: 500 }, expect: ['verification: must be a mapping with timeoutMs, cacheSeconds, onUnreachable'] },
  { name: 'verification unknown key', raw: { verification: { timeout: 500 } }, expect: ['verification.timeout: unknown key (allowed: timeoutMs, cacheSeconds, refreshSeconds, onUnreachable, platforms)'] },
  { name: 'refreshSeconds negative', raw: { verification: { refreshSeconds: -1 } }, expect: ['verification.refreshSeconds: must be a whole number from 0 to 604800 (got -1)'] },
  { name: 'refreshSeconds a duration string', raw: { verification: { refreshSeconds: '1m' } }, expect: ['verification.refreshSeconds: must be a whole number'] },
  { name: 'pinDigest without verify', raw: { rules: [{ from: 'docker.io', to: 'm.example.com/hub', pinDigest: true }] }, expect: ['rules[0].pinDigest: needs verify: true (the pin is the digest the mirror answered)'] },
  { name: 'pinDigest not a boolean', raw: { rules: [{ from: 'docker.io', to: 'm.example.com/hub', verify: true, pinDigest: 'yes' }] }, expect: ['rules[0].pinDigest: must be'] },
  { name: 'timeoutMs zero', raw: { verification: { timeoutMs: 0 } }, expect: ['verification.timeoutMs: must be a whole number from 1 to 30000 (got 0)'] },
  { name: 'timeoutMs beyond the API server limit', raw: { verification: { timeoutMs: 31000 } }, expect: ['verification.timeoutMs: must be a whole number from 1 to 30000'] },
  { name: 'timeoutMs a string', raw: { verification: { timeoutMs: '500ms' } }, expect: ['verification.timeoutMs: must be a whole number'] },
  { name: 'cacheSeconds not a mapping', raw: { verification: { cacheSeconds: 30 } }, expect: ['verification.cacheSeconds: must be a mapping with present and absent'] },
  { name: 'cacheSeconds negative', raw: { verification: { cacheSeconds: { absent: -1 } } }, expect: ['verification.cacheSeconds.absent: must be a whole number from 0 to 604800 (got -1)'] },
  { name: 'cacheSeconds fraction', raw: { verification: { cacheSeconds: { present: 1.5 } } }, expect: ['verification.cacheSeconds.present: must be a whole number'] },
  { name: 'cacheSeconds unknown key', raw: { verification: { cacheSeconds: { error: 1 } } }, expect: ['verification.cacheSeconds.error: unknown key (allowed: present, absent)'] },
  { name: 'bad onUnreachable', raw: { verification: { onUnreachable: 'allow' } }, expect: ['verification.onUnreachable: must be one of original, rewrite, deny (got "allow")'] },
  {
    name: 'every problem listed at once',
    raw: { registries: { 'https://a': {}, 'b.io': { insecure: 1 } }, verification: { timeoutMs: -5, onUnreachable: 'x' } },
    expect: ['registries["https://a"]:', 'registries["b.io"].insecure:', 'verification.timeoutMs:', 'verification.onUnreachable:'],
  },
];

t.test('validation lists every problem by path', async (t) => {
  for (const c of bad) {
    t.test(c.name, async (t) => {
      const got = problems(c.raw);
      t.equal(got.length, c.expect.length, `${c.expect.length} problem(s): ${got.join(' | ')}`);
      for (const e of c.expect) t.ok(got.some((g) => g.startsWith(e)), `has "${e}" in ${got.join(' | ')}`);
    });
  }
});
