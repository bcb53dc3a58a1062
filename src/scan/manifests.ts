/**
 * Image references in Kubernetes YAML, with their exact place in the source text.
 *
 * Works on the YAML syntax tree (the `yaml` package's documents with source ranges),
 * never on a re-serialised object: `--write` replaces only the characters of one scalar,
 * so comments, anchors, key order, quoting and blank lines stay byte for byte. Pure: text
 * in, data out.
 */
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseAllDocuments, Scalar, type Document, type Node, type YAMLMap } from 'yaml';

/** Where an image value sits in the text and how it is quoted, for an in-place rewrite. */
export interface SourceEdit {
  /** Offsets into the file's text: the scalar's characters, quotes included. */
  readonly start: number;
  readonly end: number;
  /** The quoting to keep: `''` plain, `'` single-quoted, `"` double-quoted. */
  readonly quote: '' | "'" | '"';
}

/** One image field of a pod template found in a manifest. */
export interface ManifestImage {
  /** The image value as YAML reads it (quotes removed, escapes applied). */
  readonly image: string;
  /** 1-based line and column of the value where it is used (the alias, for `*anchor`). */
  readonly line: number;
  readonly column: number;
  /** What holds it, e.g. `Deployment/web containers[0] (web)`. */
  readonly context: string;
  /** How to rewrite it in place; absent when it cannot be rewritten safely. */
  readonly edit: SourceEdit | undefined;
  /** A template placeholder (`{{ .Values.image }}`, `${IMAGE}`): not a reference yet. */
  readonly templated: boolean;
  /** Why it is skipped or not rewritable, or where the value really lives (an anchor). */
  readonly note: string | undefined;
}

/** A document that could not be read; the rest of the file is still scanned. */
export interface ManifestProblem {
  readonly line: number;
  readonly message: string;
  /** True when the document looks like a Go template (Helm), which is not YAML until rendered. */
  readonly templated: boolean;
}

export interface ManifestScan {
  readonly images: ManifestImage[];
  readonly problems: ManifestProblem[];
}

const CONTAINER_LISTS = ['initContainers', 'containers', 'ephemeralContainers'] as const;

/** `{{ ... }}` (Helm, Go templates) or `$VAR` / `${VAR}` (envsubst, kustomize vars): `$` is never part of a reference. */
const TEMPLATE = /\{\{|\}\}|\$/;

interface Walk {
  readonly doc: Document.Parsed;
  readonly lines: LineCounter;
  readonly images: ManifestImage[];
}

/**
 * Find every container image of every pod template in a (multi-document) YAML text:
 * Pod, the workload kinds with `spec.template` (Deployment, StatefulSet, DaemonSet,
 * ReplicaSet, Job, ReplicationController and any other object with a pod template),
 * CronJob (`spec.jobTemplate.spec.template`), PodTemplate, and `List` items; in
 * `initContainers`, `containers` and `ephemeralContainers`. Aliases and merge keys
 * (`<<: *base`) are followed; an aliased image is rewritten at its anchor.
 *
 * @param text the file's content
 * @returns images in document order, and documents that did not parse
 */
export function findManifestImages(text: string): ManifestScan {
  const lines = new LineCounter();
  const images: ManifestImage[] = [];
  const problems: ManifestProblem[] = [];
  for (const doc of parseAllDocuments(text, { lineCounter: lines, prettyErrors: false })) {
    if (doc.errors.length > 0) {
      const first = doc.errors[0];
      const at = first ? first.pos[0] : (doc.range[0] ?? 0);
      const source = text.slice(doc.range[0], doc.range[2]);
      problems.push({
        line: lines.linePos(at).line,
        message: first ? `not valid YAML: ${first.message.split('\n')[0] ?? ''}` : 'not valid YAML',
        templated: TEMPLATE.test(source) && source.includes('{{'),
      });
      continue;
    }
    visitObject({ doc, lines, images }, doc.contents, '');
  }
  return { images, problems };
}

function deref(w: Walk, node: unknown): unknown {
  // An alias's resolve() is bounded by the document: anchors only point backwards.
  return isAlias(node) ? node.resolve(w.doc) : node;
}

function keyName(key: unknown): string | undefined {
  if (isScalar(key)) return typeof key.value === 'string' ? key.value : undefined;
  return undefined;
}

/**
 * The value of `key` in a mapping, following merge keys (`<<: *base`, `<<: [*a, *b]`) the
 * way YAML 1.1 merges do: keys written in the mapping itself win, then the merged ones in
 * order. Returns the raw node (possibly an alias) so callers can tell where it is written.
 */
