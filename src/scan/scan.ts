/**
 * `mirrorgate scan`: the offline migration helper. Walks files and folders, finds the
 * image references of Kubernetes manifests and Dockerfiles, decides each one with the
 * webhook's own rules and policy, optionally rewrites them in place, and reports them
 * grouped by registry. Replaces the grep/sed steps of a manual migration.
 */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Policy } from '../core/policy.js';
import { decideImage, ruleLabel } from '../core/decide.js';
import type { RuleSet } from '../core/rules.js';
import { findDockerfileImages } from './dockerfile.js';
import { findManifestImages } from './manifests.js';
import { messageOf } from '../errors.js';

export interface ScanSettings {
  readonly ruleSet: RuleSet;
  readonly policy: Policy | undefined;
}

export interface ScanOptions {
  /** Rewrite the files in place. */
  readonly write: boolean;
}

/**
 * What happens to a reference: `rewrite` (a rule matches), `on-target` (already on a
 * mirror), `no-rule`, `target-invalid` (the rule would produce an invalid reference),
 * `invalid` (does not parse), `templated` (a placeholder, skipped).
 */
export type FindingStatus = 'rewrite' | 'on-target' | 'no-rule' | 'target-invalid' | 'excluded' | 'invalid' | 'templated';

/** One image reference in one file. Field names are part of the `--output json` contract. */
export interface Finding {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly type: 'manifest' | 'dockerfile';
  /** What holds it: `Deployment/web containers[0] (web)`, `FROM (stage build)`, `COPY --from`. */
  readonly context: string;
  readonly image: string;
  /** Normalised source registry (`docker.io` for `nginx`); null when invalid or templated. */
  readonly registry: string | null;
  readonly status: FindingStatus;
  /** The rewritten reference, when a rule matches. */
  readonly rewritten: string | null;
  /** The matching rule, `rules[0] docker.io -> mirror.example.com/dockerhub`. */
  readonly rule: string | null;
  /** The final reference (rewritten or original) under `policy.allowedRegistries`; `none` without a policy. */
  readonly policy: 'allowed' | 'denied' | 'none';
  /** Pulled from a third-party registry: a rule would rewrite it, or the policy would deny it. */
  readonly thirdParty: boolean;
  /** `--write` can rewrite it in place. */
  readonly rewritable: boolean;
  /** `--write` rewrote it in this run. */
  readonly written: boolean;
  /** Why it is invalid, skipped or not rewritable, or where its value is written. */
  readonly note: string | null;
}

/** A file (or path) that could not be scanned or written, or a document that is not YAML. */
export interface ScanProblem {
  readonly file: string;
  readonly message: string;
  /** Unreadable or unwritable: the scan is incomplete (exit 1). Templates that are not YAML are not fatal. */
  readonly fatal: boolean;
}

export interface ScanResult {
  readonly findings: Finding[];
  readonly problems: ScanProblem[];
  /** Files scanned. */
  readonly files: number;
  /** Files changed by `--write`. */
  readonly filesWritten: string[];
}

export interface RegistrySummary {
  readonly references: number;
  readonly thirdParty: number;
  /** Rule targets the registry's references are rewritten to. */
  readonly targets: string[];
}

export interface ScanSummary {
  readonly files: number;
  readonly references: number;
  readonly thirdParty: number;
  readonly rewritable: number;
  readonly written: number;
  readonly filesWritten: number;
  /** Third-party references still in the files (after `--write`, those it could not rewrite). */
  readonly remaining: number;
  readonly invalid: number;
  readonly templated: number;
  readonly problems: number;
  readonly registries: Record<string, RegistrySummary>;
}

const SKIP_DIRS = new Set(['node_modules', '.git']);

type FileType = 'manifest' | 'dockerfile';

/** Which files a folder walk picks up; explicitly named files that are not Dockerfiles are read as YAML. */
export function fileType(name: string): FileType | undefined {
  if (name === 'Dockerfile' || name.startsWith('Dockerfile.') || name.endsWith('.Dockerfile') || name === 'Containerfile' || name.startsWith('Containerfile.')) {
    return 'dockerfile';
  }
  if (name.endsWith('.yaml') || name.endsWith('.yml')) return 'manifest';
  return undefined;
}

