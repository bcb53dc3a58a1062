/**
 * Copy on miss: an admission observer that queues a background copy for every image a
 * verified rule with `copyOnMiss: true` found missing from the mirror. The pod keeps its
 * original reference (the plan decided that); once the mirror has the copy and the cached
 * "absent" answer expires, later pods are rewritten.
 */
import { parseReference } from '../core/reference.js';
import type { AdmissionObserver } from '../ports.js';
import type { EnqueueResult } from './queue.js';
import type { ImageReference } from '../core/reference.js';

/** The part of the copy queue the observer needs. */
export interface CopyEnqueuer {
  enqueue(source: ImageReference, target: ImageReference): EnqueueResult;
}

/** The subset of a pino logger used here. */
export interface CopyOnMissLog {
  debug(obj: object, msg: string): void;
}

/**
 * An {@link AdmissionObserver} that enqueues `original → target` for decisions with action
 * `missing` whose rule has `copyOnMiss` (and `verify`). Dry-run requests are ignored: the
 * webhook declares `sideEffects: NoneOnDryRun`. Never throws, never waits.
 */
export function copyOnMissObserver(deps: { queue: CopyEnqueuer; log?: CopyOnMissLog | undefined }): AdmissionObserver {
  return {
    name: 'copy-on-miss',
    observe({ request, evaluation }) {
      if (request.dryRun) return;
      for (const d of evaluation.plan?.decisions ?? []) {
        if (d.action !== 'missing' || !d.rule?.copyOnMiss || !d.rule.verify) continue;
        if (d.original === undefined || d.target === undefined) continue;
        const source = parseReference(d.original);
        const target = parseReference(d.target);
        if (!source.ok || !target.ok) continue;
        try {
          const queued = deps.queue.enqueue(source.ref, target.ref);
          deps.log?.debug({ image: d.original, target: d.target, queued }, 'copy on miss');
        } catch {
          // Observers must not throw into the admission path; the queue does not, by contract.
        }
      }
    },
  };
}
