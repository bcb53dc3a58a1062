import t from 'tap';
import { BodyError, depthExceeds, MAX_JSON_DEPTH, parseJsonBody, parseTimeoutParam } from '../../src/server/json-body.js';

const nest = (n: number, inner = '1'): string => '['.repeat(n) + inner + ']'.repeat(n);
const pad = (s: string): string => `{"pad":"${'x'.repeat(300)}","v":${s}}`;

t.test('depthExceeds', async (t) => {
  const cases: { name: string; text: string; limit: number; exceeds: boolean }[] = [
    { name: 'a scalar has no depth', text: '"[[[["', limit: 0, exceeds: false },
    { name: 'flat object', text: pad('1'), limit: 1, exceeds: false },
    { name: 'flat object over a limit of zero', text: pad('1'), limit: 0, exceeds: true },
    { name: 'exactly the limit', text: nest(5), limit: 5, exceeds: false },
    { name: 'one over the limit', text: pad(nest(6)), limit: 6, exceeds: true },
    { name: 'one over the limit in the last element', text: `[1,[],{"a":${nest(2)}},${nest(4)}]`, limit: 4, exceeds: true },
    { name: 'wide but shallow', text: JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ i, v: [i] }))), limit: 3, exceeds: false },
    { name: 'brackets inside strings do not count', text: pad(`"${'['.repeat(50)}"`), limit: 2, exceeds: false },
    { name: 'escaped quote does not end a string', text: pad(`"a\\"${'{'.repeat(50)}"`), limit: 2, exceeds: false },
    { name: 'unicode strings', text: pad(`"é€𝄞 [[[["`), limit: 1, exceeds: false },
    { name: 'objects and arrays mixed', text: pad('{"a":[{"b":[{"c":[1]}]}]}'), limit: 6, exceeds: true },
    { name: 'a __proto__ key is walked like any other', text: `{"__proto__":${nest(3)}}`, limit: 3, exceeds: true },
    { name: 'null members', text: '{"a":null,"b":[null,{"c":null}]}', limit: 3, exceeds: false },
  ];
  for (const c of cases) t.equal(depthExceeds(JSON.parse(c.text), c.limit), c.exceeds, c.name);
});

t.test('parseJsonBody', async (t) => {
  t.same(parseJsonBody(('{"a":[1,2]}')), { a: [1, 2] });
  t.throws(() => parseJsonBody(''), BodyError);
  t.throws(() => parseJsonBody((nest(MAX_JSON_DEPTH + 1))), /nested deeper than 100/);
  t.same(parseJsonBody(nest(MAX_JSON_DEPTH)), JSON.parse(nest(MAX_JSON_DEPTH)), 'exactly the limit parses');
  const deep = nest(4 * 1024 * 1024);
  t.throws(() => parseJsonBody(deep), /nested deeper than 100/, 'a whole 8 MiB of nesting is refused without a stack overflow');
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
