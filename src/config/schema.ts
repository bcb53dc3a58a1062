/**
 * The config file: its type, defaults and validation. `validateConfig(raw)` lists every
 * problem by path (`rules[2].to: not a registry host`) and rejects unknown keys, so a
 * typo never silently changes behaviour.
 */
import { parse as parseYaml } from 'yaml';
import { compilePolicy, type Policy } from '../core/policy.js';
import { compilePullSecrets, type PullSecret } from '../core/pull-secrets.js';
import { compileRules, type Problem, type RuleInput, type RuleSet } from '../core/rules.js';
import type { Mode, Settings } from '../core/pod.js';

export type FailurePolicy = 'Ignore' | 'Fail';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/** The config as written (after defaults). */
export interface ConfigFile {
  readonly mode: Mode;
  /** What an internal error answers: `Ignore` admits the pod unchanged, `Fail` denies it. */
  readonly failurePolicy: FailurePolicy;
  readonly rules: readonly RuleInput[];
  readonly policy: { readonly allowedRegistries: readonly string[] } | undefined;
  readonly pullSecrets: readonly { readonly name: string; readonly registries: readonly string[] }[];
  readonly logLevel: LogLevel;
}

/** A validated, compiled config: what the webhook runs on. Frozen. */
export interface Config {
  readonly file: ConfigFile;
  readonly mode: Mode;
  readonly failurePolicy: FailurePolicy;
  readonly settings: Settings;
  readonly ruleSet: RuleSet;
  readonly policy: Policy | undefined;
  readonly pullSecrets: readonly PullSecret[];
  readonly logLevel: LogLevel;
}

