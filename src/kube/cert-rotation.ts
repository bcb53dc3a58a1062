/**
 * Self-managed certificates in the cluster: the Secret `mirrorgate-tls` holds the CA and
 * the serving certificate, the MutatingWebhookConfiguration's caBundle holds the CAs the
 * API server trusts. Every replica reconciles both periodically; all writes are
 * resourceVersion-checked, so replicas never undo each other.
 *
 * CA rotation keeps an overlap so that no API server ever sees a certificate it does
 * not trust:
 *   1. stage:   a new CA is added to the Secret (ca-next) and to the caBundle (old + new);
 *   2. promote: after `overlapMs`, the serving certificate is re-issued by the new CA and
 *               the old CA moves to ca-previous (still in the caBundle);
 *   3. retire:  once every live replica reports serving the new certificate, the old CA
 *               leaves the Secret and the caBundle.
 * The serving certificate alone is renewed `renewBeforeDays` before it expires.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { AdmissionregistrationV1Api, CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1MutatingWebhookConfiguration, type V1Secret } from '@kubernetes/client-node';
import { createCa, createServingCert, type ServingNames } from '../certs.js';
import type { Logger } from '../logger.js';
import {
  ANNOTATION_STAGED,
  desiredBundle,
  KEYS,
  planRotation,
  SERVED_KEEP_MS,
  SERVED_PREFIX,
  servedBy,
  servedKey,
  splitPem,
  TLS_SECRET,
  type CertFacts,
  type RotationFacts,
  type RotationPolicy,
  type RotationStep,
} from '../core/rotation.js';
import { statusOf } from './errors.js';

export interface SecretState {
  readonly data: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly resourceVersion: string;
}

/** The Secret and the caBundle as read. */
export interface CertState {
  readonly secret: SecretState | undefined;
  /** The caBundle as PEM, '' when empty. */
  readonly caBundle: string;
}

export type { RotationPolicy, RotationStep };

