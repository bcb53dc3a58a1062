/** Text forms of the report for `mirrorgate report`. */
import { dirname } from 'node:path';
import type { RegistrySettings } from '../config/schema.js';
import { parseReference, registrySettingsKey } from '../core/reference.js';
import type { Report } from './rewrites.js';
import { workItems, type ReportContext, type WorkItem } from './worklist.js';

export type CopyTool = 'gcrane' | 'skopeo' | 'crane';

/** A fixed-width table: one row per source registry. */
export function formatTable(report: Report): string {
  // Audit denies nothing: the column counts what enforce mode would deny.
  const header = ['REGISTRY', 'TARGET', 'REWRITTEN', 'WOULD', report.mode === 'audit' ? 'WOULD-DENY' : 'DENIED', 'SKIPPED', 'UNCHANGED', 'PENDING', 'MISSING', 'IMAGES', 'LAST SEEN'];
  const rows = Object.entries(report.registries).map(([registry, e]) => [
    registry,
    e.target ?? '-',
    String(e.rewritten),
    String(e.wouldRewrite),
    String(e.denied),
    String(e.skipped),
    String(e.unchanged),
    String(Object.keys(e.pending).length + e.pendingOverflow),
    String(e.missing.length + e.missingOverflow),
    String(e.images.length + e.imagesOverflow),
    e.lastSeen,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  const out = [`mode: ${report.mode}   generated: ${report.generatedAt}`, line(header), ...rows.map(line)];
  if (rows.length === 0) out.push('(no admissions recorded yet)');
  return out.join('\n');
}

/**
 * Images still pulled from third-party registries, each with its rewrite target and
 * whether verification found it in the mirror (`inMirror`: undefined when not checked).
 */
export function pendingImages(report: Report): { source: string; target: string; registry: string; inMirror: boolean | undefined }[] {
  const out: { source: string; target: string; registry: string; inMirror: boolean | undefined }[] = [];
  for (const [registry, e] of Object.entries(report.registries)) {
    const missing = new Set(e.missing);
    for (const [source, target] of Object.entries(e.pending)) {
      const checked = e.usage[source]?.mirror;
      out.push({ source, target, registry, inMirror: missing.has(source) ? false : checked === undefined ? undefined : checked === 'present' });
    }
  }
  return out.sort((a, b) => a.source.localeCompare(b.source));
}

/** Shell-quote a reference for a copy command (references have no quotes, but be safe). */
function q(s: string): string {
  return /^[\w@:./+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** How a copy tool must reach one registry, from `registries.<host>`. */
function settingsFor(ref: string, registries: Readonly<Record<string, RegistrySettings>>): RegistrySettings | undefined {
  const p = parseReference(ref);
  return p.ok ? registries[registrySettingsKey(p.ref.registry)] : undefined;
}

/**
 * The command that copies one image, whole multi-arch index, digests preserved, honouring
 * each side's `registries.<host>` settings: plain HTTP (`insecure`) and extra roots (`ca`).
 */
export function copyCommand(source: string, target: string, tool: CopyTool, registries: Readonly<Record<string, RegistrySettings>> = {}): string {
  const src = settingsFor(source, registries);
  const dst = settingsFor(target, registries);
  // crane and gcrane take one --insecure for both sides (plain HTTP allowed, TLS unverified)
  // and trust extra roots through Go's SSL_CERT_FILE (one file: the first CA given).
  const ca = src?.ca ?? dst?.ca;
  const env = ca !== undefined ? `SSL_CERT_FILE=${q(ca)} ` : '';
  const insecure = src?.insecure === true || dst?.insecure === true ? ' --insecure' : '';
  switch (tool) {
    case 'gcrane':
      return `${env}gcrane cp${insecure} ${q(source)} ${q(target)}`;
    case 'crane':
      return `${env}crane copy${insecure} ${q(source)} ${q(target)}`;
    case 'skopeo': {
      // skopeo refuses references with both a tag and a digest ("Docker references with
      // both a tag and digest are currently not supported"): pull by the digest, push to
      // the tag (the digest is preserved). gcrane and crane drop the tag themselves.
      const s = parseReference(source);
      const d = parseReference(target);
      const from = s.ok && s.ref.tag !== undefined && s.ref.digest !== undefined ? `${s.ref.registry}/${s.ref.repository}@${s.ref.digest}` : source;
      const to = d.ok && d.ref.tag !== undefined && d.ref.digest !== undefined ? `${d.ref.registry}/${d.ref.repository}:${d.ref.tag}` : target;
      const flags: string[] = [];
      // skopeo wants a directory of *.crt files for extra roots: the CA file's folder.
      if (src?.insecure === true) flags.push('--src-tls-verify=false');
      else if (src?.ca !== undefined) flags.push(`--src-cert-dir ${q(dirname(src.ca))}`);
      if (dst?.insecure === true) flags.push('--dest-tls-verify=false');
      else if (dst?.ca !== undefined) flags.push(`--dest-cert-dir ${q(dirname(dst.ca))}`);
      return `skopeo copy --all --preserve-digests${flags.map((f) => ` ${f}`).join('')} docker://${q(from)} docker://${q(to)}`;
    }
  }
}

/**
 * One copy command per pending image that the mirror does not hold: images verification
 * found in the mirror (audit mode, opted-out pods) need no copy and are skipped.
 */
export function copyCommands(report: Report, tool: CopyTool, registries: Readonly<Record<string, RegistrySettings>> = {}): string[] {
  return pendingImages(report)
    .filter((p) => p.inMirror !== true)
    .map(({ source, target }) => copyCommand(source, target, tool, registries));
}

/** The copy command for a worklist row: none without a rule, none when the mirror holds it. */
export function itemCopyCommand(i: WorkItem, tool: CopyTool, registries: Readonly<Record<string, RegistrySettings>>): string {
  if (i.state === 'no-rule' || i.targets[0] === undefined || i.inMirror === true) return '';
  return copyCommand(i.image, i.targets[0], tool, registries);
}

function csvCell(s: string): string {
  // Quote every cell that needs it; a leading =+-@ is neutralised so spreadsheets never run it.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(safe) || safe !== s ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** Columns after `copy_command` were added with report schemaVersion 2; the first eight keep their places. */
export const CSV_HEADER = ['image', 'registry', 'state', 'target', 'targets', 'namespaces', 'last_seen', 'copy_command', 'in_mirror', 'workloads', 'admissions_last_hour', 'admissions_last_day'] as const;

/** The worklist as CSV (RFC 4180, CRLF): one row per image still pulled from outside. */
export function worklistCsv(report: Report, ctx: ReportContext = {}): string {
  const tool = ctx.tool ?? 'gcrane';
  const rows = workItems(report, ctx).map((i) => [
    i.image,
    i.registry,
    i.state,
    i.targets[0] ?? '',
    i.targets.join(' '),
    i.namespaces.join(' '),
    i.lastSeen,
    itemCopyCommand(i, tool, ctx.registries ?? {}),
    i.inMirror === undefined ? '' : i.inMirror ? 'yes' : 'no',
    i.workloads.join(' '),
    i.perImage ? String(i.lastHour) : '',
    i.perImage ? String(i.lastDay) : '',
  ]);
  return [[...CSV_HEADER], ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
}
