/**
 * The config file: its type, defaults and validation. `validateConfig(raw)` lists every
 * problem by path (`rules[2].to: not a registry host`) and rejects unknown keys, so a
 * typo never silently changes behaviour.
 */
import { parse as parseYaml } from 'yaml';
import { clip } from '../core/text.js';
import { compilePolicy, type Policy } from '../core/policy.js';
import { compilePullSecrets, type PullSecret } from '../core/pull-secrets.js';
import { compileExclude, compileRules, type Problem, type RuleInput, type RuleSet } from '../core/rules.js';
import { isValidRegistryHost, registrySettingsKey } from '../core/reference.js';
import type { IdentitySettings } from '../core/identity/wiring.js';
import { parsePlatform } from '../core/platforms.js';
import { validateIdentityConfig, type IdentityLookup } from './identity.js';
import type { Mode, OnUnreachable, Settings } from '../core/pod.js';
import { isRecord } from '../core/json.js';
import { MirrorgateError } from '../errors.js';

export type FailurePolicy = 'Ignore' | 'Fail';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/**
 * Where a registry's credentials come from: a dockerconfigjson Secret, a docker config
 * file, or mirrorgate's own cloud identity (short-lived tokens, refreshed before expiry).
 */
export type RegistryAuthSource =
  | { readonly secret: string }
  | { readonly file: string }
  | { readonly google: Readonly<Record<string, never>> }
  | { readonly aws: { readonly region?: string | undefined } }
  | { readonly azure: { readonly scope?: string | undefined } };

/** The keys of `registries.<host>.auth`: exactly one of them. */
const AUTH_KINDS = ['secret', 'file', 'google', 'aws', 'azure'] as const;
/** An AWS region name (us-east-1, cn-north-1, us-gov-west-1, eu-isoe-west-1). */
const AWS_REGION = /^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$/;

/** How to reach one registry (`registries.<host>`); files are read by the verification adapter. */
export interface RegistrySettings {
  /** PEM file of extra roots to trust. */
  readonly ca: string | undefined;
  /** Plain HTTP (loopback, tests). */
  readonly insecure: boolean;
  readonly auth: RegistryAuthSource | undefined;
}

/** `verification:` the budget, cache lifetimes and fallback of registry checks. */
export interface VerificationSettings {
  /** Budget for all checks of one admission, in ms (never beyond the request's `?timeout=`). */
  readonly timeoutMs: number;
  readonly cacheSeconds: { readonly present: number; readonly absent: number };
  /**
   * Present answers in use are re-checked in the background before they are this old, so a
   * deletion in the mirror is seen within it (0: off; at most `cacheSeconds.present`).
   */
  readonly refreshSeconds: number;
  readonly onUnreachable: OnUnreachable;
  /**
   * Platforms a mirror's image must hold: `nodes` (those of the cluster's nodes, from the
   * node cache; none without Kubernetes access), `off`, or a list of `os/arch[/variant]`.
   */
  readonly platforms: 'nodes' | 'off' | readonly string[];
}

export const VERIFICATION_DEFAULTS: VerificationSettings = Object.freeze({
  timeoutMs: 500,
  cacheSeconds: Object.freeze({ present: 3600, absent: 30 }),
  refreshSeconds: 60,
  onUnreachable: 'original',
  platforms: 'nodes',
});

/** The API server waits at most 30 s for a webhook; a longer budget could never be used. */
const MAX_TIMEOUT_MS = 30_000;
/** A week: longer would only keep answers about deleted images. */
const MAX_CACHE_SECONDS = 7 * 86_400;
/** Kubernetes object names (RFC 1123 subdomain), as Secret names must be. */
const SECRET_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The config as written (after defaults). */
export interface ConfigFile {
  readonly mode: Mode;
  /** What an internal error answers: `Ignore` admits the pod unchanged, `Fail` denies it. */
  readonly failurePolicy: FailurePolicy;
  readonly rules: readonly RuleInput[];
  readonly policy: { readonly allowedRegistries: readonly string[] } | undefined;
  /** `copyFrom`: the namespace whose secret of that name is copied into pods' namespaces (off when unset). */
  readonly pullSecrets: readonly { readonly name: string; readonly registries: readonly string[]; readonly copyFrom?: string | undefined }[];
  readonly logLevel: LogLevel;
  /** Keyed by normalised registry host (`docker.io` for Docker Hub's aliases). */
  readonly registries: Readonly<Record<string, RegistrySettings>>;
  readonly verification: VerificationSettings;
}

