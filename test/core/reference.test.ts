import t from 'tap';
import {
  digestAlgorithm,
  formatReference,
  isValidDigest,
  isValidTag,
  isValidRegistryHost,
  MAX_REFERENCE_LENGTH,
  referenceMemoSize,
  isValidRepositoryPath,
  normaliseRegistryHost,
  parseReference,
  registrySettingsKey,
  repositoryName,
  type ImageReference,
} from '../../src/core/reference.js';

// Digests of each supported length; the sha256 one is busybox's from the upstream tests.
const H256 = '7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa';
const D256 = `sha256:${H256}`;
const D384 = `sha384:${'0123456789abcdef'.repeat(6)}`;
const D512 = `sha512:${'f'.repeat(128)}`;
const ID64 = '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a';
const KELVIN = '\u212a'; // lowercases to ASCII 'k' with toLowerCase()

interface Expected {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
  suffix?: string;
}

interface OkCase {
  name: string;
  input: string;
  expect: Expected;
  /** formatReference(ref) as expected; defaults to registry/repository + suffix. */
  formatted?: string;
}

const ok: OkCase[] = [
  // Docker Hub normalisation
  { name: 'official image', input: 'nginx', expect: { registry: 'docker.io', repository: 'library/nginx' }, formatted: 'docker.io/library/nginx' },
  { name: 'official image with tag', input: 'nginx:1.14.2', expect: { registry: 'docker.io', repository: 'library/nginx', tag: '1.14.2', suffix: ':1.14.2' }, formatted: 'docker.io/library/nginx:1.14.2' },
  { name: 'official image latest', input: 'redis:latest', expect: { registry: 'docker.io', repository: 'library/redis', tag: 'latest', suffix: ':latest' } },
  { name: 'explicit library/', input: 'library/nginx', expect: { registry: 'docker.io', repository: 'library/nginx' } },
  { name: 'docker.io without library/', input: 'docker.io/nginx', expect: { registry: 'docker.io', repository: 'library/nginx' } },
  { name: 'docker.io with library/ and tag', input: 'docker.io/library/nginx:1.25', expect: { registry: 'docker.io', repository: 'library/nginx', tag: '1.25', suffix: ':1.25' } },
  { name: 'index.docker.io is docker.io', input: 'index.docker.io/nginx', expect: { registry: 'docker.io', repository: 'library/nginx' } },
  { name: 'index.docker.io with library/', input: 'index.docker.io/library/debian:12', expect: { registry: 'docker.io', repository: 'library/debian', tag: '12', suffix: ':12' } },
  { name: 'index.docker.io user image', input: 'index.docker.io/docker/docker', expect: { registry: 'docker.io', repository: 'docker/docker' } },
  { name: 'user image on Docker Hub', input: 'bitnami/redis:7.2', expect: { registry: 'docker.io', repository: 'bitnami/redis', tag: '7.2', suffix: ':7.2' } },
  { name: 'docker.io user image', input: 'docker.io/bitnami/redis', expect: { registry: 'docker.io', repository: 'bitnami/redis' } },
  { name: 'a namespace called library is kept', input: 'other/library', expect: { registry: 'docker.io', repository: 'other/library' } },
  { name: 'nested path under library/', input: 'library/foo/bar', expect: { registry: 'docker.io', repository: 'library/foo/bar' } },
  { name: 'nested path on Docker Hub', input: 'store/foo/bar', expect: { registry: 'docker.io', repository: 'store/foo/bar' } },
  { name: 'library/library', input: 'docker.io/library', expect: { registry: 'docker.io', repository: 'library/library' } },
  { name: 'digit-only components', input: '123/456', expect: { registry: 'docker.io', repository: '123/456' } },
  { name: 'single-character components', input: 'd/docker', expect: { registry: 'docker.io', repository: 'd/docker' } },
  // Other registries
  { name: 'gcr.io nested path', input: 'gcr.io/google-samples/hello-app:1.0', expect: { registry: 'gcr.io', repository: 'google-samples/hello-app', tag: '1.0', suffix: ':1.0' } },
  { name: 'single component elsewhere gets no library/', input: 'gcr.io/nginx', expect: { registry: 'gcr.io', repository: 'nginx' } },
  { name: 'Artifact Registry deep path', input: 'us-docker.pkg.dev/acme-prod/repo/team/app:v1', expect: { registry: 'us-docker.pkg.dev', repository: 'acme-prod/repo/team/app', tag: 'v1', suffix: ':v1' } },
  { name: 'registry.k8s.io', input: 'registry.k8s.io/pause:3.9', expect: { registry: 'registry.k8s.io', repository: 'pause', tag: '3.9', suffix: ':3.9' } },
  { name: 'quay.io', input: 'quay.io/prometheus/node-exporter:v1.8.0', expect: { registry: 'quay.io', repository: 'prometheus/node-exporter', tag: 'v1.8.0', suffix: ':v1.8.0' } },
  { name: 'host with dashes and subdomains', input: 'sub-dom1.foo.com/bar/baz/quux:some-long-tag', expect: { registry: 'sub-dom1.foo.com', repository: 'bar/baz/quux', tag: 'some-long-tag', suffix: ':some-long-tag' } },
  { name: 'path component that looks like a host', input: 'b.gcr.io/test.example.com/my-app:test.example.com', expect: { registry: 'b.gcr.io', repository: 'test.example.com/my-app', tag: 'test.example.com', suffix: ':test.example.com' } },
  { name: 'punycode host', input: 'xn--n3h.com/myimage:xn--n3h.com', expect: { registry: 'xn--n3h.com', repository: 'myimage', tag: 'xn--n3h.com', suffix: ':xn--n3h.com' } },
  // Ports, localhost, IP addresses
  { name: 'host with port', input: 'mirror.example.com:443/dockerhub/library/nginx', expect: { registry: 'mirror.example.com:443', repository: 'dockerhub/library/nginx' } },
  { name: 'single-label host with port', input: 'test:5000/repo', expect: { registry: 'test:5000', repository: 'repo' } },
  { name: 'dashed single-label host with port', input: 'test-com:8080/foo', expect: { registry: 'test-com:8080', repository: 'foo' } },
  { name: 'host with port, tag is a number', input: 'a:5000/b:6000', expect: { registry: 'a:5000', repository: 'b', tag: '6000', suffix: ':6000' } },
  { name: 'localhost', input: 'localhost/nginx', expect: { registry: 'localhost', repository: 'nginx' } },
  { name: 'localhost with port and tag', input: 'localhost:5000/nginx:dev', expect: { registry: 'localhost:5000', repository: 'nginx', tag: 'dev', suffix: ':dev' } },
  { name: 'localhost nested path', input: 'localhost:5000/team/app', expect: { registry: 'localhost:5000', repository: 'team/app' } },
  { name: 'bare localhost is an official image name', input: 'localhost', expect: { registry: 'docker.io', repository: 'library/localhost' } },
  { name: 'bare localhost:5000 is a name with tag 5000', input: 'localhost:5000', expect: { registry: 'docker.io', repository: 'library/localhost', tag: '5000', suffix: ':5000' } },
  { name: 'IPv4 host', input: '192.168.1.1/repo', expect: { registry: '192.168.1.1', repository: 'repo' } },
  { name: 'IPv4 host with port', input: '127.0.0.1:5000/docker/docker', expect: { registry: '127.0.0.1:5000', repository: 'docker/docker' } },
  { name: 'IPv4 host, port and numeric tag', input: '192.168.1.1:5000/repo:5050', expect: { registry: '192.168.1.1:5000', repository: 'repo', tag: '5050', suffix: ':5050' } },
  { name: 'bare IPv4 is a name', input: '192.168.1.1', expect: { registry: 'docker.io', repository: 'library/192.168.1.1' } },
  { name: 'bare IPv4:port is name and tag', input: '192.168.1.1:5000', expect: { registry: 'docker.io', repository: 'library/192.168.1.1', tag: '5000', suffix: ':5000' } },
  { name: 'bare host:tag is name and tag', input: 'test.com:tag', expect: { registry: 'docker.io', repository: 'library/test.com', tag: 'tag', suffix: ':tag' } },
  { name: 'IPv6 loopback with port', input: '[::1]:5000/repo', expect: { registry: '[::1]:5000', repository: 'repo' } },
  { name: 'IPv6 without port', input: '[2001:db8::1]/repo', expect: { registry: '[2001:db8::1]', repository: 'repo' } },
  { name: 'IPv6 uncompressed with tag', input: '[2001:db8:1:2:3:4:5:6]/repo:tag', expect: { registry: '[2001:db8:1:2:3:4:5:6]', repository: 'repo', tag: 'tag', suffix: ':tag' } },
  { name: 'IPv6 ending in ::', input: '[2001:db8::]:5000/repo', expect: { registry: '[2001:db8::]:5000', repository: 'repo' } },
  { name: 'IPv6 with port, tag and digest', input: `[2001:db8::1]:5000/repo:tag@${D256}`, expect: { registry: '[2001:db8::1]:5000', repository: 'repo', tag: 'tag', digest: D256, suffix: `:tag@${D256}` } },
  // Uppercase hosts are allowed and lowercased
  // distribution keeps the host as written; only exactly `docker.io` and `index.docker.io`
  // are Docker Hub (containerd sends only `docker.io` to Docker Hub's registry).
  { name: 'uppercase host is kept as written', input: 'REGISTRY.Example.COM/app:V1', expect: { registry: 'REGISTRY.Example.COM', repository: 'app', tag: 'V1', suffix: ':V1' } },
  { name: 'uppercase Docker Hub spelling is its own host, without library/', input: 'Docker.IO/nginx', expect: { registry: 'Docker.IO', repository: 'nginx' } },
  { name: 'uppercase legacy Docker Hub spelling is its own host', input: 'INDEX.DOCKER.IO/nginx:1', expect: { registry: 'INDEX.DOCKER.IO', repository: 'nginx', tag: '1', suffix: ':1' } },
  { name: 'DOCKER.IO/evil is repository evil, never library/evil', input: 'DOCKER.IO/evil', expect: { registry: 'DOCKER.IO', repository: 'evil' } },
  { name: 'uppercase IPv6 is kept', input: '[FC00::1]:5000/app', expect: { registry: '[FC00::1]:5000', repository: 'app' } },
  { name: 'uppercase localhost', input: 'LOCALHOST:5000/app', expect: { registry: 'LOCALHOST:5000', repository: 'app' } },
  { name: 'uppercase first component is a host (as distribution does)', input: 'Foo/bar', expect: { registry: 'Foo', repository: 'bar' } },
  // Digests
  { name: 'digest only', input: `nginx@${D256}`, expect: { registry: 'docker.io', repository: 'library/nginx', digest: D256, suffix: `@${D256}` }, formatted: `docker.io/library/nginx@${D256}` },
  { name: 'tag and digest', input: `busybox:latest@${D256}`, expect: { registry: 'docker.io', repository: 'library/busybox', tag: 'latest', digest: D256, suffix: `:latest@${D256}` }, formatted: `docker.io/library/busybox:latest@${D256}` },
  { name: 'digest with port host', input: `test:5000/repo@${D256}`, expect: { registry: 'test:5000', repository: 'repo', digest: D256, suffix: `@${D256}` } },
  { name: 'sha384 digest', input: `example.com/app@${D384}`, expect: { registry: 'example.com', repository: 'app', digest: D384, suffix: `@${D384}` } },
  { name: 'sha512 digest with tag', input: `xn--7o8h.com/myimage:xn--7o8h.com@${D512}`, expect: { registry: 'xn--7o8h.com', repository: 'myimage', tag: 'xn--7o8h.com', digest: D512, suffix: `:xn--7o8h.com@${D512}` } },
  // Tags
  { name: 'uppercase tag is fine', input: 'lowercase:Uppercase', expect: { registry: 'docker.io', repository: 'library/lowercase', tag: 'Uppercase', suffix: ':Uppercase' } },
  { name: 'tag with every allowed character', input: 'nginx:v1.2.3-rc.1_build', expect: { registry: 'docker.io', repository: 'library/nginx', tag: 'v1.2.3-rc.1_build', suffix: ':v1.2.3-rc.1_build' } },
  { name: 'tag starting with underscore', input: 'nginx:_x', expect: { registry: 'docker.io', repository: 'library/nginx', tag: '_x', suffix: ':_x' } },
  { name: '128-character tag', input: `nginx:${'t'.repeat(128)}`, expect: { registry: 'docker.io', repository: 'library/nginx', tag: 't'.repeat(128), suffix: `:${'t'.repeat(128)}` } },
  { name: 'sha256:<hex> without a name is name sha256 with a hex tag', input: `sha256:${H256}`, expect: { registry: 'docker.io', repository: 'library/sha256', tag: H256, suffix: `:${H256}` } },
  // Separators
  { name: 'separator .', input: 'docker.io/foo.bar/app', expect: { registry: 'docker.io', repository: 'foo.bar/app' } },
  { name: 'separator _', input: 'foo_bar/app', expect: { registry: 'docker.io', repository: 'foo_bar/app' } },
  { name: 'separator __', input: 'dock__er/docker', expect: { registry: 'docker.io', repository: 'dock__er/docker' } },
  { name: 'separator -', input: 'docker-rules/docker', expect: { registry: 'docker.io', repository: 'docker-rules/docker' } },
  { name: 'separator --', input: 'foo--bar/app', expect: { registry: 'docker.io', repository: 'foo--bar/app' } },
  { name: 'separator ---', input: 'docker---rules/docker', expect: { registry: 'docker.io', repository: 'docker---rules/docker' } },
  { name: 'all separators in one component', input: 'a.b_c__d-e--f', expect: { registry: 'docker.io', repository: 'library/a.b_c__d-e--f' } },
  { name: 'underscore name without a host', input: 'test_com', expect: { registry: 'docker.io', repository: 'library/test_com' } },
  { name: 'host-like path component after a namespace', input: 'foo/foo_bar.com:8080', expect: { registry: 'docker.io', repository: 'foo/foo_bar.com', tag: '8080', suffix: ':8080' } },
  // Hex names
  { name: '64-hex name with a host is a name', input: `docker.io/${ID64}`, expect: { registry: 'docker.io', repository: `library/${ID64}` } },
  { name: '64-hex name with a tag is a name', input: `${ID64}:v1`, expect: { registry: 'docker.io', repository: `library/${ID64}`, tag: 'v1', suffix: ':v1' } },
  { name: '63-hex name is a name', input: ID64.slice(0, 63), expect: { registry: 'docker.io', repository: `library/${ID64.slice(0, 63)}` } },
  { name: '64 non-hex characters are a name', input: 'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev', expect: { registry: 'docker.io', repository: 'library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev' } },
  // Length limits: the normalised repository path counts, the host does not
  { name: '255-character path is the limit', input: `example.com/${'a'.repeat(127)}/${'b'.repeat(127)}`, expect: { registry: 'example.com', repository: `${'a'.repeat(127)}/${'b'.repeat(127)}` } },
  { name: '255-character path on Docker Hub (a/ x127 + a)', input: `${'a/'.repeat(127)}a:tag-puts-this-over-max`, expect: { registry: 'docker.io', repository: `${'a/'.repeat(127)}a`, tag: 'tag-puts-this-over-max', suffix: ':tag-puts-this-over-max' } },
  { name: '247-character official name (255 with library/)', input: 'n'.repeat(247), expect: { registry: 'docker.io', repository: `library/${'n'.repeat(247)}` } },
  { name: 'long host does not count towards 255', input: `${'h'.repeat(60)}.${'o'.repeat(60)}.example.com:5000/${'p'.repeat(255)}`, expect: { registry: `${'h'.repeat(60)}.${'o'.repeat(60)}.example.com:5000`, repository: 'p'.repeat(255) } },
];

