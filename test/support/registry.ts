/**
 * A real distribution registry for tests (Debian's `docker-registry`, distribution 2.8),
 * and a way to fill it without any container tool: images are pushed through the registry
 * API by a small client of its own, independent of `src/registry`, so tests of our client
 * (and later of the copier) compare against something that did not come from the code
 * under test.
 *
 * `startRegistry()` per scenario, reuse it across the scenario's tests, `stop()` in teardown.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import forge from 'node-forge';
import { stringify } from 'yaml';

/** Basic credentials, as `RegistryAuth` in src/registry. */
export interface Credentials {
  username: string;
  password: string;
}

export interface StartRegistryOptions {
  /**
   * `htpasswd`: Basic auth with one user (the file is made with `htpasswd -Bbn`).
   * `token`: Bearer auth against a token server, e.g. `startTokenServer()` from
   * `./token-server.js` (pass its realm, service, issuer and rootCertPem).
   */
  auth?: { htpasswd: { user: string; pass: string } } | { token: { realm: string; service: string; issuer: string; rootCertPem: string } };
  /** Serve HTTPS with this PEM certificate and key; `ca` (the PEM root that signed it) lets the push helpers trust it. */
  tls?: { cert: string; key: string; ca?: string };
}

/** A running registry. */
export interface TestRegistry {
  /** `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`. */
  url: string;
  /** `127.0.0.1:PORT`, as an image reference names the registry. */
  host: string;
  /** True when the registry speaks plain HTTP. */
  insecure: boolean;
  /** The root to trust for HTTPS (from `tls.ca`). */
  ca?: string[];
  /** The htpasswd user, which the push helpers use unless given other credentials. */
  auth?: Credentials;
  /** Temporary folder with the config and the storage. */
  dir: string;
  /** Stop the registry (SIGTERM, SIGKILL after 5 s) and delete its folder. Idempotent. */
  stop(): Promise<void>;
}

