/**
 * Per-image usage (namespaces, workloads, admissions in the last hour and day, last seen,
 * what verification said) and the hourly trend: recorded, bounded, merged across replicas,
 * kept through a stored report, shown on the page. Clocks are fake.
 */
import t from 'tap';
import { readPod, planPod, type Mode, type Settings } from '../../src/core/pod.js';
import { compilePolicy } from '../../src/core/policy.js';
import { compileRules } from '../../src/core/rules.js';
import type { Workload } from '../../src/core/workload.js';
import { copyCommands, worklistCsv } from '../../src/report/format.js';
import { renderReportHtml, trendSvg } from '../../src/report/html.js';
import { mergeReports, parseReport, REPORT_SCHEMA_VERSION, ReportCache } from '../../src/report/rewrites.js';
import { mergeTrend, TREND_HOURS } from '../../src/report/trend.js';
import { compactBuckets, MAX_BUCKETS, recentCounts } from '../../src/report/usage.js';
import { workItems } from '../../src/report/worklist.js';

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
  const outcomes = new Map(first.toVerify.map((x) => [x, absent.includes(x) ? ('absent' as const) : ('present' as const)]));
  return planPod(input, settings(), { outcomes, onUnreachable: 'original' }).decisions;
}

const T0 = Date.parse('2026-11-22T10:00:00Z');
const MIN = 60_000;
const HOUR = 60 * MIN;
const deploy = (name: string): Workload => ({ kind: 'Deployment', name, via: 'pod-template-hash' });

t.test('per image: namespaces, workloads, admissions in the last hour and day, last seen', async (t) => {
  let clock = T0;
  const cache = new ReportCache(() => new Date(clock), 'audit');
  // Two images of one registry used by different teams: kept apart, not merged per registry.
  cache.record(decisions(['nginx:1', 'nginx:1', 'redis:7'], 'audit'), 'team-a', false, deploy('web'));
  clock += 30 * MIN;
  cache.record(decisions(['nginx:1'], 'audit'), 'team-b', false, { kind: 'StatefulSet', name: 'db', via: 'owner' });
  clock += 2 * HOUR;
  cache.record(decisions(['nginx:1'], 'audit'), 'team-a', false, deploy('web'));
  const r = cache.snapshot();
  const nginx = r.registries['docker.io']?.usage['docker.io/library/nginx:1'];
  t.match(nginx, { admissions: 3, namespaces: ['team-a', 'team-b'], workloads: ['team-a/Deployment/web', 'team-b/StatefulSet/db'], lastSeen: '2026-11-22T12:30:00.000Z' }, 'an image twice in one pod is one admission');
  t.match(r.registries['docker.io']?.usage['docker.io/library/redis:7'], { admissions: 1, namespaces: ['team-a'], workloads: ['team-a/Deployment/web'] });

  const items = workItems(r);
  const n = items.find((i) => i.image === 'docker.io/library/nginx:1');
  t.match(n, { perImage: true, lastHour: 1, lastDay: 3, namespaces: ['team-a', 'team-b'] });
  const redis = items.find((i) => i.image === 'docker.io/library/redis:7');
  t.match(redis, { lastHour: 0, lastDay: 1, namespaces: ['team-a'], lastSeen: '2026-11-22T10:00:00.000Z' }, 'its own last seen, not the registry\'s');
  clock += 23 * HOUR;
  t.match(
    workItems(cache.snapshot()).find((i) => i.image === 'docker.io/library/nginx:1'),
    { lastHour: 0, lastDay: 1 },
    'a day later only the last admission is within the day',
  );

  const csv = worklistCsv(r).split('\r\n');
  t.equal(csv[1], 'docker.io/library/nginx:1,docker.io,would-rewrite,mirror.example.com/dockerhub/library/nginx:1,mirror.example.com/dockerhub/library/nginx:1,team-a team-b,2026-11-22T12:30:00.000Z,gcrane cp docker.io/library/nginx:1 mirror.example.com/dockerhub/library/nginx:1,,team-a/Deployment/web team-b/StatefulSet/db,1,3');
  const html = renderReportHtml(r, 'n');
  t.match(html, /Deployment web \(team-a\)/, 'the workload on the page');
  t.match(html, /StatefulSet db \(team-b\)/);
});