interface FailCase {
  name: string;
  input: string;
  reason: RegExp;
}

const fail: FailCase[] = [
  { name: 'empty', input: '', reason: /empty/ },
  { name: 'leading space', input: ' nginx', reason: /whitespace/ },
  { name: 'trailing space', input: 'nginx ', reason: /whitespace/ },
  { name: 'space inside', input: 'ngi nx:1', reason: /whitespace/ },
  { name: 'tab', input: 'nginx\t', reason: /whitespace/ },
  { name: 'newline after tag', input: 'nginx:1.0\n', reason: /whitespace/ },
  { name: 'https:// prefix', input: 'https://github.com/docker/docker', reason: /not a URL/ },
  { name: 'http:// prefix', input: 'http://registry.example.com/app:1', reason: /not a URL/ },
  { name: 'trailing slash', input: 'nginx/', reason: /empty path component/ },
  { name: 'trailing slash after host', input: 'example.com/', reason: /missing repository name/ },
  { name: 'leading slash', input: '/nginx', reason: /empty path component/ },
  { name: 'double slash', input: 'library//nginx', reason: /empty path component/ },
  { name: 'triple slash', input: 'docker///docker', reason: /empty path component/ },
  { name: 'double slash after host', input: 'docker.io/docker///docker', reason: /empty path component/ },
  { name: 'leading dash', input: '-nginx', reason: /invalid path component "-nginx"/ },
  { name: 'leading dash in namespace', input: '-docker/docker', reason: /invalid path component/ },
  { name: 'trailing dash in namespace', input: 'docker-/docker', reason: /invalid path component "docker-"/ },
  { name: 'leading underscore', input: '_docker/_docker', reason: /invalid path component/ },
  { name: 'underscores only', input: '____/____', reason: /invalid path component/ },
  { name: 'triple underscore', input: 'foo___bar', reason: /invalid path component/ },
  { name: 'double period', input: 'docker/dock..er', reason: /invalid path component "dock\.\.er"/ },
  { name: 'underscore then period', input: 'docker/dock_.er', reason: /invalid path component "dock_\.er"/ },
  { name: 'dash then period', input: 'docker/dock-.er', reason: /invalid path component "dock-\.er"/ },
  // A first component with a '.' is read as a host, so the same mistakes there are host errors.
  { name: 'double period in first component', input: 'dock..er/docker', reason: /"dock\.\.er" is not a valid registry host/ },
  { name: 'underscore then period in first component', input: 'dock_.er/docker', reason: /not a valid registry host/ },
  { name: 'trailing period', input: 'example.com/app.', reason: /invalid path component "app\."/ },
  { name: 'punctuation in path', input: 'aa/asdf$$^/aa', reason: /invalid path component "asdf\$\$\^"/ },
  { name: 'non-ASCII letter in path', input: 'ng\u00efnx', reason: /invalid path component/ },
  { name: 'name: with no tag', input: 'nginx:', reason: /missing tag/ },
  { name: 'empty tag before digest', input: `nginx:@${D256}`, reason: /missing tag/ },
  { name: 'name@ with no digest', input: 'nginx@', reason: /missing digest/ },
  { name: 'tag starting with dash', input: 'nginx:-tag', reason: /invalid tag "-tag"/ },
  { name: 'tag starting with period', input: 'nginx:.tag', reason: /invalid tag/ },
  { name: 'slash in tag', input: 'nginx:1.0/x', reason: /invalid/ },
  { name: 'colon in tag', input: 'nginx:a:b', reason: /invalid tag "a:b"/ },
  { name: '129-character tag', input: `nginx:${'t'.repeat(129)}`, reason: /invalid tag/ },
  { name: 'tag only', input: ':justtag', reason: /missing repository name/ },
  { name: 'digest only', input: `@${D256}`, reason: /missing repository name/ },
  { name: 'short sha256 digest', input: `nginx@sha256:${'f'.repeat(34)}`, reason: /sha256 digest must be 64 lowercase hexadecimal/ },
  { name: '63-hex sha256 digest', input: `nginx@sha256:${H256.slice(1)}`, reason: /64 lowercase/ },
  { name: '65-hex sha256 digest', input: `nginx@${D256}0`, reason: /64 lowercase/ },
  { name: 'uppercase sha256 hex', input: `nginx@sha256:${H256.toUpperCase()}`, reason: /64 lowercase/ },
  { name: 'non-hex sha256', input: `nginx@sha256:${'g'.repeat(64)}`, reason: /64 lowercase/ },
  { name: 'sha512 digest of sha256 length', input: `nginx@sha512:${H256}`, reason: /sha512 digest must be 128/ },
  { name: 'unknown digest algorithm', input: `validname@invaliddigest:${'f'.repeat(64)}`, reason: /unsupported digest algorithm "invaliddigest"/ },
  { name: 'md5 digest', input: `nginx@md5:${'f'.repeat(32)}`, reason: /unsupported digest algorithm "md5"/ },
  { name: 'uppercase digest algorithm after a tag', input: `nginx:1@SHA256:${H256}`, reason: /unsupported digest algorithm/ },
  { name: 'digest without algorithm', input: `nginx@${H256}`, reason: /algorithm:hex/ },
  { name: 'digest with empty algorithm', input: `nginx@:${H256}`, reason: /algorithm:hex/ },
  { name: 'two digests', input: `nginx@${D256}@${D256}`, reason: /64 lowercase/ },
  { name: 'bare 64-hex identifier', input: ID64, reason: /64-byte hexadecimal/ },
  { name: 'uppercase name with tag', input: 'Nginx:1', reason: /repository name must be lowercase/ },
  { name: 'uppercase second component', input: 'docker/Docker', reason: /must be lowercase/ },
  { name: 'uppercase after docker.io', input: 'docker.io/docker/Docker', reason: /must be lowercase/ },
  { name: 'uppercase after host with port', input: 'test:5000/Uppercase/lowercase:tag', reason: /must be lowercase/ },
  { name: 'uppercase path with digest', input: `example.com/App@${D256}`, reason: /must be lowercase/ },
  { name: 'uppercase first component that is not a host', input: 'Foo_Bar/x', reason: /must be lowercase/ },
  { name: 'underscore in host', input: 'foo_bar.com/x', reason: /"foo_bar\.com" is not a valid registry host/ },
  { name: 'host starting with dash', input: '-docker.io/docker/docker', reason: /not a valid registry host/ },
  { name: 'host label ending with dash', input: 'docker-.io/x', reason: /not a valid registry host/ },
  { name: 'empty host label', input: 'example..com/app', reason: /not a valid registry host/ },
  { name: 'host ending with a period', input: 'example.com./app', reason: /not a valid registry host/ },
  { name: 'empty port', input: 'example.com:/app', reason: /not a valid registry host/ },
  { name: 'non-numeric port', input: 'example.com:http/app', reason: /not a valid registry host/ },
  { name: 'two ports', input: 'example.com:5000:6000/app', reason: /not a valid registry host/ },
  { name: 'tag-like text before a slash', input: 'nginx:1.0/app', reason: /not a valid registry host/ },
  { name: 'Kelvin sign in host', input: `doc${KELVIN}er.io/library/nginx`, reason: /not a valid registry host/ },
  { name: 'IPv6 without brackets', input: 'fc00::1:5000/debian', reason: /not a valid registry host/ },
  { name: 'bare bracketed IPv6', input: '[fc00::1]', reason: /invalid path component/ },
  { name: 'bare bracketed IPv6 with port', input: '[2001:db8::1]:5000', reason: /invalid/ },
  { name: 'IPv6 zone identifier', input: '[fe80::1%eth0]:5000/repo', reason: /not a valid registry host/ },
  { name: 'IPv6 with embedded IPv4', input: '[2001:db8:3:4::192.0.2.33]:5000/debian', reason: /not a valid registry host/ },
  { name: 'empty IPv6 brackets', input: '[]:5000/x', reason: /not a valid registry host/ },
  { name: 'unclosed IPv6 bracket', input: '[::1:5000/x', reason: /not a valid registry host/ },
  { name: '256-character path', input: `example.com/${'a'.repeat(128)}/${'b'.repeat(127)}`, reason: /must not be more than 255 characters/ },
  { name: '256-character path on Docker Hub (a/ x128 + a)', input: `${'a/'.repeat(128)}a:tag`, reason: /must not be more than 255 characters/ },
  { name: '248-character official name (256 with library/)', input: 'n'.repeat(248), reason: /must not be more than 255 characters/ },
  { name: 'long namespace', input: `this_is_not_a_valid_namespace_because_its_length_is_greater_than_255_${'x'.repeat(200)}/docker`, reason: /must not be more than 255/ },
];

