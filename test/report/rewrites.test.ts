import t from 'tap';
import { readPod, planPod, type Mode, type Settings } from '../../src/core/pod.js';
import { compileRules } from '../../src/core/rules.js';
import { compilePolicy } from '../../src/core/policy.js';
import { escapeHtml, renderReportHtml, reportCsp } from '../../src/report/html.js';
import { copyCommand, copyCommands, CSV_HEADER, formatTable, pendingImages, worklistCsv } from '../../src/report/format.js';
import { progress, workItems } from '../../src/report/worklist.js';
import { mergeReports, parseReport, REPORT_SCHEMA_VERSION, ReportCache } from '../../src/report/rewrites.js';

function settings(): Settings {
  const rules = compileRules([
    { from: 'docker.io', to: 'mirror.example.com/dockerhub' },
    { from: 'quay.io', to: 'mirror.example.com/quay', verify: true },
  ]);
  const policy = compilePolicy(['mirror.example.com', 'registry.k8s.io']);
  if (!rules.ok || !policy.ok) throw new Error('config');
  return { ruleSet: rules.ruleSet, policy: policy.policy, pullSecrets: [] };
}

function decisions(images: string[], mode: Mode, absent: string[] = []) {
  const view = readPod({ spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } });
  if (!view.ok) throw new Error(view.error);
  const input = { operation: 'CREATE' as const, subResource: '', pod: view.pod, oldPod: undefined, mode };
  const first = planPod(input, settings());
  const outcomes = new Map(first.toVerify.map((t) => [t, absent.includes(t) ? ('absent' as const) : ('present' as const)]));
  return planPod(input, settings(), { outcomes, onUnreachable: 'original' }).decisions;
}

let clock = Date.parse('2026-11-22T10:00:00Z');
const now = (): Date => new Date(clock);

t.test('records rewrites, audits, denials and misses by source registry', async (t) => {
  const cache = new ReportCache(now, 'enforce');
  cache.record(decisions(['nginx:1.14.2', 'nginx:1.14.2', 'evil.io/x:1', 'registry.k8s.io/pause:3.9'], 'enforce'), 'team-a');
  clock += 60_000;
  cache.record(decisions(['quay.io/acme/app:1'], 'enforce', ['mirror.example.com/quay/acme/app:1']), 'team-b');
  cache.record(decisions(['redis:7'], 'audit'), 'team-c');
  const r = cache.snapshot();
  t.same(Object.keys(r.registries), ['docker.io', 'evil.io', 'quay.io', 'registry.k8s.io']);
  t.match(r.registries['docker.io'], {
    target: 'mirror.example.com/dockerhub',
    rewritten: 2,
    wouldRewrite: 1,
    denied: 0,
    images: ['docker.io/library/nginx:1.14.2', 'docker.io/library/redis:7'],
    namespaces: ['team-a', 'team-c'],
    pending: { 'docker.io/library/redis:7': 'mirror.example.com/dockerhub/library/redis:7' },
    firstSeen: '2026-11-22T10:00:00.000Z',
    lastSeen: '2026-11-22T10:01:00.000Z',
  });
  t.match(r.registries['evil.io'], { denied: 1, unchanged: 1, target: undefined });
  t.match(r.registries['quay.io'], { skipped: 1, missing: ['quay.io/acme/app:1'], pending: { 'quay.io/acme/app:1': 'mirror.example.com/quay/acme/app:1' } });
  t.match(r.registries['registry.k8s.io'], { unchanged: 1, denied: 0 });
});

t.test('a rewrite later takes an image off the pending list; a copy takes it off missing', async (t) => {
  const cache = new ReportCache(now, 'enforce');
  cache.record(decisions(['quay.io/acme/app:1'], 'enforce', ['mirror.example.com/quay/acme/app:1']), 'a');
  cache.recordCopy('quay.io', 'quay.io/acme/app:1', true);
  t.same(cache.snapshot().registries['quay.io']?.missing, []);
  t.equal(cache.snapshot().registries['quay.io']?.copied, 1);
  cache.record(decisions(['redis:7'], 'audit'), 'a');
  cache.record(decisions(['redis:7'], 'enforce'), 'a');
  t.same(cache.snapshot().registries['docker.io']?.pending, {});
});

