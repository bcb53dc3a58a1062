import t from 'tap';
import { LogSink } from './support/app.js';
import { createLogger, infoLineWriter, type LineFields } from '../src/logger.js';

/** Both lines with the time, which differs by a millisecond at most, taken out. */
function pair(fields: LineFields, level = 'info'): { fast: Record<string, unknown> | undefined; pino: Record<string, unknown> | undefined; raw: string[] } {
  const sink = new LogSink();
  const raw: string[] = [];
  const original = sink._write.bind(sink);
  sink._write = (chunk, enc, cb) => {
    raw.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
    original(chunk, enc, cb);
  };
  const log = createLogger({ level, destination: sink });
  infoLineWriter(log, 'admission')(fields);
  log.info(fields, 'admission');
  const [fast, viaPino] = sink.lines;
  return { fast, pino: viaPino, raw };
}

t.test('the fast info line is the line pino writes', async (t) => {
  const cases: { name: string; fields: LineFields }[] = [
    { name: 'strings and numbers', fields: { uid: 'u-1', namespace: 'team-a', operation: 'CREATE', rewrites: 2, durationMs: 0.731 } },
    { name: 'undefined fields are left out', fields: { uid: 'u-2', name: undefined, dryRun: undefined, decision: 'allowed' } },
    { name: 'booleans', fields: { uid: 'u-3', dryRun: true } },
    { name: 'quotes, backslashes, newlines and unicode are escaped', fields: { reason: 'image "a\\b"\nnot allowed: é€𝄞 \u0001' } },
    { name: 'no fields', fields: {} },
  ];
  for (const c of cases) {
    const { fast, pino, raw } = pair(c.fields);
    t.ok(fast && pino, `${c.name}: two lines`);
    if (!fast || !pino) continue;
    t.type(fast.time, 'string', `${c.name}: ISO time`);
    t.ok(Math.abs(Date.parse(String(fast.time)) - Date.parse(String(pino.time))) < 1000, `${c.name}: same clock`);
    const [fastRaw, pinoRaw] = raw.map((l) => l.replace(/"time":"[^"]*"/, '"time":"T"'));
    t.equal(fastRaw, pinoRaw, `${c.name}: byte for byte, key order included`);
  }
});

t.test('the fast line follows the logger level, also after a change', async (t) => {
  const sink = new LogSink();
  const log = createLogger({ level: 'warn', destination: sink });
  const line = infoLineWriter(log, 'admission');
  line({ uid: 'quiet' });
  t.equal(sink.lines.length, 0, 'nothing at warn');
  log.level = 'info';
  line({ uid: 'loud' });
  t.match(sink.lines, [{ level: 'info', uid: 'loud', msg: 'admission', name: 'mirrorgate' }]);
});

t.test('a destination that throws does not fail the caller', async (t) => {
  const broken = { write: (): boolean => { throw new Error('EPIPE'); } };
  const log = createLogger({ level: 'info', destination: broken });
  t.doesNotThrow(() => infoLineWriter(log, 'admission')({ uid: 'u' }));
});

t.test('a child logger (not made by createLogger) gets the same line through pino', async (t) => {
  const sink = new LogSink();
  const child = createLogger({ level: 'info', destination: sink }).child({ component: 'kube' });
  infoLineWriter(child, 'admission')({ uid: 'u-c', rewrites: 1 });
  t.match(sink.lines, [{ level: 'info', component: 'kube', uid: 'u-c', rewrites: 1, msg: 'admission' }]);
});