/** Every field, so a missing tag and an undefined tag compare the same way. */
function project(e: Expected): Required<Omit<Expected, 'tag' | 'digest'>> & Pick<ImageReference, 'tag' | 'digest'> {
  return { registry: e.registry, repository: e.repository, tag: e.tag, digest: e.digest, suffix: e.suffix ?? '' };
}

t.test('valid references', async (t) => {
  for (const c of ok) {
    t.test(c.name, async (t) => {
      const r = parseReference(c.input);
      if (!r.ok) {
        t.fail(`expected ${JSON.stringify(c.input)} to parse: ${r.reason}`);
        return;
      }
      t.strictSame(project(r.ref), project(c.expect), 'registry, repository, tag, digest, suffix');
      t.equal(formatReference(r.ref), c.formatted ?? `${c.expect.registry}/${c.expect.repository}${c.expect.suffix ?? ''}`, 'formatReference');
      t.equal(repositoryName(r.ref), `${c.expect.registry}/${c.expect.repository}`, 'repositoryName');
      // The suffix is the input's own tail, byte for byte.
      t.ok(c.input.endsWith(r.ref.suffix), 'suffix is the end of the input');
    });
  }
});

t.test('invalid references', async (t) => {
  for (const c of fail) {
    t.test(c.name, async (t) => {
      const r = parseReference(c.input);
      if (r.ok) {
        t.fail(`expected ${JSON.stringify(c.input)} to be rejected, got ${JSON.stringify(r.ref)}`);
        return;
      }
      t.match(r.reason, c.reason);
      t.ok(r.reason.startsWith('invalid image reference '), 'reason says what failed');
      t.ok(r.reason.includes(JSON.stringify(c.input)), 'reason quotes the input');
    });
  }
});

