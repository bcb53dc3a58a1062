/**
 * buildServer(deps): the webhook's fastify instance, not listening. The composition
 * root (serve.ts) adds TLS and listens; tests use inject() or listen on 127.0.0.1:0.
 */
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { ServerOptions as HttpsServerOptions } from 'node:https';
import type { Logger } from '../logger.js';
import { errored, reviewOf } from '../core/admission.js';
import { clip } from '../core/text.js';
import { BodyError, parseJsonBody } from './json-body.js';
import { healthRoutes, type Readiness } from './health-route.js';
import { HEADERS_TIMEOUT_MS, MAX_RECEIVE_MS, installLimits } from './limits.js';
import { mutateRoute, type MutateDeps } from './mutate-route.js';
import type { SetTimer } from '../ports.js';

/** UPDATE reviews carry object and oldObject; the API server itself caps bodies at 3 MiB. */
export const BODY_LIMIT = 8 * 1024 * 1024;

export interface ServerDeps extends MutateDeps {
  readonly log: Logger;
  /** True once shutdown began: answers then carry `Connection: close`. */
  readonly draining?: (() => boolean) | undefined;
  /** Request body bytes in flight at once (default 16 MiB, see limits.ts). */
  readonly bodyBudget?: number | undefined;
  /** Deadline for a request's headers (default 10 s, see limits.ts). */
  readonly headersTimeoutMs?: number | undefined;
  /** Starts a request's receive deadline (default: the system timers, unref'd); tests pass a fake. */
  readonly setTimer?: SetTimer | undefined;
  readonly readiness: Readiness;
  /** TLS options; omitted only in tests that use inject(). */
  readonly https?: HttpsServerOptions | undefined;
}

export function buildServer(deps: ServerDeps): FastifyInstance {
  const options: FastifyServerOptions & { https?: HttpsServerOptions | null } = {
    loggerInstance: deps.log,
    // fastify would make a child logger per request (req.log); the route logs with the
    // request's ids itself, so the parent serves and the per-request cost goes away.
    childLoggerFactory: (logger) => logger,
    // One log line per admission is written by the route; fastify's two lines per
    // request cost ~15% of throughput and say less.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // The API server keeps connections alive and reuses them; keep ours open longer
    // than its idle timeout (90 s) would be wasteful, shorter would force new TLS
    // handshakes. 65 s is the usual choice behind load balancers too.
    keepAliveTimeout: 65_000,
    // Backstop for the per-request receive deadline in limits.ts: never longer than the
    // API server's own maximum.
    requestTimeout: MAX_RECEIVE_MS,
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { allErrors: false } },
  };
  // Node checks header and request deadlines on this interval (default 30 s: too coarse).
  if (deps.https) options.https = { ...deps.https, connectionsCheckingInterval: 1000 };
  const app = Fastify(options as FastifyServerOptions) as unknown as FastifyInstance;
  // The API server sends its headers at once; a client that dribbles them holds a socket.
  if (deps.https) app.server.headersTimeout = deps.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  installLimits(app, { bodyLimit: BODY_LIMIT, bodyBudget: deps.bodyBudget, draining: deps.draining, setTimer: deps.setTimer, onRefused: (why) => deps.metrics.countRefused(why) });

  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['application/json'], { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.setErrorHandler((err: FastifyError | BodyError, req, reply) => {
    const status = err.statusCode ?? 500;
    if (err instanceof BodyError || (status >= 400 && status < 500)) {
      const code = status === 413 ? 413 : status === 415 ? 415 : 400;
      const message =
        code === 413
          ? `body larger than ${BODY_LIMIT} bytes`
          : code === 415
            ? `unsupported content type ${JSON.stringify(req.headers['content-type'] ?? '')}: send application/json`
            : err.message;
      req.log.warn({ status: code, uid: err instanceof BodyError ? err.uid : undefined, error: clip(message, 1024), url: clip(req.url, 1024) }, 'rejected request');
      // A body that could not be parsed but carries a readable uid gets an answer the API
      // server can match: allowed false, code 400 (as controller-runtime's Errored).
      if (err instanceof BodyError && err.uid !== undefined && code === 400) {
        return reply.code(200).send(reviewOf(errored(err.uid, 400, `mirrorgate: ${clip(message, 1024)}`)));
      }
      return reply.code(code).send({ error: code === 413 ? 'Payload Too Large' : code === 415 ? 'Unsupported Media Type' : 'Bad Request', message });
    }
    req.log.error({ err, url: req.url }, 'unhandled error');
    return reply.code(500).send({ error: 'Internal Server Error', message: 'internal error (see the webhook log)' });
  });

  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'Not Found', message: `no route ${req.method} ${req.url.split('?')[0] ?? ''}: the webhook serves POST /mutate` }));

  void app.register(healthRoutes(deps.readiness));
  void app.register(mutateRoute(deps));
  return app;
}
