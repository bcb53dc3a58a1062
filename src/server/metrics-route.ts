/** The plain-HTTP metrics server: GET /metrics (Prometheus text), GET /report, GET /report.html, GET /report.csv. */
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { worklistCsv } from '../report/format.js';
import { newNonce, renderReportHtml, reportCsp } from '../report/html.js';
import type { ReportContext } from '../report/worklist.js';
import type { Report } from '../report/rewrites.js';

/** The report to show: the merged view over replicas when the cluster is reachable, else this replica's. */
export interface ReportSource {
  report(): Promise<Report>;
}

export function buildMetricsServer(deps: { metrics: Metrics; log: Logger; report?: ReportSource | undefined; context?: (() => ReportContext) | undefined }): FastifyInstance {
  const app = Fastify({ loggerInstance: deps.log, logController: new LogController({ disableRequestLogging: true }), forceCloseConnections: true }) as unknown as FastifyInstance;
  app.get('/metrics', async (_req, reply) => {
    const body = await deps.metrics.registry.metrics();
    return reply.header('content-type', deps.metrics.registry.contentType).send(body);
  });
  const source = deps.report;
  if (source !== undefined) {
    app.get('/report', async (_req, reply) => reply.header('cache-control', 'no-store').send(await source.report()));
    const context = deps.context ?? ((): ReportContext => ({}));
    app.get('/report.html', async (_req, reply) => {
      const nonce = newNonce();
      return reply
        .header('content-type', 'text/html; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('content-security-policy', reportCsp(nonce))
        .header('x-content-type-options', 'nosniff')
        .send(renderReportHtml(await source.report(), nonce, context()));
    });
    app.get('/report.csv', async (_req, reply) =>
      reply
        .header('content-type', 'text/csv; charset=utf-8; header=present')
        .header('content-disposition', 'attachment; filename="mirrorgate-worklist.csv"')
        .header('cache-control', 'no-store')
        .send(worklistCsv(await source.report(), context())),
    );
  }
  return app;
}
