import t from 'tap';
import { compilePolicy, judgeImage, type Policy } from '../../src/core/policy.js';

function policy(allowed: string[]): Policy {
  const p = compilePolicy(allowed);
  if (!p.ok) throw new Error(JSON.stringify(p.problems));
  return p.policy;
}

const p = policy(['mirror.example.com', '*.pkg.dev', 'registry.k8s.io', 'docker.io/library', 'localhost:5000']);
const D = 'sha256:' + 'b'.repeat(64);

const cases: { name: string; image: string; allowed: boolean; registry?: string }[] = [
  { name: 'exact host', image: 'mirror.example.com/dockerhub/library/nginx:1', allowed: true },
  { name: 'exact host, uppercase spelling', image: 'MIRROR.example.com/x/y:1', allowed: true },
  { name: 'wildcard subdomain', image: 'us-docker.pkg.dev/acme/repo/app:1', allowed: true },
  { name: 'wildcard does not match apex', image: 'pkg.dev/acme/app:1', allowed: false, registry: 'pkg.dev' },
  { name: 'look-alike pkg.dev', image: 'us-docker.pkg.dev.evil.io/acme/app:1', allowed: false, registry: 'us-docker.pkg.dev.evil.io' },
  { name: 'look-alike pkg.dev suffix', image: 'pkg.dev.evil.io/app:1', allowed: false, registry: 'pkg.dev.evil.io' },
  { name: 'look-alike docker.io', image: 'docker.io.evil.com/library/nginx:1', allowed: false, registry: 'docker.io.evil.com' },
  { name: 'look-alike gcr.io', image: 'gcr.io.attacker.net/x/y:1', allowed: false, registry: 'gcr.io.attacker.net' },
  { name: 'look-alike prefix host', image: 'evilmirror.example.com/x:1', allowed: false, registry: 'evilmirror.example.com' },
  { name: 'subdomain of an exact host is not allowed', image: 'a.mirror.example.com/x:1', allowed: false, registry: 'a.mirror.example.com' },
  { name: 'registry.k8s.io', image: 'registry.k8s.io/pause:3.9', allowed: true },
  { name: 'repository prefix: official image', image: 'nginx:1.25', allowed: true },
  { name: 'repository prefix: official image by digest', image: `nginx@${D}`, allowed: true },
  { name: 'repository prefix: index.docker.io spelling', image: 'index.docker.io/library/redis:7', allowed: true },
  { name: 'repository prefix: user image not allowed', image: 'bitnami/redis:7', allowed: false, registry: 'docker.io' },
  { name: 'repository prefix: look-alike path', image: 'docker.io/library-evil/x:1', allowed: false, registry: 'docker.io' },
  // The hole this closes: `DOCKER.IO/evil` is repository `evil` for distribution and
  // containerd, so `docker.io/library` must not admit it (hosts compare case-insensitively,
  // the repository is what the runtime pulls).
  { name: 'DOCKER.IO/evil is not docker.io/library', image: 'DOCKER.IO/evil:1', allowed: false, registry: 'docker.io' },
  { name: 'INDEX.DOCKER.IO/nginx is repository nginx, not library/nginx', image: 'INDEX.DOCKER.IO/nginx', allowed: false, registry: 'docker.io' },
  { name: 'uppercase Docker Hub host with library/ path is allowed', image: 'Docker.IO/library/nginx:1', allowed: true },
  { name: 'port must match', image: 'localhost:5000/app:1', allowed: true },
  { name: 'other port denied', image: 'localhost:5001/app:1', allowed: false, registry: 'localhost:5001' },
  { name: 'no port vs allowed port', image: 'localhost/app:1', allowed: false, registry: 'localhost' },
  { name: 'quay not allowed', image: 'quay.io/coreos/etcd:v3', allowed: false, registry: 'quay.io' },
  { name: 'invalid reference denied', image: 'nginx:', allowed: false, registry: 'invalid' },
  { name: 'url denied as invalid', image: 'https://mirror.example.com/x:1', allowed: false, registry: 'invalid' },
];

t.test('judgeImage', async (t) => {
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const v = judgeImage(p, c.image);
      t.equal(v.allowed, c.allowed);
      if (!v.allowed) {
        t.equal(v.registry, c.registry);
        t.match(v.message, c.image, 'message quotes the image');
        if (v.reason === 'registry') t.match(v.message, 'allowed: mirror.example.com, *.pkg.dev', 'message lists what is allowed');
      }
    });
  }
});

t.test('compilePolicy reports bad entries by index', async (t) => {
  const r = compilePolicy(['mirror.example.com', 'https://x.io', 'a b']);
  t.equal(r.ok, false);
  if (!r.ok) t.same(r.problems.map((p) => p.path), ['policy.allowedRegistries[1]', 'policy.allowedRegistries[2]']);
});