/** `report:` how often this replica writes its counts to the cluster. */
export interface ReportSettings {
  readonly flushSeconds: number;
  /**
   * A replica's key not rewritten for this long belongs to a replica that is gone and is
   * adopted. At least 3 flush intervals: a live replica, idle or not, rewrites its key at
   * the first flush after a third of this has passed, so a late or failed flush still
   * leaves it well short of the whole.
   */
  readonly staleAfterSeconds: number;
}

/** A day: a key older than that is gone for certain; keeping it apart longer serves nothing. */
const MAX_STALE_AFTER_SECONDS = 86_400;
const DEFAULT_FLUSH_SECONDS = 60;

/** 3 flush intervals, and at least 2 minutes. */
export function defaultStaleAfterSeconds(flushSeconds: number): number {
  return Math.max(120, 3 * flushSeconds);
}

function reportSettings(c: Checker, raw: unknown): ReportSettings {
  const defaults = { flushSeconds: DEFAULT_FLUSH_SECONDS, staleAfterSeconds: defaultStaleAfterSeconds(DEFAULT_FLUSH_SECONDS) };
  if (raw === undefined || raw === null) return defaults;
  if (!isRecord(raw)) {
    c.add('report', 'must be a mapping with flushSeconds and staleAfterSeconds');
    return defaults;
  }
  c.keys(raw, 'report', ['flushSeconds', 'staleAfterSeconds']);
  // At least 5 s: each flush is a ConfigMap write; at most an hour, or a crash loses too much.
  const before = c.problems.length;
  const flushSeconds = c.int(raw, 'flushSeconds', 'report.flushSeconds', 5, 3600, DEFAULT_FLUSH_SECONDS);
  const flushValid = c.problems.length === before;
  const dflt = defaultStaleAfterSeconds(flushSeconds);
  const v = raw.staleAfterSeconds;
  if (v === undefined || v === null) return { flushSeconds, staleAfterSeconds: dflt };
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_STALE_AFTER_SECONDS) {
    c.add('report.staleAfterSeconds', `must be a whole number of seconds from 3 × report.flushSeconds (${3 * flushSeconds}) to ${MAX_STALE_AFTER_SECONDS} (got ${JSON.stringify(v)})`);
    return { flushSeconds, staleAfterSeconds: dflt };
  }
  // A live replica rewrites its key (an idle one as a heartbeat) at the first flush after a
  // third of this, so within a third plus one interval; 3 intervals leave room for a late or
  // failed flush before a live key could be adopted and its counts doubled.
  if (v < 3 * flushSeconds) {
    if (flushValid) {
      c.add(
        'report.staleAfterSeconds',
        `must be at least 3 × report.flushSeconds (${flushSeconds}) = ${3 * flushSeconds}, or the key of a live replica flushing on time could be taken for gone and its counts doubled (got ${v})`,
      );
    }
    return { flushSeconds, staleAfterSeconds: dflt };
  }
  return { flushSeconds, staleAfterSeconds: v };
}

/** A validated, compiled config: what the webhook runs on. Frozen. */
export interface Config {
  /** Workload Identity wiring: providers (on by default) and the ServiceAccount lookup. */
  readonly identity: { readonly settings: IdentitySettings; readonly lookup: IdentityLookup };
  readonly report: ReportSettings;
  readonly file: ConfigFile;
  readonly mode: Mode;
  readonly failurePolicy: FailurePolicy;
  readonly settings: Settings;
  readonly ruleSet: RuleSet;
  readonly policy: Policy | undefined;
  readonly pullSecrets: readonly PullSecret[];
  readonly logLevel: LogLevel;
  /** Keyed by normalised registry host (`docker.io` for Docker Hub's aliases). */
  readonly registries: Readonly<Record<string, RegistrySettings>>;
  readonly verification: VerificationSettings;
}

/** Problems listed in a config error; the rest are counted. */
const MAX_PROBLEMS_LISTED = 50;

/** One line per problem, each cut to a readable length: a value can be megabytes. */
function listed(problems: readonly Problem[]): string {
  const lines = problems.slice(0, MAX_PROBLEMS_LISTED).map((p) => `  ${clip(p.path)}: ${clip(p.message, 1024)}`);
  if (problems.length > MAX_PROBLEMS_LISTED) lines.push(`  (and ${problems.length - MAX_PROBLEMS_LISTED} more problems)`);
  return lines.join('\n');
}

export class ConfigError extends MirrorgateError {
  constructor(
    readonly source: string,
    readonly problems: readonly Problem[],
  ) {
    super('MG_CONFIG_INVALID', `invalid config ${source}:\n${listed(problems)}`);
  }
}