async function collect(paths: readonly string[], problems: ScanProblem[]): Promise<{ file: string; type: FileType }[]> {
  const files: { file: string; type: FileType }[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      problems.push({ file: dir, message: `cannot read: ${message(err)}`, fatal: true });
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const path = join(dir, e.name);
      // Symlinked folders are not followed, so a link loop cannot trap the walk.
      if (e.isDirectory()) {
        if (!SKIP_DIRS.has(e.name)) await walk(path);
        continue;
      }
      const type = fileType(e.name);
      if (type === undefined) continue;
      if (e.isFile()) files.push({ file: path, type });
      else if (e.isSymbolicLink()) {
        const s = await stat(path).catch(() => undefined);
        if (s?.isFile()) files.push({ file: path, type });
      }
    }
  };
  for (const p of paths) {
    let s;
    try {
      s = await stat(p);
    } catch (err) {
      problems.push({ file: p, message: `cannot read: ${message(err)}`, fatal: true });
      continue;
    }
    if (s.isDirectory()) await walk(p);
    else files.push({ file: p, type: fileType(basename(p)) ?? 'manifest' });
  }
  return files;
}

function message(err: unknown): string {
  return messageOf(err);
}

interface Site {
  readonly image: string;
  readonly line: number;
  readonly column: number;
  readonly context: string;
  readonly edit: { readonly start: number; readonly end: number; readonly quote: '' | "'" | '"' } | undefined;
  readonly templated: boolean;
  readonly note: string | undefined;
}

/** The decision for one reference, without file or write state. */
function assess(settings: ScanSettings, site: Site): Omit<Finding, 'file' | 'line' | 'column' | 'type' | 'context' | 'written'> {
  const note = site.note ?? null;
  if (site.templated) {
    return { image: site.image, registry: null, status: 'templated', rewritten: null, rule: null, policy: 'none', thirdParty: false, rewritable: false, note };
  }
  const { rewrite: d, verdict } = decideImage(settings, site.image);
  const policy = verdict === undefined ? 'none' : verdict.allowed ? 'allowed' : 'denied';
  const thirdParty = d.kind === 'rewrite' || policy === 'denied';
  if (d.kind === 'invalid') {
    return { image: site.image, registry: null, status: 'invalid', rewritten: null, rule: null, policy, thirdParty, rewritable: false, note: d.reason };
  }
  if (d.kind === 'unchanged') {
    return {
      image: site.image, registry: d.ref.registry, status: d.reason, rewritten: null, rule: null, policy, thirdParty, rewritable: false,
      note: d.detail ?? note,
    };
  }
  return {
    image: site.image,
    registry: d.ref.registry,
    status: 'rewrite',
    rewritten: d.rewritten,
    rule: ruleLabel(d.rule),
    policy,
    thirdParty,
    rewritable: site.edit !== undefined,
    note,
  };
}

/** A replacement of text[start, end). */
export interface TextEdit {
  readonly start: number;
  readonly end: number;
  readonly text: string;
}

/**
 * Apply non-overlapping edits to a text. Edits of the same span with the same text
 * (one anchor used by several containers, one ARG used by several stages) count once.
 * Throws on conflicting or overlapping edits, which would corrupt the file.
 */
export function applyEdits(text: string, edits: readonly TextEdit[]): string {
  const sorted = [...edits].sort((a, b) => a.start - b.start || a.end - b.end);
  const unique: TextEdit[] = [];
  for (const e of sorted) {
    const prev = unique[unique.length - 1];
    if (prev && prev.start === e.start && prev.end === e.end) {
      if (prev.text !== e.text) throw new Error(`conflicting rewrites at offset ${e.start}`);
      continue;
    }
    if (prev && e.start < prev.end) throw new Error(`overlapping rewrites at offset ${e.start}`);
    unique.push(e);
  }
  let out = '';
  let pos = 0;
  for (const e of unique) {
    out += text.slice(pos, e.start) + e.text;
    pos = e.end;
  }
  return out + text.slice(pos);
}

