/**
 * Namespaces for the per-namespace mode and for rules scoped by namespaceSelector: an
 * informer cache keeping only the labels of each namespace (and its `mirrorgate.io/mode`
 * label checked), nothing else of the object.
 */
import type { CoreV1Api, Watch } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import type { Timers } from '../ports.js';
import { ReflectedCache } from './reflector.js';

export type NamespaceModeLabel = 'audit' | 'off' | 'enforce';

/** The namespace label `mirrorgate.io/mode` (README, "Install on a cluster"). */
export const MODE_LABEL = 'mirrorgate.io/mode';

/** What admission needs of Namespaces. */
export interface NamespaceLookup {
  /** The namespace's `mirrorgate.io/mode` label; undefined when absent, invalid or not known. */
  modeLabel(namespace: string): NamespaceModeLabel | undefined;
  /** The namespace's labels; undefined when it is not known (yet). */
  labels(namespace: string): Readonly<Record<string, string>> | undefined;
  synced(): boolean;
}

export interface NamespaceCacheOptions {
  readonly core: Pick<CoreV1Api, 'listNamespace'>;
  readonly watch: Pick<Watch, 'watch'>;
  readonly log: Logger;
  readonly resyncMs?: number | undefined;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
  /** Resync, backoff and waits (the system's by default). */
  readonly timers?: Timers | undefined;
}

const MODES: readonly string[] = ['audit', 'off', 'enforce'];

interface Kept {
  readonly mode: NamespaceModeLabel | undefined;
  readonly labels: Readonly<Record<string, string>>;
}

/** Labels kept per namespace at most: more is not a namespace a selector is written for. */
const MAX_LABELS = 64;

/** Informer cache of namespace labels. `start()` it; it never throws and never blocks. */
export class NamespaceCache extends ReflectedCache<Kept> implements NamespaceLookup {
  constructor(options: NamespaceCacheOptions) {
    // Unknown label values are warned about once each.
    const warned = new Set<string>();
    super({
      name: 'namespaces',
      path: '/api/v1/namespaces',
      // Every namespace: rules may select namespaces by any label.
      query: {},
      list: async (token, limit) => {
        const list = await options.core.listNamespace({ limit, ...(token !== undefined ? { _continue: token } : {}) });
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '', continue: list.metadata?._continue };
      },
      watch: options.watch,
      timers: options.timers,
      keep: (obj) => {
        const all = obj.metadata?.labels ?? {};
        const labels: Record<string, string> = {};
        let n = 0;
        for (const [k, v] of Object.entries(all)) if (typeof v === 'string' && n++ < MAX_LABELS) labels[k] = v;
        const value = labels[MODE_LABEL];
        if (value === undefined || MODES.includes(value)) return { mode: value as NamespaceModeLabel | undefined, labels };
        const name = obj.metadata?.name ?? '';
        if (!warned.has(`${name}=${value}`)) {
          warned.add(`${name}=${value}`);
          options.log.warn({ namespace: name, label: MODE_LABEL, value }, 'namespace mode label has an unknown value; ignored (audit, enforce or off)');
        }
        return { mode: undefined, labels };
      },
      log: options.log,
      resyncMs: options.resyncMs,
      backoff: options.backoff,
    });
  }


  modeLabel(namespace: string): NamespaceModeLabel | undefined {
    return this.reflector.get(namespace)?.mode;
  }

  labels(namespace: string): Readonly<Record<string, string>> | undefined {
    return this.reflector.get(namespace)?.labels;
  }
}