t.test('memory stays bounded: registries, images and namespaces overflow into counts', async (t) => {
  const cache = new ReportCache(now, 'enforce', { maxRegistries: 5, maxImages: 3, maxNamespaces: 2 });
  for (let i = 0; i < 50; i++) cache.record(decisions([`r${i}.example.org/app:${i}`, `nginx:${i}`], 'enforce'), `ns-${i}`);
  const r = cache.snapshot();
  t.equal(Object.keys(r.registries).length, 5, 'at most maxRegistries entries');
  t.ok(r.registries.other, 'the rest under other');
  t.equal(r.registries.other?.unchanged, 47, 'r0..r2 keep entries; r3..r49 go to other');
  const d = r.registries['docker.io'];
  t.equal(d?.images.length, 3);
  t.equal(d?.imagesOverflow, 47);
  t.equal(d?.namespaces.length, 2);
  t.equal(d?.namespacesOverflow, 48);
  t.equal(d?.rewritten, 50, 'counts are never lost');
});

t.test('merge sums counts, unites lists and widens seen times', async (t) => {
  const a = new ReportCache(() => new Date('2026-11-22T10:00:00Z'), 'enforce');
  const b = new ReportCache(() => new Date('2026-11-22T12:00:00Z'), 'enforce');
  a.record(decisions(['nginx:1'], 'enforce'), 'x');
  b.record(decisions(['nginx:1', 'nginx:2'], 'enforce'), 'y');
  const m = mergeReports([a.snapshot(), b.snapshot()], new Date('2026-11-22T13:00:00Z'));
  t.match(m.registries['docker.io'], {
    rewritten: 3,
    images: ['docker.io/library/nginx:1', 'docker.io/library/nginx:2'],
    namespaces: ['x', 'y'],
    firstSeen: '2026-11-22T10:00:00.000Z',
    lastSeen: '2026-11-22T12:00:00.000Z',
  });
  t.equal(m.generatedAt, '2026-11-22T13:00:00.000Z');
});

t.test('parseReport round-trips and rejects garbage with a message', async (t) => {
  const cache = new ReportCache(now, 'audit');
  cache.record(decisions(['nginx:1'], 'audit'), 'x');
  const snap = cache.snapshot();
  t.same(parseReport(JSON.stringify(snap), 'test'), snap);
  t.throws(() => parseReport('{', 'cm[a]'), /cm\[a\]: not JSON/);
  t.throws(() => parseReport('[]', 'cm[a]'), /not a report object/);
  t.throws(() => parseReport('{"registries": {"x": 1}}', 'cm[a]'), /registries\["x"\] is not an object/);
  const hostile = parseReport('{"registries": {"x": {"rewritten": -5, "images": [1, "a"], "pending": {"a": 3}}}}', 'h');
  t.match(hostile.registries.x, { rewritten: 0, images: ['a'], pending: {} }, 'bad values are dropped, not trusted');
});

t.test('text formats: table, pending images, copy commands', async (t) => {
  const cache = new ReportCache(now, 'audit');
  cache.record(decisions(['nginx:1.14.2', 'quay.io/acme/app:1'], 'audit'), 'x');
  const r = cache.snapshot();
  const table = formatTable(r);
  t.match(table, /^mode: audit/);
  t.match(table, /REGISTRY\s+TARGET\s+REWRITTEN\s+WOULD/);
  t.match(table, /docker\.io\s+mirror\.example\.com\/dockerhub\s+0\s+1/);
  t.same(pendingImages(r).map((p) => [p.source, p.inMirror]), [
    ['docker.io/library/nginx:1.14.2', undefined],
    ['quay.io/acme/app:1', true],
  ], 'quay.io verifies: its image was found in the mirror; docker.io does not check');
  t.same(copyCommands(r, 'gcrane'), ['gcrane cp docker.io/library/nginx:1.14.2 mirror.example.com/dockerhub/library/nginx:1.14.2'], 'the image the mirror holds needs no copy');
  t.match(copyCommands(r, 'skopeo')[0], /^skopeo copy --all --preserve-digests docker:\/\/docker.io\/library\/nginx:1.14.2 docker:\/\/mirror/);
  t.match(copyCommands(r, 'crane')[0], /^crane copy /);
});

