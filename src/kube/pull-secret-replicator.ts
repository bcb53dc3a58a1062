/**
 * Pull-secret replication (`pullSecrets[].copyFrom: NAMESPACE`): after an admission
 * added a pull secret to a pod, make sure the pod's namespace has a copy of the secret
 * from the source namespace, and keep the copies in sync when the source changes.
 *
 * Least privilege shapes the design: the source namespace's secrets are watched (a Role
 * there), while copies are only created, read and replaced by name (a ClusterRole with
 * `create`, and `get`/`update` restricted by `resourceNames`), never listed cluster-wide.
 * So the replicator knows the copies it made or checked since it started; after a
 * restart a copy is checked again when the next pod of its namespace is admitted.
 *
 * A secret of the same name that mirrorgate did not create (no managed-by label) is
 * never touched: the namespace's own secret wins.
 */
import type { CoreV1Api, KubernetesObject, V1Secret, Watch } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import type { Clock, Timers } from '../ports.js';
import { describe, keyOf, Reflector, statusOf, type ReflectorStatus } from './reflector.js';

/** Label on every copy. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'mirrorgate';
/** Annotation on every copy: `NAMESPACE/NAME` of its source. */
export const COPIED_FROM_ANNOTATION = 'mirrorgate.io/copied-from';

/** One replicated secret: `name` is copied from `sourceNamespace`. */
export interface PullSecretSource {
  readonly name: string;
  readonly sourceNamespace: string;
}

export interface PullSecretReplicatorOptions {
  readonly core: Pick<CoreV1Api, 'listNamespacedSecret' | 'readNamespacedSecret' | 'createNamespacedSecret' | 'replaceNamespacedSecret' | 'deleteNamespacedSecret'>;
  readonly watch: Pick<Watch, 'watch'>;
  readonly log: Logger;
  readonly resyncMs?: number | undefined;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
  /** The source watches' resync, backoff and waits, and their jitter (the system's by default). */
  readonly timers?: Timers | undefined;
  /** Monotonic time of the source watches (the system's by default). */
  readonly clock?: Clock | undefined;
}

/** What admission needs: a fire-and-forget request. */
export interface PullSecretEnsurer {
  /** Make sure `namespace` has a copy of `secretName` from `sourceNamespace`. Never throws, never waits. */
  ensure(namespace: string, secretName: string, sourceNamespace: string): void;
}

interface SourceValue {
  readonly type: string | undefined;
  readonly data: Readonly<Record<string, string>>;
  readonly resourceVersion: string;
}

/** A copy known to be in sync with its source at `sourceVersion` (or foreign: not ours). */
interface CopyState {
  readonly sourceNamespace: string;
  readonly name: string;
  readonly namespace: string;
  sourceVersion: string | undefined;
  foreign: boolean;
}

export class PullSecretReplicator implements PullSecretEnsurer {
  readonly #o: PullSecretReplicatorOptions;
  /** Source reflectors by source namespace, each with the set of names it keeps. */
  readonly #sources = new Map<string, { names: Set<string>; reflector: Reflector<SourceValue> }>();
  readonly #copies = new Map<string, CopyState>();
  readonly #running = new Map<string, Promise<void>>();
  readonly #again = new Set<string>();
  #stopped = false;

  constructor(options: PullSecretReplicatorOptions) {
    this.#o = options;
  }

  /**
   * Set which secrets are replicated from where (at start and on config reload). Starts
   * a watch of each source namespace, stops the ones no longer needed.
   */
  configure(sources: readonly PullSecretSource[]): void {
    const wanted = new Map<string, Set<string>>();
    for (const s of sources) {
      let names = wanted.get(s.sourceNamespace);
      if (!names) wanted.set(s.sourceNamespace, (names = new Set()));
      names.add(s.name);
    }
    for (const [ns, entry] of this.#sources) {
      const names = wanted.get(ns);
      if (!names || !sameSet(names, entry.names)) {
        void entry.reflector.stop();
        this.#sources.delete(ns);
      }
    }
    for (const [ns, names] of wanted) {
      if (this.#sources.has(ns)) continue;
      const reflector = new Reflector<SourceValue>({
        name: `secrets/${ns}`,
        path: `/api/v1/namespaces/${encodeURIComponent(ns)}/secrets`,
        list: async (token, limit) => {
          const list = await this.#o.core.listNamespacedSecret({ namespace: ns, limit, ...(token !== undefined ? { _continue: token } : {}) });
          return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? '', continue: list.metadata?._continue };
        },
        watch: this.#o.watch,
        keep: (obj) => (names.has(obj.metadata?.name ?? '') ? sourceValueOf(obj) : undefined),
        onChange: (key, value) => this.#sourceChanged(ns, key, value),
        log: this.#o.log,
        resyncMs: this.#o.resyncMs,
        backoff: this.#o.backoff,
        timers: this.#o.timers,
        clock: this.#o.clock,
      });
      this.#sources.set(ns, { names, reflector });
      reflector.start();
    }
  }