t.test('table sizes', async (t) => {
  t.ok(ok.length + fail.length >= 80, `${ok.length + fail.length} cases`);
});

t.test('reason text for an uppercase name', async (t) => {
  t.same(parseReference('Nginx:1'), { ok: false, reason: 'invalid image reference "Nginx:1": repository name must be lowercase' });
});

t.test('reason escapes control characters and quotes', async (t) => {
  const r = parseReference('nginx\n"evil');
  t.equal(r.ok, false);
  if (!r.ok) {
    t.notOk(r.reason.includes('\n'), 'no raw newline in the reason');
    t.ok(r.reason.includes('"nginx\\n\\"evil"'), 'input is JSON-quoted');
  }
});

t.test('over 1024 characters (more than any valid reference) is rejected up front, quoted in part', async (t) => {
  const long = `example.com/${'a'.repeat(5000)}`;
  const r = parseReference(long);
  t.equal(r.ok, false);
  if (!r.ok) {
    t.match(r.reason, /longer than 1024 characters/);
    t.ok(r.reason.includes(long.slice(0, 100)), 'starts quoting the input');
    t.ok(r.reason.length < 1200, 'the reason stays short');
    t.match(r.reason, /…\(5012 chars\)/, 'marker with the original length');
  }
});

t.test('the longest valid reference fits under the cap', async (t) => {
  const host = `${'h'.repeat(63)}.${'h'.repeat(63)}.${'h'.repeat(63)}.${'h'.repeat(61)}:65535`;
  const ref = `${host}/${'p'.repeat(255)}:${'t'.repeat(128)}@sha512:${'a'.repeat(128)}`;
  t.ok(ref.length <= MAX_REFERENCE_LENGTH, `${ref.length} characters`);
  t.equal(parseReference(ref).ok, true);
});

