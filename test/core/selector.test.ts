import t from 'tap';
import { parseSelector, selectorMatches } from '../../src/core/selector.js';

// Semantics as in k8s.io/apimachinery/pkg/labels (selector.go): every term must hold,
// NotIn and DoesNotExist hold for a missing label, an empty selector matches everything.
const labels = { app: 'web', tier: 'frontend', 'example.com/team': 'a' };
const cases: { name: string; selector: unknown; match: boolean }[] = [
  { name: 'empty selector matches all', selector: {}, match: true },
  { name: 'matchLabels equal', selector: { matchLabels: { app: 'web' } }, match: true },
  { name: 'matchLabels differ', selector: { matchLabels: { app: 'db' } }, match: false },
  { name: 'matchLabels all must hold', selector: { matchLabels: { app: 'web', tier: 'backend' } }, match: false },
  { name: 'prefixed key', selector: { matchLabels: { 'example.com/team': 'a' } }, match: true },
  { name: 'In holds', selector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['frontend', 'edge'] }] }, match: true },
  { name: 'In missing label', selector: { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] }, match: false },
  { name: 'NotIn holds for other values', selector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['db'] }] }, match: true },
  { name: 'NotIn fails for a listed value', selector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, match: false },
  { name: 'NotIn holds for a missing label', selector: { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, match: true },
  { name: 'Exists', selector: { matchExpressions: [{ key: 'app', operator: 'Exists' }] }, match: true },
  { name: 'Exists missing', selector: { matchExpressions: [{ key: 'zone', operator: 'Exists' }] }, match: false },
  { name: 'DoesNotExist', selector: { matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }, match: true },
  { name: 'DoesNotExist present', selector: { matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, match: false },
  { name: 'labels and expressions together', selector: { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['frontend'] }] }, match: false },
];

t.test('selectorMatches', async (t) => {
  for (const c of cases) {
    const r = parseSelector(c.selector, 's');
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    t.equal(selectorMatches(r.selector, labels), c.match, c.name);
  }
});

const bad: { name: string; selector: unknown; path: string; message: RegExp }[] = [
  { name: 'not a mapping', selector: ['a'], path: 's', message: /must be a mapping/ },
  { name: 'unknown key', selector: { matchLabel: {} }, path: 's.matchLabel', message: /unknown key/ },
  { name: 'bad key', selector: { matchLabels: { 'bad key': 'x' } }, path: 's.matchLabels["bad key"]', message: /not a label key/ },
  { name: 'value not a string', selector: { matchLabels: { a: 1 } }, path: 's.matchLabels["a"]', message: /label value/ },
  { name: 'bad operator', selector: { matchExpressions: [{ key: 'a', operator: 'Equals', values: ['x'] }] }, path: 's.matchExpressions[0].operator', message: /one of In, NotIn/ },
  { name: 'In without values', selector: { matchExpressions: [{ key: 'a', operator: 'In' }] }, path: 's.matchExpressions[0].values', message: /at least one value/ },
  { name: 'Exists with values', selector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] }, path: 's.matchExpressions[0].values', message: /takes no values/ },
];

t.test('parseSelector rejects, naming the field', async (t) => {
  for (const c of bad) {
    const r = parseSelector(c.selector, 's');
    t.equal(r.ok, false, c.name);
    if (!r.ok) t.match(r.problems.find((p) => p.path === c.path)?.message, c.message, `${c.name}: ${JSON.stringify(r.problems)}`);
  }
});

t.test('the canonical form ignores order', async (t) => {
  const a = parseSelector({ matchLabels: { a: '1', b: '2' } }, 's');
  const b = parseSelector({ matchLabels: { b: '2', a: '1' } }, 's');
  if (!a.ok || !b.ok) throw new Error('parse');
  t.equal(a.selector.canonical, b.selector.canonical);
});