function x509(pem: string | undefined): X509Certificate | undefined {
  if (pem === undefined || pem.trim() === '') return undefined;
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

/** SHA-256 fingerprint of a PEM certificate, as recorded in served annotations ('' when unreadable). */
export function fingerprint(pem: string): string {
  return (x509(pem)?.fingerprint256 ?? '').replace(/:/g, '').toLowerCase();
}

/** Whether `keyPem` is the private key of `cert` (a TLS context cannot be built otherwise). */
function keyMatches(cert: X509Certificate, keyPem: string | undefined): boolean {
  if (keyPem === undefined) return false;
  try {
    return cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

function covers(cert: X509Certificate, names: ServingNames): boolean {
  return names.dnsNames.every((n) => cert.checkHost(n, { subject: 'never' }) !== undefined) && names.ipAddresses.every((ip) => cert.checkIP(ip) !== undefined);
}

function facts(cert: X509Certificate): CertFacts {
  return { fingerprint: cert.fingerprint256.replace(/:/g, '').toLowerCase(), validFrom: cert.validFrom, validTo: cert.validTo };
}

/** Read the certificates of the state into the facts the core's planner decides on. */
export function inspectCerts(state: CertState, names: ServingNames): RotationFacts {
  const bundleFingerprints = splitPem(state.caBundle).map(fingerprint);
  const s = state.secret;
  if (s === undefined) return { secret: undefined, bundleFingerprints };
  const ca = x509(s.data[KEYS.ca]);
  const next = x509(s.data[KEYS.next]);
  const cert = x509(s.data[KEYS.cert]);
  const desired = desiredBundle(s.data);
  return {
    bundleFingerprints,
    secret: {
      annotations: s.annotations,
      ca: ca === undefined ? undefined : facts(ca),
      hasCaKey: s.data[KEYS.caKey] !== undefined,
      next: next === undefined ? undefined : facts(next),
      hasPrevious: s.data[KEYS.previous] !== undefined,
      serving:
        cert === undefined
          ? undefined
          : { ...facts(cert), keyMatches: keyMatches(cert, s.data[KEYS.key]), issuedByCa: ca !== undefined && cert.checkIssued(ca) && cert.verify(ca.publicKey), coversNames: covers(cert, names) },
      desiredBundle: desired,
      desiredFingerprints: splitPem(desired).map(fingerprint),
    },
  };
}

/** New Secret contents for a step (keys are generated here; the write is the caller's). */
export function applyStep(step: RotationStep, s: SecretState | undefined, p: RotationPolicy): { data: Record<string, string>; annotations: Record<string, string> } {
  const data: Record<string, string> = { ...(s?.data ?? {}) };
  const annotations: Record<string, string> = { ...(s?.annotations ?? {}) };
  const serve = (caPem: string, caKey: string): void => {
    const leaf = createServingCert({ cert: caPem, key: caKey }, p.names, { now: p.now });
    data[KEYS.cert] = leaf.cert;
    data[KEYS.key] = leaf.key;
  };
  switch (step.kind) {
    case 'create': {
      const ca = createCa({ commonName: 'mirrorgate-ca', now: p.now });
      for (const k of [KEYS.next, KEYS.nextKey, KEYS.previous]) delete data[k];
      delete annotations[ANNOTATION_STAGED];
      data[KEYS.ca] = ca.cert;
      data[KEYS.caKey] = ca.key;
      serve(ca.cert, ca.key);
      break;
    }
    case 'renew-serving':
      serve(data[KEYS.ca] as string, data[KEYS.caKey] as string);
      break;
    case 'stage-next-ca': {
      const ca = createCa({ commonName: 'mirrorgate-ca', now: p.now });
      data[KEYS.next] = ca.cert;
      data[KEYS.nextKey] = ca.key;
      annotations[ANNOTATION_STAGED] = p.now.toISOString();
      break;
    }
    case 'promote-next-ca': {
      const caPem = data[KEYS.next] as string;
      const caKey = data[KEYS.nextKey] as string;
      data[KEYS.previous] = data[KEYS.ca] as string;
      data[KEYS.ca] = caPem;
      data[KEYS.caKey] = caKey;
      delete data[KEYS.next];
      delete data[KEYS.nextKey];
      delete annotations[ANNOTATION_STAGED];
      serve(caPem, caKey);
      break;
    }
    case 'retire-previous-ca':
      delete data[KEYS.previous];
      break;
    case 'none':
    case 'publish-bundle':
      break;
  }
  return { data, annotations };
}

/** The Secret and the webhook configuration, as the reconciler needs them. */
export interface CertStore {
  readSecret(): Promise<SecretState | undefined>;
  /** Create (resourceVersion undefined) or replace; throws ConflictError-like errors with code 409. */
  writeSecret(data: Record<string, string>, annotations: Record<string, string>, resourceVersion: string | undefined): Promise<void>;
  readCaBundle(): Promise<string>;
  writeCaBundle(bundlePem: string): Promise<void>;
}


const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');

/** CertStore over the real API. */
export function kubeCertStore(kc: KubeConfig, opts: { namespace: string; secret?: string; webhook: string }): CertStore {
  const core = kc.makeApiClient(CoreV1Api);
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  const name = opts.secret ?? TLS_SECRET;
  const namespace = opts.namespace;
  const readWebhookConfiguration = async (): Promise<V1MutatingWebhookConfiguration> => {
    try {
      return await admission.readMutatingWebhookConfiguration({ name: opts.webhook });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      throw new Error(`MutatingWebhookConfiguration ${opts.webhook} not found: apply the manifests first (or name it with --webhook-name)`, { cause: err });
    }
  };
  // The manifests create the Secret empty (Opaque), so that mirrorgate needs no right to
  // create Secrets; a replace keeps the type and the labels it was created with (helm's
  // ownership labels among them).
  // A Secret holding keys mirrorgate never writes was made by someone else: never overwritten.
  let found: { type: string | undefined; labels: Record<string, string>; foreign: string[] } | undefined;
  const ours = new Set<string>(Object.values(KEYS));
  return {
    async readSecret() {
      try {
        const s = await core.readNamespacedSecret({ name, namespace });
        found = { type: s.type, labels: { ...(s.metadata?.labels ?? {}) }, foreign: Object.keys(s.data ?? {}).filter((k) => !ours.has(k)) };
        const data = Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, unb64(v)]));
        return { data, annotations: { ...(s.metadata?.annotations ?? {}) }, resourceVersion: s.metadata?.resourceVersion ?? '' };
      } catch (err) {
        if (statusOf(err) === 404) return undefined;
        throw err;
      }
    },
    async writeSecret(data, annotations, resourceVersion) {
      const existing = resourceVersion === undefined ? undefined : found;
      if (existing !== undefined && existing.foreign.length > 0) {
        throw new Error(`Secret ${namespace}/${name} holds keys mirrorgate does not write (${existing.foreign.join(', ')}): not overwriting it; remove it, or apply the manifests' empty one`);
      }
      const body: V1Secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        type: existing?.type ?? 'kubernetes.io/tls',
        metadata: { name, namespace, resourceVersion, annotations, labels: { ...existing?.labels, 'app.kubernetes.io/name': 'mirrorgate', 'app.kubernetes.io/component': 'certificates' } },
        data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
      };
      if (resourceVersion === undefined) {
        try {
          await core.createNamespacedSecret({ namespace, body });
        } catch (err) {
          if (statusOf(err) !== 403) throw err;
          throw new Error(`Secret ${namespace}/${name} is missing and mirrorgate may not create it: apply the manifests (they create it empty) or create it`, { cause: err });
        }
      } else await core.replaceNamespacedSecret({ name, namespace, body });
    },
    async readCaBundle() {
      const mwc = await readWebhookConfiguration();
      // Every webhook of the configuration must carry the bundle: when they disagree (a
      // webhook added by hand without one), answer '' so that the planner publishes again.
      const bundles = new Set((mwc.webhooks ?? []).map((w) => w.clientConfig.caBundle ?? ''));
      const [only] = bundles;
      return bundles.size === 1 && only ? unb64(only) : '';
    },
    async writeCaBundle(bundlePem) {
      const mwc = await readWebhookConfiguration();
      const webhooks = mwc.webhooks ?? [];
      if (webhooks.length === 0) throw new Error(`MutatingWebhookConfiguration ${opts.webhook} has no webhooks`);
      // A JSON patch with a test on resourceVersion: never overwrite a concurrent change.
      const ops = [
        { op: 'test', path: '/metadata/resourceVersion', value: mwc.metadata?.resourceVersion },
        ...webhooks.map((_w, i) => ({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: b64(bundlePem) })),
      ];
      await admission.patchMutatingWebhookConfiguration({ name: opts.webhook, body: ops }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
    },
  };
}