t.test('hostile sizes never enter the memo', async (t) => {
  const before = referenceMemoSize();
  for (let i = 0; i < 50; i++) parseReference(`M${String(i).padStart(3, '0')}${'Y'.repeat(1024 * 1024)}`);
  for (let i = 0; i < 50; i++) parseReference(`example.com/${'a'.repeat(600)}${i}`);
  t.equal(referenceMemoSize(), before, 'neither 1 MiB nor 600-character inputs are remembered');
  parseReference('example.com/memo-check:1');
  t.equal(referenceMemoSize(), before + 1, 'an ordinary reference is');
});

t.test('long adversarial inputs under the cap are answered', async (t) => {
  // Shapes that make naive regexes backtrack; the scanner answers each in one pass.
  const inputs = [
    `${'a-'.repeat(2000)}!`,
    `${'a_'.repeat(2000)}_`,
    `example.com/${'a.'.repeat(2000)}`,
    `${'a'.repeat(4000)}:`,
    `[${':'.repeat(4000)}`,
    `${'a.'.repeat(2000)}a:/x`,
  ];
  for (const input of inputs) {
    const r = parseReference(input);
    t.equal(r.ok, false, `${input.slice(0, 12)}... rejected`);
  }
});

t.test('never throws on values that are not strings', async (t) => {
  const values: unknown[] = [undefined, null, 42, {}, ['nginx']];
  for (const v of values) {
    const r = parseReference(v as string);
    t.equal(r.ok, false);
    if (!r.ok) t.match(r.reason, /expected a string/);
  }
});

