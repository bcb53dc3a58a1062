/**
 * Image references in Dockerfiles (and Containerfiles), with their place in the text.
 *
 * A small reader of the Dockerfile syntax as BuildKit parses it: the `# escape=` parser
 * directive, line continuations (comment lines inside them dropped), heredocs skipped,
 * `ARG` defaults substituted into `FROM`, stage names (`AS build`) that later `FROM build`
 * or `COPY --from=build` refer to, `scratch`, `COPY --from=IMAGE` and
 * `RUN --mount=...,from=IMAGE`. Pure: text in, data out.
 */

/** Where an image token sits in the text, for an in-place rewrite (Dockerfile tokens are bare). */
export interface TokenEdit {
  readonly start: number;
  readonly end: number;
  readonly quote: '';
}

/** One image reference found in a Dockerfile. */
export interface DockerfileImage {
  /** The reference after build-arg substitution (what the build pulls). */
  readonly image: string;
  /** The token as written, e.g. `${BASE}` or `node:20`. */
  readonly written: string;
  /** 1-based line and column of the token in its instruction. */
  readonly line: number;
  readonly column: number;
  /** The instruction, e.g. `FROM (stage build)`, `COPY --from`, `RUN --mount from`. */
  readonly context: string;
  /** Where to write a new reference: the token itself, or the `ARG` default it wholly comes from. */
  readonly edit: TokenEdit | undefined;
  /** The reference depends on a build argument without a default (or a predefined one). */
  readonly templated: boolean;
  readonly note: string | undefined;
}

interface Token {
  /** Text with continuations removed. */
  readonly text: string;
  /** Offset of the first character in the file. */
  readonly start: number;
  /** Offset just past the last character in the file. */
  readonly end: number;
  /** True when the token's characters are one uninterrupted run of the file (no continuation inside). */
  readonly contiguous: boolean;
}

interface Instruction {
  readonly keyword: string;
  readonly args: Token[];
  readonly line: number;
}

interface ArgValue {
  readonly value: string | undefined;
  /** Where the default is written, when it is a literal (no variables) that can be rewritten. */
  readonly edit: TokenEdit | undefined;
  readonly line: number;
}

type Vars = Map<string, ArgValue>;

/**
 * Find the image references of a Dockerfile: `FROM` (with `--platform`, `AS name`, `ARG`
 * substitution; stage names and `scratch` are not images), `COPY --from=` and
 * `RUN --mount=...,from=` naming something other than a stage.
 *
 * @param text the Dockerfile's content
 */
export function findDockerfileImages(text: string): DockerfileImage[] {
  const lineStarts = indexLines(text);
  const instructions = readInstructions(text, lineStarts);
  const images: DockerfileImage[] = [];
  const globals: Vars = new Map();
  let stageVars: Vars | undefined; // undefined before the first FROM
  const stages: string[] = []; // lowercased stage names by index ('' when unnamed)

  const isStage = (name: string): boolean => {
    const lower = name.toLowerCase();
    if (/^\d+$/.test(name)) return Number(name) < stages.length;
    return lower !== '' && stages.includes(lower);
  };

  const found = (token: Token, vars: Vars, context: string, inner?: { offset: number; text: string }): void => {
    // `inner` is a value inside a token (`--from=X`, `from=X` in a mount).
    const written = inner ? inner.text : token.text;
    const start = token.start + (inner ? inner.offset : 0);
    const pos = position(lineStarts, start);
    const x = expand(written, vars);
    if (x.unresolved.length > 0) {
      images.push({
        image: x.value, written, line: pos.line, column: pos.column, context, edit: undefined, templated: true,
        note: `depends on build argument${x.unresolved.length > 1 ? 's' : ''} ${x.unresolved.join(', ')} without a default, skipped`,
      });
      return;
    }
    if (isStage(x.value) || x.value.toLowerCase() === 'scratch') return;
    let edit: TokenEdit | undefined;
    let note: string | undefined;
    if (x.wholeVar !== undefined) {
      const arg = vars.get(x.wholeVar);
      edit = arg?.edit;
      note = edit
        ? `from ARG ${x.wholeVar} (line ${arg?.line ?? 0})`
        : `from ARG ${x.wholeVar} (line ${arg?.line ?? 0}), whose default is not a plain reference: rewrite by hand`;
    } else if (x.usedVars.length > 0) {
      note = `built from build arguments (${x.usedVars.join(', ')}): rewrite by hand`;
    } else if (!token.contiguous) {
      note = 'split by a line continuation: rewrite by hand';
    } else {
      edit = { start, end: start + written.length, quote: '' };
    }
    images.push({ image: x.value, written, line: pos.line, column: pos.column, context, edit, templated: false, note });
  };

  for (const ins of instructions) {
    switch (ins.keyword) {
      case 'ARG':
        for (const token of ins.args) declareArg(token, stageVars ?? globals, stageVars ? globals : undefined, lineStarts);
        break;
      case 'FROM': {
        const rest = ins.args.filter((t) => !t.text.startsWith('--'));
        const image = rest[0];
        const alias = rest[1]?.text.toUpperCase() === 'AS' ? rest[2]?.text.toLowerCase() : undefined;
        // FROM sees only the ARGs declared before the first FROM.
        if (image) found(image, globals, alias === undefined ? 'FROM' : `FROM (stage ${alias})`);
        stages.push(alias ?? '');
        stageVars = new Map();
        break;
      }
      case 'COPY':
        for (const token of flags(ins.args)) {
          const m = /^--from=/.exec(token.text);
          if (m) found(token, stageVars ?? globals, 'COPY --from', { offset: m[0].length, text: token.text.slice(m[0].length) });
        }
        break;
      case 'RUN':
        for (const token of flags(ins.args)) {
          if (!token.text.startsWith('--mount=')) continue;
          const mount = mountFrom(token.text);
          if (mount) found(token, stageVars ?? globals, 'RUN --mount from', mount);
        }
        break;
      default:
        break;
    }
  }
  return images;
}