export class ConfigError extends Error {
  readonly code = 'MG_CONFIG_INVALID';
  constructor(
    readonly source: string,
    readonly problems: readonly Problem[],
  ) {
    super(`invalid config ${source}:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type Raw = Record<string, unknown>;

function isRecord(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Checker {
  readonly problems: Problem[] = [];
  add(path: string, message: string): void {
    this.problems.push({ path, message });
  }
  /** Report keys not in `allowed`. */
  keys(obj: Raw, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) this.add(path === '' ? k : `${path}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`);
    }
  }
  oneOf<T extends string>(obj: Raw, key: string, path: string, values: readonly T[], dflt: T): T {
    const v = obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
    this.add(path, `must be one of ${values.join(', ')} (got ${JSON.stringify(v)})`);
    return dflt;
  }
  bool(obj: Raw, key: string, path: string): boolean | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'boolean') return v;
    this.add(path, `must be true or false (got ${JSON.stringify(v)})`);
    return undefined;
  }
  string(obj: Raw, key: string, path: string): string | undefined {
    const v = obj[key];
    if (typeof v === 'string' && v !== '') return v;
    this.add(path, v === undefined ? 'is required' : `must be a non-empty string (got ${JSON.stringify(v)})`);
    return undefined;
  }
  /** The strings of a list, with their positions in the file (non-strings are reported). */
  stringList(v: unknown, path: string): { values: string[]; indexes: number[] } {
    const values: string[] = [];
    const indexes: number[] = [];
    if (v === undefined || v === null) return { values, indexes };
    if (!Array.isArray(v)) {
      this.add(path, 'must be a list of strings');
      return { values, indexes };
    }
    v.forEach((item, i) => {
      if (typeof item === 'string') {
        values.push(item);
        indexes.push(i);
      } else this.add(`${path}[${i}]`, `must be a string (got ${JSON.stringify(item)})`);
    });
    return { values, indexes };
  }
  list(v: unknown, path: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (Array.isArray(v)) return v;
    this.add(path, 'must be a list');
    return [];
  }
}

const TOP_KEYS = ['mode', 'failurePolicy', 'rules', 'policy', 'pullSecrets', 'logLevel'] as const;

/** Validate a parsed config object. Throws ConfigError listing every problem. */
export function validateConfig(raw: unknown, source = 'config'): Config {
  const c = new Checker();
  if (raw === null || raw === undefined) raw = {};
  if (!isRecord(raw)) throw new ConfigError(source, [{ path: '(root)', message: 'must be a mapping of keys to values' }]);
  c.keys(raw, '', TOP_KEYS);
  const mode = c.oneOf<Mode>(raw, 'mode', 'mode', ['enforce', 'audit'], 'enforce');
  const logLevel = c.oneOf<LogLevel>(raw, 'logLevel', 'logLevel', ['trace', 'debug', 'info', 'warn', 'error', 'fatal'], 'info');

  // Rules with a missing from/to are reported here and left out of compilation;
  // ruleIndex maps compiled positions back to the file's, so messages name the right entry.
  const rules: RuleInput[] = [];
  const ruleIndex: number[] = [];
  c.list(raw.rules, 'rules').forEach((r, i) => {
    const at = `rules[${i}]`;
    if (!isRecord(r)) {
      c.add(at, 'must be a mapping with from and to');
      return;
    }
    c.keys(r, at, ['from', 'to', 'verify', 'copyOnMiss']);
    const from = c.string(r, 'from', `${at}.from`);
    const to = c.string(r, 'to', `${at}.to`);
    const verify = c.bool(r, 'verify', `${at}.verify`);
    const copyOnMiss = c.bool(r, 'copyOnMiss', `${at}.copyOnMiss`);
    if (from !== undefined && to !== undefined) {
      rules.push({ from, to, verify, copyOnMiss });
      ruleIndex.push(i);
    }
  });
  const compiled = compileRules(rules, 'rules', ruleIndex);
  let ruleSet: RuleSet = { rules: [] };
  if (compiled.ok) ruleSet = compiled.ruleSet;
  else c.problems.push(...compiled.problems);

  let policy: Policy | undefined;
  let policyFile: ConfigFile['policy'];
  if (raw.policy !== undefined && raw.policy !== null) {
    if (!isRecord(raw.policy)) c.add('policy', 'must be a mapping with allowedRegistries');
    else {
      c.keys(raw.policy, 'policy', ['allowedRegistries']);
      if (raw.policy.allowedRegistries === undefined) c.add('policy.allowedRegistries', 'is required when policy is set');
      const allowed = c.stringList(raw.policy.allowedRegistries, 'policy.allowedRegistries');
      if (Array.isArray(raw.policy.allowedRegistries) && raw.policy.allowedRegistries.length === 0) {
        c.add('policy.allowedRegistries', 'is empty: every pod would be denied; remove policy to allow all registries');
      }
      const p = compilePolicy(allowed.values, 'policy.allowedRegistries', allowed.indexes);
      if (p.ok) policy = p.policy;
      else c.problems.push(...p.problems);
      policyFile = { allowedRegistries: allowed.values };
    }
  }

  const pullSecretInputs: { name: string; registries: string[] }[] = [];
  c.list(raw.pullSecrets, 'pullSecrets').forEach((s, i) => {
    const at = `pullSecrets[${i}]`;
    if (!isRecord(s)) {
      c.add(at, 'must be a mapping with name and registries');
      return;
    }
    c.keys(s, at, ['name', 'registries']);
    const name = c.string(s, 'name', `${at}.name`) ?? '';
    // A missing list is reported by compilePullSecrets ("must list at least one registry").
    pullSecretInputs.push({ name, registries: c.stringList(s.registries, `${at}.registries`).values });
  });
  let pullSecrets: PullSecret[] = [];
  const ps = compilePullSecrets(pullSecretInputs);
  if (ps.ok) pullSecrets = ps.pullSecrets;
  else {
    // A missing name was already reported as required; don't report it twice.
    for (const p of ps.problems) if (!(p.path.endsWith('.name') && pullSecretInputs[indexOf(p.path)]?.name === '')) c.problems.push(p);
  }

  // A policy that can be switched off by making the webhook fail is no policy: in
  // enforce mode with a policy, internal errors deny unless told otherwise.
  const failurePolicy = c.oneOf<FailurePolicy>(raw, 'failurePolicy', 'failurePolicy', ['Ignore', 'Fail'], mode === 'enforce' && policy !== undefined ? 'Fail' : 'Ignore');

  if (c.problems.length > 0) throw new ConfigError(source, c.problems);
  const file: ConfigFile = { mode, failurePolicy, rules, policy: policyFile, pullSecrets: pullSecretInputs, logLevel };
  const settings: Settings = { ruleSet, policy, pullSecrets };
  return deepFreeze({ file, mode, failurePolicy, settings, ruleSet, policy, pullSecrets, logLevel });
}

function indexOf(path: string): number {
  const m = /^\w+\[(\d+)\]/.exec(path);
  return m ? Number(m[1]) : -1;
}

/** Parse YAML or JSON text and validate it. Throws ConfigError (syntax errors included). */
export function parseConfig(text: string, source = 'config'): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] ?? err.message : String(err);
    throw new ConfigError(source, [{ path: '(syntax)', message }]);
  }
  return validateConfig(raw, source);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