export interface ReconcileResult {
  readonly steps: RotationStep['kind'][];
  /** The serving certificate the Secret now holds. */
  readonly cert: string | undefined;
  readonly caExpiry: Date | undefined;
  readonly certExpiry: Date | undefined;
}

/** Apply steps until none is left (bounded); conflicts re-read and go on. */
export async function reconcile(store: CertStore, policy: () => RotationPolicy, log: Logger, maxSteps = 8): Promise<ReconcileResult> {
  const steps: RotationStep['kind'][] = [];
  let secret: SecretState | undefined;
  for (let i = 0; i < maxSteps; i++) {
    secret = await store.readSecret();
    const p = policy();
    const step = planRotation(inspectCerts({ secret, caBundle: await store.readCaBundle() }, p.names), p);
    if (step.kind === 'none') break;
    try {
      if (step.kind === 'publish-bundle') await store.writeCaBundle(step.bundle);
      else {
        const next = applyStep(step, secret, p);
        await store.writeSecret(next.data, next.annotations, secret?.resourceVersion);
      }
      steps.push(step.kind);
      log.info({ step: step.kind, reason: 'reason' in step ? step.reason : undefined }, 'certificates: step applied');
    } catch (err) {
      const status = statusOf(err);
      // 409 (conflict, exists), and 422 from the caBundle patch (its resourceVersion test
      // failed): another writer moved first. A 422 on the Secret is a real refusal (say, an
      // existing Secret of another type) and retrying would only repeat it.
      if (status === 409 || (status === 422 && step.kind === 'publish-bundle')) continue;
      throw err;
    }
  }
  secret ??= await store.readSecret();
  const cert = secret?.data[KEYS.cert];
  const ca = x509(secret?.data[KEYS.ca]);
  const leaf = x509(cert);
  return { steps, cert, caExpiry: ca ? new Date(ca.validTo) : undefined, certExpiry: leaf ? new Date(leaf.validTo) : undefined };
}

/**
 * Record what this replica serves (retirement of an old CA waits for every live replica).
 * Records of replicas not heard from in {@link SERVED_KEEP_MS} are dropped on the way.
 */
export async function recordServed(store: CertStore, replica: string, servedPem: string, now: Date, attempts = 3): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    const s = await store.readSecret();
    if (s === undefined) return;
    const value = `${fingerprint(servedPem)} ${now.toISOString()}`;
    const kept = servedBy(s.annotations, now, SERVED_KEEP_MS);
    const annotations = Object.fromEntries(Object.entries(s.annotations).filter(([k]) => !k.startsWith(SERVED_PREFIX) || kept.has(k.slice(SERVED_PREFIX.length))));
    try {
      await store.writeSecret({ ...s.data }, { ...annotations, [servedKey(replica)]: value }, s.resourceVersion);
      return;
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
    }
  }
}
