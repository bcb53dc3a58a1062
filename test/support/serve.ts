/** Options for running `serve()` in-process in tests. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServeOptions } from '../../src/serve.js';
import { LogSink } from './app.js';

/**
 * Complete {@link ServeOptions} with the usual test defaults: config `dir/config.yaml`,
 * both servers on 127.0.0.1 port 0, certificates created in `dir/certs`, service and
 * namespace `mirrorgate`, no shutdown delay, no Kubernetes, and logs into a fresh
 * {@link LogSink} (pass `logDestination` to read them). `overrides` win.
 */
export function serveOptions(dir: string, overrides: Partial<ServeOptions> = {}): ServeOptions {
  return {
    configPath: join(dir, 'config.yaml'),
    host: '127.0.0.1',
    port: 0,
    metricsPort: 0,
    metricsHost: '127.0.0.1',
    tlsCert: undefined,
    tlsKey: undefined,
    certsDir: join(dir, 'certs'),
    serviceName: 'mirrorgate',
    namespace: 'mirrorgate',
    shutdownDelayMs: 0,
    noKube: true,
    kubeconfig: undefined,
    logDestination: new LogSink(),
    ...overrides,
  };
}

/** The config the serve and hostile-input tests run: one rule, a policy that allows the mirror. */
export const SERVE_TEST_CONFIG = `mode: enforce
rules:
  - from: docker.io
    to: mirror.example.com/dockerhub
policy:
  allowedRegistries: [mirror.example.com]
`;

/** A temporary folder removed when the test ends. */
export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix = 'mg-serve-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
