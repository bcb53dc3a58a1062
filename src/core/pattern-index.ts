/**
 * An index over registry patterns: a tree per host (exact hosts, and `*.domain` suffixes)
 * over whole path components, written by {@link writeFlatIndex} as integers and a string
 * table, which {@link FlatPatternIndex} reads as it is. It answers which patterns could
 * match a reference, or overlap another pattern, with a binary search per host and
 * component (O(components · log n): 20,000 rules cost about as much as 2) plus the
 * answers, instead of a pass over every pattern, so rules compile in O(n log n). Admissions
 * look up their rule there; the form is built once per rule list, or in a reload's worker
 * and handed over.
 *
 * The index only narrows: callers confirm each candidate with the exact predicate
 * (`matchLength`, `patternsOverlap`), so its answers are a superset and it never changes
 * what matches. Hosts are keyed lowercased, as hosts compare. Pure.
 */
import type { RegistryPattern } from './patterns.js';
import { normaliseRegistryHost } from './reference.js';

/** A node of the tree {@link writeFlatIndex} builds before writing it. */
interface Node {
  readonly values: number[];
  readonly children: Map<string, Node>;
}

function node(): Node {
  return { values: [], children: new Map() };
}

/**
 * Strings collected once each for a flat index: `id(s)` numbers them, `finish()` gives
 * them concatenated in one string, and where each starts.
 */
export class StringTableBuilder {
  readonly #ids = new Map<string, number>();
  readonly #list: string[] = [];

  id(s: string): number {
    let id = this.#ids.get(s);
    if (id === undefined) {
      id = this.#list.length;
      this.#ids.set(s, id);
      this.#list.push(s);
    }
    return id;
  }

  /** The strings in one, and `starts`: string i is `strings.slice(starts[i], starts[i + 1])`. */
  finish(): { strings: string; starts: number[] } {
    const starts: number[] = [];
    let at = 0;
    for (const s of this.#list) {
      starts.push(at);
      at += s.length;
    }
    starts.push(at);
    return { strings: this.#list.join(''), starts };
  }
}

/**
 * Write the index of `entries` (pattern, value) into `out`, as {@link FlatPatternIndex}
 * reads it at the position returned, with strings numbered by `table`: the tree with its
 * keys sorted (by UTF-16 code unit, as `<` compares strings), so a lookup is a binary
 * search per host and per component instead of a Map, and a reader needs no structure of
 * its own. O(n log n).
 *
 * Layout from `at`: [exact hosts, their list's position, wildcard suffixes, their list's
 * position]; a host list is pairs [string, node]; a node is [values' position, values,
 * children's position, children], children being pairs [string, node] in key order.
 * Positions are absolute in `out`.
 */
export function writeFlatIndex(entries: Iterable<readonly [RegistryPattern, number]>, table: StringTableBuilder, out: number[]): number {
  const exact = new Map<string, Node>();
  const wildcard = new Map<string, Node>();
  for (const [pattern, value] of entries) {
    const roots = pattern.wildcard ? wildcard : exact;
    const host = normaliseRegistryHost(pattern.host);
    let at: Node | undefined = roots.get(host);
    if (at === undefined) {
      at = node();
      roots.set(host, at);
    }
    for (const component of pattern.path) {
      let next: Node | undefined = at.children.get(component);
      if (next === undefined) {
        next = node();
        at.children.set(component, next);
      }
      at = next;
    }
    at.values.push(value);
  }
  const start = out.length;
  out.push(exact.size, 0, wildcard.size, 0);
  out[start + 1] = writePairs(exact, table, out);
  out[start + 3] = writePairs(wildcard, table, out);
  return start;
}

/** Pairs [string, node] in key order, then the nodes; returns where the pairs start. */
function writePairs(children: Map<string, Node>, table: StringTableBuilder, out: number[]): number {
  const keys = [...children.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const at = out.length;
  for (const k of keys) out.push(table.id(k), 0);
  keys.forEach((k, i) => {
    out[at + 2 * i + 1] = writeNode(children.get(k) as Node, table, out);
  });
  return at;
}

function writeNode(n: Node, table: StringTableBuilder, out: number[]): number {
  const at = out.length;
  out.push(at + 4, n.values.length, 0, n.children.size);
  for (const v of n.values) out.push(v);
  out[at + 2] = writePairs(n.children, table, out);
  return at;
}

/**
 * The reader of {@link writeFlatIndex}, straight from the integers and the string table it
 * was written with, so an index built elsewhere (a worker thread) is adopted without
 * building anything. A lookup allocates nothing but its answer.
 */
export class FlatPatternIndex {
  readonly #ints: Int32Array;
  readonly #strings: string;
  /** Where the string starts are in `ints`. */
  readonly #starts: number;
  readonly #at: number;

  constructor(ints: Int32Array, strings: string, starts: number, at: number) {
    this.#ints = ints;
    this.#strings = strings;
    this.#starts = starts;
    this.#at = at;
  }

  #int(i: number): number {
    return this.#ints[i] as number;
  }

  /** Compare `key[from, to)` with string `id` of the table, by UTF-16 code unit. */
  #compare(key: string, from: number, to: number, id: number): number {
    const s = this.#int(this.#starts + id);
    const n = this.#int(this.#starts + id + 1) - s;
    const len = to - from;
    const m = len < n ? len : n;
    for (let i = 0; i < m; i++) {
      const d = key.charCodeAt(from + i) - this.#strings.charCodeAt(s + i);
      if (d !== 0) return d;
    }
    return len - n;
  }

