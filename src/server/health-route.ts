/** GET /healthz (alive) and GET /readyz (ready to admit) on the webhook port. */
import type { FastifyInstance } from 'fastify';

export interface Readiness {
  /** Empty when ready; otherwise the reasons it is not (shutting down, no config). */
  notReadyReasons(): string[];
  /** Things that work but are degraded (no cluster access): reported, still ready. */
  degraded(): string[];
}

export function healthRoutes(readiness: Readiness) {
  return async function plugin(app: FastifyInstance): Promise<void> {
    app.get('/healthz', async () => ({ status: 'ok' }));
    app.get('/readyz', async (_req, reply) => {
      const reasons = readiness.notReadyReasons();
      const degraded = readiness.degraded();
      if (reasons.length > 0) return reply.code(503).send({ status: 'not ready', reasons, degraded });
      return { status: 'ready', degraded };
    });
  };
}
