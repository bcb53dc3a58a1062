/**
 * A real Kubernetes control plane for tests: etcd and kube-apiserver, built from their Go
 * modules by scripts/build-kube.sh into a cache folder outside the repository, started on
 * 127.0.0.1 with random ports and temporary folders, stopped by the test.
 *
 * The API server runs as users run it: `--authorization-mode=Node,RBAC`, its default
 * admission plugins, service-account token signing with a key pair made here. The test
 * harness is `admin` (a static token in group system:masters); mirrorgate gets a
 * TokenRequest token of its own ServiceAccount ({@link RealKube.serviceAccountKubeconfig}),
 * so what it may do is exactly what the RBAC applied to the server grants.
 *
 * No controller-manager runs: namespaces get no `default` ServiceAccount by themselves
 * (tests create the ServiceAccounts their pods name) and nothing schedules or runs pods.
 *
 * When the binaries are missing (no Go here), {@link kubeBinaries} says why; tests then
 * skip loudly, and fail when MIRRORGATE_REQUIRE_REAL_KUBE=1 (for a CI that must run this tier).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export const KUBE_VERSION = process.env.MIRRORGATE_KUBE_VERSION ?? 'v1.34.4';
export const ETCD_VERSION = process.env.MIRRORGATE_ETCD_VERSION ?? 'v3.6.17';

/** How long a control plane may take to become ready on a busy machine. */
const READY_TIMEOUT_MS = 100_000;

export interface KubeBinaries {
  readonly kubeApiserver: string;
  readonly etcd: string;
}

/** Where scripts/build-kube.sh puts its builds (keep the two in step). */
export function kubeCacheDir(): string {
  const env = process.env.MIRRORGATE_TEST_CACHE;
  return env !== undefined && env !== '' ? env : join(homedir(), '.cache', 'mirrorgate-test');
}

/** The built binaries, or a sentence saying why there are none. */
export function kubeBinaries(): KubeBinaries | string {
  const kubeApiserver = join(kubeCacheDir(), `kube-apiserver-${KUBE_VERSION}`, 'kube-apiserver');
  const etcd = join(kubeCacheDir(), `etcd-${ETCD_VERSION}`, 'etcd');
  const missing = [kubeApiserver, etcd].filter((f) => !existsSync(f));
  if (missing.length > 0) return `not built: ${missing.join(', ')} (run scripts/build-kube.sh; it needs Go)`;
  return { kubeApiserver, etcd };
}

/**
 * tap options for a real-server test: `{}` when the binaries exist; otherwise a loud
 * skip, or an error under MIRRORGATE_REQUIRE_REAL_KUBE=1 (a CI run that must not pass without this tier).
 */
export function realKubeTestOptions(): { skip?: string } {
  const bins = kubeBinaries();
  if (typeof bins !== 'string') return {};
  const why = `REAL KUBERNETES API SERVER TIER SKIPPED: ${bins}`;
  if (process.env.MIRRORGATE_REQUIRE_REAL_KUBE === '1') throw new Error(`${why}; MIRRORGATE_REQUIRE_REAL_KUBE=1 makes this fatal`);
  process.stderr.write(`\n*** ${why} ***\n\n`);
  return { skip: why };
}

/** A free port on 127.0.0.1 (the listener is closed again; the OS does not reuse it at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

interface Proc {
  readonly child: ChildProcess;
  readonly name: string;
  /** The last bytes of its output, for error messages. */
  tail(): string;
  readonly exited: Promise<number | null>;
}

function startProc(name: string, file: string, args: string[]): Proc {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (c: Buffer): void => {
    out = (out + c.toString('utf8')).slice(-16_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1));
  });
  return { child, name, tail: () => out, exited };
}

async function stopProc(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await p.exited;
  clearTimeout(timer);
}

export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
  /** The `Warning` headers' texts (RFC 7234 `299 - "text"`), as kubectl prints them. */
  readonly warnings?: string[];
}

