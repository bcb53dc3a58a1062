/**
 * Credentials from a docker config JSON, the payload of a `kubernetes.io/dockerconfigjson`
 * Secret (`{"auths": {...}}`) or of the older `kubernetes.io/dockercfg` (the same map at
 * the top level). See https://kubernetes.io/docs/concepts/containers/images/#config-json
 */
import { canonicalRegistryHost, type RegistryAuth } from './auth.js';
import { isRecord } from '../core/json.js';

interface Entry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
}


function entryCredentials(e: Entry): RegistryAuth | undefined {
  if (typeof e.auth === 'string' && e.auth !== '') {
    const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof e.username === 'string' && e.username !== '' && typeof e.password === 'string') {
    return { username: e.username, password: e.password };
  }
  return undefined;
}

/** `*.example.com` matches `a.example.com` (one label per `*`, as the kubelet matches), never `example.com`. */
function wildcardMatches(pattern: string, host: string): boolean {
  const [pHost, pPort] = splitPort(pattern);
  const [hHost, hPort] = splitPort(host);
  if (pPort !== hPort) return false;
  const p = pHost.split('.');
  const h = hHost.split('.');
  return p.length === h.length && p.every((label, i) => label === '*' || label === h[i]);
}

function splitPort(h: string): [string, string] {
  const m = /^(.*?)(?::(\d+))?$/.exec(h);
  return [m?.[1] ?? h, m?.[2] ?? ''];
}

/**
 * Find the credentials for registry `host` (`host[:port]` as in an image reference) in a
 * docker config JSON. Keys may be bare hosts or URLs (`https://index.docker.io/v1/`);
 * `docker.io` and its aliases are one registry; an exact key wins over a `*.` wildcard
 * key; ports must match. An entry's `auth` (base64 `user:password`) wins over
 * `username`/`password`, as in the docker CLI. Returns `undefined` when no entry matches.
 *
 * @throws Error when `json` is not a JSON object. The message never quotes the input,
 *   which holds secrets.
 */
export function credentialsFromDockerConfig(json: string, host: string): RegistryAuth | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    // The parser's message quotes the input; keep secrets out of logs.
    throw new Error('docker config: not valid JSON');
  }
  if (!isRecord(parsed)) throw new Error('docker config: not a JSON object');
  const auths = 'auths' in parsed ? parsed.auths : parsed;
  if (!isRecord(auths)) throw new Error('docker config: "auths" is not an object');
  const target = canonicalRegistryHost(host);
  let wildcard: RegistryAuth | undefined;
  for (const [key, value] of Object.entries(auths)) {
    if (!isRecord(value)) continue;
    const k = canonicalRegistryHost(key);
    if (k === target) {
      const c = entryCredentials(value);
      if (c) return c;
    } else if (!wildcard && k.startsWith('*.') && wildcardMatches(k, target)) {
      wildcard = entryCredentials(value);
    }
  }
  return wildcard;
}
