/**
 * Endpoint settings for registry checks, from the config's `registries:` section: the CA
 * file and the credentials (a docker config file, or a dockerconfigjson Secret read through
 * the Kubernetes API) are read here, at startup and on each config reload, never on the
 * admission path.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { ConfigError, type RegistrySettings } from '../config/schema.js';
import type { Problem } from '../core/rules.js';
import type { RegistryEndpoint } from '../registry/client.js';
import { registrySettingsKey } from '../core/reference.js';
import { credentialsFromDockerConfig } from '../registry/docker-config.js';
import { isCloudAuth, type CloudSources } from '../registry/cloud/sources.js';
import type { SecretReader } from '../ports.js';
import { messageOf, MirrorgateError } from '../errors.js';

/** The subset of a pino logger used here. */
export interface EndpointLog {
  warn(obj: object, msg: string): void;
}

/** Registry settings key ({@link registrySettingsKey}) → how to reach it. */
export type EndpointTable = ReadonlyMap<string, RegistryEndpoint>;

export interface LoadEndpointsDeps {
  /** Without it, `auth: {secret}` logs a warning and checks go anonymous. */
  readonly secrets?: SecretReader | undefined;
  readonly log: EndpointLog;
  /** For tests; defaults to reading UTF-8 files. */
  readonly readFile?: (path: string) => Promise<string>;
  /** Sources for `auth: {google | aws | azure}`; without them such registries go anonymous, with a warning. */
  readonly cloud?: CloudSources | undefined;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Resolve every `registries:` entry to a {@link RegistryEndpoint}: read the CA file (PEM
 * certificates, trusted in addition to Node's roots) and the credentials for that host.
 * A Secret that is missing, unreadable or has no entry for the host is a warning (checks
 * go anonymous; the Secret may appear later and is read again on the next reload).
 *
 * @throws ConfigError listing every file that cannot be read or is not what it should be
 *   (`registries["mirror.example.com"].ca: cannot read ...`). Messages never quote file
 *   contents, which may hold secrets.
 */
export async function loadEndpoints(registries: Readonly<Record<string, RegistrySettings>>, deps: LoadEndpointsDeps): Promise<EndpointTable> {
  const read = deps.readFile ?? ((p: string) => fsReadFile(p, 'utf8'));
  const problems: Problem[] = [];
  const out = new Map<string, RegistryEndpoint>();
  await Promise.all(
    Object.entries(registries).map(async ([host, s]) => {
      const at = `registries[${JSON.stringify(host)}]`;
      const endpoint: RegistryEndpoint = { host, insecure: s.insecure };
      if (s.ca !== undefined) {
        try {
          const pems = (await read(s.ca)).match(PEM_CERT);
          if (pems === null) problems.push({ path: `${at}.ca`, message: `${s.ca} holds no PEM certificate` });
          else endpoint.ca = pems;
        } catch (err) {
          problems.push({ path: `${at}.ca`, message: `cannot read ${s.ca}: ${reason(err)}` });
        }
      }
      if (isCloudAuth(s.auth)) {
        // Nothing is fetched here: the first request that needs credentials asks for them.
        if (deps.cloud) endpoint.credentials = deps.cloud.sourceFor(host, s.auth);
        else deps.log.warn({ registry: host }, 'cloud registry credentials are not available here; checks go anonymous');
      } else if (s.auth !== undefined && 'file' in s.auth) {
        const file = s.auth.file;
        try {
          const auth = credentialsFromDockerConfig(await read(file), host);
          if (auth) endpoint.auth = auth;
          else deps.log.warn({ registry: host, file }, 'registry auth file has no entry for this registry; checks go anonymous');
        } catch (err) {
          problems.push({ path: `${at}.auth.file`, message: `cannot use ${file}: ${reason(err)}` });
        }
      } else if (s.auth !== undefined && 'secret' in s.auth) {
        const secret = s.auth.secret;
        if (deps.secrets === undefined) {
          deps.log.warn({ registry: host, secret }, 'registry auth Secret cannot be read without Kubernetes access (--no-kube); checks go anonymous');
        } else {
          try {
            const json = await deps.secrets.readDockerConfig(secret);
            const auth = json === undefined ? undefined : credentialsFromDockerConfig(json, host);
            if (auth) endpoint.auth = auth;
            else {
              const why = json === undefined ? 'registry auth Secret not found' : 'registry auth Secret has no entry for this registry';
              deps.log.warn({ registry: host, secret }, `${why}; checks go anonymous`);
            }
          } catch (err) {
            deps.log.warn({ registry: host, secret, error: reason(err) }, 'registry auth Secret unreadable; checks go anonymous');
          }
        }
      }
      out.set(host, endpoint);
    }),
  );
  if (problems.length > 0) {
    problems.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    throw new ConfigError('registries', problems);
  }
  deps.cloud?.retain([...out.values()].flatMap((e) => (e.credentials ? [e.credentials] : [])));
  return out;
}

/**
 * The endpoint for a registry host as an image reference writes it: its configured settings
 * (looked up case-insensitively, Docker Hub under any of its names), else HTTPS with
 * Node's roots, anonymous.
 */
export function endpointFor(table: EndpointTable, host: string): RegistryEndpoint {
  return table.get(registrySettingsKey(host)) ?? { host };
}

/** A system error's code (ENOENT, ...); for anything else, ours included, the message. */
function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!(err instanceof MirrorgateError) && typeof e?.code === 'string') return e.code;
  return messageOf(err);
}
