/**
 * Runs a pod through mirrorgate's admission route as the API server would: an
 * AdmissionReview for a CREATE POSTed to /mutate (fastify inject, no socket), the pod's
 * ServiceAccount served from a map in place of the informer cache, the answer's JSONPatch
 * applied with RFC 6902 semantics. The identity conformance suites compare the pod this
 * gives with the upstream webhook's.
 */
import fjp, { type Operation } from 'fast-json-patch';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { buildServer } from '../../src/server/app.js';
import type { ServiceAccountInfo } from '../../src/core/identity/wiring.js';
import { LogSink, patchOf, review } from '../support/app.js';

export type Json = Record<string, any>;

export interface Admission {
  allowed: boolean;
  message: string | undefined;
  warnings: string[];
  /** The pod after the answer's patch (the pod as sent when there is none or it was denied). */
  pod: Json;
}

/** ServiceAccounts by `namespace/name`; absent: not found (cache and direct lookup). */
export type Accounts = Readonly<Record<string, Readonly<Record<string, string>>>>;

export async function admit(config: unknown, pod: Json, accounts: Accounts, namespace: string): Promise<Admission> {
  const app = buildServer({
    config: { current: () => validateConfig(config) },
    metrics: createMetrics({ defaultMetrics: false }),
    log: createLogger({ level: 'fatal', destination: new LogSink() }),
    now: () => performance.now(),
    readiness: { notReadyReasons: () => [], degraded: () => [] },
    serviceAccounts: {
      get: (ns: string, name: string): Promise<ServiceAccountInfo | undefined> => {
        const annotations = accounts[`${ns}/${name}`];
        return Promise.resolve(annotations === undefined ? undefined : { namespace: ns, name, annotations });
      },
    },
  });
  try {
    const { uid, body } = review({ namespace, object: pod });
    const res = await app.inject({ method: 'POST', url: '/mutate', payload: body });
    if (res.statusCode !== 200) throw new Error(`/mutate answered ${res.statusCode}: ${res.body}`);
    const response = res.json<{ response: Json }>().response;
    if (response.uid !== uid) throw new Error('answer for another request');
    const ops = patchOf(response) as Operation[] | undefined;
    const final = ops === undefined ? pod : (fjp.applyPatch(fjp.deepClone(pod), ops, true, false).newDocument as Json);
    return { allowed: response.allowed === true, message: response.status?.message, warnings: response.warnings ?? [], pod: final };
  } finally {
    await app.close();
  }
}
