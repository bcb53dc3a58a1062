/**
 * GET /report.html: the report as one self-contained page to run a migration from: the
 * progress at the top, then the worklist of images still pulled from outside with their
 * targets and copy commands, filterable, sortable and searchable, and a per-namespace view.
 *
 * No external asset; one inline script and one inline style, both allowed by a per-response
 * nonce (the Content-Security-Policy header comes from `reportCsp`). Every value is rendered
 * on the server, escaped; the script only hides, orders and relabels rows, so the page reads
 * the same without it (times then show as UTC).
 */
import { randomBytes } from 'node:crypto';
import { itemCopyCommand, type CopyTool } from './format.js';
import { TREND_HOURS, type TrendPoint } from './trend.js';
import type { Report } from './rewrites.js';
import { isOutside, mirrorHosts, progress, targetsOf, workItems, type ReportContext, type WorkItem, type WorkState } from './worklist.js';

export type { ReportContext } from './worklist.js';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Every value on the page comes from pod specs: escape all of it. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

/** A fresh nonce per response (128 bits, base64). */
export function newNonce(): string {
  return randomBytes(16).toString('base64');
}

/** The page's policy: nothing but its own nonce'd script and style. */
export function reportCsp(nonce: string): string {
  return `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
}

const STATE_LABEL: Record<WorkState, string> = {
  missing: 'missing from the mirror: copy it',
  'would-rewrite': 'would be rewritten (audit)',
  kept: 'kept as it is (opted out or mirror unreachable)',
  'no-rule': 'no rule covers this registry',
};

function time(iso: string): string {
  return iso === '' ? '<span class="muted">-</span>' : `<time datetime="${escapeHtml(iso)}">${escapeHtml(iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))}</time>`;
}

/** `team-a/Deployment/web` as `Deployment web` (the namespace is shown beside it). */
function workloadLabel(w: string): string {
  const [ns, kind, ...name] = w.split('/');
  return `${kind ?? ''} ${name.join('/')} (${ns ?? ''})`;
}

function usedBy(i: WorkItem): string {
  const ns = i.namespaces.length === 0 ? '<span class="muted">no namespace</span>' : i.namespaces.map((n) => `<code class="ns">${escapeHtml(n)}</code>`).join(' ');
  const wl = i.workloads.length === 0 ? '' : `<ul class="wl">${i.workloads.map((w) => `<li>${escapeHtml(workloadLabel(w))}</li>`).join('')}</ul>`;
  const more = i.usedByOverflow > 0 ? `<div class="muted">and ${i.usedByOverflow} more</div>` : '';
  const whose = i.perImage ? '' : '<div class="muted">(namespaces of the registry: no per-image record)</div>';
  return `${ns}${wl}${more}${whose}`;
}

function mirrorLabel(i: WorkItem): string {
  if (i.state === 'no-rule') return '';
  if (i.inMirror === true) return '<div class="held">in the mirror: no copy needed</div>';
  if (i.inMirror === false) return '<div class="state-missing">not in the mirror</div>';
  return '<div class="muted">mirror not checked</div>';
}

/**
 * The trend as an inline SVG (no external asset; presentation attributes only, which the
 * CSP allows): the share served from the mirror per hour as a line over the last seven
 * days, the number of images admitted that hour as bars behind it.
 */
export function trendSvg(trend: readonly TrendPoint[], generatedAt: string, audit: boolean): string {
  const W = 960;
  const H = 180;
  const top = 10;
  const bottom = 150;
  const left = 44;
  const right = W - 8;
  const endMs = Date.parse(generatedAt);
  const end = Number.isFinite(endMs) ? Math.floor(endMs / 3_600_000) : undefined;
  const points = trend.filter((p) => p.total > 0);
  if (end === undefined || points.length === 0) return '<p class="muted" id="trend-empty">No admissions in the last seven days.</p>';
  const x = (hour: number): number => left + ((hour - (end - TREND_HOURS + 1)) / (TREND_HOURS - 1)) * (right - left);
  const y = (share: number): number => bottom - share * (bottom - top);
  const maxTotal = Math.max(...points.map((p) => p.total));
  const bw = Math.max(1, (right - left) / TREND_HOURS - 1);
  const bars = points
    .map((p) => {
      const h = Math.floor(Date.parse(p.hour) / 3_600_000);
      const bh = Math.max(1, (p.total / maxTotal) * (bottom - top) * 0.5);
      return `<rect class="vol" x="${(x(h) - bw / 2).toFixed(1)}" y="${(bottom - bh).toFixed(1)}" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}" fill="#d0d7de"></rect>`;
    })
    .join('');
  const dots = points
    .map((p) => {
      const h = Math.floor(Date.parse(p.hour) / 3_600_000);
      const share = p.done / p.total;
      const label = `${p.hour.slice(0, 13).replace('T', ' ')}:00 UTC: ${Math.floor(share * 1000) / 10}% of ${p.total} images`;
      return `<circle class="pt" data-hour="${escapeHtml(p.hour)}" data-done="${p.done}" data-total="${p.total}" cx="${x(h).toFixed(1)}" cy="${y(share).toFixed(1)}" r="3" fill="#1a7f37"><title>${escapeHtml(label)}</title></circle>`;
    })
    .join('');
  const line = points.map((p) => `${x(Math.floor(Date.parse(p.hour) / 3_600_000)).toFixed(1)},${y(p.done / p.total).toFixed(1)}`).join(' ');
  const grid = [0, 0.5, 1]
    .map((s) => `<line x1="${left}" x2="${right}" y1="${y(s)}" y2="${y(s)}" stroke="#eaeef2"></line><text x="${left - 6}" y="${y(s) + 4}" text-anchor="end" font-size="11" fill="#57606a">${s * 100}%</text>`)
    .join('');
  const days = Array.from({ length: 8 }, (_, d) => {
    const hx = x(end - d * 24);
    return `<text x="${hx.toFixed(1)}" y="${bottom + 16}" text-anchor="${d === 0 ? 'end' : d === 7 ? 'start' : 'middle'}" font-size="11" fill="#57606a">${d === 0 ? 'now' : `${d} d ago`}</text>`;
  }).join('');
  const desc = `share of admitted images served from the mirror or an allowed registry, per hour${audit ? ' (audit mode rewrites nothing)' : ''}`;
  return `<svg id="trend-chart" role="img" aria-label="${desc}" viewBox="0 0 ${W} ${H}" width="100%" preserveAspectRatio="xMidYMid meet"><title>${desc}</title>${grid}${bars}<polyline points="${line}" fill="none" stroke="#1a7f37" stroke-width="2"></polyline>${dots}${days}</svg>`;
}

