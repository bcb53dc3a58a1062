/**
 * The lifecycle of `serve`'s components, in one place. Each component (the Kubernetes
 * caches, verification, the report, the copy queue, certificates, the servers) implements
 * {@link Component}; the {@link Runtime}
 *
 * - starts them in the order added (a failure stops those already started, in reverse);
 * - applies a reloaded config to all or to none: every component first *prepares* the
 *   new config (reads its files, checks what it cannot apply) without changing anything,
 *   then, only when none had a problem, every one *commits*. One reload, one
 *   `mirrorgate_config_reloads_total{result}` and one log line, with the reason;
 * - collects what degrades readiness;
 * - stops them in reverse order, each on its own (one that fails is logged, the others
 *   still stop), once.
 *
 * The config the admission path reads is itself a component ({@link LiveConfig}): the
 * first to commit, so no admission sees the new rules before the rest of the config is in
 * force.
 */
import type { Config } from './config/schema.js';
import type { ConfigSource } from './config/watch.js';
import { messageOf } from './errors.js';

/** What a component says about a new config: ready to apply it, or why it cannot. */
export type Prepared = { readonly commit: () => void } | { readonly problems: readonly string[] };

/** Nothing to apply (the component does not depend on what changed). */
export const NOTHING_TO_APPLY: Prepared = { commit: () => undefined };

export interface Component {
  /** In logs and in problems (`verification: ...`). */
  readonly name: string;
  /** Start: may fail (the runtime then stops what started before it). */
  start?(): Promise<void> | void;
  /**
   * Check `next` and get everything ready to apply it (read files, build settings) without
   * changing what is in force; `commit` then applies it and must not fail. Problems reject
   * the whole reload: nothing changes anywhere.
   */
  prepare?(next: Config, current: Config): Promise<Prepared> | Prepared;
  /** Why this component is serving in a reduced way right now (readiness' degraded list). */
  degraded?(): readonly string[];
  /** Release everything; called once, in reverse start order. */
  stop?(): Promise<void> | void;
}

/** The logger subset the runtime uses. */
export interface RuntimeLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface RuntimeDeps {
  readonly log: RuntimeLog;
  /** `mirrorgate_config_reloads_total`. */
  readonly reloads: { inc(labels: { result: 'success' | 'failure' }): void };
}

/** How a reload ended. */
export type ReloadOutcome = { readonly ok: true } | { readonly ok: false; readonly problems: readonly string[] };

export class Runtime {
  readonly #deps: RuntimeDeps;
  readonly #components: Component[] = [];
  readonly #started: Component[] = [];
  readonly #live: LiveConfig;
  /** Reloads run one after the other, in the order asked. */
  #reloading: Promise<unknown> = Promise.resolve();
  #stopping: Promise<void> | undefined;

  constructor(initial: Config, deps: RuntimeDeps) {
    this.#deps = deps;
    this.#live = new LiveConfig(initial);
    this.#components.push(this.#live);
  }

  /** The config in force: what admissions read. */
  get config(): ConfigSource {
    return this.#live;
  }

  /** Add a component; they start in this order and stop in the reverse. */
  add<C extends Component>(component: C): C {
    this.#components.push(component);
    return component;
  }

  /** Start every component not started yet, in order. On a failure, stop those started and rethrow. */
  async start(): Promise<void> {
    for (const c of this.#components) {
      if (this.#started.includes(c)) continue;
      try {
        await c.start?.();
      } catch (err) {
        await this.stop();
        throw err;
      }
      this.#started.push(c);
    }
  }

  /**
   * Apply `next` to every component, or to none. Never rejects. Problems from any
   * component (or a prepare that throws) leave everything as it was.
   */
  reload(next: Config, reason: string): Promise<ReloadOutcome> {
    const run = this.#reloading.then(() => this.#reload(next, reason));
    this.#reloading = run;
    return run;
  }

  /** Count and log a config that never got as far as the components (unreadable, invalid). */
  rejected(reason: string, problems: readonly string[]): void {
    this.#deps.reloads.inc({ result: 'failure' });
    this.#deps.log.error({ reason, problems }, 'config rejected; the last good config stays in force');
  }

  async #reload(next: Config, reason: string): Promise<ReloadOutcome> {
    if (this.#stopping) return { ok: false, problems: ['shutting down'] };
    const current = this.#live.current();
    const commits: (() => void)[] = [];
    const problems: string[] = [];
    for (const c of this.#components) {
      if (c.prepare === undefined) continue;
      try {
        const prepared = await c.prepare(next, current);
        if ('problems' in prepared) problems.push(...prepared.problems.map((p) => `${c.name}: ${p}`));
        else commits.push(prepared.commit);
      } catch (err) {
        problems.push(`${c.name}: ${messageOf(err)}`);
      }
    }
    if (problems.length > 0) {
      this.rejected(reason, problems);
      return { ok: false, problems };
    }
    // Commits are synchronous and run back to back: no admission runs in between.
    for (const commit of commits) commit();
    this.#deps.reloads.inc({ result: 'success' });
    this.#deps.log.info({ reason, mode: next.mode, rules: next.ruleSet.rules.length }, 'config reloaded');
    return { ok: true };
  }

  /** Every started component's degraded reasons, in start order. */
  degraded(): string[] {
    const out: string[] = [];
    for (const c of this.#started) {
      try {
        out.push(...(c.degraded?.() ?? []));
      } catch (err) {
        out.push(`${c.name}: ${messageOf(err)}`);
      }
    }
    return out;
  }

  /** Stop the started components in reverse order, each on its own. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      for (const c of [...this.#started].reverse()) {
        try {
          await c.stop?.();
        } catch (err) {
          this.#deps.log.error({ component: c.name, err }, 'component failed to stop cleanly');
        }
      }
      this.#started.length = 0;
    })();
    return this.#stopping;
  }
}

/** The config admissions read: swapped by the first commit of a reload. */
export class LiveConfig implements Component, ConfigSource {
  readonly name = 'config';
  #config: Config;

  constructor(initial: Config) {
    this.#config = initial;
  }

  current(): Config {
    return this.#config;
  }

  prepare(next: Config): Prepared {
    return { commit: () => (this.#config = next) };
  }
}