t.test('time buckets stay bounded whatever the traffic, and count right', async (t) => {
  let clock = T0;
  const cache = new ReportCache(() => new Date(clock), 'audit');
  // One admission a minute for three days.
  for (let i = 0; i < 3 * 24 * 60; i++) {
    cache.record(decisions(['nginx:1'], 'audit'), 'a');
    clock += MIN;
  }
  clock -= MIN; // the moment of the last admission
  const u = cache.snapshot().registries['docker.io']?.usage['docker.io/library/nginx:1'];
  t.ok(u !== undefined && u.recent.length <= MAX_BUCKETS, `${u?.recent.length} buckets`);
  t.equal(u?.admissions, 3 * 24 * 60);
  const { lastHour, lastDay } = recentCounts(u, new Date(clock));
  t.ok(lastHour >= 55 && lastHour <= 60, `last hour to 5 minutes: ${lastHour}`);
  t.ok(lastDay >= 23 * 60 && lastDay <= 25 * 60, `last day to the hour: ${lastDay}`);
  t.same(compactBuckets([[Number.NaN, 1], [5, -1], [10, 0]], 100), [], 'garbage buckets dropped');
  t.same(compactBuckets([[29_400_000 + 5, 2], [29_400_000 + 10, 3]], 29_400_000 + 200), [[29_400_000, 5]], 'folded into the hour once older than an hour');
  t.same(compactBuckets([[29_400_000, 2]], 29_400_000 + 26 * 60), [], 'dropped once older than a day');
});

t.test('usage merges across replicas: counts and buckets summed, lists united', async (t) => {
  const a = new ReportCache(() => new Date(T0), 'audit');
  const b = new ReportCache(() => new Date(T0 + 10 * MIN), 'audit');
  a.record(decisions(['nginx:1'], 'audit'), 'team-a', false, deploy('web'));
  b.record(decisions(['nginx:1'], 'audit'), 'team-b', false, deploy('api'));
  b.record(decisions(['nginx:1'], 'audit'), 'team-b', false, deploy('api'));
  const m = mergeReports([a.snapshot(), b.snapshot()], new Date(T0 + 20 * MIN));
  t.equal(m.schemaVersion, REPORT_SCHEMA_VERSION);
  const u = m.registries['docker.io']?.usage['docker.io/library/nginx:1'];
  t.match(u, { admissions: 3, namespaces: ['team-a', 'team-b'], workloads: ['team-a/Deployment/web', 'team-b/Deployment/api'], lastSeen: '2026-11-22T10:10:00.000Z' });
  t.same(recentCounts(u, new Date(T0 + 20 * MIN)), { lastHour: 3, lastDay: 3 });
  const round = parseReport(JSON.stringify(m), 'stored');
  t.same(round, m, 'a stored report reads back as it was written');
  const hostile = parseReport(JSON.stringify({ registries: { 'docker.io': { images: ['x'], usage: { x: { admissions: -1, namespaces: [1, 'a'], recent: [[1, 2, 3], ['a', 1], [7, 2]], mirror: 'maybe' } } } }, trend: [{ hour: 'never', done: 1, total: 1 }, { hour: '2026-11-22T10:20:00Z', done: 9, total: 3 }] }), 'h');
  t.match(hostile.registries['docker.io']?.usage.x, { admissions: 0, namespaces: ['a'], recent: [[7, 2]] });
  t.equal(hostile.registries['docker.io']?.usage.x?.mirror, undefined, 'an unknown mirror state is dropped');
  t.same(hostile.trend, [{ hour: '2026-11-22T10:00:00.000Z', done: 3, total: 3 }], 'bad points dropped, hours aligned, done never above total');
});

t.test('what verification said decides the copy commands: the mirror holds it, no copy', async (t) => {
  const cache = new ReportCache(() => new Date(T0), 'audit');
  cache.record(decisions(['quay.io/acme/held:1', 'quay.io/acme/absent:1', 'nginx:1'], 'audit', ['mirror.example.com/quay/acme/absent:1']), 'a');
  const r = cache.snapshot();
  t.same(
    workItems(r).map((i) => [i.image, i.state, i.inMirror]),
    [
      ['docker.io/library/nginx:1', 'would-rewrite', undefined],
      ['quay.io/acme/absent:1', 'missing', false],
      ['quay.io/acme/held:1', 'would-rewrite', true],
    ],
  );
  t.same(copyCommands(r, 'skopeo'), [
    'skopeo copy --all --preserve-digests docker://docker.io/library/nginx:1 docker://mirror.example.com/dockerhub/library/nginx:1',
    'skopeo copy --all --preserve-digests docker://quay.io/acme/absent:1 docker://mirror.example.com/quay/acme/absent:1',
  ]);
  t.same(copyCommands(r, 'crane').length, 2);
  t.match(renderReportHtml(r, 'n'), /in the mirror: no copy needed/);
  cache.recordCopy('quay.io', 'quay.io/acme/absent:1', true);
  t.equal(cache.snapshot().registries['quay.io']?.usage['quay.io/acme/absent:1']?.mirror, 'present', 'a copy that succeeded puts it in the mirror');
});

