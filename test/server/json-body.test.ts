import t from 'tap';
import { BodyError, depthExceeds, MAX_JSON_DEPTH, parseJsonBody, parseTimeoutParam, readableUid, uidInText } from '../../src/server/json-body.js';

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

t.test('uidInText: request.uid of a body that is not JSON, as far as it can be read', async (t) => {
  const cases: { name: string; text: string; uid: string | undefined }[] = [
    { name: 'cut after the uid', text: '{"apiVersion":"admission.k8s.io/v1","request":{"uid":"abc","object":{"spec":{', uid: 'abc' },
    { name: 'garbage after the uid', text: '{"request":{"uid":"abc","x":}}', uid: 'abc' },
    { name: 'whitespace everywhere', text: ' { "request" : { "uid" : "abc" , ', uid: 'abc' },
    { name: 'escapes in the uid are decoded', text: '{"request":{"uid":"a\\"b\\u0063",', uid: 'a"bc' },
    { name: 'escaped keys too', text: '{"requ\\u0065st":{"\\u0075id":"abc",', uid: 'abc' },
    { name: 'the last of duplicates, as JSON.parse', text: '{"request":{"uid":"one","uid":"two",', uid: 'two' },
    { name: 'a uid deeper down is not the request uid', text: '{"request":{"object":{"metadata":{"uid":"pod"}},', uid: undefined },
    { name: 'a uid at the top is not the request uid', text: '{"uid":"top","request":{', uid: undefined },
    { name: 'a uid inside an array is not it', text: '{"request":[{"uid":"abc"}', uid: undefined },
    { name: 'after request closed, a later key is not request', text: '{"request":{"a":1},"other":{"uid":"x"', uid: undefined },
    { name: 'a uid that is not a string', text: '{"request":{"uid":5,', uid: undefined },
    { name: 'an empty uid', text: '{"request":{"uid":"",', uid: undefined },
    { name: 'a uid longer than 256 characters', text: `{"request":{"uid":"${'u'.repeat(257)}",`, uid: undefined },
    { name: 'exactly 256 characters', text: `{"request":{"uid":"${'u'.repeat(256)}",`, uid: 'u'.repeat(256) },
    { name: 'an unterminated uid', text: '{"request":{"uid":"abc', uid: undefined },
    { name: 'a broken escape stops the scan', text: '{"request":{"uid":"a\\x"', uid: undefined },
    { name: 'a key string in a value position is not a key', text: '{"request":{"a":"uid","b":"x",', uid: undefined },
    { name: 'brackets inside strings do not count', text: '{"request":{"s":"}}]]{{","uid":"abc",', uid: 'abc' },
    { name: 'stray closers', text: ']]}}{"request":{"uid":"abc"', uid: 'abc' },
    { name: 'nothing readable', text: '\u0000garbage', uid: undefined },
    { name: 'empty', text: '', uid: undefined },
  ];
  for (const c of cases) t.equal(uidInText(c.text), c.uid, c.name);
  // A large body is one linear pass.
  t.equal(uidInText(`{"request":{"uid":"abc","object":{"pad":"${'x'.repeat(4 * 1024 * 1024)}"`), 'abc', '4 MiB body');
});

t.test('readableUid: request.uid of a parsed body', async (t) => {
  t.equal(readableUid({ request: { uid: 'abc' } }), 'abc');
  for (const v of [null, 1, 'x', [], { request: null }, { request: [] }, { request: { uid: 5 } }, { request: { uid: '' } }, { request: { uid: 'u'.repeat(257) } }]) t.equal(readableUid(v), undefined, JSON.stringify(v).slice(0, 40));
});

t.test('parseJsonBody: its errors carry the uid when one is readable', async (t) => {
  const deep = (): unknown => parseJsonBody(JSON.stringify({ request: { uid: 'abc', x: JSON.parse(nest(MAX_JSON_DEPTH + 5)) as unknown } }));
  t.throws(deep, { code: 'MG_BODY_TOO_DEEP', uid: 'abc' });
  t.throws(() => parseJsonBody('{"request":{"uid":"abc",'), { code: 'MG_BODY_MALFORMED', uid: 'abc' });
  t.throws(() => parseJsonBody('{"request":{'), { code: 'MG_BODY_MALFORMED', uid: undefined });
});