function list(items: readonly string[], overflow: number, cls = ''): string {
  if (items.length === 0) return '<span class="muted">none</span>';
  const more = overflow > 0 ? `<li class="muted">and ${overflow} more</li>` : '';
  return `<ul class="${cls}">${items.map((i) => `<li><code>${escapeHtml(i)}</code></li>`).join('')}${more}</ul>`;
}

const SCRIPT = `
(function () {
  var rtf = typeof Intl !== 'undefined' && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }) : null;
  function rel(ms) {
    var s = Math.round(ms / 1000), a = Math.abs(s);
    if (!rtf) return '';
    if (a < 60) return rtf.format(s, 'second');
    if (a < 3600) return rtf.format(Math.round(s / 60), 'minute');
    if (a < 86400) return rtf.format(Math.round(s / 3600), 'hour');
    return rtf.format(Math.round(s / 86400), 'day');
  }
  document.querySelectorAll('time[datetime]').forEach(function (t) {
    var d = new Date(t.getAttribute('datetime'));
    if (isNaN(d.getTime())) return;
    t.title = d.toISOString();
    var r = rel(d.getTime() - Date.now());
    t.textContent = d.toLocaleString() + (r ? ' (' + r + ')' : '');
  });
  var body = document.querySelector('#work tbody');
  if (!body) return;
  var rows = Array.prototype.slice.call(body.querySelectorAll('tr'));
  var reg = document.getElementById('f-registry'), ns = document.getElementById('f-namespace'), st = document.getElementById('f-state'), q = document.getElementById('f-search');
  var count = document.getElementById('shown');
  function apply() {
    var shown = 0, needle = q.value.trim().toLowerCase();
    rows.forEach(function (r) {
      var ok = (!reg.value || r.dataset.registry === reg.value)
        && (!ns.value || (' ' + r.dataset.namespaces + ' ').indexOf(' ' + ns.value + ' ') >= 0)
        && (!st.value || r.dataset.state === st.value)
        && (!needle || r.dataset.search.indexOf(needle) >= 0);
      r.hidden = !ok;
      if (ok) shown++;
    });
    count.textContent = String(shown);
  }
  [reg, ns, st].forEach(function (el) { el.addEventListener('change', apply); });
  q.addEventListener('input', apply);
  document.querySelectorAll('#work th[data-key]').forEach(function (th) {
    var b = th.querySelector('button');
    b.addEventListener('click', function () {
      var key = th.dataset.key, dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
      document.querySelectorAll('#work th[data-key]').forEach(function (o) { o.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
      var num = th.dataset.type === 'num';
      rows.sort(function (x, y) {
        var a = x.dataset[key] || '', c = y.dataset[key] || '';
        if (num) return ((Number(a) || 0) - (Number(c) || 0)) * dir;
        return (a < c ? -1 : a > c ? 1 : 0) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  document.querySelectorAll('a[data-ns]').forEach(function (a) {
    a.addEventListener('click', function (ev) { ev.preventDefault(); ns.value = a.dataset.ns; apply(); document.getElementById('work').scrollIntoView(); });
  });
  apply();
})();
`;

