/**
 * The identity webhooks' own test cases (fixtures beside this file, converted from the
 * upstream test tables at pinned commits; each fixture's `about` gives the conversion
 * rules) run as admissions through mirrorgate and compared on the final pod. A case with
 * `difference` is a deliberate one listed in the README's compatibility table: it must
 * differ, so the table stays true; every other case must give upstream's pod.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { admit, type Admission, type Json } from './identity-harness.js';

interface Case {
  id: string;
  test: string;
  line: number;
  namespace: string;
  config: unknown;
  serviceAccount: { name: string; annotations: Record<string, string> } | null;
  pod: Json;
  expect: { denied?: string; at?: Record<string, unknown>; allowed?: boolean; noRemoval?: boolean; unchanged?: boolean };
  difference?: string;
  /** In a case that differs, the parts that must still be upstream's. */
  sameAt?: Record<string, unknown>;
}
interface Fixture {
  upstream: { repository: string; tag: string; commit: string; file?: string };
  notConverted: Record<string, string>;
  cases: Case[];
}

const SUITES: { file: string; cases: number; differences: number }[] = [
  { file: 'azure-workload-identity-v1.6.0.json', cases: 37, differences: 2 },
  { file: 'azure-workload-identity-v1.5.1.json', cases: 38, differences: 3 },
  { file: 'gcp-workload-identity-federation-webhook-v0.7.0.json', cases: 18, differences: 5 },
];

/** A JSON pointer into the pod where a segment `name=X` picks the list item named X; undefined when absent. */
function at(doc: unknown, pointer: string): unknown {
  let cur: unknown = doc;
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) {
      cur = seg.startsWith('name=') ? cur.find((x: Json) => x?.name === seg.slice(5)) : cur[Number(seg)];
    } else if (cur !== null && typeof cur === 'object') {
      cur = (cur as Json)[seg];
    } else return undefined;
    if (cur === undefined) return undefined;
  }
  return cur;
}

function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => same((a as Json)[k], (b as Json)[k]));
}

/** Every field of `sent` is still in `final` with its value (lists may have grown). */
function keeps(final: unknown, sent: unknown): boolean {
  if (Array.isArray(sent)) return Array.isArray(final) && final.length >= sent.length && sent.every((x, i) => keeps(final[i], x));
  if (sent !== null && typeof sent === 'object') {
    return final !== null && typeof final === 'object' && Object.entries(sent).every(([k, v]) => keeps((final as Json)[k], v));
  }
  return final === sent;
}

/** undefined when mirrorgate gave upstream's answer, else what differs. */
function outcome(c: Case, a: Admission): string | undefined {
  const e = c.expect;
  if (e.denied !== undefined) return a.allowed ? `admitted; upstream denies: ${e.denied}` : undefined;
  if (!a.allowed) return `denied (${a.message ?? ''}); upstream admits`;
  const mismatch = firstMismatch(a.pod, e.at ?? {});
  if (mismatch !== undefined) return mismatch;
  if (e.noRemoval === true && !keeps(a.pod, c.pod)) return 'a field of the pod as sent was removed or changed';
  if (e.unchanged === true && !same(a.pod, c.pod)) return 'the pod was changed; upstream leaves it as sent';
  return undefined;
}

/** The first of `pointers` where the final pod is not what upstream gives, else undefined. */
function firstMismatch(pod: Json, pointers: Record<string, unknown>): string | undefined {
  for (const [pointer, want] of Object.entries(pointers)) {
    const got = at(pod, pointer);
    if (!same(got ?? null, want)) return `${pointer}: ${JSON.stringify(got)}, upstream ${JSON.stringify(want)}`;
  }
  return undefined;
}

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

for (const suite of SUITES) {
  const fixture = JSON.parse(readFileSync(new URL(suite.file, import.meta.url), 'utf8')) as Fixture;
  t.test(`${fixture.upstream.repository} ${fixture.upstream.tag}`, async (t) => {
    t.match(fixture.upstream.commit, /^[0-9a-f]{40}$/, 'pinned commit');
    t.equal(fixture.cases.length, suite.cases, 'cases converted (README figures)');
    t.equal(fixture.cases.filter((c) => c.difference !== undefined).length, suite.differences, 'documented differences (README table)');
    t.equal(new Set(fixture.cases.map((c) => c.id)).size, fixture.cases.length, 'ids unique');
    for (const c of fixture.cases.filter((x) => x.difference !== undefined)) {
      const name = c.id.slice(c.id.lastIndexOf('/') + 1);
      t.ok(README.includes(c.test) && README.includes(`"${name}"`), `README's compatibility table names ${c.test} "${name}"`);
    }
    for (const c of fixture.cases) {
      t.test(`${c.id} (line ${c.line})`, async (t) => {
        const accounts = c.serviceAccount === null ? {} : { [`${c.namespace}/${c.serviceAccount.name}`]: c.serviceAccount.annotations };
        const a = await admit(c.config, c.pod, accounts, c.namespace);
        const diff = outcome(c, a);
        if (c.difference === undefined) t.equal(diff, undefined, 'same as upstream');
        else {
          t.not(diff, undefined, `differs on purpose: ${c.difference}`);
          if (c.sameAt !== undefined) t.equal(firstMismatch(a.pod, c.sameAt), undefined, 'the rest as upstream');
        }
        if (c.expect.denied !== undefined && !a.allowed) t.ok(a.message !== undefined && a.message.length > 0, 'a message');
        if (a.allowed && typeof c.pod === 'object') {
          // reinvocationPolicy: IfNeeded: the patched pod may come back; nothing changes then.
          const again = await admit(c.config, a.pod, accounts, c.namespace);
          t.same(again.pod, a.pod, 'a second pass over the final pod changes nothing');
        }
      });
    }
  });
}
