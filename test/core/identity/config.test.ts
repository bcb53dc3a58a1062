// Tests src/config/identity.ts (the `identity:` config section); kept beside the planner
// tests because the settings it produces are the planner's input.
import t from 'tap';
import { validateIdentityConfig } from '../../../src/config/identity.js';

const DEFAULTS = {
  aws: { audience: 'sts.amazonaws.com', tokenExpiration: 86400, region: undefined, stsRegionalEndpoints: false, fsGroup: undefined },
  gcp: { audience: 'sts.googleapis.com', tokenExpiration: 86400, region: undefined, tokenVolumeMode: 0o440 },
  azure: { audience: 'api://AzureADTokenExchange', tokenExpiration: 3600, authorityHost: 'https://login.microsoftonline.com/', tenantId: undefined, layout: 'v1.6' },
};

t.test('valid sections', async (t) => {
  const cases: { name: string; raw: unknown; expected: unknown }[] = [
    { name: 'absent: every provider on with upstream defaults', raw: undefined, expected: DEFAULTS },
    { name: 'null is absent', raw: null, expected: DEFAULTS },
    { name: 'empty mapping', raw: {}, expected: DEFAULTS },
    { name: 'empty provider sections', raw: { aws: {}, gcp: null, azure: {} }, expected: DEFAULTS },
    { name: 'aws off', raw: { aws: { enabled: false } }, expected: { ...DEFAULTS, aws: undefined } },
    { name: 'all off', raw: { aws: { enabled: false }, gcp: { enabled: false }, azure: { enabled: false } }, expected: { aws: undefined, gcp: undefined, azure: undefined } },
    {
      name: 'aws options',
      raw: { aws: { enabled: true, region: 'eu-west-1', tokenExpiration: 3600, audience: 'sts.example.com', fsGroup: 65534, stsRegionalEndpoints: true } },
      expected: { ...DEFAULTS, aws: { audience: 'sts.example.com', tokenExpiration: 3600, region: 'eu-west-1', stsRegionalEndpoints: true, fsGroup: 65534 } },
    },
    { name: 'aws bounds', raw: { aws: { tokenExpiration: 600, fsGroup: 0 } }, expected: { ...DEFAULTS, aws: { ...DEFAULTS.aws, tokenExpiration: 600, fsGroup: 0 } } },
    {
      name: 'gcp options',
      raw: { gcp: { tokenExpiration: 3600, audience: '//iam.googleapis.com/projects/1/x', region: 'europe-west1', tokenVolumeMode: '0400' } },
      expected: { ...DEFAULTS, gcp: { audience: '//iam.googleapis.com/projects/1/x', tokenExpiration: 3600, region: 'europe-west1', tokenVolumeMode: 0o400 } },
    },
    {
      name: 'azure options',
      raw: { azure: { authorityHost: 'https://login.microsoftonline.us/', tokenExpiration: 86400, tenantId: 't', audience: 'api://custom', layout: 'v1.5' } },
      expected: { ...DEFAULTS, azure: { audience: 'api://custom', tokenExpiration: 86400, authorityHost: 'https://login.microsoftonline.us/', tenantId: 't', layout: 'v1.5' } },
    },
    { name: 'gcp mode without the leading zero', raw: { gcp: { tokenVolumeMode: '644' } }, expected: { ...DEFAULTS, gcp: { ...DEFAULTS.gcp, tokenVolumeMode: 0o644 } } },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = validateIdentityConfig(c.raw);
      t.same(r.problems, []);
      t.same(r.settings, c.expected);
      t.ok(Object.isFrozen(r.settings));
    });
  }
});

