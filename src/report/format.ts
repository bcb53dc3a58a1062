/** Text forms of the report for `mirrorgate report`. */
import { parseReference } from '../core/reference.js';
import type { Report } from './rewrites.js';

export type CopyTool = 'gcrane' | 'skopeo' | 'crane';

/** A fixed-width table: one row per source registry. */
export function formatTable(report: Report): string {
  const header = ['REGISTRY', 'TARGET', 'REWRITTEN', 'WOULD', 'DENIED', 'SKIPPED', 'UNCHANGED', 'PENDING', 'MISSING', 'IMAGES', 'LAST SEEN'];
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

/** Images still pulled from third-party registries, each with its rewrite target. */
export function pendingImages(report: Report): { source: string; target: string; registry: string }[] {
  const out: { source: string; target: string; registry: string }[] = [];
  for (const [registry, e] of Object.entries(report.registries)) {
    for (const [source, target] of Object.entries(e.pending)) out.push({ source, target, registry });
  }
  return out.sort((a, b) => a.source.localeCompare(b.source));
}

/** Shell-quote a reference for a copy command (references have no quotes, but be safe). */
function q(s: string): string {
  return /^[\w@:./+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** One copy command per pending image, whole multi-arch indexes, digests preserved. */
export function copyCommands(report: Report, tool: CopyTool): string[] {
  return pendingImages(report).map(({ source, target }) => {
    switch (tool) {
      case 'gcrane':
        return `gcrane cp ${q(source)} ${q(target)}`;
      case 'crane':
        return `crane copy ${q(source)} ${q(target)}`;
      case 'skopeo': {
        // skopeo refuses references with both a tag and a digest ("Docker references with
        // both a tag and digest are currently not supported"): pull by the digest, push to
        // the tag (the digest is preserved). gcrane and crane drop the tag themselves.
        const s = parseReference(source);
        const d = parseReference(target);
        const from = s.ok && s.ref.tag !== undefined && s.ref.digest !== undefined ? `${s.ref.registry}/${s.ref.repository}@${s.ref.digest}` : source;
        const to = d.ok && d.ref.tag !== undefined && d.ref.digest !== undefined ? `${d.ref.registry}/${d.ref.repository}:${d.ref.tag}` : target;
        return `skopeo copy --all --preserve-digests docker://${q(from)} docker://${q(to)}`;
      }
    }
  });
}
