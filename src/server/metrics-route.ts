/** The plain-HTTP metrics server: GET /metrics (Prometheus text). */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

export function buildMetricsServer(deps: { metrics: Metrics; log: Logger }): FastifyInstance {
  const app = Fastify({ loggerInstance: deps.log, disableRequestLogging: true, forceCloseConnections: true }) as unknown as FastifyInstance;
  app.get('/metrics', async (_req, reply) => {
    const body = await deps.metrics.registry.metrics();
    return reply.header('content-type', deps.metrics.registry.contentType).send(body);
  });
  return app;
}