t.test('formatReference round-trips', async (t) => {
  for (const c of ok) {
    if (c.expect.registry === 'foo') continue; // see the next test
    const first = parseReference(c.input);
    if (!first.ok) {
      t.fail(c.name);
      continue;
    }
    const formatted = formatReference(first.ref);
    const again = parseReference(formatted);
    if (!again.ok) {
      t.fail(`${c.name}: ${again.reason}`);
      continue;
    }
    t.same(again.ref, first.ref, `${c.name}: parse(format(ref)) is ref`);
    t.equal(formatReference(again.ref), formatted, `${c.name}: formatting is stable`);
  }
});

t.test('an uppercase single-label host survives formatting', async (t) => {
  // distribution reads `Foo/bar` as host `Foo` only because of its uppercase; the host is
  // kept as written, so the formatted reference means the same image again.
  const r = parseReference('Foo/bar');
  t.ok(r.ok);
  if (!r.ok) return;
  t.equal(formatReference(r.ref), 'Foo/bar');
  const again = parseReference(formatReference(r.ref));
  t.ok(again.ok && again.ref.registry === 'Foo' && again.ref.repository === 'bar');
});

t.test('hosts compare case-insensitively; settings find Docker Hub under every name', async (t) => {
  t.equal(normaliseRegistryHost('DOCKER.IO'), 'docker.io');
  t.equal(normaliseRegistryHost('INDEX.Docker.io'), 'docker.io');
  t.equal(normaliseRegistryHost('registry-1.docker.io'), 'registry-1.docker.io', 'rules and policy: a different host');
  for (const alias of ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com', 'Registry-1.Docker.IO']) {
    t.equal(registrySettingsKey(alias), 'docker.io', alias);
  }
  t.equal(registrySettingsKey('Mirror.Example.com:5000'), 'mirror.example.com:5000');
  t.equal(registrySettingsKey('docker.io.evil.com'), 'docker.io.evil.com');
});