function warningTexts(h: string | string[] | undefined): string[] {
  const all = h === undefined ? [] : Array.isArray(h) ? h : [h];
  const out: string[] = [];
  for (const v of all) for (const m of v.matchAll(/299 [^ ]+ "((?:[^"\\]|\\.)*)"/g)) out.push((m[1] as string).replace(/\\(.)/g, '$1'));
  return out;
}

/** One request to the API server as `token` (TLS not verified: loopback, our own server). */
function kubeRequest(base: string, token: string, method: string, path: string, body?: string, contentType = 'application/json'): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const u = new URL(path, base);
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = contentType;
    const req = httpsRequest({ hostname: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method, headers, rejectUnauthorized: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), warnings: warningTexts(res.headers.warning) }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A plain-HTTP request on loopback (etcd's client URL): the status and body. */
function plainRequest(url: string, body?: string): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    const req = httpRequest(url, { method: body === undefined ? 'GET' : 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Poll `probe` until it says ready, with a growing pause (50 ms up to 1 s) between tries.
 * Fails with the process's output when it exits or the deadline passes.
 */
async function waitReady(proc: Proc, what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let pause = 50;
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  for (;;) {
    if (exited) throw new Error(`${proc.name} exited before ${what} was ready:\n${proc.tail()}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${READY_TIMEOUT_MS / 1000} s:\n${proc.tail()}`);
    await new Promise<void>((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 1000);
  }
}

export interface RealKube {
  /** https://127.0.0.1:PORT */
  readonly url: string;
  /** A kubeconfig file for the admin (system:masters). */
  readonly adminKubeconfig: string;
  /** The API server's serving certificate chain (PEM), to trust it. */
  readonly caFile: string;
  /** A request as admin; the body is sent as JSON unless `contentType` says otherwise. */
  request(method: string, path: string, body?: unknown, contentType?: string): Promise<HttpAnswer>;
  /** As {@link request}, and throws unless the answer is 2xx; resolves the parsed body. */
  must<T = any>(method: string, path: string, body?: unknown, contentType?: string): Promise<T>;
  /** A request with another bearer token (to see what that identity may do). */
  requestAs(token: string, method: string, path: string, body?: unknown): Promise<HttpAnswer>;
  /** A TokenRequest token for ServiceAccount `namespace/name` (which must exist). */
  serviceAccountToken(namespace: string, name: string): Promise<string>;
  /** Writes a kubeconfig holding a TokenRequest token of `namespace/name`; resolves its path. */
  serviceAccountKubeconfig(namespace: string, name: string): Promise<string>;
  /** A fresh temporary folder that {@link stop} removes. */
  readonly dir: string;
  stop(): Promise<void>;
}

function kubeconfig(url: string, caFile: string, user: string, token: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server: url, 'certificate-authority': caFile } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user } }],
    'current-context': 'test',
  });
}

