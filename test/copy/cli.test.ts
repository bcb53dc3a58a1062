import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { main } from '../../src/cli.js';
import { pushImage, pushIndex, startRegistry } from '../support/registry.js';
import { headDigest } from './support.js';

function capture(): { out: string[]; err: string[]; io: { out(l: string): void; err(l: string): void } } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l) => out.push(l), err: (l) => err.push(l) } };
}

/** A stand-in for a running instance's metrics port, serving a report. */
async function reportServer(report: unknown): Promise<{ url: string; stop(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url !== '/report') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(report));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, stop: () => new Promise<void>((r) => server.close(() => r())) };
}

void t.test('mirrorgate copy', async (t) => {
  const src = await startRegistry();
  const mirror = await startRegistry({ auth: { htpasswd: { user: 'copier', pass: 's3cret' } } });
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-copy-cli-'));
  t.teardown(async () => {
    await Promise.all([src.stop(), mirror.stop()]);
    await rm(dir, { recursive: true, force: true });
  });
  const auth = Buffer.from('copier:s3cret').toString('base64');
  await writeFile(path.join(dir, 'docker.json'), JSON.stringify({ auths: { [mirror.host]: { auth } } }));
  const config = path.join(dir, 'config.yaml');
  await writeFile(
    config,
    [
      'rules:',
      `  - from: ${src.host}`,
      `    to: ${mirror.host}/mirror`,
      'registries:',
      `  "${src.host}": {insecure: true}`,
      `  "${mirror.host}": {insecure: true, auth: {file: ${JSON.stringify(path.join(dir, 'docker.json'))}}}`,
      '',
    ].join('\n'),
  );
  const appDigest = await pushImage(src, 'library/app', 'v1');
  const multiDigest = await pushIndex(src, 'library/multi', 'v1', { format: 'docker' });

  t.test('copies each image to its rewrite target, one summary line each', async (t) => {
    const c = capture();
    const code = await main(['copy', '--config', config, `${src.host}/library/app:v1`, `${src.host}/library/multi:v1`], c.io);
    t.equal(code, 0, c.err.join('\n'));
    t.equal(c.out.length, 2);
    t.match(c.out[0], new RegExp(`^copied ${src.host}/library/app:v1 ${appDigest} -> ${mirror.host}/mirror/library/app:v1: [0-9.]+ (B|KiB|MiB) sent, 2 blobs sent, 0 skipped, 0 mounted$`));
    t.match(c.out[1], new RegExp(`^copied ${src.host}/library/multi:v1 ${multiDigest} -> `));
    t.equal(await headDigest(mirror, 'mirror/library/multi', 'v1'), multiDigest);

    const again = capture();
    t.equal(await main(['copy', '--config', config, `${src.host}/library/app:v1`], again.io), 0);
    t.match(again.out[0], /: 0 B sent, 0 blobs sent, 0 skipped, 0 mounted$/);
  });

  t.test('a failed image is named and the exit code is 1; the others are still copied', async (t) => {
    const c = capture();
    const code = await main(['copy', '--config', config, `${src.host}/library/nope:v1`, 'quay.io/other/thing:v1', `${src.host}/library/app:v1`], c.io);
    t.equal(code, 1);
    t.equal(c.out.length, 1);
    t.match(c.err.join('\n'), new RegExp(`copy failed: ${src.host}/library/nope:v1 -> ${mirror.host}/mirror/library/nope:v1: source manifest .* not found`));
    t.match(c.err.join('\n'), /copy failed: quay\.io\/other\/thing:v1: no rule matches it/);
    t.match(c.err.at(-1), /2 of 3 images failed: .*library\/nope:v1, quay\.io\/other\/thing:v1$/);
  });

  t.test('--platform narrows and says so', async (t) => {
    const c = capture();
    await pushIndex(src, 'library/plat', 'v1', { format: 'oci' });
    t.equal(await main(['copy', '--config', config, '--platform', 'linux/amd64', `${src.host}/library/plat:v1`], c.io), 0, c.err.join('\n'));
    t.match(c.out[0], /\(linux\/amd64 of index sha256:[0-9a-f]{64}: the target now names this platform's manifest, not the index\)$/);
  });

  t.test('--missing copies the report of a running instance', async (t) => {
    await pushImage(src, 'library/from-report', 'v3');
    const stub = await reportServer({
      generatedAt: '2026-11-22T10:00:00Z',
      mode: 'enforce',
      registries: { [src.host]: { target: `${mirror.host}/mirror`, rewritten: 0, missing: [`${src.host}/library/from-report:v3`], missingOverflow: 0 } },
    });
    t.teardown(() => stub.stop());
    const c = capture();
    t.equal(await main(['copy', '--config', config, '--missing', '--url', stub.url], c.io), 0, c.err.join('\n'));
    t.match(c.out, [new RegExp(`^copied ${src.host}/library/from-report:v3 sha256:`)]);
    t.ok(await headDigest(mirror, 'mirror/library/from-report', 'v3'));

    const empty = await reportServer({ registries: {} });
    t.teardown(() => empty.stop());
    const e = capture();
    t.equal(await main(['copy', '--config', config, '--missing', '--url', empty.url], e.io), 0);
    t.match(e.out, [/nothing to copy/]);
  });

  t.test('--missing with an instance that does not answer: exit 1 naming it', async (t) => {
    const gone = await reportServer({});
    await gone.stop();
    const c = capture();
    t.equal(await main(['copy', '--config', config, '--missing', '--url', gone.url], c.io), 1);
    t.match(c.err.join('\n'), new RegExp(`${gone.url}/report: ECONNREFUSED`));
  });

  const usage = [
    { name: 'no image', args: ['copy', '--config', 'x.yaml'], want: /at least one IMAGE, or --missing/ },
    { name: 'bad platform', args: ['copy', '--config', 'x.yaml', '--platform', 'linux', 'a:b'], want: /--platform: os\/arch/ },
    { name: '--url without --missing', args: ['copy', '--config', 'x.yaml', '--url', 'http://x', 'a:b'], want: /--url and --kubeconfig go with --missing/ },
    { name: '--url and --kubeconfig', args: ['copy', '--config', 'x.yaml', '--missing', '--url', 'http://x', '--kubeconfig', 'k'], want: /exclude each other/ },
    { name: 'no config', args: ['copy', 'a:b'], want: /--config FILE is required/ },
  ];
  for (const u of usage) {
    t.test(`usage error: ${u.name}`, async (t) => {
      const c = capture();
      t.equal(await main(u.args, c.io), 2);
      t.match(c.err.join('\n'), u.want);
    });
  }
});