const MISSING = 'is not installed: run `make test-deps` (Debian packages docker-registry and apache2-utils)';

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => {
    try {
      accessSync(path.join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function htpasswdLine(user: string, pass: string): Promise<string> {
  if (!onPath('htpasswd')) throw new Error(`htpasswd ${MISSING}`);
  return new Promise((resolve, reject) => {
    execFile('htpasswd', ['-Bbn', user, pass], (err, stdout) => {
      if (err) reject(new Error(`htpasswd failed: ${err.message}`, { cause: err }));
      else resolve(stdout.trim() + '\n');
    });
  });
}

/**
 * Start `docker-registry serve` on 127.0.0.1 (a free port) with storage in a new temporary
 * folder, deletes enabled and logs at warn, optionally with Basic or Bearer auth and TLS.
 * Resolves once `/v2/` answers (any status).
 *
 * @throws Error saying to run `make test-deps` when `docker-registry` (or, for htpasswd,
 *   `htpasswd`) is missing; Error with the registry's output when it does not start.
 */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  if (!onPath('docker-registry')) throw new Error(`docker-registry ${MISSING}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'mirrorgate-registry-'));
  const port = await freePort();
  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: path.join(dir, 'data') }, delete: { enabled: true } },
    http: { addr: `127.0.0.1:${port}`, secret: createHash('sha256').update(dir).digest('hex') },
  };
  let auth: Credentials | undefined;
  if (opts.auth && 'htpasswd' in opts.auth) {
    const { user, pass } = opts.auth.htpasswd;
    await writeFile(path.join(dir, 'htpasswd'), await htpasswdLine(user, pass));
    config.auth = { htpasswd: { realm: 'mirrorgate-test', path: path.join(dir, 'htpasswd') } };
    auth = { username: user, password: pass };
  } else if (opts.auth && 'token' in opts.auth) {
    const t = opts.auth.token;
    await writeFile(path.join(dir, 'token-root.pem'), t.rootCertPem);
    config.auth = { token: { realm: t.realm, service: t.service, issuer: t.issuer, rootcertbundle: path.join(dir, 'token-root.pem') } };
  }
  if (opts.tls) {
    await writeFile(path.join(dir, 'tls.crt'), opts.tls.cert);
    await writeFile(path.join(dir, 'tls.key'), opts.tls.key, { mode: 0o600 });
    (config.http as Record<string, unknown>).tls = { certificate: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') };
  }
  const configPath = path.join(dir, 'config.yml');
  await writeFile(configPath, stringify(config));

  // REGISTRY_* variables would override the config file.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
  const child = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  const keep = (b: Buffer): void => {
    output = (output + b.toString('utf8')).slice(-8192);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await kill(child, exited);
    await rm(dir, { recursive: true, force: true });
  };

  const scheme = opts.tls ? 'https' : 'http';
  const url = `${scheme}://127.0.0.1:${port}`;
  try {
    await waitReady(url, child, () => output);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    host: `127.0.0.1:${port}`,
    insecure: !opts.tls,
    ...(opts.tls?.ca ? { ca: [opts.tls.ca] } : {}),
    ...(auth ? { auth } : {}),
    dir,
    stop,
  };
}

async function kill(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

async function waitReady(url: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`docker-registry did not start: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`docker-registry exited (${child.exitCode ?? child.signalCode}):\n${output()}`);
    }
    // The probe only asks whether something answers; trust is tested elsewhere.
    const status = await probe(`${url}/v2/`);
    if (status !== undefined) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not answer on ${url} within 15 s:\n${output()}`);
}

function probe(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { rejectUnauthorized: false, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

// ---------------------------------------------------------------------------------------
// Images

/** `os/architecture[/variant]` of an image, as a manifest list names it. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface PushImageOptions {
  /** Credentials for the registry; defaults to the htpasswd user of `startRegistry`. */
  auth?: Credentials;
  /** Docker v2 (default) or OCI manifest. */
  format?: 'docker' | 'oci';
  /** Platform recorded in the config blob (default linux/amd64). */
  platform?: Platform;
  /** Content of the single file in the layer; different content makes a different image. */
  content?: string;
}

export interface PushIndexOptions {
  auth?: Credentials;
  /** OCI index of OCI manifests (default), or Docker manifest list of Docker v2 manifests. */
  format?: 'oci' | 'docker';
  /** One child image per platform (default linux/amd64 and linux/arm64). */
  platforms?: Platform[];
  /** Prefix of each child's layer content (each child also gets its platform in it). */
  content?: string;
}

const MT = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

/** `sha256:<hex>` of some bytes. */
export function sha256Digest(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** A one-file ustar archive, by hand: a 512-byte header, the padded content, two zero blocks. */
export function tarWithFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string): void => {
    header.write(value, offset, length, 'ascii');
  };
  const octal = (offset: number, length: number, n: number): void => field(offset, length, n.toString(8).padStart(length - 1, '0') + '\0');
  field(0, 100, name);
  octal(100, 8, 0o644); // mode
  octal(108, 8, 0); // uid
  octal(116, 8, 0); // gid
  octal(124, 12, content.length);
  octal(136, 12, 0); // mtime: fixed, so the same content gives the same digest
  field(148, 8, '        '); // checksum counts as spaces while summing
  field(156, 1, '0'); // regular file
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  let sum = 0;
  for (const byte of header) sum += byte;
  field(148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  const padded = Buffer.alloc(Math.ceil(content.length / 512) * 512);
  content.copy(padded);
  return Buffer.concat([header, padded, Buffer.alloc(1024)]);
}

interface Built {
  blobs: Buffer[];
  manifest: Buffer;
  mediaType: string;
}

function buildImage(format: 'docker' | 'oci', platform: Platform, content: string): Built {
  const tar = tarWithFile('hello.txt', Buffer.from(content + '\n'));
  const layer = gzipSync(tar);
  const config = Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Cmd: ['/hello.txt'] },
      rootfs: { type: 'layers', diff_ids: [sha256Digest(tar)] },
      history: [{ created_by: 'mirrorgate test support' }],
    }),
  );
  const oci = format === 'oci';
  const mediaType = oci ? MT.ociManifest : MT.dockerManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: oci ? MT.ociConfig : MT.dockerConfig, size: config.length, digest: sha256Digest(config) },
      layers: [{ mediaType: oci ? MT.ociLayer : MT.dockerLayer, size: layer.length, digest: sha256Digest(layer) }],
    }),
  );
  return { blobs: [layer, config], manifest, mediaType };
}