const STYLE = `
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;max-width:100%}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.muted{color:#57606a}.flag{background:#fff3cd;color:#6b4f00;border-radius:3px;padding:0 .3rem;font-size:.8rem}
.cards{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0}.card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem}
.card b{display:block;font-size:1.3rem}
progress{width:100%;height:1.2rem}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border-bottom:1px solid #d0d7de;padding:.35rem .4rem;vertical-align:top;text-align:left;overflow-wrap:anywhere;word-break:break-word}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
th button{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer;text-align:left}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
ul{margin:0;padding-left:1rem;max-height:10rem;overflow:auto}code{font-size:.82rem}
.filters{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin:.5rem 0}
.filters input{min-width:16rem}
.cmd{display:block;font-size:.75rem;background:#f6f8fa;padding:.2rem;user-select:all}
.state-missing{color:#a40e26}.state-would-rewrite{color:#6b4f00}
col.c-image{width:20%}col.c-target{width:17%}col.c-state{width:11%}col.c-ns{width:15%}col.c-pulls{width:9%}col.c-seen{width:9%}col.c-cmd{width:19%}
.used code.ns{display:inline-block;margin-right:.2rem}.wl{list-style:none;padding:0;font-size:.8rem}.held{color:#1a7f37;font-size:.85rem}
#trend-chart{display:block;max-width:60rem;height:auto}
`;

