import { readFileSync } from 'node:fs';
import t from 'tap';
import { ConfigError, parseConfig, validateConfig } from '../../src/config/schema.js';

function problems(raw: unknown): string[] {
  try {
    validateConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

t.test('the shipped example config is valid', async (t) => {
  const c = parseConfig(readFileSync(new URL('../../config/example.yaml', import.meta.url), 'utf8'));
  t.equal(c.mode, 'enforce');
  t.equal(c.ruleSet.rules.length, 5);
  t.equal(c.failurePolicy, 'Fail', 'enforce + policy defaults to failing closed');
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.file.rules), 'frozen');
});

t.test('defaults', async (t) => {
  const c = validateConfig({});
  t.equal(c.mode, 'enforce');
  t.equal(c.failurePolicy, 'Ignore', 'no policy: fail open');
  t.equal(c.policy, undefined);
  t.same(c.ruleSet.rules, []);
  t.equal(c.logLevel, 'info');
  t.equal(validateConfig(null).mode, 'enforce', 'an empty file is the defaults');
  t.equal(validateConfig({ mode: 'audit', policy: { allowedRegistries: ['a.io'] } }).failurePolicy, 'Ignore', 'audit fails open');
});

const bad: { name: string; raw: unknown; expect: string[] }[] = [
  { name: 'root not a mapping', raw: [1], expect: ['(root): must be a mapping of keys to values'] },
  { name: 'unknown top-level key', raw: { rulez: [] }, expect: ['rulez: unknown key'] },
  { name: 'bad mode', raw: { mode: 'strict' }, expect: ['mode: must be one of enforce, audit (got "strict")'] },
  { name: 'bad failurePolicy', raw: { failurePolicy: 'ignore' }, expect: ['failurePolicy: must be one of Ignore, Fail'] },
  { name: 'rules not a list', raw: { rules: { from: 'a' } }, expect: ['rules: must be a list'] },
  { name: 'rule missing to', raw: { rules: [{ from: 'docker.io' }] }, expect: ['rules[0].to: is required'] },
  { name: 'rule unknown key', raw: { rules: [{ from: 'docker.io', to: 'm.io', tp: 'x' }] }, expect: ['rules[0].tp: unknown key'] },
  { name: 'rule to list with a non-string', raw: { rules: [{ from: 'docker.io', to: ['m.io', 5], verify: true }] }, expect: ['rules[0].to[1]: must be a string (got 5)'] },
  { name: 'rule to list without verify', raw: { rules: [{ from: 'docker.io', to: ['a.io', 'b.io'] }] }, expect: ['rules[0].to: several targets need verify: true'] },
  { name: 'rule bad verify', raw: { rules: [{ from: 'docker.io', to: 'm.io', verify: 'yes' }] }, expect: ['rules[0].verify: must be true or false'] },
  {
    name: 'every problem listed, indexes match the file',
    raw: { rules: [{ from: 'docker.io' }, { from: 'quay.io', to: 'not a host' }, { from: 'gcr.io', to: 'm.io' }, { from: 'ghcr.io', to: 'gcr.io/x' }] },
    expect: ['rules[0].to: is required', 'rules[1].to: "not a host" contains whitespace', 'rules[3].to: "gcr.io/x" overlaps rules[2].from'],
  },
  { name: 'policy not a mapping', raw: { policy: ['a'] }, expect: ['policy: must be a mapping'] },
  { name: 'policy without list', raw: { policy: {} }, expect: ['policy.allowedRegistries: is required'] },
  { name: 'policy empty list', raw: { policy: { allowedRegistries: [] } }, expect: ['policy.allowedRegistries: is empty'] },
  { name: 'policy bad entry', raw: { policy: { allowedRegistries: ['ok.io', 5, 'https://x'] } }, expect: ['policy.allowedRegistries[1]: must be a string', 'policy.allowedRegistries[2]: "https://x" must be a registry host, not a URL'] },
  { name: 'pull secret bad name', raw: { pullSecrets: [{ name: 'Bad_Name', registries: ['m.io'] }] }, expect: ['pullSecrets[0].name: "Bad_Name" is not a valid Secret name'] },
  { name: 'pull secret missing name', raw: { pullSecrets: [{ registries: ['m.io'] }] }, expect: ['pullSecrets[0].name: is required'] },
  { name: 'pull secret missing registries', raw: { pullSecrets: [{ name: 's' }] }, expect: ['pullSecrets[0].registries: must list at least one registry'] },
];