/**
 * Push a small image (one real gzip-compressed tar layer, a config blob, a Docker v2 or OCI
 * manifest) to `reg` as `name:tag` (by digest only when `tag` is undefined), through the
 * registry API: `POST` upload, `PUT ...&digest=`, `PUT` manifest; authenticating when the
 * registry asks. Resolves to the manifest digest.
 */
export async function pushImage(reg: TestRegistry, name: string, tag: string | undefined, opts: PushImageOptions = {}): Promise<string> {
  const session = new PushSession(reg, name, opts.auth ?? reg.auth);
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const built = buildImage(opts.format ?? 'docker', platform, opts.content ?? `hello from ${name}`);
  return (await session.pushBuilt(built, tag)).digest;
}

/**
 * Push a multi-platform image: one child image per platform (pushed by digest first), then
 * an OCI index or Docker manifest list naming them, as `name:tag`. Resolves to the index
 * digest.
 */
export async function pushIndex(reg: TestRegistry, name: string, tag: string, opts: PushIndexOptions = {}): Promise<string> {
  const session = new PushSession(reg, name, opts.auth ?? reg.auth);
  const format = opts.format ?? 'oci';
  const platforms = opts.platforms ?? [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ];
  const children = [];
  for (const p of platforms) {
    const content = `${opts.content ?? `hello from ${name}`} on ${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
    const child = await session.pushBuilt(buildImage(format, p, content), undefined);
    children.push({ mediaType: child.mediaType, size: child.size, digest: child.digest, platform: p });
  }
  const mediaType = format === 'oci' ? MT.ociIndex : MT.dockerList;
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests: children }));
  return session.putManifest(index, mediaType, tag);
}

/**
 * Delete a manifest through the distribution API (`DELETE /v2/<name>/manifests/<digest>`;
 * the registry runs with deletes enabled), which also removes the tags naming it.
 */
export async function deleteManifest(reg: TestRegistry, name: string, digest: string, opts: { auth?: Credentials } = {}): Promise<void> {
  const session = new PushSession(reg, name, opts.auth ?? reg.auth);
  const res = await session.call('DELETE', `/v2/${name}/manifests/${digest}`);
  if (res.status !== 202) throw new Error(`delete manifest ${name}@${digest}: HTTP ${res.status} ${res.body.toString()}`);
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Requests to one repository, answering Basic or Bearer challenges and remembering the answer. */
class PushSession {
  #authorization: string | undefined;
  constructor(
    private readonly reg: TestRegistry,
    private readonly name: string,
    private readonly auth: Credentials | undefined,
  ) {}

  async pushBuilt(built: Built, tag: string | undefined): Promise<{ digest: string; size: number; mediaType: string }> {
    for (const blob of built.blobs) await this.putBlob(blob);
    const digest = await this.putManifest(built.manifest, built.mediaType, tag);
    return { digest, size: built.manifest.length, mediaType: built.mediaType };
  }

  async putBlob(blob: Buffer): Promise<void> {
    const digest = sha256Digest(blob);
    const head = await this.call('HEAD', `/v2/${this.name}/blobs/${digest}`);
    if (head.status === 200) return;
    const start = await this.call('POST', `/v2/${this.name}/blobs/uploads/`);
    const location = start.headers.location;
    if (start.status !== 202 || !location) throw new Error(`start upload: HTTP ${start.status} ${start.body.toString()}`);
    const target = new URL(location, this.reg.url);
    target.searchParams.set('digest', digest);
    const put = await this.call('PUT', target.pathname + target.search, { 'content-type': 'application/octet-stream' }, blob);
    if (put.status !== 201) throw new Error(`upload ${digest}: HTTP ${put.status} ${put.body.toString()}`);
  }

  async putManifest(manifest: Buffer, mediaType: string, tag: string | undefined): Promise<string> {
    const digest = sha256Digest(manifest);
    const res = await this.call('PUT', `/v2/${this.name}/manifests/${tag ?? digest}`, { 'content-type': mediaType }, manifest);
    if (res.status !== 201) throw new Error(`put manifest: HTTP ${res.status} ${res.body.toString()}`);
    const answered = res.headers['docker-content-digest'];
    if (answered !== digest) throw new Error(`put manifest: registry says ${String(answered)}, expected ${digest}`);
    return digest;
  }

  async call(method: string, p: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Answer> {
    const send = (): Promise<Answer> =>
      send1(this.reg, method, new URL(p, this.reg.url), { ...headers, ...(this.#authorization ? { authorization: this.#authorization } : {}) }, body);
    let res = await send();
    if (res.status === 401) {
      this.#authorization = await this.answer(String(res.headers['www-authenticate'] ?? ''));
      res = await send();
    }
    return res;
  }

  async answer(challenge: string): Promise<string> {
    if (/^basic\b/i.test(challenge)) {
      if (!this.auth) throw new Error('registry wants Basic credentials: pass opts.auth');
      return basicHeader(this.auth);
    }
    if (!/^bearer\b/i.test(challenge)) throw new Error(`unexpected challenge: ${challenge}`);
    const params: Record<string, string> = {};
    for (const m of challenge.matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
    if (!params.realm) throw new Error(`bearer challenge without realm: ${challenge}`);
    const realm = new URL(params.realm);
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', `repository:${this.name}:pull,push`);
    const res = await send1(this.reg, 'GET', realm, this.auth ? { authorization: basicHeader(this.auth) } : {});
    if (res.status !== 200) throw new Error(`token: HTTP ${res.status}`);
    const parsed = JSON.parse(res.body.toString()) as { token?: string; access_token?: string };
    return `Bearer ${parsed.token ?? parsed.access_token ?? ''}`;
  }
}

function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

function send1(reg: TestRegistry, method: string, url: URL, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(
      url,
      {
        method,
        headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) },
        agent: false,
        ...(reg.ca ? { ca: reg.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------
// TLS

/** A CA and a serving certificate for 127.0.0.1 and localhost that it signed, all PEM. */
export interface TestTls {
  ca: string;
  cert: string;
  key: string;
}

/**
 * Make a throwaway CA and a serving certificate for `127.0.0.1`/`localhost`, valid for a day
 * (node-forge certificates, RSA keys from node:crypto, which is much faster than forge).
 * Pass `{ cert, key, ca }` as `startRegistry({ tls })` and trust `ca` in the client.
 */
export function createTestTls(): TestTls {
  const keys = (): { priv: forge.pki.rsa.PrivateKey; pub: forge.pki.rsa.PublicKey; pem: string } => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    return {
      priv: forge.pki.privateKeyFromPem(pem),
      pub: forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString()),
      pem,
    };
  };
  const validity = (c: forge.pki.Certificate, serial: string): void => {
    c.serialNumber = serial;
    c.validity.notBefore = new Date(Date.now() - 3600_000);
    c.validity.notAfter = new Date(Date.now() + 86400_000);
  };
  const caKeys = keys();
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.pub;
  validity(ca, '01');
  const caName = [{ name: 'commonName', value: 'mirrorgate test registry CA' }];
  ca.setSubject(caName);
  ca.setIssuer(caName);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  ca.sign(caKeys.priv, forge.md.sha256.create());

  const leafKeys = keys();
  const leaf = forge.pki.createCertificate();
  leaf.publicKey = leafKeys.pub;
  validity(leaf, '02');
  leaf.setSubject([{ name: 'commonName', value: '127.0.0.1' }]);
  leaf.setIssuer(caName);
  leaf.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }, { type: 2, value: 'localhost' }] },
  ]);
  leaf.sign(caKeys.priv, forge.md.sha256.create());
  return { ca: forge.pki.certificateToPem(ca), cert: forge.pki.certificateToPem(leaf), key: leafKeys.pem };
}
