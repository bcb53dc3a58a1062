/**
 * GET /report.html: the report as one self-contained page (no external assets, no
 * scripts), for a platform engineer following a migration in a browser.
 */
import type { Report, RegistryEntry } from './rewrites.js';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Every value on the page comes from pod specs: escape all of it. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

function list(items: readonly string[], overflow: number): string {
  if (items.length === 0) return '<span class="muted">none</span>';
  const more = overflow > 0 ? `<li class="muted">and ${overflow} more</li>` : '';
  return `<ul>${items.map((i) => `<li><code>${escapeHtml(i)}</code></li>`).join('')}${more}</ul>`;
}

/** Still pulled from outside: images with no rewrite (no rule, kept, or only audited). */
function outside(e: RegistryEntry): boolean {
  return e.target === undefined ? e.unchanged > 0 : e.wouldRewrite > 0 || e.skipped > 0;
}

export function renderReportHtml(report: Report): string {
  const entries = Object.entries(report.registries);
  const totals = entries.reduce(
    (t, [, e]) => ({ rewritten: t.rewritten + e.rewritten, would: t.would + e.wouldRewrite, denied: t.denied + e.denied, missing: t.missing + e.missing.length + e.missingOverflow }),
    { rewritten: 0, would: 0, denied: 0, missing: 0 },
  );
  const rows = entries
    .map(([registry, e]) => {
      const flag = outside(e) ? '<span class="flag">still pulled from here</span>' : '';
      return `<tr>
<td><strong>${escapeHtml(registry)}</strong> ${flag}<br><span class="muted">${e.target ? `&rarr; ${escapeHtml(e.target)}` : 'no rule'}</span></td>
<td class="n">${e.rewritten}</td><td class="n">${e.wouldRewrite}</td><td class="n">${e.denied}</td><td class="n">${e.skipped}</td><td class="n">${e.unchanged}</td>
<td>${list(e.images, e.imagesOverflow)}</td>
<td>${list(e.missing, e.missingOverflow)}</td>
<td>${list(e.namespaces, e.namespacesOverflow)}</td>
<td class="muted">${escapeHtml(e.firstSeen)}<br>${escapeHtml(e.lastSeen)}</td>
</tr>`;
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mirrorgate report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1f24}
h1{font-size:1.4rem;margin:0 0 .3rem}
.muted{color:#6a737d}.flag{background:#fff3cd;color:#7a5b00;border-radius:3px;padding:0 .3rem;font-size:.8rem}
.cards{display:flex;gap:1rem;margin:1rem 0}.card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem}
.card b{display:block;font-size:1.3rem}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d0d7de;padding:.4rem .5rem;vertical-align:top;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
ul{margin:0;padding-left:1rem;max-height:12rem;overflow:auto}code{font-size:.85rem}
</style></head><body>
<h1>mirrorgate report</h1>
<div class="muted">mode <strong>${escapeHtml(report.mode)}</strong>, generated ${escapeHtml(report.generatedAt)}</div>
<div class="cards">
<div class="card"><b>${totals.rewritten}</b>rewritten</div>
<div class="card"><b>${totals.would}</b>would rewrite (audit)</div>
<div class="card"><b>${totals.denied}</b>denied</div>
<div class="card"><b>${totals.missing}</b>missing from the mirror</div>
</div>
${
  entries.length === 0
    ? '<p class="muted">No admissions recorded yet.</p>'
    : `<table><thead><tr><th>source registry</th><th>rewritten</th><th>would rewrite</th><th>denied</th><th>skipped</th><th>unchanged</th><th>images</th><th>missing from mirror</th><th>namespaces</th><th>first / last seen</th></tr></thead>
<tbody>
${rows}
</tbody></table>`
}
</body></html>
`;
}