/** The page; `nonce` must be the one in the response's Content-Security-Policy. */
export function renderReportHtml(report: Report, nonce: string = newNonce(), ctx: ReportContext = {}): string {
  const audit = report.mode === 'audit';
  const mirrors = mirrorHosts(report);
  const entries = Object.entries(report.registries);
  const items = workItems(report, ctx);
  const p = progress(report, ctx);
  const share = (n: number): number => (p.total === 0 ? 0 : Math.floor((n / p.total) * 1000) / 10);
  const pct = share(p.done);
  // Audit rewrites nothing: the bar is what is served today; what enforce would add is said beside it.
  const wouldPct = share(p.done + entries.reduce((n, [, e]) => n + e.wouldRewrite, 0));
  const totals = entries.reduce(
    (t, [, e]) => ({ rewritten: t.rewritten + e.rewritten, would: t.would + e.wouldRewrite, denied: t.denied + e.denied, missing: t.missing + e.missing.length + e.missingOverflow }),
    { rewritten: 0, would: 0, denied: 0, missing: 0 },
  );
  const tool: CopyTool = ctx.tool ?? 'gcrane';
  const registries = [...new Set(items.map((i) => i.registry))].sort();
  const namespaces = [...new Set(items.flatMap((i) => i.namespaces))].sort();
  const states = [...new Set(items.map((i) => i.state))].sort();
  const option = (v: string, label = v): string => `<option value="${escapeHtml(v)}">${escapeHtml(label)}</option>`;

  const workRows = items
    .map((i) => {
      const cmd = itemCopyCommand(i, tool, ctx.registries ?? {});
      const search = `${i.image} ${i.targets.join(' ')} ${i.namespaces.join(' ')} ${i.workloads.join(' ')}`.toLowerCase();
      const pulls = i.perImage ? `<span class="pulls">${i.lastHour}</span> <span class="muted">/ h</span><br><span class="pulls">${i.lastDay}</span> <span class="muted">/ day</span>` : '<span class="muted">-</span>';
      return `<tr data-image="${escapeHtml(i.image)}" data-registry="${escapeHtml(i.registry)}" data-state="${i.state}" data-namespaces="${escapeHtml(i.namespaces.join(' '))}" data-workloads="${escapeHtml(i.workloads.join(' '))}" data-target="${escapeHtml(i.targets[0] ?? '')}" data-hour="${i.lastHour}" data-day="${i.lastDay}" data-seen="${escapeHtml(i.lastSeen)}" data-mirror="${i.inMirror === undefined ? '' : i.inMirror ? 'yes' : 'no'}" data-search="${escapeHtml(search)}">
<td><code>${escapeHtml(i.image)}</code><br><span class="muted">${escapeHtml(i.registry)}</span></td>
<td>${i.targets.length === 0 ? '<span class="muted">no rule</span>' : list(i.targets, 0)}</td>
<td><span class="state-${i.state}">${escapeHtml(STATE_LABEL[i.state])}</span>${mirrorLabel(i)}</td>
<td class="used">${usedBy(i)}</td>
<td class="n">${pulls}</td>
<td>${time(i.lastSeen)}</td>
<td>${cmd === '' ? `<span class="muted">${i.inMirror === true ? 'none needed' : '-'}</span>` : `<code class="cmd">${escapeHtml(cmd)}</code>`}</td>
</tr>`;
    })
    .join('\n');

  const byNamespace = new Map<string, number>();
  for (const i of items) for (const n of i.namespaces) byNamespace.set(n, (byNamespace.get(n) ?? 0) + 1);
  const nsRows = [...byNamespace.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([n, c]) => `<tr><td><a href="#work" data-ns="${escapeHtml(n)}"><code>${escapeHtml(n)}</code></a></td><td class="n">${c}</td></tr>`)
    .join('\n');

  const regRows = entries
    .map(([registry, e]) => {
      const flag = isOutside(registry, e, mirrors, ctx, report.mode) ? `<span class="flag">${audit ? 'would still be pulled from here' : 'still pulled from here'}</span>` : '';
      const allowed = e.target === undefined && (ctx.allowed?.(registry) ?? false) ? ' <span class="muted">(allowed by policy)</span>' : '';
      const targets = targetsOf(e);
      return `<tr>
<td><strong>${escapeHtml(registry)}</strong>${allowed} ${flag}<br><span class="muted">${targets.length > 0 ? targets.map((t) => `&rarr; ${escapeHtml(t)}`).join('<br>') : 'no rule'}</span></td>
<td class="n">${e.rewritten}</td><td class="n">${e.wouldRewrite}</td><td class="n">${e.denied}</td><td class="n">${e.skipped}</td><td class="n">${e.unchanged}</td>
<td>${list(e.images, e.imagesOverflow)}</td>
<td>${list(e.missing, e.missingOverflow)}</td>
<td>${list(e.namespaces, e.namespacesOverflow)}</td>
<td>${time(e.firstSeen)}<br>${time(e.lastSeen)}</td>
</tr>`;
    })
    .join('\n');

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mirrorgate report</title>
<style nonce="${nonce}">${STYLE}</style></head><body>
<h1>mirrorgate report</h1>
<div class="muted">mode <strong>${escapeHtml(report.mode)}</strong>${audit ? ' (dry run: nothing is rewritten or denied, the page says what would be)' : ''}, generated ${time(report.generatedAt)}</div>
<section id="progress">
<h2>Progress: <span id="pct">${pct}</span>% of admitted images are served from the mirror or an allowed registry${audit ? `; <span id="would-pct">${wouldPct}</span>% would be in enforce mode` : ''}</h2>
<progress max="${p.total}" value="${p.done}">${pct}%</progress>
<div class="muted">${p.done} of ${p.total} container images admitted${audit ? ' (audit mode rewrites nothing: the rest are still pulled from outside)' : ''}</div>
<h2>Over the last seven days, per hour</h2>
${trendSvg(report.trend ?? [], report.generatedAt, audit)}
<div class="muted">line: share of that hour's admitted images served from the mirror or an allowed registry; bars: images admitted that hour; up to <time datetime="${escapeHtml(report.generatedAt)}">${escapeHtml(report.generatedAt)}</time></div>
</section>
<div class="cards">
<div class="card"><b>${audit ? totals.would : totals.rewritten}</b>${audit ? 'would be rewritten' : 'rewritten'}</div>
<div class="card"><b>${totals.denied}</b>${audit ? 'would be denied' : 'denied'}</div>
<div class="card"><b>${totals.missing}</b>missing from the mirror</div>
<div class="card"><b>${items.length}</b>${audit ? 'images that would still be pulled from outside' : 'images still pulled from outside'}</div>
</div>
${
  entries.length === 0
    ? '<p class="muted">No admissions recorded yet.</p>'
    : `<h2>Worklist: <span id="shown">${items.length}</span> of ${items.length} images ${audit ? 'that would still be pulled from outside' : 'still pulled from outside'}</h2>
<div class="filters">
<label>registry <select id="f-registry"><option value="">all</option>${registries.map((r) => option(r)).join('')}</select></label>
<label>namespace <select id="f-namespace"><option value="">all</option>${namespaces.map((n) => option(n)).join('')}</select></label>
<label>state <select id="f-state"><option value="">all</option>${states.map((s) => option(s, STATE_LABEL[s])).join('')}</select></label>
<label>search <input id="f-search" type="search" placeholder="image, target or namespace"></label>
<a href="report.csv">CSV</a> <a href="report">JSON</a>
</div>
${
  items.length === 0
    ? `<p id="done">Nothing ${audit ? 'would be' : 'is'} pulled from outside any more.</p>`
    : `<table id="work"><colgroup><col class="c-image"><col class="c-target"><col class="c-state"><col class="c-ns"><col class="c-pulls"><col class="c-seen"><col class="c-cmd"></colgroup>
<thead><tr><th data-key="image"><button type="button">image</button></th><th data-key="target"><button type="button">target</button></th><th data-key="state"><button type="button">state</button></th><th data-key="namespaces"><button type="button">used by</button></th><th data-key="day" data-type="num"><button type="button">admissions</button></th><th data-key="seen"><button type="button">last seen</button></th><th>copy command (${tool})</th></tr></thead>
<tbody>
${workRows}
</tbody></table>`
}
<h2>By namespace</h2>
${nsRows === '' ? '<p class="muted">No namespace has pending images.</p>' : `<table id="namespaces"><thead><tr><th>namespace</th><th>pending images</th></tr></thead><tbody>\n${nsRows}\n</tbody></table>`}
<h2>By source registry</h2>
<table id="registries"><thead><tr><th>source registry</th><th>rewritten</th><th>would rewrite</th><th>${audit ? 'would deny' : 'denied'}</th><th>skipped</th><th>unchanged</th><th>images</th><th>missing from mirror</th><th>namespaces</th><th>first / last seen</th></tr></thead>
<tbody>
${regRows}
</tbody></table>`
}
<script nonce="${nonce}">${SCRIPT}</script>
</body></html>
`;
}