/** The leading `--flag` arguments of an instruction. */
function flags(args: Token[]): Token[] {
  const out: Token[] = [];
  for (const a of args) {
    if (!a.text.startsWith('--')) break;
    out.push(a);
  }
  return out;
}

/** The `from=` value of `--mount=type=bind,from=IMAGE,...` with its offset in the token. */
function mountFrom(token: string): { offset: number; text: string } | undefined {
  let offset = '--mount='.length;
  for (const part of token.slice(offset).split(',')) {
    if (part.startsWith('from=')) return { offset: offset + 5, text: part.slice(5) };
    offset += part.length + 1;
  }
  return undefined;
}

/** `ARG NAME` or `ARG NAME=default` (quotes allowed around the default). */
function declareArg(token: Token, into: Vars, inherit: Vars | undefined, lineStarts: number[]): void {
  const eq = token.text.indexOf('=');
  const name = eq === -1 ? token.text : token.text.slice(0, eq);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return;
  const line = position(lineStarts, token.start).line;
  if (eq === -1) {
    // Inside a stage, `ARG NAME` brings a global ARG's default into scope.
    into.set(name, inherit?.get(name) ?? { value: undefined, edit: undefined, line });
    return;
  }
  let raw = token.text.slice(eq + 1);
  let offset = eq + 1;
  const q = raw[0];
  if ((q === '"' || q === "'") && raw.length >= 2 && raw.endsWith(q)) {
    raw = raw.slice(1, -1);
    offset += 1;
  }
  const x = expand(raw, into);
  const literal = x.usedVars.length === 0 && x.unresolved.length === 0 && token.contiguous && raw.length > 0;
  const edit: TokenEdit | undefined = literal ? { start: token.start + offset, end: token.start + offset + raw.length, quote: '' } : undefined;
  into.set(name, { value: x.unresolved.length > 0 ? undefined : x.value, edit, line });
}

interface Expansion {
  readonly value: string;
  /** Every variable the word refers to, set or not. */
  readonly usedVars: string[];
  /** Variables referenced without a value (and without a `:-` fallback). */
  readonly unresolved: string[];
  /** Set when the whole word is exactly `$NAME` or `${NAME}`. */
  readonly wholeVar: string | undefined;
}

const VARIABLE = /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/** Substitute `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}` as BuildKit's shell lexer does. */
function expand(word: string, vars: Vars): Expansion {
  const usedVars: string[] = [];
  const unresolved: string[] = [];
  const whole = /^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$/.exec(word);
  const value = word.replace(VARIABLE, (_m, braced: string | undefined, op: string | undefined, alt: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare) as string;
    const v = vars.get(name)?.value;
    const set = v !== undefined && (v !== '' || op === '-' || op === '+');
    if (op !== undefined) usedVars.push(name);
    if (op === ':-' || op === '-') return set ? v : (alt ?? '');
    if (op === ':+' || op === '+') return set ? (alt ?? '') : '';
    if (v === undefined) {
      unresolved.push(name);
      return _m;
    }
    usedVars.push(name);
    return v;
  });
  return { value, usedVars, unresolved, wholeVar: whole ? (whole[1] ?? whole[2]) : undefined };
}

