/**
 * List + watch of one kind of object into a small in-memory store, the way client-go's
 * reflector does it, on client-node's `Watch`:
 * - list (paged) → store replaced, `resourceVersion` remembered → watch from it;
 * - a watch that ends cleanly (the API server closes watches after `timeoutSeconds`, a
 *   proxy drops it) resumes from the last seen resourceVersion;
 * - 410 Gone / an ERROR event with code 410 (history compacted) → relist;
 * - any other failure → retry with exponential backoff and jitter, forever, logged once
 *   per state change rather than once per attempt;
 * - a periodic relist (resync) repairs whatever a half-open connection may have missed.
 *
 * client-node's own `ListWatch` stops for good after a failed list and resumes a dropped
 * watch without any delay, and keeps whole objects; this keeps only what `keep` returns.
 */
import type { KubernetesObject, Watch } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import { isRecord } from '../core/json.js';
import { describe, statusOf } from './errors.js';
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from '../ports.js';

/** One page of a list call. */
export interface ListPage {
  readonly items: readonly KubernetesObject[];
  readonly resourceVersion: string;
  readonly continue: string | undefined;
}

export interface ReflectorOptions<T> {
  /** For logs and status, e.g. `serviceaccounts`. */
  readonly name: string;
  /** Watch path, e.g. `/api/v1/serviceaccounts`. */
  readonly path: string;
  /** Extra query for the watch (labelSelector, fieldSelector), the same as the list uses. */
  readonly query?: Readonly<Record<string, string>> | undefined;
  /** One page of the list; `continueToken` undefined for the first. */
  list(continueToken: string | undefined, limit: number): Promise<ListPage>;
  readonly watch: Pick<Watch, 'watch'>;
  /** What to keep of an object; undefined = nothing (not stored). */
  keep(obj: KubernetesObject): T | undefined;
  /** Called on every change of the store (value undefined = removed). Must not throw. */
  onChange?: ((key: string, value: T | undefined, previous: T | undefined) => void) | undefined;
  readonly log: Logger;
  /** Relist period (default 10 minutes); 0 disables. */
  readonly resyncMs?: number | undefined;
  /** Retry backoff (default 250 ms doubling to 30 s). */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined;
  /** Asked of the server per watch (default 5-10 minutes, randomised like client-go). */
  readonly watchTimeoutSeconds?: number | undefined;
  /** Page size of the list (default 500). */
  readonly pageSize?: number | undefined;
  /** Timers (resync, backoff, waits) and their jitter; the system's by default. */
  readonly timers?: Timers | undefined;
  /** Monotonic time (how long a watch lasted); the system's by default. */
  readonly clock?: Clock | undefined;
}

/** Health of a reflector, for readiness and logs. */
export interface ReflectorStatus {
  readonly name: string;
  /** The store reflects a complete list at least once. */
  readonly synced: boolean;
  /** The last list or watch attempt failed (the store may be stale). */
  readonly healthy: boolean;
  /** The last error, while unhealthy. */
  readonly lastError: string | undefined;
  /** Consecutive failures. */
  readonly failures: number;
}

/** Key of an object in a store: `namespace/name` (`name` for cluster-scoped objects). */
export function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export { describe, statusOf };

export class Reflector<T> {
  readonly #o: ReflectorOptions<T>;
  #store = new Map<string, T>();
  #rv = '';
  #synced = false;
  #healthy = true;
  #lastError: string | undefined;
  #failures = 0;
  #stopped = true;
  #loop: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #wake: (() => void) | undefined;
  #resyncTimer: TimerHandle | undefined;
  #relistRequested = false;
  readonly #syncedWaiters: (() => void)[] = [];
  readonly #timers: Timers;
  readonly #clock: Clock;

  constructor(options: ReflectorOptions<T>) {
    this.#o = options;
    this.#timers = options.timers ?? systemTimers;
    this.#clock = options.clock ?? systemClock;
  }