function lookup(w: Walk, map: YAMLMap, key: string, depth = 0): unknown {
  for (const pair of map.items) {
    if (isPair(pair) && keyName(pair.key) === key) return pair.value;
  }
  if (depth > 8) return undefined; // merge chains this deep are contrived; stop rather than loop
  for (const pair of map.items) {
    if (!isPair(pair) || keyName(pair.key) !== '<<') continue;
    const merged = deref(w, pair.value);
    const sources = isSeq(merged) ? merged.items.map((i) => deref(w, i)) : [merged];
    for (const source of sources) {
      if (!isMap(source)) continue;
      const found = lookup(w, source, key, depth + 1);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

function get(w: Walk, node: unknown, ...path: string[]): unknown {
  let cur = deref(w, node);
  for (const key of path) {
    if (!isMap(cur)) return undefined;
    cur = deref(w, lookup(w, cur, key));
  }
  return cur;
}

function str(w: Walk, node: unknown, ...path: string[]): string | undefined {
  const v = get(w, node, ...path);
  return isScalar(v) && typeof v.value === 'string' ? v.value : undefined;
}

function visitObject(w: Walk, node: unknown, prefix: string): void {
  const obj = deref(w, node);
  if (!isMap(obj)) return;
  const kind = str(w, obj, 'kind');
  const items = get(w, obj, 'items');
  if (kind !== undefined && /List$/.test(kind) && isSeq(items)) {
    items.items.forEach((item, i) => visitObject(w, item, `${prefix}${kind} items[${i}] `));
    return;
  }
  const name = str(w, obj, 'metadata', 'name') ?? str(w, obj, 'metadata', 'generateName');
  const label = `${prefix}${kind ?? '(no kind)'}${name === undefined ? '' : `/${name}`}`;
  const specs: unknown[] = [];
  if (kind === 'Pod') specs.push(get(w, obj, 'spec'));
  else {
    specs.push(
      get(w, obj, 'spec', 'template', 'spec'),
      get(w, obj, 'spec', 'jobTemplate', 'spec', 'template', 'spec'),
      get(w, obj, 'template', 'spec'), // PodTemplate
    );
  }
  for (const spec of specs) if (isMap(spec)) visitPodSpec(w, spec, label);
}

function visitPodSpec(w: Walk, spec: YAMLMap, label: string): void {
  for (const list of CONTAINER_LISTS) {
    const containers = deref(w, lookup(w, spec, list));
    if (!isSeq(containers)) continue;
    containers.items.forEach((item, i) => {
      const container = deref(w, item);
      if (!isMap(container)) return;
      const written = lookup(w, container, 'image');
      if (written === undefined || written === null) return;
      const cname = str(w, container, 'name');
      const context = `${label} ${list}[${i}]${cname === undefined ? '' : ` (${cname})`}`;
      const found = imageAt(w, written, context, container);
      if (found) w.images.push(found);
    });
  }
}

function imageAt(w: Walk, written: unknown, context: string, container: YAMLMap): ManifestImage | undefined {
  const value = deref(w, written);
  const use = isAlias(written) ? written : value;
  const at = (use as Node).range?.[0] ?? 0;
  const pos = w.lines.linePos(at);
  const base = { line: pos.line, column: pos.col, context };
  if (!isScalar(value)) {
    return { ...base, image: '', edit: undefined, templated: false, note: 'the image is not a scalar value' };
  }
  if (value.value === null) return undefined; // `image:` with no value: nothing to scan
  const v: unknown = value.value;
  // `image: 1.0` reads as a number; the runtime would be handed its text.
  const image = typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint' ? String(v) : '';
  let note: string | undefined;
  if (isAlias(written)) {
    const anchorPos = w.lines.linePos(value.range?.[0] ?? 0);
    note = `from anchor &${written.source} (line ${anchorPos.line})`;
  } else if (container.range && value.range && (value.range[0] < container.range[0] || value.range[0] >= container.range[2])) {
    // Reached through a merge key (`<<: *base`): the value is written elsewhere.
    note = `merged with "<<" from line ${pos.line}`;
  }
  if (TEMPLATE.test(image)) {
    return { ...base, image, edit: undefined, templated: true, note: 'templated value, skipped' };
  }
  return { ...base, image, edit: editFor(value), templated: false, note: note ?? notRewritable(value) };
}

function editFor(scalar: Scalar): SourceEdit | undefined {
  const range = scalar.range;
  if (!range) return undefined;
  switch (scalar.type) {
    case Scalar.PLAIN:
      return { start: range[0], end: range[1], quote: '' };
    case Scalar.QUOTE_SINGLE:
      return { start: range[0], end: range[1], quote: "'" };
    case Scalar.QUOTE_DOUBLE:
      return { start: range[0], end: range[1], quote: '"' };
    default:
      return undefined; // block scalars: rare for an image, and their layout is the user's
  }
}

function notRewritable(scalar: Scalar): string | undefined {
  return editFor(scalar) === undefined ? 'a block scalar, rewrite it by hand' : undefined;
}
