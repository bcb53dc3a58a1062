/**
 * The command line's flags, described once: the argument parser reads the same table
 * that `--help` prints, so a flag cannot exist without its meaning and default, and a
 * command cannot exist without its help.
 */
import { parseArgs } from 'node:util';
import { MirrorgateError } from './errors.js';

export interface FlagSpec {
  readonly type: 'string' | 'boolean';
  /** The value's placeholder in help (FILE, N, 5s, text|json); string flags only. */
  readonly value?: string;
  /** What applies without the flag, in words ("8443", "off", "in-cluster, else ..."); `required` when it must be given. */
  readonly default: string;
  readonly help: string;
  readonly short?: string;
}

export interface CommandSpec {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The synopsis lines after `mirrorgate NAME` (continuations indented by the formatter). */
  readonly synopsis: readonly string[];
  /** What the command does, its positional arguments and exit codes; plain lines. */
  readonly description: readonly string[];
  readonly flags: Readonly<Record<string, FlagSpec>>;
}

export const HELP_FLAG: FlagSpec = { type: 'boolean', short: 'h', default: 'off', help: 'print this help and exit' };

/** A thrown usage error: exit 2 with the message and the command's usage on stderr. */
export class UsageError extends MirrorgateError {
  constructor(
    message: string,
    readonly command?: CommandSpec,
  ) {
    super('MG_USAGE', message);
  }
}

export type Values = Record<string, string | boolean | undefined>;

/** True when the arguments ask for help (`--help` or `-h` before a `--`). */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** Parse a command's arguments against its table; unknown flags and bad shapes are usage errors. */
export function parseCommand(spec: CommandSpec, args: string[]): { values: Values; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const [name, f] of Object.entries({ ...spec.flags, help: HELP_FLAG })) options[name] = f.short === undefined ? { type: f.type } : { type: f.type, short: f.short };
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: values, positionals };
  } catch (err) {
    // Node's hint about '--' is noise for a flag that is simply unknown.
    throw new UsageError((err as Error).message.replace(/ To specify a positional argument starting with a '-'.*$/s, ''), spec);
  }
}

function flagLabel(name: string, f: FlagSpec): string {
  const long = `--${name}${f.type === 'string' ? ` ${f.value ?? 'VALUE'}` : ''}`;
  return f.short === undefined ? `    ${long}` : `-${f.short}, ${long}`;
}

function synopsis(spec: CommandSpec): string[] {
  const head = `mirrorgate ${spec.name} `;
  return spec.synopsis.map((l, i) => (i === 0 ? head : ' '.repeat(head.length)) + l);
}

/** What a usage error prints after its message: the synopsis and where the help is. */
export function commandUsage(spec: CommandSpec): string {
  return ['Usage:', ...synopsis(spec).map((l) => `  ${l}`), '', `\`mirrorgate ${spec.name} --help\` describes every flag.`].join('\n');
}

/** `mirrorgate NAME --help`: synopsis, description, every flag with its default and meaning. */
export function commandHelp(spec: CommandSpec): string {
  const flags = Object.entries({ ...spec.flags, help: HELP_FLAG });
  const width = Math.min(34, Math.max(...flags.map(([n, f]) => flagLabel(n, f).length)) + 2);
  const lines = ['Usage:', ...synopsis(spec).map((l) => `  ${l}`), '', ...spec.description, '', 'Flags:'];
  for (const [name, f] of flags) {
    const label = flagLabel(name, f);
    const text = `${f.help} (${f.default === 'required' ? 'required' : `default: ${f.default}`})`;
    if (label.length + 2 > width) lines.push(`  ${label}`, `  ${' '.repeat(width)}${text}`);
    else lines.push(`  ${label.padEnd(width)}${text}`);
  }
  lines.push('', 'Exit codes: 0 success, 1 runtime failure, 2 usage or config error.');
  return lines.join('\n');
}

/** `mirrorgate --help`: every command's synopsis. */
export function overview(commands: readonly CommandSpec[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    'mirrorgate: rewrite third-party container images to your mirror at pod admission',
    '',
    'Usage:',
    ...commands.flatMap((c) => synopsis(c).map((l) => `  ${l}`)),
    '  mirrorgate help [COMMAND] | --help | -h',
    '  mirrorgate version | --version',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    '`mirrorgate COMMAND --help` describes each flag with its default.',
    'Exit codes: 0 success, 1 runtime failure, 2 usage or config error.',
    'Environment (set by the Deployment): POD_NAME (the report key), POD_NAMESPACE,',
    'MIRRORGATE_SERVICE (default mirrorgate).',
  ].join('\n');
}