t.test('to: one string (as before) or a list in order of preference', async (t) => {
  const one = validateConfig({ rules: [{ from: 'docker.io', to: 'm.example.com/hub' }] });
  t.same(one.ruleSet.rules[0]?.targets.map((x) => x.target), ['m.example.com/hub']);
  const two = validateConfig({ rules: [{ from: 'docker.io', to: ['a.example.com/hub', 'b.example.com/hub'], verify: true }] });
  t.same(two.ruleSet.rules[0]?.targets.map((x) => x.target), ['a.example.com/hub', 'b.example.com/hub']);
});

t.test('validation lists every problem by path', async (t) => {
  for (const c of bad) {
    t.test(c.name, async (t) => {
      const got = problems(c.raw);
      t.equal(got.length, c.expect.length, `problems: ${JSON.stringify(got)}`);
      for (const e of c.expect) t.ok(got.some((g) => g.startsWith(e)), `has "${e}" in ${JSON.stringify(got)}`);
    });
  }
});

t.test('report: flushSeconds and staleAfterSeconds, each valid value as compiled', async (t) => {
  const cases: { name: string; report: unknown; flushSeconds: number; staleAfterSeconds: number }[] = [
    { name: 'no report: every 60 s, stale after 3 of them', report: undefined, flushSeconds: 60, staleAfterSeconds: 180 },
    { name: 'empty mapping: the same', report: {}, flushSeconds: 60, staleAfterSeconds: 180 },
    { name: '30 s: 3 intervals are under the 2-minute floor', report: { flushSeconds: 30 }, flushSeconds: 30, staleAfterSeconds: 120 },
    { name: 'a short interval: stale after 2 minutes still', report: { flushSeconds: 5 }, flushSeconds: 5, staleAfterSeconds: 120 },
    { name: 'a long interval: stale after 3 of them', report: { flushSeconds: 3600 }, flushSeconds: 3600, staleAfterSeconds: 10_800 },
    { name: '41 s: 3 intervals are 123 s, over the 2-minute floor', report: { flushSeconds: 41 }, flushSeconds: 41, staleAfterSeconds: 123 },
    { name: 'staleAfterSeconds at its lower bound, 3 intervals', report: { flushSeconds: 5, staleAfterSeconds: 15 }, flushSeconds: 5, staleAfterSeconds: 15 },
    { name: 'staleAfterSeconds under 2 minutes when written so', report: { flushSeconds: 20, staleAfterSeconds: 60 }, flushSeconds: 20, staleAfterSeconds: 60 },
    { name: 'staleAfterSeconds at its upper bound, a day', report: { flushSeconds: 3600, staleAfterSeconds: 86_400 }, flushSeconds: 3600, staleAfterSeconds: 86_400 },
    { name: 'staleAfterSeconds alone, default interval', report: { staleAfterSeconds: 600 }, flushSeconds: 60, staleAfterSeconds: 600 },
  ];
  for (const c of cases) {
    const config = validateConfig(c.report === undefined ? {} : { report: c.report });
    t.same(config.report, { flushSeconds: c.flushSeconds, staleAfterSeconds: c.staleAfterSeconds }, c.name);
  }
});

