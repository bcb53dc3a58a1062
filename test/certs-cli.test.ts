/**
 * `mirrorgate certs`, in-process through `main()`: offline files (`--out-dir`) with the
 * caBundle to paste; usage and kubeconfig errors exit 2. Against a cluster (the Secret and
 * the caBundle of the MutatingWebhookConfiguration) it is tested with the real API server
 * in test/real/adapters.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { main } from '../src/cli.js';

function capture(): { out: string[]; err: string[]; io: { out(l: string): void; err(l: string): void } } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l) => out.push(l), err: (l) => err.push(l) } };
}

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-certs-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const unb64 = (s: unknown): string => Buffer.from(String(s), 'base64').toString('utf8');

t.test('--out-dir writes the CA and serving pair (0600), prints the caBundle, and reuses them', async (t) => {
  const dir = join(await tempDir(t), 'certs');
  const c = capture();
  t.equal(await main(['certs', '--out-dir', dir, '--service', 'gate', '--namespace', 'infra'], c.io), 0, c.err.join('\n'));
  t.match(c.out[0], /^wrote .*ca\.crt, .*ca\.key, .*tls\.crt, .*tls\.key for localhost, gate, gate\.infra, gate\.infra\.svc, gate\.infra\.svc\.cluster\.local$/);
  for (const f of ['ca.crt', 'ca.key', 'tls.crt', 'tls.key']) t.equal((await stat(join(dir, f))).mode & 0o777, 0o600, `${f} is 0600`);

  const ca = await readFile(join(dir, 'ca.crt'), 'utf8');
  const bundleLine = c.out.find((l) => l.startsWith('caBundle: '));
  t.equal(unb64(bundleLine?.slice('caBundle: '.length)), ca, 'the caBundle line is the CA, base64');
  const leaf = new X509Certificate(await readFile(join(dir, 'tls.crt'), 'utf8'));
  t.ok(leaf.verify(new X509Certificate(ca).publicKey), 'signed by the CA');
  t.equal(leaf.checkHost('gate.infra.svc', { subject: 'never' }), 'gate.infra.svc', 'valid for the name the API server calls');

  const secretText = await readFile(join(dir, 'secret.yaml'), 'utf8');
  t.match(secretText, /^apiVersion: v1\nkind: Secret\n/, 'secret.yaml is YAML, as its name says');
  const secret = parseYaml(secretText);
  t.notOk('ca.key' in secret.data, 'the CA key never leaves the folder');
  t.match(secret, { apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls', metadata: { name: 'mirrorgate-tls', namespace: 'infra' } });
  t.equal(unb64(secret.data['tls.crt']), await readFile(join(dir, 'tls.crt'), 'utf8'), 'the Secret holds the serving certificate');
  t.equal(unb64(secret.data['ca.crt']), ca);
  t.equal((await stat(join(dir, 'secret.yaml'))).mode & 0o777, 0o600, 'secret.yaml is 0600 (it holds the key)');

  const cert = await readFile(join(dir, 'tls.crt'), 'utf8');
  const again = capture();
  t.equal(await main(['certs', '--out-dir', dir, '--service', 'gate', '--namespace', 'infra'], again.io), 0);
  t.match(again.out[0], /^kept /);
  t.equal(again.out[1], bundleLine, 'same caBundle');
  t.equal(await readFile(join(dir, 'tls.crt'), 'utf8'), cert, 'same certificate');
});

t.test('usage and kubeconfig errors exit 2', async (t) => {
  const dir = await tempDir(t);
  const cases: { name: string; args: string[]; message: RegExp }[] = [
    { name: 'unknown flag', args: ['certs', '--bogus'], message: /Unknown option '--bogus'/ },
    { name: 'positional argument', args: ['certs', 'extra'], message: /certs takes no arguments/ },
    { name: 'both modes', args: ['certs', '--out-dir', dir, '--kubeconfig', join(dir, 'kubeconfig')], message: /--out-dir and --kubeconfig exclude each other/ },
    { name: 'bad service name', args: ['certs', '--out-dir', dir, '--service', 'Not_A_Name'], message: /--service: not a Kubernetes name/ },
    { name: 'bad namespace', args: ['certs', '--out-dir', dir, '--namespace', 'Infra'], message: /--namespace: not a Kubernetes name/ },
    { name: 'bad webhook name', args: ['certs', '--webhook-name', 'gate..example'], message: /--webhook-name: not a Kubernetes name/ },
    { name: 'flag without its value', args: ['certs', '--out-dir'], message: /argument missing/ },
    { name: 'missing kubeconfig', args: ['certs', '--kubeconfig', join(dir, 'nope')], message: /kubeconfig .*nope does not exist/ },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const io = capture();
      t.equal(await main(c.args, io.io), 2);
      t.match(io.err.join('\n'), c.message);
      t.same(io.out, []);
    });
  }
});
