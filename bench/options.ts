/** The options of `npm run bench`, as `--help` describes them. */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CLI, HarnessError } from './harness.js';

export type ServerKind = 'baseline' | 'mirrorgate';

export interface Options {
  servers: ServerKind[];
  /** mirrorgate's built entry point. */
  cli: string;
  durationS: number;
  warmupS: number;
  rate: number;
  pin: boolean;
  /** Run the verification scenario (a real registry, `verify: true`). */
  verify: boolean;
  /** Run the reload scenario (20,000 rules; see reload.ts). */
  reload: boolean;
  /** `--only reload`: nothing but the reload scenario. */
  reloadOnly: boolean;
  /** `--only drain`: nothing but the drain scenario (see drain.ts), `drainRuns` SIGTERMs. */
  drainOnly: boolean;
  drainRuns: number;
  /** The Node.js binary that runs both servers (default: the image's runtime, see resolveNode). */
  node: string | undefined;
}

export const USAGE = `Usage: npm run bench -- [--only baseline|mirrorgate|reload|drain] [--duration 10] [--warmup 2] [--rate 500]
                          [--no-pin] [--no-verify] [--no-reload] [--drain-runs 5] [--cli dist/cli.js]
                          [--node PATH]

Runs mirrorgate (node dist/cli.js, build first: npm run build) and a bare node:https
baseline on the same generated AdmissionReview mix and prints a table and a JSON line.
Both servers run on the Node.js the image ships (24, from scripts/node24.sh) unless
--node names another binary.`;

export function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      cli: { type: 'string' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      rate: { type: 'string', default: '500' },
      'no-pin': { type: 'boolean', default: false },
      'no-verify': { type: 'boolean', default: false },
      'no-reload': { type: 'boolean', default: false },
      'drain-runs': { type: 'string', default: '5' },
      node: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return undefined;
  const positive = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new HarnessError(`--${name}: a number >= ${min} (got ${v})\n${USAGE}`);
    return n;
  };
  let servers: ServerKind[] = ['baseline', 'mirrorgate'];
  const reloadOnly = values.only === 'reload';
  const drainOnly = values.only === 'drain';
  if (values.only !== undefined && !reloadOnly && !drainOnly) {
    if (values.only !== 'baseline' && values.only !== 'mirrorgate') throw new HarnessError(`--only: baseline, mirrorgate, reload or drain (got ${values.only})`);
    servers = [values.only];
  }
  return {
    servers,
    cli: path.resolve(values.cli ?? DEFAULT_CLI),
    durationS: Math.round(positive('duration', values.duration, 1)),
    warmupS: Math.round(positive('warmup', values.warmup, 0)),
    rate: positive('rate', values.rate, 1),
    pin: !values['no-pin'],
    verify: !values['no-verify'],
    reload: reloadOnly || (!values['no-reload'] && values.only !== 'baseline'),
    reloadOnly,
    drainOnly,
    drainRuns: Math.round(positive('drain-runs', values['drain-runs'], 1)),
    node: values.node === undefined ? undefined : path.resolve(values.node),
  };
}