t.test('targets and usage are charged to the budgets: a hostile config cannot grow the report', async (t) => {
  const long = 'p'.repeat(150);
  const rules = compileRules(Array.from({ length: 150 }, (_, i) => ({ from: `r${i}.example.org`, to: [`m1.example.com/${long}/${i}`, `m2.example.com/${long}/${i}`], verify: true })));
  if (!rules.ok) throw new Error('rules');
  const s: Settings = { ruleSet: rules.ruleSet, policy: undefined, pullSecrets: [] };
  const cache = new ReportCache(() => new Date(T0), 'audit', { maxChars: 40_000, maxUsageChars: 20_000 });
  for (let i = 0; i < 150; i++) {
    const view = readPod({ spec: { containers: [{ name: 'c', image: `r${i}.example.org/app:1` }] } });
    if (!view.ok) throw new Error(view.error);
    const input = { operation: 'CREATE' as const, subResource: '', pod: view.pod, oldPod: undefined, mode: 'audit' as const };
    const outcomes = new Map(planPod(input, s).toVerify.map((x) => [x, 'present' as const]));
    cache.record(planPod(input, s, { outcomes, onUnreachable: 'original' }).decisions, 'ns', false, deploy(`w${i}`));
  }
  const r = cache.snapshot();
  const targetChars = Object.values(r.registries).reduce((n, e) => n + e.targets.join('').length, 0);
  t.ok(targetChars <= 40_000, `the target lists keep ${targetChars} characters`);
  const withUsage = Object.values(r.registries).filter((e) => Object.keys(e.usage).length > 0).length;
  t.ok(withUsage > 0 && withUsage < 150, `usage kept for ${withUsage} of 150 images within its budget`);
  t.equal(Object.values(r.registries).reduce((n, e) => n + e.wouldRewrite, 0), 150, 'every admission counted');
  const noUsage = workItems(r).find((i) => !i.perImage);
  t.match(noUsage, { perImage: false, workloads: [] }, 'an image past the usage budget is still on the worklist, with its registry\'s namespaces');
});

t.test('trend: hourly buckets of progress, seven days, denied pods not counted, merged across replicas', async (t) => {
  let clock = T0;
  const servedAsIs = (registry: string): boolean => registry === 'registry.k8s.io' || registry === 'mirror.example.com';
  const cache = new ReportCache(() => new Date(clock), 'enforce', {}, servedAsIs);
  cache.record(decisions(['nginx:1', 'registry.k8s.io/pause:3.9', 'quay.io/acme/app:1'], 'enforce', ['mirror.example.com/quay/acme/app:1']), 'a');
  cache.record(decisions(['evil.io/x:1'], 'enforce'), 'a', true);
  clock += HOUR;
  cache.record(decisions(['nginx:1', 'quay.io/acme/app:1'], 'enforce'), 'a');
  const r = cache.snapshot();
  t.same(r.trend, [
    { hour: '2026-11-22T10:00:00.000Z', done: 2, total: 3 },
    { hour: '2026-11-22T11:00:00.000Z', done: 2, total: 2 },
  ], 'rewritten and allowed are done, the missing image is not; the denied pod ran nothing');

  const other = new ReportCache(() => new Date(clock), 'enforce', {}, servedAsIs);
  other.record(decisions(['evil.io/x:1'], 'audit'), 'b');
  const merged = mergeReports([r, other.snapshot()], new Date(clock));
  t.same(merged.trend[1], { hour: '2026-11-22T11:00:00.000Z', done: 2, total: 3 }, 'the same hour summed over replicas');

  // Eight days of hourly admissions: only the last seven days are kept.
  const long = new ReportCache(() => new Date(clock), 'enforce', {}, servedAsIs);
  for (let h = 0; h < 8 * 24; h++) {
    long.record(decisions(['nginx:1'], 'enforce'), 'a');
    clock += HOUR;
  }
  clock -= HOUR; // the hour of the last admission
  const trend = long.snapshot().trend;
  t.equal(trend.length, TREND_HOURS, 'at most 168 hourly buckets');
  t.same(mergeTrend([trend, trend], new Date(clock)).length, TREND_HOURS);
  t.same(mergeTrend([[{ hour: '2030-01-01T00:00:00Z', done: 1, total: 1 }]], new Date(clock)), [], 'a point far in the future is dropped');

  const svg = trendSvg(trend, new Date(clock).toISOString(), false);
  t.equal([...svg.matchAll(/<circle /g)].length, trend.length, 'a point per hour with admissions');
  t.notMatch(svg, /https?:/, 'no external reference');
  t.match(trendSvg([], new Date(clock).toISOString(), false), /No admissions in the last seven days/);
});