t.test('html page is self-contained and escapes everything', async (t) => {
  const cache = new ReportCache(now, 'enforce');
  cache.record(decisions(['nginx:1'], 'audit'), '<script>alert(1)</script>');
  const html = renderReportHtml(cache.snapshot(), 'n0nce');
  t.match(html, /^<!doctype html>/);
  t.same([...html.matchAll(/<script[^>]*>/gi)].map((m) => m[0]), ['<script nonce="n0nce">'], 'only the nonce script, none injected');
  t.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
  t.notMatch(html, /(src|href)=["']?https?:/, 'no external assets');
  t.match(html, /docker\.io/);
  t.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  t.match(renderReportHtml(new ReportCache(now, 'audit').snapshot()), /No admissions recorded yet/);
  t.equal(reportCsp('abc'), "default-src 'none'; script-src 'nonce-abc'; style-src 'nonce-abc'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
});

t.test('worklist: what is still pulled from outside, worded for the mode', async (t) => {
  const allowed = (r: string): boolean => r === 'registry.k8s.io' || r === 'mirror.example.com';
  const enforce = new ReportCache(now, 'enforce');
  // Denied (evil.io not allowed): the pod ran nothing, nothing was pulled from evil.io.
  enforce.record(decisions(['evil.io/x:1', 'nginx:1'], 'enforce'), 'team-a', true);
  enforce.record(decisions(['registry.k8s.io/pause:3.9', 'nginx:1'], 'enforce'), 'team-a');
  enforce.record(decisions(['quay.io/acme/app:1'], 'enforce', ['mirror.example.com/quay/acme/app:1']), 'team-b');
  const r = enforce.snapshot();
  const items = workItems(r, { allowed });
  t.same(items.map((i) => [i.image, i.state, i.targets[0], i.namespaces]), [['quay.io/acme/app:1', 'missing', 'mirror.example.com/quay/acme/app:1', ['team-b']]], 'only the missing image: not the denied registry, not the allowed one, not what was rewritten');
  t.same(progress(r, { allowed }), { done: 2, total: 3 }, 'rewritten nginx and allowed pause are done; the missing quay image is not');
  const html = renderReportHtml(r, 'n', { allowed });
  t.notMatch(html, /evil\.io<\/strong>[^<]*<span class="flag">/, 'a denied registry is not "still pulled from here"');
  t.notMatch(html, /registry\.k8s\.io<\/strong>[^\n]*flag/, 'an allowed registry is not flagged');
  t.match(html, /registry\.k8s\.io<\/strong> <span class="muted">\(allowed by policy\)/);
  t.match(html, /quay\.io<\/strong> <span class="flag">still pulled from here/);
  t.match(html, /<b>2<\/b>denied/, 'evil.io, and the quay image kept as it is is not allowed either');

  const audit = new ReportCache(now, 'audit');
  audit.record(decisions(['nginx:1', 'evil.io/x:1'], 'audit'), 'team-c');
  const a = renderReportHtml(audit.snapshot(), 'n', { allowed });
  t.match(a, /would be denied/);
  t.notMatch(a, />denied</, 'audit never says denied');
  t.match(a, /would still be pulled from here/);
  t.match(a, /would be rewritten \(audit\)/);
  t.same(workItems(audit.snapshot(), { allowed }).map((i) => [i.image, i.state]), [
    ['docker.io/library/nginx:1', 'would-rewrite'],
    ['evil.io/x:1', 'no-rule'],
  ]);
});

t.test('every target of a source is shown (ordered targets)', async (t) => {
  const rules = compileRules([{ from: 'docker.io', to: ['a.example.com/hub', 'b.example.com/hub'], verify: true }]);
  if (!rules.ok) throw new Error('rules');
  const s: Settings = { ruleSet: rules.ruleSet, policy: undefined, pullSecrets: [] };
  const view = readPod({ spec: { containers: [{ name: 'a', image: 'nginx:1' }] } });
  if (!view.ok) throw new Error(view.error);
  const input = { operation: 'CREATE' as const, subResource: '', pod: view.pod, oldPod: undefined, mode: 'audit' as const };
  const outcomes = new Map([['a.example.com/hub/library/nginx:1', 'present' as const], ['b.example.com/hub/library/nginx:1', 'present' as const]]);
  const cache = new ReportCache(now, 'audit');
  cache.record(planPod(input, s, { outcomes, onUnreachable: 'original' }).decisions, 'x');
  const [item] = workItems(cache.snapshot());
  t.same(item?.targets, ['a.example.com/hub/library/nginx:1', 'b.example.com/hub']);
});

t.test('copy commands honour registries.<host> (plain HTTP, CA); CSV of the worklist', async (t) => {
  const regs = {
    'docker.io': { ca: '/etc/ca/hub/ca.crt', insecure: false, auth: undefined },
    'mirror.example.com': { ca: undefined, insecure: true, auth: undefined },
  };
  t.equal(
    copyCommand('docker.io/library/nginx:1', 'mirror.example.com/hub/library/nginx:1', 'skopeo', regs),
    'skopeo copy --all --preserve-digests --src-cert-dir /etc/ca/hub --dest-tls-verify=false docker://docker.io/library/nginx:1 docker://mirror.example.com/hub/library/nginx:1',
  );
  t.equal(copyCommand('quay.io/a:1', 'mirror.example.com/q/a:1', 'crane', regs), 'crane copy --insecure quay.io/a:1 mirror.example.com/q/a:1');
  t.equal(copyCommand('docker.io/library/nginx:1', 'm.example.com/h/nginx:1', 'gcrane', regs), 'SSL_CERT_FILE=/etc/ca/hub/ca.crt gcrane cp docker.io/library/nginx:1 m.example.com/h/nginx:1');
  t.equal(copyCommand('quay.io/a:1', 'm.example.com/q/a:1', 'skopeo'), 'skopeo copy --all --preserve-digests docker://quay.io/a:1 docker://m.example.com/q/a:1', 'no settings: no flags');

  const cache = new ReportCache(now, 'audit');
  cache.record(decisions(['nginx:1', 'quay.io/acme/app:1'], 'audit'), 'team-a');
  const csv = worklistCsv(cache.snapshot(), { registries: regs, tool: 'crane' });
  const lines = csv.split('\r\n');
  t.equal(lines[0], CSV_HEADER.join(','));
  t.equal(lines[1], 'docker.io/library/nginx:1,docker.io,would-rewrite,mirror.example.com/dockerhub/library/nginx:1,mirror.example.com/dockerhub/library/nginx:1,team-a,2026-11-22T10:01:00.000Z,SSL_CERT_FILE=/etc/ca/hub/ca.crt crane copy --insecure docker.io/library/nginx:1 mirror.example.com/dockerhub/library/nginx:1,,,1,1');
  t.equal(lines[2], 'quay.io/acme/app:1,quay.io,would-rewrite,mirror.example.com/quay/acme/app:1,mirror.example.com/quay/acme/app:1,team-a,2026-11-22T10:01:00.000Z,,yes,,1,1', 'in the mirror (verified): no copy command');
  t.equal(lines.length, 4, 'header, two rows, final CRLF');
  const hostile = new ReportCache(now, 'audit');
  hostile.record(decisions(['=cmd|x'], 'audit'), '+ns');
  t.match(worklistCsv(hostile.snapshot()), /"'=cmd\|x"/, 'a formula-looking cell is neutralised and quoted');
});

t.test('a rewrite takes an image off the missing list (it is in the mirror now)', async (t) => {
  const cache = new ReportCache(now, 'enforce');
  cache.record(decisions(['quay.io/acme/app:1'], 'enforce', ['mirror.example.com/quay/acme/app:1']), 'a');
  t.same(cache.snapshot().registries['quay.io']?.missing, ['quay.io/acme/app:1']);
  cache.record(decisions(['quay.io/acme/app:1'], 'enforce'), 'a');
  t.same(cache.snapshot().registries['quay.io']?.missing, [], 'present at the next admission: no longer missing');
});

t.test('counts rewrites per target that served them (ordered targets)', async (t) => {
  const rules = compileRules([{ from: 'docker.io', to: ['a.example.com/hub', 'b.example.com/hub'], verify: true }]);
  if (!rules.ok) throw new Error('rules');
  const s: Settings = { ruleSet: rules.ruleSet, policy: undefined, pullSecrets: [] };
  const view = readPod({ spec: { containers: [{ name: 'a', image: 'nginx:1' }, { name: 'b', image: 'redis:7' }] } });
  if (!view.ok) throw new Error(view.error);
  const input = { operation: 'CREATE' as const, subResource: '', pod: view.pod, oldPod: undefined, mode: 'enforce' as const };
  const outcomes = new Map([
    ['a.example.com/hub/library/nginx:1', 'present' as const],
    ['b.example.com/hub/library/nginx:1', 'present' as const],
    ['a.example.com/hub/library/redis:7', 'absent' as const],
    ['b.example.com/hub/library/redis:7', 'present' as const],
  ]);
  const cache = new ReportCache(now, 'enforce');
  cache.record(planPod(input, s, { outcomes, onUnreachable: 'original' }).decisions, 'team-a');
  const e = cache.snapshot().registries['docker.io'];
  t.equal(e?.rewritten, 2);
  t.equal(e?.target, 'a.example.com/hub', 'the primary target');
  t.same(e?.served, { 'a.example.com/hub': 1, 'b.example.com/hub': 1 });
  const round = parseReport(JSON.stringify(cache.snapshot()), 'test');
  t.same(round.registries['docker.io']?.served, e?.served, 'kept through persistence');
  t.same(mergeReports([round, round], now()).registries['docker.io']?.served, { 'a.example.com/hub': 2, 'b.example.com/hub': 2 }, 'summed over replicas');
});

t.test('hostile sizes: invalid references kept cut, the lists bounded in characters', async (t) => {
  const cache = new ReportCache(now, 'enforce', { maxChars: 64 * 1024 });
  for (let i = 0; i < 40; i++) {
    const image = `M${String(i).padStart(3, '0')}${'Y'.repeat(1024 * 1024)}`;
    cache.record(decisions([image], 'enforce'), `ns-${'s'.repeat(100)}-${i}`);
  }
  const text = JSON.stringify(cache.snapshot());
  t.ok(text.length < 200 * 1024, `the report is ${text.length} characters after 40 distinct 1 MiB images`);
  t.match(text, /…\(1048580 chars\)/, 'kept cut, with the original length');
  const invalid = cache.snapshot().registries.invalid;
  t.equal(invalid?.unchanged, 40, 'every one counted');
  for (let i = 0; i < 2000; i++) cache.record(decisions([`r${i % 150}.example.org/${'p'.repeat(200)}/app-${i}:1`], 'enforce'), 'a');
  const after = JSON.stringify(cache.snapshot());
  t.ok(after.length < 64 * 1024 + 150 * 2048, `bounded by maxChars plus the counters: ${after.length}`);
  const overflow = Object.values(cache.snapshot().registries).reduce((n, e) => n + e.imagesOverflow, 0);
  t.ok(overflow > 0, 'what did not fit is counted as overflow');
});

t.test('a denied pod rewrote nothing: only its violations are recorded', async (t) => {
  const cache = new ReportCache(now, 'enforce');
  const ds = decisions(['quay.io/prom/x:1', 'evil.example.net/x:1'], 'enforce');
  cache.record(ds, 'a', true);
  const r = cache.snapshot().registries;
  t.equal(r['quay.io'], undefined, 'quay.io not counted as rewritten');
  t.equal(r['evil.example.net']?.denied, 1);
});

t.test('budget is given back when an image leaves a list, so churn never starves it', async (t) => {
  const cache = new ReportCache(now, 'enforce', { maxChars: 4096 });
  for (let round = 0; round < 50; round++) {
    const img = `quay.io/acme/app-${round}:${'1'.repeat(40)}`;
    cache.record(decisions([img], 'enforce', [`mirror.example.com/quay/acme/app-${round}:${'1'.repeat(40)}`]), 'a');
    cache.record(decisions([img], 'enforce'), 'a');
  }
  const e = cache.snapshot().registries['quay.io'];
  t.equal(e?.missing.length, 0);
  t.equal(e?.missingOverflow, 0, 'every missing image was listed, none dropped for lack of budget');
});

t.test('one row per registry whatever the host case, as rules and policy compare hosts; images as the runtime pulls them', async (t) => {
  const cache = new ReportCache(now, 'enforce');
  // DOCKER.IO/evil is repository evil on host DOCKER.IO (no library/): the runtime pulls
  // exactly that; the host is docker.io's, as DNS and the rules read it.
  cache.record(decisions(['nginx:1', 'DOCKER.IO/evil:1', 'Docker.IO/library/nginx:1', 'INDEX.DOCKER.IO/nginx:2', 'Quay.IO/acme/app:1'], 'audit'), 'team-a');
  const r = cache.snapshot();
  t.same(Object.keys(r.registries), ['docker.io', 'quay.io'], 'DOCKER.IO, Docker.IO and INDEX.DOCKER.IO are docker.io; Quay.IO is quay.io');
  const hub = r.registries['docker.io'];
  t.equal(hub?.wouldRewrite, 4, 'all four counted in one row (the rule from: docker.io matches them all)');
  t.same(hub?.images, ['docker.io/library/nginx:1', 'DOCKER.IO/evil:1', 'Docker.IO/library/nginx:1', 'INDEX.DOCKER.IO/nginx:2'], 'each image as written');
  t.equal(hub?.pending['DOCKER.IO/evil:1'], 'mirror.example.com/dockerhub/evil:1', 'repository evil, never library/evil');
  t.match(r.registries['quay.io'], { images: ['Quay.IO/acme/app:1'] });

  cache.recordCopy('QUAY.IO', 'Quay.IO/acme/app:1', true);
  t.equal(cache.snapshot().registries['quay.io']?.copied, 1, 'a copy is counted in the same row');

  // A report kept by an older version, keyed as written, folds into the same rows.
  const old = new ReportCache(now, 'enforce');
  old.absorb({ schemaVersion: REPORT_SCHEMA_VERSION, trend: [], generatedAt: '2026-11-22T09:00:00.000Z', mode: 'enforce', registries: { 'DOCKER.IO': { ...structuredClone(hub!), wouldRewrite: 1, images: ['DOCKER.IO/evil:1'], pending: {} } } });
  old.absorb(cache.snapshot());
  t.same(Object.keys(old.snapshot().registries), ['docker.io', 'quay.io']);
  t.equal(old.snapshot().registries['docker.io']?.wouldRewrite, 5);
  const merged = mergeReports([cache.snapshot(), { schemaVersion: REPORT_SCHEMA_VERSION, trend: [], generatedAt: '', mode: 'enforce', registries: { 'Docker.IO': structuredClone(hub!) } }], now());
  t.same(Object.keys(merged.registries), ['docker.io', 'quay.io'], 'replicas merge into one row per registry');
  t.equal(merged.registries['docker.io']?.wouldRewrite, 8);
});

t.test('copy commands find registries.<host> settings whatever the host case', async (t) => {
  const registries = { 'quay.io': { insecure: true } } as unknown as Parameters<typeof copyCommand>[3];
  t.equal(copyCommand('Quay.IO/acme/app:1', 'mirror.example.com/quay/acme/app:1', 'crane', registries), 'crane copy --insecure Quay.IO/acme/app:1 mirror.example.com/quay/acme/app:1');
  t.equal(copyCommand('QUAY.IO/acme/app:1', 'mirror.example.com/quay/acme/app:1', 'skopeo', registries), 'skopeo copy --all --preserve-digests --src-tls-verify=false docker://QUAY.IO/acme/app:1 docker://mirror.example.com/quay/acme/app:1');
  // The config keeps registries.<host> under registrySettingsKey: Docker Hub's under docker.io.
  const hub = { 'docker.io': { insecure: true } } as unknown as Parameters<typeof copyCommand>[3];
  t.match(copyCommand('INDEX.DOCKER.IO/nginx:1', 'mirror.example.com/dockerhub/nginx:1', 'crane', hub), /--insecure/, 'Docker Hub settings for any of its spellings');
});