t.test('tag and digest predicates are the grammar', async (t) => {
  t.ok(isValidTag('v1.2_3-rc'));
  t.notOk(isValidTag('.v1'));
  t.notOk(isValidTag('a'.repeat(129)));
  t.equal(digestAlgorithm(D256), 'sha256');
  t.equal(digestAlgorithm(`sha512:${'a'.repeat(128)}`), 'sha512');
  t.equal(digestAlgorithm(`sha512:${'a'.repeat(64)}`), undefined, 'wrong length for the algorithm');
  t.equal(digestAlgorithm(`sha256:${'A'.repeat(64)}`), undefined, 'uppercase hex');
  t.equal(digestAlgorithm(`md5:${'a'.repeat(32)}`), undefined);
  t.ok(isValidDigest(D256));
});

t.test('rewrites keep the suffix byte for byte', async (t) => {
  const r = parseReference(`docker.io/library/nginx:Latest-RC1@${D256}`);
  t.ok(r.ok);
  if (!r.ok) return;
  const rewritten = `mirror.example.com/dockerhub/${r.ref.repository}${r.ref.suffix}`;
  t.equal(rewritten, `mirror.example.com/dockerhub/library/nginx:Latest-RC1@${D256}`);
  const parsed = parseReference(rewritten);
  t.ok(parsed.ok && parsed.ref.tag === 'Latest-RC1' && parsed.ref.digest === D256);
});

t.test('repositoryName', async (t) => {
  const cases: [string, string][] = [
    ['nginx:1.14.2', 'docker.io/library/nginx'],
    [`index.docker.io/bitnami/redis:7@${D256}`, 'docker.io/bitnami/redis'],
    ['localhost:5000/team/app', 'localhost:5000/team/app'],
    ['[::1]:5000/app:1', '[::1]:5000/app'],
  ];
  for (const [input, expected] of cases) {
    const r = parseReference(input);
    t.ok(r.ok, input);
    if (r.ok) t.equal(repositoryName(r.ref), expected, input);
  }
});

