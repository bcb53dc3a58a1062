/**
 * The error table: every error class of ours carries a code from it, the CLI's exit status
 * comes from it, and the table and the source agree (no code used that is not declared, no
 * declared code that nothing raises).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { UsageError } from '../src/cli-help.js';
import { ConfigError } from '../src/config/schema.js';
import { CopyError } from '../src/copy/copier.js';
import { asError, ERRORS, errorInfo, exitCodeOf, messageOf, MirrorgateError, type ErrorCode } from '../src/errors.js';
import { ConflictError } from '../src/kube/report-store.js';
import { KubeConfigError } from '../src/kube/errors.js';
import { RegistryError } from '../src/registry/client.js';
import { CredentialError } from '../src/registry/credentials.js';
import { BodyError } from '../src/server/json-body.js';

t.test('each class: its code, its name, its exit status', async (t) => {
  const cases: { err: MirrorgateError; code: ErrorCode; name: string; exit: 1 | 2 }[] = [
    { err: new UsageError('unknown flag --x'), code: 'MG_USAGE', name: 'UsageError', exit: 2 },
    { err: new ConfigError('config.yaml', [{ path: 'mode', message: 'must be enforce or audit' }]), code: 'MG_CONFIG_INVALID', name: 'ConfigError', exit: 2 },
    { err: new KubeConfigError('no kubeconfig'), code: 'MG_KUBECONFIG', name: 'KubeConfigError', exit: 2 },
    { err: new BodyError('empty body', 400, 'MG_BODY_EMPTY'), code: 'MG_BODY_EMPTY', name: 'BodyError', exit: 1 },
    { err: new ConflictError('changed meanwhile'), code: 'MG_CONFLICT', name: 'ConflictError', exit: 1 },
    { err: new RegistryError('unauthorized', 'unauthorized: HTTP 401', { status: 401 }), code: 'MG_REGISTRY', name: 'RegistryError', exit: 1 },
    { err: new CredentialError('r.example', 'aws', 'STS token exchange', 'HTTP 403', { refused: true }), code: 'MG_CREDENTIALS', name: 'CredentialError', exit: 1 },
    { err: new CopyError('not-found', 'source manifest: not found'), code: 'MG_COPY', name: 'CopyError', exit: 1 },
  ];
  for (const c of cases) {
    t.ok(c.err instanceof Error && c.err instanceof MirrorgateError, `${c.name} is one of ours`);
    t.equal(c.err.code, c.code, `${c.name}: code`);
    t.equal(c.err.name, c.name, `${c.name}: name (what logs print)`);
    t.equal(exitCodeOf(c.err), c.exit, `${c.name}: exit ${c.exit}`);
    t.equal(errorInfo(c.err), ERRORS[c.code]);
  }
  t.equal(new RegistryError('timeout', 'timeout: deadline exceeded').reason, 'timeout', "a registry error's reason within its code");
  t.equal(new CopyError('digest-mismatch', 'x').reason, 'digest-mismatch');
  t.equal(errorInfo(new BodyError('deep', 400, 'MG_BODY_TOO_DEEP'))?.http, 400);
});

t.test('anything else thrown: exit 1, its message as it is', async (t) => {
  t.equal(exitCodeOf(new Error('boom')), 1);
  t.equal(exitCodeOf('a string'), 1);
  t.equal(exitCodeOf(Object.assign(new Error('x'), { code: 'MG_USAGE' })), 1, 'a look-alike code does not make it ours');
  t.equal(errorInfo(new TypeError('x')), undefined);
  t.equal(messageOf(new Error('boom')), 'boom');
  t.equal(messageOf('plain'), 'plain');
  t.equal(messageOf(42), '42');
  t.equal(messageOf(undefined), 'undefined');
  const e = new Error('same');
  t.equal(asError(e), e, 'an Error is passed through');
  t.match(asError({ toString: () => 'odd' }), { message: 'odd' });
});

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(p)));
    else if (entry.name.endsWith('.ts') && p !== join('src', 'errors.ts')) out.push(p);
  }
  return out;
}

t.test('the table and the source agree', async (t) => {
  const used = new Set<string>();
  for (const file of await sources('src')) for (const m of (await readFile(file, 'utf8')).matchAll(/'(MG_[A-Z_]+)'/g)) used.add(m[1] as string);
  const declared = Object.keys(ERRORS);
  t.same([...used].filter((c) => !declared.includes(c)), [], 'every MG_ code in the source is in the table');
  t.same(declared.filter((c) => !used.has(c)), [], 'every code in the table is raised somewhere');
});
