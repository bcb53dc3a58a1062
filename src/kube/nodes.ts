/**
 * Nodes for platform-aware verification: an informer cache keeping only each node's
 * `kubernetes.io/os` and `kubernetes.io/arch` labels, and the distinct platforms they make.
 * RBAC: `list` and `watch` on `nodes` (cluster-scoped).
 */
import type { CoreV1Api, Watch } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import type { Timers } from '../ports.js';
import { ARCH_LABEL, OS_LABEL, formatPlatform, parsePlatform, type Platform } from '../core/platforms.js';
import { ReflectedCache } from './reflector.js';

export interface NodeCacheOptions {
  readonly core: Pick<CoreV1Api, 'listNode'>;
  readonly watch: Pick<Watch, 'watch'>;
  readonly log: Logger;
  readonly resyncMs?: number | undefined;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
  /** Resync, backoff and waits (the system's by default). */
  readonly timers?: Timers | undefined;
}

/** Informer cache of node platforms. `start()` it; it never throws and never blocks. */
export class NodeCache extends ReflectedCache<string> {
  readonly #counts = new Map<string, number>();
  #platforms: Platform[] | undefined;

  constructor(options: NodeCacheOptions) {
    super({
      name: 'nodes',
      path: '/api/v1/nodes',
      list: async (token, limit) => {
        const list = await options.core.listNode({ limit, ...(token !== undefined ? { _continue: token } : {}) });
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '', continue: list.metadata?._continue };
      },
      watch: options.watch,
      timers: options.timers,
      keep: (obj) => {
        const os = obj.metadata?.labels?.[OS_LABEL];
        const arch = obj.metadata?.labels?.[ARCH_LABEL];
        if (os === undefined || arch === undefined) return undefined;
        const p = parsePlatform(`${os}/${arch}`);
        return p === undefined ? undefined : formatPlatform(p);
      },
      onChange: (_key, value, previous) => {
        if (previous !== undefined) {
          const n = (this.#counts.get(previous) ?? 1) - 1;
          if (n <= 0) this.#counts.delete(previous);
          else this.#counts.set(previous, n);
        }
        if (value !== undefined) this.#counts.set(value, (this.#counts.get(value) ?? 0) + 1);
        this.#platforms = undefined;
      },
      log: options.log,
      resyncMs: options.resyncMs,
      backoff: options.backoff,
    });
  }

  /** The distinct platforms of the cluster's nodes, sorted; empty before the first list. */
  platforms(): readonly Platform[] {
    this.#platforms ??= [...this.#counts.keys()].sort().flatMap((k) => parsePlatform(k) ?? []);
    return this.#platforms;
  }
}