t.test('report: out-of-bounds values are refused, each with its reason', async (t) => {
  const range = (min: number, got: string): string => `report.staleAfterSeconds: must be a whole number of seconds from 3 × report.flushSeconds (${min}) to 86400 (got ${got})`;
  const cases: { name: string; report: unknown; expect: string[] }[] = [
    { name: 'not a mapping', report: 60, expect: ['report: must be a mapping with flushSeconds and staleAfterSeconds'] },
    { name: 'unknown key', report: { staleAfter: 60 }, expect: ['report.staleAfter: unknown key (allowed: flushSeconds, staleAfterSeconds)'] },
    { name: 'flushSeconds under 5', report: { flushSeconds: 4 }, expect: ['report.flushSeconds: must be a whole number from 5 to 3600 (got 4)'] },
    { name: 'flushSeconds over an hour', report: { flushSeconds: 3601 }, expect: ['report.flushSeconds: must be a whole number from 5 to 3600 (got 3601)'] },
    { name: 'flushSeconds not whole', report: { flushSeconds: 7.5 }, expect: ['report.flushSeconds: must be a whole number from 5 to 3600 (got 7.5)'] },
    {
      name: 'staleAfterSeconds under 3 flush intervals',
      report: { flushSeconds: 60, staleAfterSeconds: 179 },
      expect: ['report.staleAfterSeconds: must be at least 3 × report.flushSeconds (60) = 180, or the key of a live replica flushing on time could be taken for gone and its counts doubled (got 179)'],
    },
    {
      name: 'staleAfterSeconds equal to the interval',
      report: { flushSeconds: 5, staleAfterSeconds: 5 },
      expect: ['report.staleAfterSeconds: must be at least 3 × report.flushSeconds (5) = 15, or the key of a live replica flushing on time could be taken for gone and its counts doubled (got 5)'],
    },
    { name: 'staleAfterSeconds over a day', report: { flushSeconds: 5, staleAfterSeconds: 86_401 }, expect: [range(15, '86401')] },
    { name: 'staleAfterSeconds negative', report: { flushSeconds: 5, staleAfterSeconds: -30 }, expect: [range(15, '-30')] },
    { name: 'staleAfterSeconds zero', report: { flushSeconds: 5, staleAfterSeconds: 0 }, expect: [range(15, '0')] },
    { name: 'staleAfterSeconds not whole', report: { flushSeconds: 5, staleAfterSeconds: 15.5 }, expect: [range(15, '15.5')] },
    { name: 'staleAfterSeconds a string', report: { flushSeconds: 5, staleAfterSeconds: '120' }, expect: [range(15, '"120"')] },
    { name: 'staleAfterSeconds a duration', report: { staleAfterSeconds: '2m' }, expect: [range(180, '"2m"')] },
    { name: 'an invalid flushSeconds is the one problem, not staleAfterSeconds measured by its default', report: { flushSeconds: 1, staleAfterSeconds: 3 }, expect: ['report.flushSeconds: must be a whole number from 5 to 3600 (got 1)'] },
  ];
  for (const c of cases) t.same(problems({ report: c.report }), c.expect, c.name);
});

t.test('YAML syntax errors and duplicate keys are config errors', async (t) => {
  t.throws(() => parseConfig('mode: [unclosed', 'x.yaml'), ConfigError);
  t.throws(() => parseConfig('mode: audit\nmode: enforce\n', 'x.yaml'), /x.yaml/);
  t.equal(parseConfig('{"mode": "audit"}').mode, 'audit', 'JSON is YAML');
});

t.test('the error message names the file and each field', async (t) => {
  const err = t.throws(() => parseConfig('mode: bad\nrules: [{from: docker.io}]\n', 'cfg.yaml')) as Error;
  t.match(err.message, /invalid config cfg.yaml:\n {2}mode: .*\n {2}rules\[0\]\.to: is required/);
});

t.test('an empty, whitespace-only or comments-only document is an error, never "no policy"', async (t) => {
  for (const text of ['', '   \n\t\n', '# emptied by a bad patch\n# nothing left\n', '---\n', '~\n', 'null\n']) {
    t.throws(() => parseConfig(text, 'cfg.yaml'), ConfigError, JSON.stringify(text));
    try {
      parseConfig(text, 'cfg.yaml');
    } catch (err) {
      t.match((err as Error).message, /cfg.yaml[\s\S]*\(document\): the config is empty/, JSON.stringify(text));
    }
  }
  t.doesNotThrow(() => parseConfig('{}\n'), 'an explicit empty mapping is a deliberate choice');
});

t.test('a huge value is quoted only cut, with its length, and problems are capped', async (t) => {
  const huge = 'x'.repeat(20 * 1024 * 1024);
  let message = '';
  try {
    parseConfig(`logLevel: ${huge}\n`);
  } catch (err) {
    message = (err as Error).message;
  }
  t.ok(message.length > 0 && message.length < 4096, `message is ${message.length} characters`);
  t.match(message, /…\(\d+ chars\)/);
  const rules = Array.from({ length: 500 }, (_, i) => ({ from: `bad host ${i}`, to: 'mirror.example.com' }));
  try {
    validateConfig({ rules });
  } catch (err) {
    const m = (err as ConfigError).message;
    t.equal((err as ConfigError).problems.length >= 500, true, 'every problem is kept on the error');
    t.ok(m.split('\n').length <= 52, 'the message lists 50 and counts the rest');
    t.match(m, /\(and \d+ more problems\)/);
  }
});

t.test('an alias bomb is a config error, not a document expanded in memory', async (t) => {
  // Seven levels of ten aliases each would expand to ten million entries.
  let text = 'rules: &a [x, x, x, x, x, x, x, x, x, x]\n';
  let previous = 'a';
  for (const key of ['b', 'c', 'd', 'e', 'f', 'g']) {
    text += `exclude${key}: &${key} [${Array.from({ length: 10 }, () => `*${previous}`).join(', ')}]\n`;
    previous = key;
  }
  t.throws(() => parseConfig(text, 'bomb.yaml'), { name: 'ConfigError', message: /\(syntax\): Excessive alias count/ });
});
