/** Options for running `serve()` in-process in tests. */
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