  ensure(namespace: string, secretName: string, sourceNamespace: string): void {
    if (this.#stopped || namespace === sourceNamespace || namespace === '') return;
    const source = this.#sources.get(sourceNamespace);
    if (!source?.names.has(secretName)) return;
    const key = keyOf(namespace, secretName);
    const known = this.#copies.get(key);
    // The hot path: every admitted pod asks; a copy known to be current costs nothing.
    if (known && (known.foreign || known.sourceVersion === source.reflector.get(keyOf(sourceNamespace, secretName))?.resourceVersion)) return;
    if (!known) this.#copies.set(key, { sourceNamespace, name: secretName, namespace, sourceVersion: undefined, foreign: false });
    this.#schedule(key);
  }

  /** Resolves when no copy work is queued or running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.all([...this.#running.values()]);
  }

  status(): ReflectorStatus[] {
    return [...this.#sources.values()].map((s) => s.reflector.status());
  }

  synced(): boolean {
    return [...this.#sources.values()].every((s) => s.reflector.synced());
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#sources.values()].map((s) => s.reflector.stop()));
    await this.idle();
  }

  #sourceChanged(sourceNamespace: string, sourceKey: string, value: SourceValue | undefined): void {
    const name = sourceKey.slice(sourceNamespace.length + 1);
    if (value === undefined) {
      // Copies stay: pods that use them keep pulling. Say so, once per deletion.
      this.#o.log.warn({ namespace: sourceNamespace, secret: name }, 'source pull secret deleted; existing copies are left as they are');
      return;
    }
    for (const [key, copy] of this.#copies) {
      if (copy.sourceNamespace === sourceNamespace && copy.name === name && !copy.foreign && copy.sourceVersion !== value.resourceVersion) this.#schedule(key);
    }
  }

  /** One sync per copy at a time; a request during a run runs it once more after. */
  #schedule(key: string): void {
    if (this.#running.has(key)) {
      this.#again.add(key);
      return;
    }
    const run = (async () => {
      do {
        this.#again.delete(key);
        await this.#sync(key);
      } while (this.#again.has(key) && !this.#stopped);
    })().finally(() => this.#running.delete(key));
    this.#running.set(key, run);
  }

  async #sync(key: string): Promise<void> {
    const copy = this.#copies.get(key);
    if (!copy || copy.foreign) return;
    const { namespace, name, sourceNamespace } = copy;
    const log = this.#o.log.child({ namespace, secret: name, sourceNamespace });
    try {
      const source = await this.#source(sourceNamespace, name);
      if (!source) {
        log.warn('pull secret to copy does not exist in its source namespace; nothing copied');
        return;
      }
      for (let attempt = 0; attempt < 3; attempt++) {
        const current = await this.#read(namespace, name);
        if (current === undefined) {
          try {
            await this.#o.core.createNamespacedSecret({ namespace, body: copyOf(namespace, name, sourceNamespace, source) });
            copy.sourceVersion = source.resourceVersion;
            log.info('pull secret copied into the namespace');
            return;
          } catch (err) {
            if (statusOf(err) === 409) continue; // created meanwhile (another replica): look again
            throw err;
          }
        }
        if (current.metadata?.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE) {
          copy.foreign = true;
          log.info('namespace has its own secret of that name; not replacing it');
          return;
        }
        if (sameContent(current, source)) {
          copy.sourceVersion = source.resourceVersion;
          return;
        }
        try {
          if ((current.type ?? 'Opaque') !== (source.type ?? 'Opaque')) {
            // A Secret's type is immutable: replace the copy.
            await this.#o.core.deleteNamespacedSecret({ namespace, name });
            continue;
          }
          const body = copyOf(namespace, name, sourceNamespace, source);
          body.metadata = { ...body.metadata, resourceVersion: current.metadata?.resourceVersion };
          await this.#o.core.replaceNamespacedSecret({ namespace, name, body });
          copy.sourceVersion = source.resourceVersion;
          log.info('pull secret copy updated from its source');
          return;
        } catch (err) {
          if (statusOf(err) === 409 || statusOf(err) === 404) continue; // changed meanwhile: look again
          throw err;
        }
      }
      log.warn('pull secret copy kept changing under us; will try again on the next change');
    } catch (err) {
      // The next admission in the namespace or the next change of the source tries again.
      log.warn({ error: describe(err) }, 'pull secret copy failed');
    }
  }

  async #source(sourceNamespace: string, name: string): Promise<SourceValue | undefined> {
    const entry = this.#sources.get(sourceNamespace);
    if (entry?.reflector.synced()) return entry.reflector.get(keyOf(sourceNamespace, name));
    // Not synced yet (just started): ask directly.
    const secret = await this.#read(sourceNamespace, name);
    return secret ? sourceValueOf(secret) : undefined;
  }

  async #read(namespace: string, name: string): Promise<V1Secret | undefined> {
    try {
      return await this.#o.core.readNamespacedSecret({ namespace, name });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }
}

function sourceValueOf(obj: KubernetesObject): SourceValue {
  const s = obj as V1Secret;
  return { type: s.type, data: { ...(s.data ?? {}) }, resourceVersion: s.metadata?.resourceVersion ?? '' };
}

function copyOf(namespace: string, name: string, sourceNamespace: string, source: SourceValue): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name,
      namespace,
      labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
      annotations: { [COPIED_FROM_ANNOTATION]: `${sourceNamespace}/${name}` },
    },
    ...(source.type !== undefined ? { type: source.type } : {}),
    data: { ...source.data },
  };
}

function sameContent(copy: V1Secret, source: SourceValue): boolean {
  if ((copy.type ?? 'Opaque') !== (source.type ?? 'Opaque')) return false;
  const a = copy.data ?? {};
  const b = source.data;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
