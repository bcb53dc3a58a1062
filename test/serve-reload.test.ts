/**
 * Reload as `serve` wires it: a change of the config file reaches every component at
 * once or none of them. A rule added together with a registry CA file that cannot be read
 * is rejected as a whole (the old rules keep answering, one failure counted, one line
 * logged); the next valid change applies everything, the log level included.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { serve } from '../src/serve.js';
import { LogSink, review } from './support/app.js';
import { getResponse, postJson } from './support/http.js';
import { waitFor } from './support/wait.js';
import { serveOptions, tempDir } from './support/serve.js';
import { readFile } from 'node:fs/promises';

const DOCKER_RULE = `  - from: docker.io
    to: mirror.example.com/dockerhub
`;
const QUAY_RULE = `  - from: quay.io
    to: mirror.example.com/quay
`;
const BASE = `mode: enforce\nlogLevel: info\nrules:\n${DOCKER_RULE}`;

async function reloads(metricsUrl: string, result: 'success' | 'failure'): Promise<number> {
  const body = (await getResponse(`${metricsUrl}/metrics`)).body;
  const m = new RegExp(`mirrorgate_config_reloads_total\\{result="${result}"\\} (\\d+)`).exec(body);
  return Number(m?.[1] ?? NaN);
}

async function imageAfter(url: string, ca: string, image: string): Promise<string | undefined> {
  const { body } = review({ object: { metadata: {}, spec: { containers: [{ name: 'app', image }] } } });
  const res = await postJson(`${url}/mutate?timeout=10s`, ca, body);
  const patch = res.json.response.patch as string | undefined;
  if (patch === undefined) return undefined;
  const ops = JSON.parse(Buffer.from(patch, 'base64').toString('utf8')) as { path: string; value: unknown }[];
  return ops.find((o) => o.path === '/spec/containers/0/image')?.value as string | undefined;
}

t.test('a reload is applied by every component or by none', async (t) => {
  const dir = await tempDir(t);
  const configPath = join(dir, 'config.yaml');
  await writeFile(configPath, BASE);
  const logs = new LogSink();
  const running = await serve(serveOptions(dir, { configPath, logDestination: logs }));
  t.teardown(() => running.shutdown('test over'));
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  t.equal(await imageAfter(running.url, ca, 'nginx:1'), 'mirror.example.com/dockerhub/library/nginx:1');
  t.equal(await imageAfter(running.url, ca, 'quay.io/app/x:1'), undefined, 'no rule for quay.io yet');

  // A new verified rule, with registry settings whose CA file is not there: the whole change is rejected.
  await writeFile(
    configPath,
    `mode: enforce\nlogLevel: warn\nrules:\n${DOCKER_RULE}${QUAY_RULE}    verify: true\nregistries:\n  mirror.example.com:\n    ca: ${join(dir, 'missing-ca.crt')}\n`,
  );
  await waitFor('the rejected reload to be counted', async () => (await reloads(running.metricsUrl, 'failure')) === 1, 15_000);
  t.equal(await reloads(running.metricsUrl, 'success'), 0, 'not counted as a success');
  const rejected = logs.find('config rejected; the last good config stays in force');
  t.equal(rejected.length, 1, 'one line for the reload');
  t.match(rejected[0], { reason: `${configPath} changed`, problems: [/^verification: [\s\S]*\.ca: cannot read/] });
  t.equal(await imageAfter(running.url, ca, 'quay.io/app/x:1'), undefined, 'the new rule is not in force');
  t.equal(running.log.level, 'info', 'nor the new log level');

  // Valid: everything at once.
  await writeFile(
    configPath,
    `mode: enforce\nlogLevel: debug\nrules:\n${DOCKER_RULE}${QUAY_RULE}`,
  );
  await waitFor('the reload to be applied', async () => (await reloads(running.metricsUrl, 'success')) === 1, 15_000);
  t.equal(await imageAfter(running.url, ca, 'quay.io/app/x:1'), 'mirror.example.com/quay/app/x:1', 'the new rule is in force');
  t.equal(running.log.level, 'debug', 'and the log level');
  t.equal(await reloads(running.metricsUrl, 'failure'), 1);
  t.match(logs.find('config reloaded'), [{ reason: `${configPath} changed`, rules: 2 }]);
});

t.test('an invalid file is one failure with its reason; the config in force stays', async (t) => {
  const dir = await tempDir(t);
  const configPath = join(dir, 'config.yaml');
  await writeFile(configPath, BASE);
  const logs = new LogSink();
  const running = await serve(serveOptions(dir, { configPath, logDestination: logs }));
  t.teardown(() => running.shutdown('test over'));
  const ca = await readFile(join(dir, 'certs', 'ca.crt'), 'utf8');
  await writeFile(configPath, 'mode: sideways\n');
  await waitFor('the rejection to be counted', async () => (await reloads(running.metricsUrl, 'failure')) === 1, 15_000);
  t.match(logs.find('config rejected; the last good config stays in force'), [{ reason: `${configPath} changed`, problems: [/mode/] }]);
  t.equal(await imageAfter(running.url, ca, 'nginx:1'), 'mirror.example.com/dockerhub/library/nginx:1');
});