/** The source text of a new value in the scalar's own quoting style. */
function quoted(value: string, quote: '' | "'" | '"'): string {
  if (quote === "'") return `'${value.replaceAll("'", "''")}'`;
  if (quote === '"') return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
  return value;
}

/**
 * Scan files and folders (recursively; `node_modules` and `.git` are skipped) for image
 * references, decide each with the rules and policy, and with `write` rewrite the files
 * in place. Unreadable paths become fatal problems; nothing throws for a bad file.
 *
 * @param paths files or folders, as given on the command line
 */
export async function scanPaths(paths: readonly string[], settings: ScanSettings, opts: ScanOptions): Promise<ScanResult> {
  const problems: ScanProblem[] = [];
  const findings: Finding[] = [];
  const filesWritten: string[] = [];
  const files = await collect(paths, problems);
  for (const { file, type } of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      problems.push({ file, message: `cannot read: ${message(err)}`, fatal: true });
      continue;
    }
    let sites: Site[];
    if (type === 'dockerfile') sites = findDockerfileImages(text);
    else {
      const scanned = findManifestImages(text);
      sites = scanned.images;
      for (const p of scanned.problems) {
        problems.push({
          file: `${file}:${p.line}`,
          message: p.templated ? 'a template, not YAML until rendered: skipped (scan the rendered output)' : p.message,
          fatal: !p.templated,
        });
      }
    }
    // Report in reading order (a pod spec lists initContainers before containers).
    sites.sort((a, b) => a.line - b.line || a.column - b.column);
    const assessed = sites.map((site) => ({ site, a: assess(settings, site) }));
    const edits: TextEdit[] = [];
    if (opts.write) {
      for (const { site, a } of assessed) {
        if (a.rewritable && a.rewritten !== null && site.edit) {
          edits.push({ start: site.edit.start, end: site.edit.end, text: quoted(a.rewritten, site.edit.quote) });
        }
      }
    }
    let written = false;
    if (edits.length > 0) {
      try {
        const next = applyEdits(text, edits);
        if (next !== text) {
          await writeFile(file, next, 'utf8');
          filesWritten.push(file);
        }
        written = true;
      } catch (err) {
        problems.push({ file, message: `cannot write: ${message(err)}`, fatal: true });
      }
    }
    for (const { site, a } of assessed) {
      findings.push({
        file,
        line: site.line,
        column: site.column,
        type,
        context: site.context,
        ...a,
        written: written && a.rewritable && a.rewritten !== null,
      });
    }
  }
  return { findings, problems, files: files.length, filesWritten };
}

/** Still third-party after this run: not rewritten, or rewritten to a registry the policy denies. */
function remains(f: Finding): boolean {
  if (!f.thirdParty) return false;
  if (!f.written) return true;
  return f.policy === 'denied';
}

/** Counts over a scan, overall and per source registry. */
export function summarise(result: ScanResult): ScanSummary {
  const registries: Record<string, { references: number; thirdParty: number; targets: string[] }> = {};
  let thirdParty = 0;
  let rewritable = 0;
  let written = 0;
  let remaining = 0;
  let invalid = 0;
  let templated = 0;
  for (const f of result.findings) {
    if (f.thirdParty) thirdParty++;
    if (f.thirdParty && f.rewritable) rewritable++;
    if (f.written) written++;
    if (remains(f)) remaining++;
    if (f.status === 'invalid') invalid++;
    if (f.status === 'templated') templated++;
    if (f.registry === null) continue;
    const r = (registries[f.registry] ??= { references: 0, thirdParty: 0, targets: [] });
    r.references++;
    if (f.thirdParty) r.thirdParty++;
    const target = f.rule?.split(' -> ')[1];
    if (target !== undefined && !r.targets.includes(target)) r.targets.push(target);
  }
  return {
    files: result.files,
    references: result.findings.length,
    thirdParty,
    rewritable,
    written,
    filesWritten: result.filesWritten.length,
    remaining,
    invalid,
    templated,
    problems: result.problems.length,
    registries,
  };
}

