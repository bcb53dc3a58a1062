/**
 * The command line's help, derived from the CLI's own command table: every subcommand
 * (so a new one cannot ship without help) answers --help and -h with exit 0 and its usage
 * on stdout, each flag with its default and meaning; unknown flags keep exit 2; the
 * README's "Command line" section says what the help says.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { COMMANDS, main, USAGE } from '../src/cli.js';

const ROOT = join(import.meta.dirname, '..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const names = COMMANDS.map((c) => c.spec.name);

t.test('the command table', async (t) => {
  t.same([...names].sort(), ['certs', 'copy', 'report', 'rewrite', 'scan', 'serve'], 'every subcommand main() dispatches to');
  t.equal(new Set(names).size, names.length, 'no name twice');
});

for (const { spec } of COMMANDS) {
  t.test(`${spec.name} --help and -h`, async (t) => {
    const help = await run([spec.name, '--help']);
    t.equal(help.code, 0);
    t.equal(help.err, '', 'nothing on stderr');
    t.match(help.out, new RegExp(`^Usage:\\n  mirrorgate ${spec.name} `), 'starts with the synopsis');
    t.same(await run([spec.name, '-h']), help, '-h is --help');
    t.same(await run(['help', spec.name]), help, 'mirrorgate help NAME is the same');
    // Help wins over everything else on the line, even a flag the command does not know.
    t.same(await run([spec.name, '--no-such-flag', 'x', '--help']), help, 'help is answered before the other arguments are judged');

    const synopsis = spec.synopsis.join(' ');
    for (const [flag, f] of Object.entries(spec.flags)) {
      const line = help.out.split('\n').findIndex((l) => new RegExp(`^ {2}(?:-\\w, )? {0,4}--${flag}\\b`).test(l));
      t.ok(line >= 0, `--${flag} has a line`);
      // The description is on the flag's line or, for a long label, on the next one.
      const text = help.out.split('\n').slice(line, line + 2).join(' ');
      t.ok(f.help.length >= 8 && text.includes(f.help), `--${flag}: its meaning`);
      t.match(text, f.default === 'required' ? /\(required\)/ : `(default: ${f.default})`, `--${flag}: its default`);
      if (f.type === 'string') t.ok(f.value !== undefined && text.includes(`--${flag} ${f.value}`), `--${flag}: its value's shape`);
      t.match(synopsis, new RegExp(`--${flag}\\b`), `--${flag} is in the synopsis`);
    }
    t.match(help.out, /-h, --help +print this help and exit/);
    t.match(help.out, /Exit codes: 0 success, 1 runtime failure, 2 usage or config error\./);
  });

  t.test(`${spec.name}: an unknown flag is a usage error, exit 2, with the usage on stderr`, async (t) => {
    const r = await run([spec.name, '--bogus']);
    t.equal(r.code, 2);
    t.equal(r.out, '', 'nothing on stdout');
    t.match(r.err, /^mirrorgate: Unknown option '--bogus'/);
    t.match(r.err, `Usage:\n  mirrorgate ${spec.name} `);
    t.match(r.err, `\`mirrorgate ${spec.name} --help\` describes every flag.`);
  });
}

t.test('mirrorgate --help lists every command; no command is a usage error', async (t) => {
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const r = await run(argv);
    t.equal(r.code, 0, argv.join(' '));
    t.equal(r.out, USAGE);
  }
  for (const { spec } of COMMANDS) {
    t.match(USAGE, `\n  mirrorgate ${spec.name} ${spec.synopsis[0] as string}\n`, `${spec.name} synopsis`);
    t.match(USAGE, new RegExp(`\\n  ${spec.name} +${spec.summary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n`), `${spec.name} summary`);
  }
  const none = await run([]);
  t.equal(none.code, 2);
  t.equal(none.err, USAGE);
  const unknown = await run(['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.err, /^mirrorgate: unknown command "frobnicate"\n\nmirrorgate: rewrite/);
  const unknownTopic = await run(['help', 'frobnicate']);
  t.equal(unknownTopic.code, 2);
  t.match(unknownTopic.err, /help: unknown command "frobnicate"/);
});

t.test('--version and version print the package version', async (t) => {
  for (const argv of [['--version'], ['version']]) t.same(await run(argv), { code: 0, out: VERSION, err: '' }, argv.join(' '));
});

t.test('the built command answers -h on stdout with exit 0', async (t) => {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(ROOT, 'dist/cli.js'), 'copy', '-h']);
  t.equal(stderr, '');
  t.match(stdout, /^Usage:\n {2}mirrorgate copy --config FILE/);
  t.match(stdout, /--platform os\/arch\[\/variant\]/);
  const bad = await promisify(execFile)(process.execPath, [join(ROOT, 'dist/cli.js'), 'copy', '--bogus']).then(
    () => ({ code: 0 }),
    (err: { code: number; stdout: string }) => err,
  );
  t.equal(bad.code, 2, 'exit 2 for an unknown flag');
});

t.test('README "Command line" shows every synopsis as the help prints it', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = /\n## Command line\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
  t.ok(section.length > 0, 'the section exists');
  const block = /```\n([\s\S]*?)\n```/.exec(section)?.[1] ?? '';
  const usageLines = USAGE.split('\n').filter((l) => l.startsWith('  mirrorgate ')).map((l) => l.slice(2));
  const overviewLines = USAGE.split('\n');
  const start = overviewLines.indexOf('Usage:') + 1;
  const end = overviewLines.indexOf('', start);
  t.equal(block, overviewLines.slice(start, end).map((l) => l.slice(2)).join('\n'), 'the README block is the overview\'s usage, line for line');
  t.ok(usageLines.length >= COMMANDS.length);
  for (const { spec } of COMMANDS) for (const flag of Object.keys(spec.flags)) t.match(section, `--${flag}`, `${spec.name} --${flag} in the README`);
});
