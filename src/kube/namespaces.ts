/**
 * Namespaces for the per-namespace mode: an informer cache keeping only the
 * `mirrorgate.io/mode` label of the namespaces that have it (most have none, so the
 * cache stays tiny).
 */
import type { CoreV1Api, Watch } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import { ReflectedCache } from './reflector.js';

export type NamespaceModeLabel = 'audit' | 'off' | 'enforce';

/** The namespace label `mirrorgate.io/mode` (DESIGN §3 "Annotations and labels"). */
export const MODE_LABEL = 'mirrorgate.io/mode';

/** What admission needs of Namespaces. */
export interface NamespaceLookup {
  /** The namespace's `mirrorgate.io/mode` label; undefined when absent, invalid or not known. */
  modeLabel(namespace: string): NamespaceModeLabel | undefined;
  synced(): boolean;
}

export interface NamespaceCacheOptions {
  readonly core: Pick<CoreV1Api, 'listNamespace'>;
  readonly watch: Pick<Watch, 'watch'>;
  readonly log: Logger;
  readonly resyncMs?: number | undefined;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
}

const MODES: readonly string[] = ['audit', 'off', 'enforce'];

/** Informer cache of namespace mode labels. `start()` it; it never throws and never blocks. */
export class NamespaceCache extends ReflectedCache<NamespaceModeLabel> implements NamespaceLookup {
  constructor(options: NamespaceCacheOptions) {
    // Unknown label values are warned about once each.
    const warned = new Set<string>();
    super({
      name: 'namespaces',
      path: '/api/v1/namespaces',
      // Only namespaces carrying the label: the API filters, so none of the others is sent.
      query: { labelSelector: MODE_LABEL },
      list: async (token, limit) => {
        const list = await options.core.listNamespace({ labelSelector: MODE_LABEL, limit, ...(token !== undefined ? { _continue: token } : {}) });
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '', continue: list.metadata?._continue };
      },
      watch: options.watch,
      keep: (obj) => {
        const value = obj.metadata?.labels?.[MODE_LABEL];
        if (value === undefined) return undefined;
        if (MODES.includes(value)) return value as NamespaceModeLabel;
        const name = obj.metadata?.name ?? '';
        if (!warned.has(`${name}=${value}`)) {
          warned.add(`${name}=${value}`);
          options.log.warn({ namespace: name, label: MODE_LABEL, value }, 'namespace mode label has an unknown value; ignored (audit, enforce or off)');
        }
        return undefined;
      },
      log: options.log,
      resyncMs: options.resyncMs,
      backoff: options.backoff,
    });
  }


  modeLabel(namespace: string): NamespaceModeLabel | undefined {
    return this.reflector.get(namespace);
  }
}
