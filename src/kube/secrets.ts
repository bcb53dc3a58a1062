/**
 * Reading registry credentials (`registries.*.auth.secret`) from dockerconfigjson
 * Secrets in the webhook's own namespace.
 */
import type { CoreV1Api } from '@kubernetes/client-node';
import type { SecretReader } from '../ports.js';
import { statusOf } from './errors.js';


/** A SecretReader over the API: undefined when the Secret does not exist. */
export function dockerConfigReader(core: CoreV1Api, namespace: string): SecretReader {
  return {
    async readDockerConfig(name: string): Promise<string | undefined> {
      try {
        const s = await core.readNamespacedSecret({ name, namespace });
        const data = s.data ?? {};
        const encoded = data['.dockerconfigjson'] ?? data['.dockercfg'];
        if (encoded === undefined) {
          throw new Error(`Secret ${namespace}/${name} has no .dockerconfigjson (type ${s.type ?? 'unknown'})`);
        }
        const text = Buffer.from(encoded, 'base64').toString('utf8');
        // The legacy .dockercfg is the `auths` map itself.
        return data['.dockerconfigjson'] !== undefined ? text : JSON.stringify({ auths: JSON.parse(text) as unknown });
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw err;
      }
    },
  };
}