/** Offsets where each line starts. */
function indexLines(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 0x0a) starts.push(i + 1);
  return starts;
}

function position(lineStarts: number[], offset: number): { line: number; column: number } {
  let lo = 0;
  let hi = lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((lineStarts[mid] ?? 0) <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, column: offset - (lineStarts[lo] ?? 0) + 1 };
}

const HEREDOC = /<<(-?)(["']?)([A-Za-z_][A-Za-z0-9_]*)\2/g;

/** Split the text into logical instructions, keeping the file offset of every character. */
function readInstructions(text: string, lineStarts: number[]): Instruction[] {
  const lines = lineStarts.map((start, i) => {
    const next = lineStarts[i + 1];
    let end = next === undefined ? text.length : next - 1; // drop '\n'
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--; // and '\r'
    return { start, text: text.slice(start, end) };
  });

  // Parser directives (`# escape=\``) only count at the very top, before anything else.
  let escape = '\\';
  for (const l of lines) {
    const m = /^\s*#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$/.exec(l.text);
    if (!m) break;
    if (m[1]?.toLowerCase() === 'escape' && (m[2] === '`' || m[2] === '\\')) escape = m[2];
  }
  const continuation = new RegExp(`${escape === '\\' ? '\\\\' : '`'}[ \\t]*$`);

  const out: Instruction[] = [];
  let i = 0;
  while (i < lines.length) {
    const first = lines[i] as { start: number; text: string };
    i++;
    if (/^\s*(#|$)/.test(first.text)) continue;
    // Characters of the logical line with their offsets in the file.
    const chars: string[] = [];
    const offsets: number[] = [];
    const add = (l: { start: number; text: string }, upTo: number): void => {
      for (let k = 0; k < upTo; k++) {
        chars.push(l.text[k] as string);
        offsets.push(l.start + k);
      }
    };
    let cur = first;
    for (;;) {
      const m = continuation.exec(cur.text);
      if (!m) {
        add(cur, cur.text.length);
        break;
      }
      add(cur, m.index);
      // Comment and empty lines inside a continued instruction are dropped.
      while (i < lines.length && /^\s*(#|$)/.test((lines[i] as { text: string }).text)) i++;
      if (i >= lines.length) break;
      cur = lines[i] as { start: number; text: string };
      i++;
    }
    const ins = tokenize(chars, offsets, position(lineStarts, first.start).line);
    if (ins) {
      out.push(ins);
      if (ins.keyword === 'RUN' || ins.keyword === 'COPY' || ins.keyword === 'ADD') i = skipHeredocs(ins, lines, i);
    }
  }
  return out;
}

/** Skip the bodies of `<<EOF` heredocs that follow an instruction; returns the next line index. */
function skipHeredocs(ins: Instruction, lines: { text: string }[], i: number): number {
  const joined = ins.args.map((a) => a.text).join(' ');
  for (const m of joined.matchAll(HEREDOC)) {
    const strip = m[1] === '-';
    const word = m[3];
    while (i < lines.length) {
      const l = (lines[i] as { text: string }).text;
      i++;
      if ((strip ? l.replace(/^\t+/, '') : l) === word) break;
    }
  }
  return i;
}

/** Whitespace-separated words (quotes keep spaces inside a word), with file offsets. */
function tokenize(chars: string[], offsets: number[], line: number): Instruction | undefined {
  const tokens: Token[] = [];
  let k = 0;
  while (k < chars.length) {
    while (k < chars.length && /\s/.test(chars[k] as string)) k++;
    if (k >= chars.length) break;
    const begin = k;
    let quote: string | undefined;
    while (k < chars.length) {
      const c = chars[k] as string;
      if (quote) {
        if (c === quote) quote = undefined;
      } else if (c === '"' || c === "'") quote = c;
      else if (/\s/.test(c)) break;
      k++;
    }
    const start = offsets[begin] as number;
    const last = offsets[k - 1] as number;
    tokens.push({ text: chars.slice(begin, k).join(''), start, end: last + 1, contiguous: last - start === k - 1 - begin });
  }
  const [keyword, ...args] = tokens;
  if (!keyword) return undefined;
  return { keyword: keyword.text.toUpperCase(), args, line };
}
