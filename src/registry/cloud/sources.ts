/**
 * The cloud credential sources of a process, one per registry and setting, kept across
 * config reloads so a reload does not throw away tokens that are still good.
 */
import type { RegistryAuthSource } from '../../config/schema.js';
import type { CredentialLog, CredentialSource } from '../credentials.js';
import { awsSource } from './aws.js';
import { azureSource } from './azure.js';
import { googleSource } from './google.js';

export type CloudAuth = Extract<RegistryAuthSource, { google: unknown } | { aws: unknown } | { azure: unknown }>;

export interface CloudSourcesDeps {
  /** The process environment, where each cloud's identity wiring puts its settings. */
  env: Readonly<Record<string, string | undefined>>;
  /** Milliseconds (monotonic is fine: only differences are used). */
  now: () => number;
  log?: CredentialLog | undefined;
  readFile?: (path: string) => Promise<string>;
  /** Per request to an identity service (default 10 s). */
  timeoutMs?: number;
}

/** True for `{google}`, `{aws}` and `{azure}`. */
export function isCloudAuth(a: RegistryAuthSource | undefined): a is CloudAuth {
  return a !== undefined && ('google' in a || 'aws' in a || 'azure' in a);
}

export class CloudSources {
  readonly #deps: CloudSourcesDeps;
  readonly #sources = new Map<string, CredentialSource>();

  constructor(deps: CloudSourcesDeps) {
    this.#deps = deps;
  }

  /** The source for `host` with these settings: the same object for the same pair. */
  sourceFor(host: string, auth: CloudAuth): CredentialSource {
    const key = JSON.stringify([host, auth]);
    let s = this.#sources.get(key);
    if (!s) {
      const d = { ...this.#deps, registry: host };
      s = 'google' in auth ? googleSource(d) : 'aws' in auth ? awsSource(auth.aws, d) : azureSource(auth.azure, d);
      this.#sources.set(key, s);
    }
    return s;
  }

  /** Forget the sources no longer configured (after a reload). */
  retain(keep: Iterable<CredentialSource>): void {
    const live = new Set(keep);
    for (const [k, s] of this.#sources) if (!live.has(s)) this.#sources.delete(k);
  }
}