/**
 * Exit code of `scan`: 1 when a path could not be read or written, or with `check` while
 * third-party references remain; 0 otherwise.
 */
export function scanExitCode(result: ScanResult, check: boolean): number {
  if (result.problems.some((p) => p.fatal)) return 1;
  if (check && summarise(result).remaining > 0) return 1;
  return 0;
}

/** `--output json`: `{findings, summary, problems}`. */
export function formatScanJson(result: ScanResult): string {
  return JSON.stringify({ findings: result.findings, summary: summarise(result), problems: result.problems }, null, 2);
}

function at(f: Finding): string {
  return `${f.file}:${f.line}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * The text report: third-party references grouped by registry (`file:line  image -> rewritten`),
 * then references that stay, templated and invalid ones, and a summary line. Problems are
 * left to the caller (they go to stderr).
 */
export function formatScanText(result: ScanResult, opts: ScanOptions): string[] {
  const out: string[] = [];
  const summary = summarise(result);
  const byRegistry = new Map<string, Finding[]>();
  for (const f of result.findings) {
    if (!f.thirdParty || f.registry === null) continue;
    const list = byRegistry.get(f.registry) ?? [];
    list.push(f);
    byRegistry.set(f.registry, list);
  }
  for (const registry of [...byRegistry.keys()].sort()) {
    const list = byRegistry.get(registry) ?? [];
    const targets = summary.registries[registry]?.targets ?? [];
    const head = targets.length > 0 ? ` -> ${targets.join(', ')}` : ' (no rule)';
    out.push(`${registry}${head}: ${plural(list.length, 'third-party reference')}`);
    for (const f of list) {
      const change = f.rewritten === null ? f.image : `${f.image} -> ${f.rewritten}`;
      const extras: string[] = [];
      if (f.written) extras.push('written');
      else if (f.rewritten !== null && !f.rewritable) extras.push('not rewritable');
      if (f.policy === 'denied') extras.push('not allowed by policy');
      if (f.note !== null) extras.push(f.note);
      out.push(`  ${at(f)}  ${change}${extras.length > 0 ? `  (${extras.join('; ')})` : ''}`);
    }
  }
  const fine = Object.entries(summary.registries)
    .filter(([, r]) => r.thirdParty < r.references)
    .map(([registry, r]) => `${registry} (${r.references - r.thirdParty})`)
    .sort();
  if (fine.length > 0) out.push(`not third-party: ${fine.join(', ')}`);
  const invalid = result.findings.filter((f) => f.status === 'invalid');
  if (invalid.length > 0) {
    out.push(`invalid: ${plural(invalid.length, 'reference')}`);
    for (const f of invalid) out.push(`  ${at(f)}  ${f.note ?? f.image}${f.thirdParty ? ' (not allowed by policy)' : ''}`);
  }
  const templated = result.findings.filter((f) => f.status === 'templated');
  if (templated.length > 0) {
    out.push(`skipped: ${plural(templated.length, 'templated reference')}`);
    for (const f of templated) out.push(`  ${at(f)}  ${f.image}${f.note === null ? '' : `  (${f.note})`}`);
  }
  const parts = [
    `${plural(summary.references, 'reference')} in ${plural(summary.files, 'file')}`,
    `${summary.thirdParty} third-party (${summary.rewritable} rewritable)`,
  ];
  if (summary.templated > 0) parts.push(`${summary.templated} templated`);
  if (summary.invalid > 0) parts.push(`${summary.invalid} invalid`);
  out.push(parts.join(', '));
  if (opts.write) out.push(`wrote ${plural(summary.written, 'reference')} in ${plural(summary.filesWritten, 'file')}; ${summary.remaining} third-party remaining`);
  else if (summary.rewritable > 0) out.push(`run with --write to rewrite ${plural(summary.rewritable, 'reference')} in place`);
  return out;
}