  /** Start listing and watching in the background. Never throws; failures are retried. */
  start(): this {
    if (!this.#stopped) return this;
    this.#stopped = false;
    this.#loop = this.#run();
    const resync = this.#o.resyncMs ?? 600_000;
    if (resync > 0) {
      this.#resyncTimer = this.#timers.every(resync, () => this.relist());
    }
    return this;
  }

  /**
   * Stop and wait for the loop to end, at most `waitMs`: a list request to an API that
   * stopped answering cannot be cancelled, and shutdown must not hang on it (the loop
   * ends by itself when the request finally fails). The store is kept.
   */
  async stop(waitMs = 1000): Promise<void> {
    this.#stopped = true;
    this.#resyncTimer?.cancel();
    this.#abort?.abort();
    this.#wake?.();
    let timer: TimerHandle | undefined;
    await Promise.race([this.#loop, new Promise<void>((resolve) => (timer = this.#timers.after(waitMs, resolve)))]);
    timer?.cancel();
    for (const w of this.#syncedWaiters.splice(0)) w();
  }

  /** Relist now (ends the current watch). */
  relist(): void {
    this.#relistRequested = true;
    this.#abort?.abort();
    this.#wake?.();
  }

  get(key: string): T | undefined {
    return this.#store.get(key);
  }

  /** Put a value learnt otherwise (a direct GET); the watch will confirm or replace it. */
  set(key: string, value: T): void {
    const previous = this.#store.get(key);
    this.#store.set(key, value);
    this.#o.onChange?.(key, value, previous);
  }

  entries(): IterableIterator<[string, T]> {
    return this.#store.entries();
  }

  get size(): number {
    return this.#store.size;
  }

  synced(): boolean {
    return this.#synced;
  }

  /** Resolves when synced (or stopped), or after `timeoutMs`; true when synced. */
  async waitForSync(timeoutMs: number): Promise<boolean> {
    if (this.#synced) return true;
    await new Promise<void>((resolve) => {
      const timer = this.#timers.after(timeoutMs, resolve);
      this.#syncedWaiters.push(() => {
        timer.cancel();
        resolve();
      });
    });
    return this.#synced;
  }

  status(): ReflectorStatus {
    return { name: this.#o.name, synced: this.#synced, healthy: this.#healthy, lastError: this.#lastError, failures: this.#failures };
  }

  async #run(): Promise<void> {
    const backoff = this.#o.backoff ?? { initialMs: 250, maxMs: 30_000 };
    let goneInARow = 0;
    while (!this.#stopped) {
      try {
        if (this.#rv === '' || this.#relistRequested) {
          this.#relistRequested = false;
          await this.#list();
        }
        const started = this.#clock.now();
        const outcome = await this.#watchOnce();
        if (this.#stopped) break;
        if (outcome === 'gone') {
          this.#o.log.info({ informer: this.#o.name }, 'watch history expired (410); relisting');
          this.#rv = '';
          // A fresh list that is already too old again means a confused server: slow down.
          if (goneInARow++ > 0) await this.#sleep(this.#jitter(backoff.maxMs));
          continue;
        }
        goneInARow = 0;
        this.#markHealthy();
        // A watch that ends at once, again and again, must not become a busy loop.
        if (outcome === 'ended' && this.#clock.now() - started < 1000) await this.#sleep(backoff.initialMs);
      } catch (err) {
        if (this.#stopped) break;
        // Doubling per consecutive failure; any success (list, watch connected) resets it.
        const delay = Math.min(backoff.initialMs * 2 ** Math.min(this.#failures, 20), backoff.maxMs);
        this.#markFailed(err, delay);
        await this.#sleep(this.#jitter(delay));
      }
    }
  }

  async #list(): Promise<void> {
    const next = new Map<string, T>();
    let token: string | undefined;
    let rv = '';
    do {
      const page = await this.#o.list(token, this.#o.pageSize ?? 500);
      if (token === undefined) rv = page.resourceVersion;
      for (const obj of page.items) {
        const value = this.#o.keep(obj);
        if (value !== undefined) next.set(keyOf(obj.metadata?.namespace, obj.metadata?.name ?? ''), value);
      }
      token = page.continue === '' ? undefined : page.continue;
    } while (token !== undefined && !this.#stopped);
    const previous = this.#store;
    this.#store = next;
    this.#rv = rv;
    if (this.#o.onChange) {
      for (const [k, v] of previous) if (!next.has(k)) this.#o.onChange(k, undefined, v);
      for (const [k, v] of next) if (previous.get(k) !== v) this.#o.onChange(k, v, previous.get(k));
    }
    const first = !this.#synced;
    this.#synced = true;
    this.#markHealthy();
    if (first) {
      this.#o.log.info({ informer: this.#o.name, objects: next.size }, 'informer synced');
      for (const w of this.#syncedWaiters.splice(0)) w();
    }
  }

  /** One watch stream: 'ended' (cleanly, resume), 'gone' (relist), 'aborted'; rejects on failure. */
  #watchOnce(): Promise<'ended' | 'gone' | 'aborted'> {
    return new Promise((resolve, reject) => {
      let gone = false;
      let failure: Error | undefined;
      let settled = false;
      const local = new AbortController();
      this.#abort = local;
      const finish = (err: unknown): void => {
        if (settled) return;
        settled = true;
        if (this.#abort === local) this.#abort = undefined;
        if (local.signal.aborted) resolve('aborted');
        else if (gone || statusOf(err) === 410) resolve('gone');
        else if (failure) reject(failure);
        else if (err) reject(err instanceof Error ? err : new Error(describe(err)));
        else resolve('ended');
      };
      const timeout = this.#o.watchTimeoutSeconds ?? Math.floor(300 * (1 + this.#timers.random()));
      const query = { ...this.#o.query, resourceVersion: this.#rv, allowWatchBookmarks: 'true', timeoutSeconds: String(timeout) };
      const onEvent = (type: string, obj: unknown): void => {
        if (settled || local.signal.aborted) return;
        if (type === 'ERROR') {
          const code = isRecord(obj) && typeof obj.code === 'number' ? obj.code : undefined;
          if (code === 410) gone = true;
          else failure = new Error(`watch error event: ${isRecord(obj) && typeof obj.message === 'string' ? obj.message : JSON.stringify(obj)}`);
          return;
        }
        if (!isRecord(obj)) return;
        const o = obj as KubernetesObject;
        const rv = o.metadata?.resourceVersion;
        if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.#apply(type, o);
        if (rv) this.#rv = rv;
      };
      this.#o.watch.watch(this.#o.path, query, onEvent, finish).then(
        (controller) => {
          if (settled) return;
          // Connected: the API answers again.
          this.#markHealthy();
          // Abort the request along with our own controller (stop, resync).
          if (local.signal.aborted) controller.abort();
          else local.signal.addEventListener('abort', () => controller.abort(), { once: true });
        },
        (err: unknown) => finish(err ?? new Error('watch failed')),
      );
    });
  }

  #apply(type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: KubernetesObject): void {
    const key = keyOf(obj.metadata?.namespace, obj.metadata?.name ?? '');
    const previous = this.#store.get(key);
    const value = type === 'DELETED' ? undefined : this.#o.keep(obj);
    if (value === undefined) {
      if (previous === undefined) return;
      this.#store.delete(key);
    } else this.#store.set(key, value);
    this.#o.onChange?.(key, value, previous);
  }

  #markHealthy(): void {
    if (!this.#healthy) this.#o.log.info({ informer: this.#o.name, failures: this.#failures }, 'Kubernetes API reachable again');
    this.#healthy = true;
    this.#lastError = undefined;
    this.#failures = 0;
  }

  #markFailed(err: unknown, retryMs: number): void {
    const message = describe(err);
    this.#failures += 1;
    // Log the first failure and every change of error at warn, the repeats at debug.
    const level = this.#healthy || message !== this.#lastError ? 'warn' : 'debug';
    this.#o.log[level](
      { informer: this.#o.name, error: message, failures: this.#failures, retryMs, synced: this.#synced },
      this.#synced ? 'Kubernetes API unreachable; serving from the last known cache' : 'Kubernetes API unreachable; cache not synced yet',
    );
    this.#healthy = false;
    this.#lastError = message;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.#timers.after(ms, () => {
        this.#wake = undefined;
        resolve();
      });
      this.#wake = () => {
        timer.cancel();
        this.#wake = undefined;
        resolve();
      };
    });
  }

  /** ±20% around `ms`, so replicas that failed together do not retry together. */
  #jitter(ms: number): number {
    return Math.round(ms * (0.8 + this.#timers.random() * 0.4));
  }
}


/**
 * A cache fed by one Reflector: the lifecycle and health calls every informer-style
 * cache exposes, in one place. Subclasses add their lookups on `reflector`.
 */
export class ReflectedCache<T> {
  protected readonly reflector: Reflector<T>;

  constructor(options: ReflectorOptions<T>) {
    this.reflector = new Reflector<T>(options);
  }

  start(): this {
    this.reflector.start();
    return this;
  }

  stop(): Promise<void> {
    return this.reflector.stop();
  }

  synced(): boolean {
    return this.reflector.synced();
  }

  status(): ReflectorStatus {
    return this.reflector.status();
  }

  /** Resolves true once the first list is in, false after `timeoutMs` without it. */
  waitForSync(timeoutMs: number): Promise<boolean> {
    return this.reflector.waitForSync(timeoutMs);
  }
}