t.test('isValidRegistryHost', async (t) => {
  const valid = [
    'docker.io',
    'index.docker.io',
    'registry.k8s.io',
    'us-docker.pkg.dev',
    'localhost',
    'localhost:5000',
    'Registry.Example.COM',
    'mirror.example.com:443',
    '127.0.0.1',
    '127.0.0.1:5000',
    '[::1]',
    '[::1]:5000',
    '[2001:db8::1]:5000',
    'xn--n3h.com',
    'a',
    'mirror', // valid per the grammar (see the TSDoc note)
    'sub-dom1.foo.com',
  ];
  const invalid = [
    '',
    ' docker.io',
    'exa mple.com',
    'example.com:',
    'example.com:abc',
    'example.com:5000:6000',
    '-example.com',
    'example-.com',
    'example..com',
    '.example.com',
    'example.com.',
    'foo_bar.com',
    'example.com/path',
    'https://example.com',
    '*.example.com',
    '[::1',
    '[]',
    '[fe80::1%eth0]',
    '[::1]5000',
    `doc${KELVIN}er.io`,
    'x'.repeat(5000),
  ];
  for (const h of valid) t.equal(isValidRegistryHost(h), true, `valid: ${JSON.stringify(h)}`);
  for (const h of invalid) t.equal(isValidRegistryHost(h), false, `invalid: ${JSON.stringify(h.slice(0, 40))}`);
  t.equal(isValidRegistryHost(undefined as unknown as string), false, 'not a string');
});

t.test('isValidRepositoryPath', async (t) => {
  const valid = ['nginx', 'library/nginx', 'a/b/c/d', 'foo.bar', 'foo_bar', 'foo__bar', 'foo-bar', 'foo--bar', 'acme-prod/gcr-samples', '0'];
  const invalid = ['', '/a', 'a/', 'a//b', 'A', 'library/Nginx', 'nginx:1', 'nginx@sha256', 'foo___bar', 'foo..bar', '_a', 'a.', '-a', 'a b', 'docker.io:5000/x'];
  for (const p of valid) t.equal(isValidRepositoryPath(p), true, `valid: ${JSON.stringify(p)}`);
  for (const p of invalid) t.equal(isValidRepositoryPath(p), false, `invalid: ${JSON.stringify(p)}`);
  t.equal(isValidRepositoryPath(null as unknown as string), false, 'not a string');
});

t.test('normaliseRegistryHost', async (t) => {
  const cases: [string, string][] = [
    ['docker.io', 'docker.io'],
    ['Docker.IO', 'docker.io'],
    ['index.docker.io', 'docker.io'],
    ['INDEX.Docker.io', 'docker.io'],
    ['gcr.io', 'gcr.io'],
    ['Mirror.Example.com:5000', 'mirror.example.com:5000'],
    ['[FC00::1]:5000', '[fc00::1]:5000'],
    ['registry-1.docker.io', 'registry-1.docker.io'],
    // Only ASCII is lowercased: a look-alike never becomes docker.io.
    [`doc${KELVIN}er.io`, `doc${KELVIN}er.io`],
  ];
  for (const [input, expected] of cases) t.equal(normaliseRegistryHost(input), expected, input);
});

t.test('parseReference remembers answers without letting them change', async (t) => {
  const first = parseReference('quay.io/prometheus/node-exporter:v1.8.1');
  const again = parseReference('quay.io/prometheus/node-exporter:v1.8.1');
  t.equal(again, first, 'the same answer object for the same input');
  t.ok(first.ok && Object.isFrozen(first) && Object.isFrozen(first.ref), 'answers and references are frozen');
  if (first.ok) t.throws(() => ((first.ref as { registry: string }).registry = 'evil.example.com'), TypeError, 'a caller cannot alter the shared answer');
  t.equal(parseReference('quay.io/prometheus/node-exporter:v1.8.1').ok && first.ok && first.ref.registry, 'quay.io');
  const bad = parseReference('Nginx');
  t.same(parseReference('Nginx'), bad, 'failures are remembered as well');
  // Far more distinct inputs than the memo holds: every answer is still right.
  for (let i = 0; i < 10_000; i++) {
    const r = parseReference(`registry.example.com/team/app-${i}:v${i}`);
    if (!r.ok || r.ref.repository !== `team/app-${i}` || r.ref.tag !== `v${i}`) {
      t.fail(`answer ${i} wrong after the memo filled: ${JSON.stringify(r)}`);
      return;
    }
  }
  t.same(parseReference('quay.io/prometheus/node-exporter:v1.8.1'), first, 'an input dropped from the memo parses the same again');
});