type Raw = Record<string, unknown>;


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
  /** An integer in [min, max], or `dflt` when absent. */
  int(obj: Raw, key: string, path: string, min: number, max: number, dflt: number): number {
    const v = obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    this.add(path, `must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})`);
    return dflt;
  }
  /** A mapping, or undefined (reported) when `v` is set but not one. */
  mapping(v: unknown, path: string, what: string): Raw | undefined {
    if (v === undefined || v === null) return undefined;
    if (isRecord(v)) return v;
    this.add(path, `must be a mapping ${what}`);
    return undefined;
  }
  list(v: unknown, path: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (Array.isArray(v)) return v;
    this.add(path, 'must be a list');
    return [];
  }
}

const TOP_KEYS = ['mode', 'failurePolicy', 'rules', 'exclude', 'policy', 'pullSecrets', 'logLevel', 'registries', 'verification', 'identity', 'report'] as const;

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
    c.keys(r, at, ['from', 'to', 'verify', 'copyOnMiss', 'pinDigest', 'namespaces', 'namespaceSelector', 'podSelector', 'exclude']);
    const from = c.string(r, 'from', `${at}.from`);
    // One target, or a list in order of preference.
    let to: string | string[] | undefined;
    if (Array.isArray(r.to)) {
      const list = c.stringList(r.to, `${at}.to`);
      if (list.values.length === r.to.length) to = list.values;
    } else to = c.string(r, 'to', `${at}.to`);
    const verify = c.bool(r, 'verify', `${at}.verify`);
    const copyOnMiss = c.bool(r, 'copyOnMiss', `${at}.copyOnMiss`);
    const pinDigest = c.bool(r, 'pinDigest', `${at}.pinDigest`);
    const present = (k: string): boolean => r[k] !== undefined && r[k] !== null;
    const namespaces = present('namespaces') ? c.stringList(r.namespaces, `${at}.namespaces`).values : undefined;
    const exclude = present('exclude') ? c.stringList(r.exclude, `${at}.exclude`).values : undefined;
    if (from !== undefined && to !== undefined) {
      rules.push({
        from,
        to,
        verify,
        copyOnMiss,
        pinDigest,
        ...(namespaces !== undefined ? { namespaces } : {}),
        ...(present('namespaceSelector') ? { namespaceSelector: r.namespaceSelector } : {}),
        ...(present('podSelector') ? { podSelector: r.podSelector } : {}),
        ...(exclude !== undefined ? { exclude } : {}),
      });
      ruleIndex.push(i);
    }
  });
  const compiled = compileRules(rules, 'rules', ruleIndex);
  // Top-level `exclude`: images no rule rewrites (policy still judges them).
  const excludeList = c.stringList(raw.exclude, 'exclude');
  const exclude = compileExclude(excludeList.values, 'exclude');
  for (const p of exclude.problems) c.add(p.path.replace(/\[(\d+)\]$/, (_, i: string) => `[${excludeList.indexes[Number(i)] ?? i}]`), p.message);
  let ruleSet: RuleSet = { rules: [] };
  if (compiled.ok) ruleSet = { ...compiled.ruleSet, exclude: exclude.patterns };
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

  const pullSecretInputs: { name: string; registries: string[]; copyFrom?: string | undefined; namespaces?: string[]; namespaceSelector?: unknown }[] = [];
  c.list(raw.pullSecrets, 'pullSecrets').forEach((s, i) => {
    const at = `pullSecrets[${i}]`;
    if (!isRecord(s)) {
      c.add(at, 'must be a mapping with name and registries');
      return;
    }
    c.keys(s, at, ['name', 'registries', 'copyFrom', 'namespaces', 'namespaceSelector']);
    const name = c.string(s, 'name', `${at}.name`) ?? '';
    // A missing list is reported by compilePullSecrets ("must list at least one registry").
    let copyFrom: string | undefined;
    if (s.copyFrom !== undefined && s.copyFrom !== null) {
      // A namespace name: an RFC 1123 label.
      if (typeof s.copyFrom === 'string' && /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(s.copyFrom)) copyFrom = s.copyFrom;
      else c.add(`${at}.copyFrom`, `must be a namespace name (got ${JSON.stringify(s.copyFrom)})`);
    }
    const scoped = {
      ...(s.namespaces !== undefined && s.namespaces !== null ? { namespaces: c.stringList(s.namespaces, `${at}.namespaces`).values } : {}),
      ...(s.namespaceSelector !== undefined && s.namespaceSelector !== null ? { namespaceSelector: s.namespaceSelector } : {}),
    };
    pullSecretInputs.push({ name, registries: c.stringList(s.registries, `${at}.registries`).values, ...(copyFrom !== undefined ? { copyFrom } : {}), ...scoped });
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

  const registries = checkRegistries(c, raw.registries);
  const verification = checkVerification(c, raw.verification);
  const identityResult = validateIdentityConfig(raw.identity);
  c.problems.push(...identityResult.problems);
  const report = reportSettings(c, raw.report);

  if (c.problems.length > 0) throw new ConfigError(source, c.problems);
  const file: ConfigFile = { mode, failurePolicy, rules, policy: policyFile, pullSecrets: pullSecretInputs, logLevel, registries, verification };
  const settings: Settings = { ruleSet, policy, pullSecrets };
  const identity = { settings: identityResult.settings, lookup: identityResult.lookup };
  return deepFreeze({ file, mode, failurePolicy, settings, ruleSet, policy, pullSecrets, logLevel, registries, verification, identity, report });
}

/** `registries:` host → {ca, insecure, auth}. Hosts are exact (no wildcards, no paths), normalised. */
function checkRegistries(c: Checker, v: unknown): Record<string, RegistrySettings> {
  const out: Record<string, RegistrySettings> = {};
  const map = c.mapping(v, 'registries', 'of registry hosts to {ca, insecure, auth}');
  if (map === undefined) return out;
  const firstKey = new Map<string, string>();
  for (const [host, entry] of Object.entries(map)) {
    const at = `registries[${JSON.stringify(host)}]`;
    if (host.includes('://') || host.includes('/') || !isValidRegistryHost(host)) {
      c.add(at, `"${host}" is not a registry host (host[:port], no scheme, path or wildcard)`);
      continue;
    }
    if (!/[.:]/.test(host) && host.toLowerCase() !== 'localhost') {
      c.add(at, `"${host}": the host must contain "." or ":" or be localhost, as in an image reference`);
      continue;
    }
    const key = registrySettingsKey(host);
    const earlier = firstKey.get(key);
    if (earlier !== undefined) {
      c.add(at, `the same registry as registries[${JSON.stringify(earlier)}]`);
      continue;
    }
    firstKey.set(key, host);
    if (entry === null || entry === undefined) {
      out[key] = { ca: undefined, insecure: false, auth: undefined };
      continue;
    }
    if (!isRecord(entry)) {
      c.add(at, 'must be a mapping with ca, insecure, auth');
      continue;
    }
    c.keys(entry, at, ['ca', 'insecure', 'auth']);
    const ca = entry.ca === undefined || entry.ca === null ? undefined : c.string(entry, 'ca', `${at}.ca`);
    const insecure = c.bool(entry, 'insecure', `${at}.insecure`) ?? false;
    if (insecure && ca !== undefined) c.add(`${at}.ca`, 'has no use with insecure: true (plain HTTP)');
    const auth = checkAuth(c, entry.auth, `${at}.auth`);
    out[key] = { ca, insecure, auth };
  }
  return out;
}

/** `registries.<host>.auth`: exactly one of secret, file, google, aws, azure. */
function checkAuth(c: Checker, v: unknown, at: string): RegistryAuthSource | undefined {
  const rawAuth = c.mapping(v, at, 'with one of secret: NAME, file: PATH, google: {}, aws: {}, azure: {}');
  if (rawAuth === undefined) return undefined;
  c.keys(rawAuth, at, AUTH_KINDS);
  const present = AUTH_KINDS.filter((k) => rawAuth[k] !== undefined && rawAuth[k] !== null);
  if (present.length > 1) {
    c.add(at, present.length === 2 ? `set either ${present[0]} or ${present[1]}, not both` : `set one of ${present.join(', ')}, not several`);
    return undefined;
  }
  const kind = present[0];
  if (kind === undefined) {
    if (Object.keys(rawAuth).every((k) => (AUTH_KINDS as readonly string[]).includes(k))) {
      c.add(at, 'needs secret: NAME (a dockerconfigjson Secret), file: PATH (a docker config file), or a cloud identity: google: {}, aws: {} or azure: {}');
    }
    return undefined;
  }
  switch (kind) {
    case 'secret': {
      const name = c.string(rawAuth, 'secret', `${at}.secret`);
      if (name !== undefined && (!SECRET_NAME.test(name) || name.length > 253)) c.add(`${at}.secret`, `"${name}" is not a valid Secret name`);
      else if (name !== undefined) return { secret: name };
      return undefined;
    }
    case 'file': {
      const file = c.string(rawAuth, 'file', `${at}.file`);
      return file === undefined ? undefined : { file };
    }
    case 'google': {
      const g = c.mapping(rawAuth.google, `${at}.google`, '(google: {}; its settings come from the environment)');
      if (g === undefined) return undefined;
      c.keys(g, `${at}.google`, []);
      return { google: {} };
    }
    case 'aws': {
      const a = c.mapping(rawAuth.aws, `${at}.aws`, 'with optional region');
      if (a === undefined) return undefined;
      c.keys(a, `${at}.aws`, ['region']);
      if (a.region === undefined || a.region === null) return { aws: {} };
      const region = c.string(a, 'region', `${at}.aws.region`);
      if (region !== undefined && !AWS_REGION.test(region)) {
        c.add(`${at}.aws.region`, `"${region}" is not an AWS region name (like us-east-1)`);
        return undefined;
      }
      return region === undefined ? undefined : { aws: { region } };
    }
    case 'azure': {
      const z = c.mapping(rawAuth.azure, `${at}.azure`, 'with optional scope');
      if (z === undefined) return undefined;
      c.keys(z, `${at}.azure`, ['scope']);
      if (z.scope === undefined || z.scope === null) return { azure: {} };
      const scope = c.string(z, 'scope', `${at}.azure.scope`);
      if (scope !== undefined && !/^https:\/\/[^\s]+\/\.default$/.test(scope)) {
        c.add(`${at}.azure.scope`, `"${scope}" is not an Entra ID scope like https://management.azure.com/.default`);
        return undefined;
      }
      return scope === undefined ? undefined : { azure: { scope } };
    }
  }
}

/** `verification:` budget, cache lifetimes, fallback; every key optional. */
function checkVerification(c: Checker, v: unknown): VerificationSettings {
  const d = VERIFICATION_DEFAULTS;
  const raw = c.mapping(v, 'verification', 'with timeoutMs, cacheSeconds, onUnreachable');
  if (raw === undefined) return d;
  c.keys(raw, 'verification', ['timeoutMs', 'cacheSeconds', 'refreshSeconds', 'onUnreachable', 'platforms']);
  let platforms: VerificationSettings['platforms'] = d.platforms;
  if (raw.platforms === 'nodes' || raw.platforms === 'off') platforms = raw.platforms;
  else if (Array.isArray(raw.platforms)) {
    const list = c.stringList(raw.platforms, 'verification.platforms');
    if (raw.platforms.length === 0) c.add('verification.platforms', 'is empty: use off to check no platform');
    list.values.forEach((p, i) => {
      if (parsePlatform(p) === undefined) c.add(`verification.platforms[${list.indexes[i] ?? i}]`, `"${p}" is not os/architecture[/variant] (e.g. linux/amd64, linux/arm/v7)`);
    });
    platforms = list.values;
  } else if (raw.platforms !== undefined && raw.platforms !== null) {
    c.add('verification.platforms', `must be nodes, off or a list of os/architecture[/variant] (got ${JSON.stringify(raw.platforms)})`);
  }
  const timeoutMs = c.int(raw, 'timeoutMs', 'verification.timeoutMs', 1, MAX_TIMEOUT_MS, d.timeoutMs);
  const onUnreachable = c.oneOf<OnUnreachable>(raw, 'onUnreachable', 'verification.onUnreachable', ['original', 'rewrite', 'deny'], d.onUnreachable);
  let cacheSeconds = d.cacheSeconds;
  const cache = c.mapping(raw.cacheSeconds, 'verification.cacheSeconds', 'with present and absent');
  if (cache !== undefined) {
    c.keys(cache, 'verification.cacheSeconds', ['present', 'absent']);
    cacheSeconds = {
      present: c.int(cache, 'present', 'verification.cacheSeconds.present', 0, MAX_CACHE_SECONDS, d.cacheSeconds.present),
      absent: c.int(cache, 'absent', 'verification.cacheSeconds.absent', 0, MAX_CACHE_SECONDS, d.cacheSeconds.absent),
    };
  }
  const refreshSeconds = c.int(raw, 'refreshSeconds', 'verification.refreshSeconds', 0, MAX_CACHE_SECONDS, d.refreshSeconds);
  return { timeoutMs, cacheSeconds, refreshSeconds, onUnreachable, platforms };
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
  // An emptied file or ConfigMap key (a bad patch, failed templating) must never run as
  // "no rules, no policy": that would silently open the cluster.
  if (raw === null || raw === undefined) {
    throw new ConfigError(source, [{ path: '(document)', message: 'the config is empty (no settings, only whitespace or comments); refusing it rather than running without rules and policy' }]);
  }
  return validateConfig(raw, source);
}

/** Freeze `value` and everything it holds (objects already frozen are taken as frozen through). */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
