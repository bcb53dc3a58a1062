/**
 * Helpers for the copier tests: a forwarding proxy on loopback (to inject a 429, to watch
 * bytes flow), a manifest probe independent of src/ (Basic or Bearer auth), and an image
 * with a large layer.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Credentials, TestRegistry } from '../support/registry.js';

export interface Proxy {
  url: string;
  host: string;
  /** Request body bytes forwarded upstream (uploads). */
  uploaded: number;
  requests: { method: string; path: string; status: number }[];
  stop(): Promise<void>;
}

export interface ProxyHooks {
  /** Answer a request instead of forwarding it; return true when answered. */
  intercept?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  /** Forward the upstream answer's body through this instead of piping it. */
  body?: (req: http.IncomingMessage, upstream: http.IncomingMessage, res: http.ServerResponse) => boolean;
}

/** An HTTP proxy on 127.0.0.1 forwarding to `upstream` (keeps the Host header, so upload Locations point at the proxy). */
export async function startProxy(upstream: string, hooks: ProxyHooks = {}): Promise<Proxy> {
  const up = new URL(upstream);
  const proxy: Proxy = { url: '', host: '', uploaded: 0, requests: [], stop: async () => undefined };
  const server = http.createServer((req, res) => {
    const entry = { method: req.method ?? '', path: req.url ?? '', status: 0 };
    proxy.requests.push(entry);
    if (hooks.intercept?.(req, res)) {
      entry.status = res.statusCode;
      return;
    }
    const out = http.request(
      { hostname: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (ures) => {
        entry.status = ures.statusCode ?? 0;
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        if (!hooks.body?.(req, ures, res)) ures.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.on('data', (c: Buffer) => {
      proxy.uploaded += c.length;
    });
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  proxy.url = `http://127.0.0.1:${port}`;
  proxy.host = `127.0.0.1:${port}`;
  proxy.stop = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}

function basicHeader(auth: Credentials | undefined): Record<string, string> {
  return auth ? { authorization: `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}` } : {};
}

function authHeader(reg: TestRegistry): Record<string, string> {
  return basicHeader(reg.auth);
}

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Read {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function exchange(url: URL, method: string, headers: Record<string, string>): Promise<Read> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A pull token for `name` from the realm of a Bearer challenge, fetched with `auth`, or
 * undefined when the challenge is not Bearer.
 */
export async function pullToken(challenge: string, name: string, auth: Credentials | undefined, actions = 'pull'): Promise<string | undefined> {
  if (!/^bearer\b/i.test(challenge)) return undefined;
  const params: Record<string, string> = {};
  for (const m of challenge.matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
  if (!params.realm) return undefined;
  const realm = new URL(params.realm);
  if (params.service) realm.searchParams.set('service', params.service);
  realm.searchParams.set('scope', `repository:${name}:${actions}`);
  const res = await exchange(realm, 'GET', basicHeader(auth));
  if (res.status !== 200) throw new Error(`token for ${name}: HTTP ${res.status}`);
  const parsed = JSON.parse(res.body.toString()) as { token?: string; access_token?: string };
  return parsed.token ?? parsed.access_token;
}

/** GET or HEAD a manifest, answering a Basic or Bearer challenge with `auth` (default the registry's htpasswd user). */
async function readManifest(reg: TestRegistry, method: 'GET' | 'HEAD', name: string, ref: string, auth: Credentials | undefined): Promise<Read> {
  const url = new URL(`/v2/${name}/manifests/${ref}`, reg.url);
  let res = await exchange(url, method, { accept: ACCEPT, ...basicHeader(auth) });
  if (res.status === 401) {
    const token = await pullToken(String(res.headers['www-authenticate'] ?? ''), name, auth);
    if (token !== undefined) res = await exchange(url, method, { accept: ACCEPT, authorization: `Bearer ${token}` });
  }
  return res;
}

/**
 * `Docker-Content-Digest` of `name:ref` as the registry answers it (undefined when absent),
 * like `crane digest`; behind Bearer auth, with a pull token fetched with `auth`.
 */
export async function headDigest(reg: TestRegistry, name: string, ref: string, auth: Credentials | undefined = reg.auth): Promise<string | undefined> {
  const res = await readManifest(reg, 'HEAD', name, ref, auth);
  if (res.status === 404) return undefined;
  if (res.status === 200) return String(res.headers['docker-content-digest']);
  throw new Error(`HEAD ${name}:${ref}: HTTP ${res.status}`);
}

/** The bytes of manifest `name:ref`, as `headDigest` reaches them. */
export async function manifestBytes(reg: TestRegistry, name: string, ref: string, auth: Credentials | undefined = reg.auth): Promise<Buffer> {
  const res = await readManifest(reg, 'GET', name, ref, auth);
  if (res.status !== 200) throw new Error(`GET ${name}:${ref}: HTTP ${res.status}`);
  return res.body;
}

/**
 * headDigest for polling while a copy is being written: docker-registry's filesystem
 * storage can answer 500 for a manifest whose files are half written, which means
 * "not yet" here.
 */
export async function pollDigest(reg: TestRegistry, name: string, ref: string): Promise<string | undefined> {
  try {
    return await headDigest(reg, name, ref);
  } catch (err) {
    if (/HTTP 5\d\d/.test((err as Error).message)) return undefined;
    throw err;
  }
}

function send(reg: TestRegistry, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, reg.url), { method, headers: { ...headers, ...authHeader(reg), ...(body ? { 'content-length': String(body.length) } : {}) }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function putBlob(reg: TestRegistry, name: string, blob: Buffer): Promise<void> {
  const start = await send(reg, 'POST', `/v2/${name}/blobs/uploads/`, {});
  if (start.status !== 202) throw new Error(`start upload: HTTP ${start.status}`);
  const loc = new URL(String(start.headers.location), reg.url);
  loc.searchParams.set('digest', sha(blob));
  const put = await send(reg, 'PUT', loc.pathname + loc.search, { 'content-type': 'application/octet-stream' }, blob);
  if (put.status !== 201) throw new Error(`put blob: HTTP ${put.status}`);
}

/** Push a Docker v2 image whose single layer is `size` random (incompressible) bytes; returns digests. */
export async function pushBigImage(reg: TestRegistry, name: string, tag: string, size: number): Promise<{ digest: string; layer: string }> {
  const layer = randomBytes(size);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(layer)] } }));
  await putBlob(reg, name, layer);
  await putBlob(reg, name, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: sha(config) },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.length, digest: sha(layer) }],
    }),
  );
  const put = await send(reg, 'PUT', `/v2/${name}/manifests/${tag}`, { 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' }, manifest);
  if (put.status !== 201) throw new Error(`put manifest: HTTP ${put.status}`);
  return { digest: sha(manifest), layer: sha(layer) };
}
