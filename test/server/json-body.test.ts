import t from 'tap';
import { BodyError, jsonDepthExceeds, MAX_JSON_DEPTH, parseJsonBody, parseTimeoutParam } from '../../src/server/json-body.js';

const nest = (n: number, inner = '1'): string => '['.repeat(n) + inner + ']'.repeat(n);
const pad = (s: string): string => `{"pad":"${'x'.repeat(300)}","v":${s}}`;

t.test('jsonDepthExceeds', async (t) => {
  const cases: { name: string; text: string; limit: number; exceeds: boolean }[] = [
    { name: 'flat object', text: pad('1'), limit: 3, exceeds: false },
    { name: 'exactly the limit', text: nest(5), limit: 6, exceeds: false },
    { name: 'one over the limit', text: pad(nest(6)), limit: 6, exceeds: true },
    { name: 'brackets inside strings do not count', text: pad(`"${'['.repeat(50)}"`), limit: 3, exceeds: false },
    { name: 'escaped quote does not end a string', text: pad(`"a\\"${'{'.repeat(50)}"`), limit: 3, exceeds: false },
    { name: 'escaped backslash ends before the quote', text: pad(`["a\\\\",${nest(5)}]`), limit: 5, exceeds: true },
    { name: 'three backslashes then a quote stay inside', text: pad(`"a\\\\\\"[[[[[[[[["`), limit: 3, exceeds: false },
    { name: 'unicode strings', text: pad(`"é€𝄞 [[[["`), limit: 3, exceeds: false },
    { name: 'objects and arrays mixed', text: pad('{"a":[{"b":[{"c":[1]}]}]}'), limit: 6, exceeds: true },
    { name: 'unterminated string is left to JSON.parse', text: pad('"abc'), limit: 3, exceeds: false },
  ];
  for (const c of cases) t.equal(jsonDepthExceeds(c.text, c.limit), c.exceeds, c.name);
});

t.test('parseJsonBody', async (t) => {
  t.same(parseJsonBody(('{"a":[1,2]}')), { a: [1, 2] });
  t.throws(() => parseJsonBody(''), BodyError);
  t.throws(() => parseJsonBody((nest(MAX_JSON_DEPTH + 1))), /nested deeper than 100/);
  t.same(parseJsonBody((nest(MAX_JSON_DEPTH - 1))), JSON.parse(nest(MAX_JSON_DEPTH - 1)), 'a real depth within the limit parses');
  t.throws(() => parseJsonBody(('{"a":')), /malformed JSON/);
  const proto = parseJsonBody(('{"__proto__":{"polluted":true}}')) as Record<string, unknown>;
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
  t.ok(Object.hasOwn(proto, '__proto__'), '__proto__ stays an own property');
});

t.test('parseTimeoutParam', async (t) => {
  t.equal(parseTimeoutParam('10s'), 10_000);
  t.equal(parseTimeoutParam('500ms'), 500);
  t.equal(parseTimeoutParam('1m'), 60_000);
  t.equal(parseTimeoutParam('1.5s'), 1500);
  t.equal(parseTimeoutParam('ten'), undefined);
  t.equal(parseTimeoutParam(undefined), undefined);
  t.equal(parseTimeoutParam(['10s']), undefined);
});
