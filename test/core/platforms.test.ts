import t from 'tap';
import { manifestPlatforms, missingPlatforms, parsePlatform, podPlatforms, type Platform } from '../../src/core/platforms.js';

const p = (s: string): Platform => {
  const r = parsePlatform(s);
  if (r === undefined) throw new Error(s);
  return r;
};

t.test('parsePlatform', async (t) => {
  t.same(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  t.same(parsePlatform('linux/arm/v7'), { os: 'linux', architecture: 'arm', variant: 'v7' });
  for (const bad of ['linux', 'linux/', 'Linux/AMD64', 'a/b/c/d', '']) t.equal(parsePlatform(bad), undefined, bad);
});

t.test('missingPlatforms: an index must hold every platform the pod can run on', async (t) => {
  const cases: { have: string[]; want: string[]; missing: string[] }[] = [
    { have: ['linux/amd64', 'linux/arm64/v8'], want: ['linux/amd64', 'linux/arm64'], missing: [] },
    { have: ['linux/arm64/v8'], want: ['linux/amd64', 'linux/arm64'], missing: ['linux/amd64'] },
    { have: ['linux/arm64'], want: ['linux/arm64/v8'], missing: [], },
    { have: ['linux/arm/v6'], want: ['linux/arm/v7'], missing: ['linux/arm/v7'] },
    { have: ['linux/arm/v7'], want: ['linux/arm'], missing: [] },
    { have: ['windows/amd64'], want: ['linux/amd64'], missing: ['linux/amd64'] },
    { have: [], want: ['linux/amd64'], missing: ['linux/amd64'] },
  ];
  for (const c of cases) t.same(missingPlatforms(c.have.map(p), c.want.map(p)), c.missing, `${c.have.join(',')} for ${c.want.join(',')}`);
});

t.test('podPlatforms: narrowed by the nodeSelector', async (t) => {
  const nodes = ['linux/amd64', 'linux/arm64', 'windows/amd64'].map(p);
  const f = (sel?: Record<string, string>): string[] => podPlatforms(nodes, sel).map((x) => `${x.os}/${x.architecture}`);
  t.same(f(), ['linux/amd64', 'linux/arm64', 'windows/amd64'], 'no selector: every node platform');
  t.same(f({ 'kubernetes.io/arch': 'arm64' }), ['linux/arm64']);
  t.same(f({ 'kubernetes.io/os': 'linux' }), ['linux/amd64', 'linux/arm64']);
  t.same(f({ 'kubernetes.io/os': 'windows', 'kubernetes.io/arch': 'amd64' }), ['windows/amd64']);
  t.same(f({ 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 's390x' }), ['linux/s390x'], 'a platform outside the list is asked for as such');
  t.same(f({ 'disktype': 'ssd' }), ['linux/amd64', 'linux/arm64', 'windows/amd64'], 'other labels do not narrow');
});

t.test('manifestPlatforms', async (t) => {
  t.same(
    manifestPlatforms({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ digest: 'sha256:a', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }, { digest: 'sha256:b', platform: { os: 'unknown', architecture: 'unknown' } }, { digest: 'sha256:c' }] }, undefined),
    { kind: 'index', platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'unknown', architecture: 'unknown' }] },
  );
  t.same(manifestPlatforms({ schemaVersion: 2, config: { digest: 'sha256:c' }, layers: [] }, 'application/vnd.docker.distribution.manifest.v2+json'), { kind: 'image', configDigest: 'sha256:c' });
  t.equal(manifestPlatforms('x', undefined).kind, 'unknown');
});