  /** The node of `key[from, to)` among `count` pairs at `pairs`, or -1. */
  #find(pairs: number, count: number, key: string, from: number, to: number): number {
    let lo = 0;
    let hi = count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.#compare(key, from, to, this.#int(pairs + 2 * mid));
      if (c === 0) return this.#int(pairs + 2 * mid + 1);
      if (c < 0) hi = mid - 1;
      else lo = mid + 1;
    }
    return -1;
  }

  #values(node: number, out: number[]): void {
    const at = this.#int(node);
    const end = at + this.#int(node + 1);
    for (let i = at; i < end; i++) out.push(this.#int(i));
  }

  /** Values whose pattern may match `registry` + `repository` (a prefix of its path). */
  candidates(registry: string, repository: string): number[] {
    const out: number[] = [];
    // As matchLength compares hosts: ASCII case folded, index.docker.io is docker.io.
    const host = normaliseRegistryHost(registry);
    const exact = this.#find(this.#int(this.#at + 1), this.#int(this.#at), host, 0, host.length);
    if (exact !== -1) this.#walk(exact, repository, out);
    const wildcards = this.#int(this.#at + 2);
    if (wildcards > 0) {
      // `.example.com` matches hosts with at least one label before it.
      for (let i = host.indexOf('.', 1); i !== -1; i = host.indexOf('.', i + 1)) {
        const w = this.#find(this.#int(this.#at + 3), wildcards, host, i, host.length);
        if (w !== -1) this.#walk(w, repository, out);
      }
    }
    return out;
  }

  /**
   * Values whose pattern may overlap an exact-host `pattern`: those whose path is a prefix
   * of its path, and those whose path extends it; a value written once, at most once.
   */
  overlapping(pattern: RegistryPattern): number[] {
    const out: number[] = [];
    const host = normaliseRegistryHost(pattern.host);
    const roots: number[] = [];
    const exact = this.#find(this.#int(this.#at + 1), this.#int(this.#at), host, 0, host.length);
    if (exact !== -1) roots.push(exact);
    const wildcards = this.#int(this.#at + 2);
    for (let i = host.indexOf('.', 1); wildcards > 0 && i !== -1; i = host.indexOf('.', i + 1)) {
      const w = this.#find(this.#int(this.#at + 3), wildcards, host, i, host.length);
      if (w !== -1) roots.push(w);
    }
    for (let node of roots) {
      this.#values(node, out);
      let whole = true;
      for (const c of pattern.path) {
        const next = this.#find(this.#int(node + 2), this.#int(node + 3), c, 0, c.length);
        if (next === -1) {
          whole = false;
          break;
        }
        node = next;
        this.#values(node, out);
      }
      if (whole) this.#below(node, out);
    }
    return out;
  }

  /** The values of every node below `node` (not its own). */
  #below(node: number, out: number[]): void {
    const stack = [node];
    for (let n = stack.pop(); n !== undefined; n = stack.pop()) {
      const pairs = this.#int(n + 2);
      const count = this.#int(n + 3);
      for (let i = 0; i < count; i++) {
        const child = this.#int(pairs + 2 * i + 1);
        this.#values(child, out);
        stack.push(child);
      }
    }
  }

  /** The values of `node` and of the nodes down `repository`'s components, as far as they go. */
  #walk(node: number, repository: string, out: number[]): void {
    this.#values(node, out);
    if (repository === '') return;
    let from = 0;
    for (;;) {
      const slash = repository.indexOf('/', from);
      const to = slash === -1 ? repository.length : slash;
      const next = this.#find(this.#int(node + 2), this.#int(node + 3), repository, from, to);
      if (next === -1) return;
      node = next;
      this.#values(node, out);
      if (slash === -1) return;
      from = slash + 1;
    }
  }
}

/** A {@link FlatPatternIndex} of `entries` alone, in integers and a string table of its own. O(n log n). */
export function buildFlatPatternIndex(entries: Iterable<readonly [RegistryPattern, number]>): FlatPatternIndex {
  const table = new StringTableBuilder();
  const out: number[] = [];
  const at = writeFlatIndex(entries, table, out);
  const { strings, starts } = table.finish();
  const startsAt = out.length;
  for (const s of starts) out.push(s);
  return new FlatPatternIndex(Int32Array.from(out), strings, startsAt, at);
}