t.test('every problem by path', async (t) => {
  const cases: { name: string; raw: unknown; paths: string[]; match?: RegExp }[] = [
    { name: 'not a mapping', raw: 'aws', paths: ['identity'] },
    { name: 'list', raw: ['aws'], paths: ['identity'] },
    { name: 'unknown provider', raw: { alibaba: {} }, paths: ['identity.alibaba'], match: /unknown key \(allowed: aws, gcp, azure, onUnknownServiceAccount, serviceAccountWaitMs, onInvalidAnnotation\)/ },
    { name: 'bad onInvalidAnnotation', raw: { onInvalidAnnotation: 'admit' }, paths: ['identity.onInvalidAnnotation'], match: /one of deny, warn/ },
    { name: 'azure layout unknown', raw: { azure: { layout: '1.6' } }, paths: ['identity.azure.layout'], match: /one of v1\.6, v1\.5/ },
    { name: 'gcp mode as a YAML number (decimal 440 would be 0670)', raw: { gcp: { tokenVolumeMode: 440 } }, paths: ['identity.gcp.tokenVolumeMode'], match: /quoted string/ },
    { name: 'gcp mode not octal', raw: { gcp: { tokenVolumeMode: '0448' } }, paths: ['identity.gcp.tokenVolumeMode'] },
    { name: 'gcp mode too long', raw: { gcp: { tokenVolumeMode: '04400' } }, paths: ['identity.gcp.tokenVolumeMode'] },
    { name: 'bad onUnknownServiceAccount', raw: { onUnknownServiceAccount: 'allow' }, paths: ['identity.onUnknownServiceAccount'], match: /admit, deny/ },
    { name: 'serviceAccountWaitMs out of range', raw: { serviceAccountWaitMs: 60000 }, paths: ['identity.serviceAccountWaitMs'] },
    { name: 'provider not a mapping', raw: { aws: true }, paths: ['identity.aws'], match: /mapping/ },
    { name: 'unknown aws key', raw: { aws: { roleArn: 'x' } }, paths: ['identity.aws.roleArn'], match: /unknown key/ },
    { name: 'unknown gcp key', raw: { gcp: { fsGroup: 1 } }, paths: ['identity.gcp.fsGroup'] },
    { name: 'unknown azure key', raw: { azure: { clientId: 'x' } }, paths: ['identity.azure.clientId'] },
    { name: 'enabled not a boolean', raw: { aws: { enabled: 'no' } }, paths: ['identity.aws.enabled'], match: /true or false/ },
    { name: 'aws expiration below 600', raw: { aws: { tokenExpiration: 599 } }, paths: ['identity.aws.tokenExpiration'], match: /600 to 4294967296/ },
    { name: 'aws expiration not whole', raw: { aws: { tokenExpiration: 3600.5 } }, paths: ['identity.aws.tokenExpiration'] },
    { name: 'aws expiration as a string', raw: { aws: { tokenExpiration: '3600' } }, paths: ['identity.aws.tokenExpiration'] },
    { name: 'gcp expiration below 3600', raw: { gcp: { tokenExpiration: 600 } }, paths: ['identity.gcp.tokenExpiration'], match: /3600/ },
    { name: 'azure expiration above 86400', raw: { azure: { tokenExpiration: 86401 } }, paths: ['identity.azure.tokenExpiration'], match: /3600 to 86400/ },
    { name: 'negative fsGroup', raw: { aws: { fsGroup: -1 } }, paths: ['identity.aws.fsGroup'] },
    { name: 'empty region', raw: { aws: { region: '' } }, paths: ['identity.aws.region'] },
    { name: 'padded audience', raw: { gcp: { audience: ' sts.googleapis.com' } }, paths: ['identity.gcp.audience'] },
    { name: 'authority host over http', raw: { azure: { authorityHost: 'http://login.microsoftonline.com/' } }, paths: ['identity.azure.authorityHost'], match: /https URL/ },
    { name: 'authority host not a URL', raw: { azure: { authorityHost: 'login.microsoftonline.com' } }, paths: ['identity.azure.authorityHost'] },
    {
      name: 'several at once',
      raw: { aws: { tokenExpiration: 1, typo: 1 }, gcp: { enabled: 1 }, azure: { tokenExpiration: 1 } },
      paths: ['identity.aws.typo', 'identity.aws.tokenExpiration', 'identity.gcp.enabled', 'identity.azure.tokenExpiration'],
    },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const r = validateIdentityConfig(c.raw);
      t.same(r.problems.map((p) => p.path).sort(), [...c.paths].sort());
      if (c.match) t.match(r.problems[0]?.message, c.match);
    });
  }
});

t.test('bad fields fall back to defaults, so the settings stay usable', async (t) => {
  const r = validateIdentityConfig({ aws: { tokenExpiration: 1, region: 5 }, azure: { authorityHost: 'ftp://x' } });
  t.equal(r.problems.length, 3);
  t.equal(r.settings.aws?.tokenExpiration, 86400);
  t.equal(r.settings.aws?.region, undefined);
  t.equal(r.settings.azure?.authorityHost, 'https://login.microsoftonline.com/');
});

t.test('onInvalidAnnotation: deny by default, as upstream; warn relaxes', async (t) => {
  t.equal(validateIdentityConfig(undefined).lookup.onInvalid, 'deny');
  t.equal(validateIdentityConfig({ onInvalidAnnotation: 'warn' }).lookup.onInvalid, 'warn');
  t.equal(validateIdentityConfig({ onInvalidAnnotation: 'deny' }).lookup.onInvalid, 'deny');
});

t.test('another path prefix', async (t) => {
  const r = validateIdentityConfig({ aws: { nope: 1 } }, 'spec.identity');
  t.same(r.problems.map((p) => p.path), ['spec.identity.aws.nope']);
});