/** Start etcd and kube-apiserver; resolves once /readyz says ok. */
export async function startRealKube(): Promise<RealKube> {
  const bins = kubeBinaries();
  if (typeof bins === 'string') throw new Error(bins);
  const dir = mkdtempSync(join(tmpdir(), 'mirrorgate-kube-'));
  const procs: Proc[] = [];
  const stop = async (): Promise<void> => {
    for (const p of procs.reverse()) await stopProc(p);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const adminToken = randomBytes(24).toString('hex');
    writeFileSync(join(dir, 'tokens.csv'), `${adminToken},admin,admin-uid,"system:masters"\n`, { mode: 0o600 });
    // Ports are picked free, but test files start their servers at the same time: another
    // file's etcd or API server can take a port between the pick and the bind. Readiness
    // therefore asks for this instance by name (etcd's member name, the API server's admin
    // token, which no other server accepts), and a start that lost its port starts again
    // on new ones.
    const etcdName = `mg-${randomBytes(4).toString('hex')}`;
    let url = '';
    let caFile = '';
    for (let attempt = 1; ; attempt++) {
      const started: Proc[] = [];
      try {
        const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
        const etcd = startProc('etcd', bins.etcd, [
          `--name=${etcdName}`,
          `--data-dir=${join(dir, `etcd-${attempt}`)}`,
          `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
          `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
          `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
          `--initial-cluster=${etcdName}=http://127.0.0.1:${peerPort}`,
          '--unsafe-no-fsync',
          '--log-level=error',
        ]);
        started.push(etcd);
        await waitReady(etcd, 'etcd', async () => {
          const health = await plainRequest(`http://127.0.0.1:${etcdPort}/health`);
          if (health.status !== 200 || !health.body.includes('"true"')) return false;
          const members = await plainRequest(`http://127.0.0.1:${etcdPort}/v3/cluster/member/list`, '{}');
          return members.status === 200 && members.body.includes(`"name":"${etcdName}"`);
        });

        const certDir = join(dir, `apiserver-certs-${attempt}`);
        const api = startProc('kube-apiserver', bins.kubeApiserver, [
          `--etcd-servers=http://127.0.0.1:${etcdPort}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--secure-port=${apiPort}`,
          `--cert-dir=${certDir}`,
          '--authorization-mode=Node,RBAC',
          `--token-auth-file=${join(dir, 'tokens.csv')}`,
          `--service-account-key-file=${join(dir, 'sa.pub')}`,
          `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          '--service-cluster-ip-range=10.96.0.0/16',
          '--allow-privileged=true',
          '--enable-priority-and-fairness=false',
          '--v=0',
        ]);
        started.push(api);
        const candidate = `https://127.0.0.1:${apiPort}`;
        // With --cert-dir and no --tls-cert-file the server makes a self-signed chain there.
        const candidateCa = join(certDir, 'apiserver.crt');
        await waitReady(api, 'kube-apiserver', async () => {
          // /readyz is open to anyone; only this server knows the admin token.
          const ready = await kubeRequest(candidate, adminToken, 'GET', '/readyz');
          if (ready.status !== 200) return false;
          const own = await kubeRequest(candidate, adminToken, 'GET', '/api/v1/namespaces/default');
          return own.status === 200 && existsSync(candidateCa);
        });
        readFileSync(candidateCa);
        procs.push(...started);
        url = candidate;
        caFile = candidateCa;
        break;
      } catch (err) {
        for (const p of started.reverse()) await stopProc(p);
        if (attempt >= 3) throw err;
      }
    }
    const adminKubeconfig = join(dir, 'admin.kubeconfig');
    writeFileSync(adminKubeconfig, kubeconfig(url, caFile, 'admin', adminToken), { mode: 0o600 });

    const asBody = (body: unknown, contentType: string | undefined): string | undefined =>
      body === undefined ? undefined : typeof body === 'string' && contentType !== undefined ? body : JSON.stringify(body);
    const request = (method: string, path: string, body?: unknown, contentType?: string): Promise<HttpAnswer> =>
      kubeRequest(url, adminToken, method, path, asBody(body, contentType), contentType);
    const must = async <T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> => {
      const a = await request(method, path, body, contentType);
      if (a.status < 200 || a.status > 299) throw new Error(`${method} ${path}: ${a.status} ${a.body}`);
      return JSON.parse(a.body) as T;
    };
    const serviceAccountToken = async (namespace: string, name: string): Promise<string> => {
      const tr = await must<{ status: { token: string } }>('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 3600 },
      });
      return tr.status.token;
    };
    return {
      url,
      adminKubeconfig,
      caFile,
      dir,
      request,
      must,
      requestAs: (token, method, path, body) => kubeRequest(url, token, method, path, asBody(body, undefined)),
      serviceAccountToken,
      serviceAccountKubeconfig: async (namespace, name) => {
        const token = await serviceAccountToken(namespace, name);
        const file = join(dir, `${namespace}-${name}-${randomBytes(3).toString('hex')}.kubeconfig`);
        writeFileSync(file, kubeconfig(url, caFile, `${namespace}-${name}`, token), { mode: 0o600 });
        return file;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
