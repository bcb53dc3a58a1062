/**
 * Verification as the composition root wires it: a registry client and a verifier, built
 * once some rule says `verify: true`, their endpoint settings re-read on each config
 * reload. The verifier handed to the mutate route is a stable facade, so a reload can turn
 * verification on without rebuilding the server.
 */
import type { Config } from '../config/schema.js';
import type { VerifyAnswers } from '../core/pod.js';
import type { Metrics } from '../metrics.js';
import { RegistryClient, type RegistryLog } from '../registry/client.js';
import type { CloudSources } from '../registry/cloud/sources.js';
import type { SecretReader, Timers, Verifier } from '../ports.js';
import { loadEndpoints, type EndpointTable } from './endpoints.js';
import { RegistryVerifier, type ManifestChecker, type VerifierLog } from './verifier.js';
import type { Prepared } from '../runtime.js';
import { messageOf } from '../errors.js';

export interface VerificationDeps {
  readonly metrics: Metrics;
  readonly log: VerifierLog & RegistryLog & { error(obj: object, msg: string): void };
  /** Monotonic milliseconds. */
  readonly now: () => number;
  /** Reads dockerconfigjson Secrets; undefined with `--no-kube`. */
  readonly secrets?: SecretReader | undefined;
  /** Sources for `auth: {google | aws | azure}` (mirrorgate's own cloud identity). */
  readonly cloud?: CloudSources | undefined;
  /** Timers of the background refresh of cached answers (default: real ones). */
  readonly timers?: Timers | undefined;
  /** A client to use instead of a new RegistryClient (tests). */
  readonly client?: (ManifestChecker & { close?(): void }) | undefined;
}

/** True when some rule makes its rewrites conditional on the mirror holding the image. */
export function needsVerification(config: Config): boolean {
  return config.ruleSet.rules.some((r) => r.verify);
}

/** Hosts of `verify: true` targets: their check counters are pre-set to zero. */
function verifiedRegistries(config: Config): string[] {
  return config.ruleSet.rules.filter((r) => r.verify).flatMap((r) => r.targets.map((t) => t.to.host));
}

export class Verification {
  readonly #deps: VerificationDeps;
  #client: (ManifestChecker & { close?(): void }) | undefined;
  #verifier: RegistryVerifier | undefined;
  #config: Config;
  #endpoints: EndpointTable = new Map();

  /** How to reach each configured registry (CA, auth): shared with background copies. */
  get endpoints(): EndpointTable {
    return this.#endpoints;
  }

  /** Use {@link Verification.start}. */
  private constructor(config: Config, deps: VerificationDeps) {
    this.#config = config;
    this.#deps = deps;
  }

  /**
   * Build the client and verifier when the config verifies anything; otherwise only the
   * facade (answers 'unreachable' if ever asked, which keeps the originals).
   *
   * @throws ConfigError when a `registries:` CA or auth file cannot be read (startup fails,
   *   as for any config error).
   */
  static async start(config: Config, deps: VerificationDeps): Promise<Verification> {
    const v = new Verification(config, deps);
    if (needsVerification(config)) v.#build(config, await loadEndpoints(config.registries, { secrets: deps.secrets, log: deps.log, cloud: deps.cloud }));
    return v;
  }

  /** What the mutate route calls. */
  readonly verifier: Verifier = {
    verify: (targets: readonly string[], budgetMs: number, opts?: { platforms?: readonly string[] | undefined }): Promise<VerifyAnswers> => {
      if (this.#verifier) return this.#verifier.verify(targets, budgetMs, opts);
      return Promise.resolve({
        outcomes: new Map(targets.map((t) => [t, 'unreachable'] as const)),
        onUnreachable: this.#config.verification.onUnreachable,
      });
    },
  };

  /**
   * Get a reloaded config ready: re-read CA files, auth files and Secrets. Nothing changes
   * until `commit`; a file that cannot be read is a problem (the reload is rejected and
   * the previous settings stay in force). Never throws.
   */
  async prepare(config: Config): Promise<Prepared> {
    if (!needsVerification(config) && this.#verifier === undefined) return { commit: () => (this.#config = config) };
    let endpoints: EndpointTable;
    try {
      endpoints = await loadEndpoints(config.registries, { secrets: this.#deps.secrets, log: this.#deps.log, cloud: this.#deps.cloud });
    } catch (err) {
      return { problems: [messageOf(err)] };
    }
    return {
      commit: () => {
        this.#config = config;
        if (this.#verifier === undefined) this.#build(config, endpoints);
        else {
          this.#endpoints = endpoints;
          this.#verifier.configure(config.verification, endpoints, verifiedRegistries(config));
        }
      },
    };
  }

  /** Prepare and commit at once (a config that only this component reads); false when rejected. */
  async reload(config: Config): Promise<boolean> {
    const prepared = await this.prepare(config);
    if ('problems' in prepared) {
      this.#deps.log.error({ problems: prepared.problems }, 'registry settings rejected; the previous ones stay in force');
      return false;
    }
    prepared.commit();
    return true;
  }

  /** Forget a cached answer (after a copy made the image present). */
  forget(target: string): void {
    this.#verifier?.forget(target);
  }

  /** Resolves once no background refresh is queued or in flight (tests). */
  refreshesSettled(): Promise<void> {
    return this.#verifier?.refreshesSettled() ?? Promise.resolve();
  }

  /** Stop the background refresh and drop the client's pooled connections. */
  close(): void {
    this.#verifier?.close();
    this.#client?.close?.();
  }

  #build(config: Config, endpoints: EndpointTable): void {
    const { metrics, log, now } = this.#deps;
    this.#endpoints = endpoints;
    this.#client = this.#deps.client ?? new RegistryClient({ now, log });
    this.#verifier = new RegistryVerifier({
      client: this.#client,
      metrics,
      log,
      now,
      settings: config.verification,
      endpoints,
      registries: verifiedRegistries(config),
      timers: this.#deps.timers,
    });
  }
}
