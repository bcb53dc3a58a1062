/**
 * AdmissionReview `admission.k8s.io/v1`: decoding requests and building answers.
 * See https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#request
 * and #response. Pure.
 */
import type { Operation } from 'fast-json-patch';
import { isObject } from './json.js';
import type { Platform } from './platforms.js';
import { clip } from './text.js';
import { ANNOTATION_MIRROR_POD, planPod, readPod, type IdentityInput, type Mode, type Plan, type Settings, type VerifyAnswers } from './pod.js';

export const API_VERSION = 'admission.k8s.io/v1';

export interface GroupVersionKind {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
}

export interface AdmissionRequest {
  readonly uid: string;
  readonly kind: GroupVersionKind;
  readonly resource: { readonly group: string; readonly version: string; readonly resource: string };
  readonly subResource: string;
  readonly operation: string;
  readonly namespace: string;
  readonly name: string;
  readonly dryRun: boolean;
  readonly object: unknown;
  readonly oldObject: unknown;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code: number; message: string; reason?: string };
  patch?: string;
  patchType?: 'JSONPatch';
  warnings?: string[];
  auditAnnotations?: Record<string, string>;
}

export interface AdmissionReviewOut {
  apiVersion: typeof API_VERSION;
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

export type Decoded = { ok: true; request: AdmissionRequest } | { ok: false; error: string; uid: string | undefined };

/** A value from the body as quoted in an error: JSON, cut to a readable length. */
function shown(v: unknown): string {
  const text = JSON.stringify(v);
  return text === undefined ? 'nothing' : clip(text);
}

/** The longest uid answered back: the API server's are 36-character UUIDs. */
const MAX_UID_LENGTH = 256;

function str(v: unknown): v is string {
  return typeof v === 'string';
}

/**
 * Check an AdmissionReview body. Everything read later is type-checked here, so a
 * malformed body is a 400 with a message that names the field, never an exception.
 */
export function decodeReview(body: unknown): Decoded {
  if (!isObject(body)) return { ok: false, error: 'body must be a JSON object (an AdmissionReview)', uid: undefined };
  if (body.kind !== 'AdmissionReview') return { ok: false, error: `kind must be "AdmissionReview", got ${shown(body.kind)}`, uid: undefined };
  if (body.apiVersion !== API_VERSION) {
    return { ok: false, error: `apiVersion must be "${API_VERSION}", got ${shown(body.apiVersion)} (set admissionReviewVersions: [v1])`, uid: undefined };
  }
  const r = body.request;
  if (!isObject(r)) return { ok: false, error: 'request must be an object', uid: undefined };
  if (!str(r.uid) || r.uid === '') return { ok: false, error: 'request.uid must be a non-empty string', uid: undefined };
  if (r.uid.length > MAX_UID_LENGTH) return { ok: false, error: `request.uid is longer than ${MAX_UID_LENGTH} characters`, uid: undefined };
  const uid = r.uid;
  const fail = (error: string): Decoded => ({ ok: false, error, uid });
  const kind = r.kind;
  if (!isObject(kind) || !str(kind.group) || !str(kind.version) || !str(kind.kind)) return fail('request.kind must be {group, version, kind} strings');
  const resource = r.resource;
  if (!isObject(resource) || !str(resource.group) || !str(resource.version) || !str(resource.resource)) {
    return fail('request.resource must be {group, version, resource} strings');
  }
  if (!str(r.operation) || r.operation === '') return fail('request.operation must be a string');
  for (const field of ['subResource', 'namespace', 'name'] as const) {
    if (r[field] !== undefined && r[field] !== null && !str(r[field])) return fail(`request.${field} must be a string`);
  }
  if (r.dryRun !== undefined && r.dryRun !== null && typeof r.dryRun !== 'boolean') return fail('request.dryRun must be a boolean');
  for (const field of ['object', 'oldObject'] as const) {
    const v = r[field];
    if (v !== undefined && v !== null && !isObject(v)) return fail(`request.${field} must be an object or null`);
  }
  return {
    ok: true,
    request: {
      uid,
      kind: { group: kind.group, version: kind.version, kind: kind.kind },
      resource: { group: resource.group, version: resource.version, resource: resource.resource },
      subResource: str(r.subResource) ? r.subResource : '',
      operation: r.operation,
      namespace: str(r.namespace) ? r.namespace : '',
      name: str(r.name) ? r.name : '',
      dryRun: r.dryRun === true,
      object: r.object ?? undefined,
      oldObject: r.oldObject ?? undefined,
    },
  };
}

/** Wrap a response in the AdmissionReview envelope. */
export function reviewOf(response: AdmissionResponse): AdmissionReviewOut {
  return { apiVersion: API_VERSION, kind: 'AdmissionReview', response };
}

interface Extras {
  readonly warnings?: readonly string[] | undefined;
  readonly auditAnnotations?: Readonly<Record<string, string>> | undefined;
}

function withExtras(response: AdmissionResponse, extras: Extras | undefined): AdmissionResponse {
  if (extras?.warnings && extras.warnings.length > 0) response.warnings = [...extras.warnings];
  if (extras?.auditAnnotations && Object.keys(extras.auditAnnotations).length > 0) response.auditAnnotations = { ...extras.auditAnnotations };
  return response;
}

export function allowed(uid: string, extras?: Extras): AdmissionResponse {
  return withExtras({ uid, allowed: true }, extras);
}

/** Allowed with a JSONPatch; `patch` and `patchType` only when there are operations. */
export function patched(uid: string, operations: readonly Operation[], extras?: Extras): AdmissionResponse {
  if (operations.length === 0) return allowed(uid, extras);
  const patch = Buffer.from(JSON.stringify(operations)).toString('base64');
  return withExtras({ uid, allowed: true, patch, patchType: 'JSONPatch' }, extras);
}

/**
 * The answer to a review that carries a uid but cannot be handled (a malformed pod):
 * not allowed, with the HTTP-like code and the reason, as controller-runtime's `Errored`.
 */
export function errored(uid: string, code: number, message: string): AdmissionResponse {
  return { uid, allowed: false, status: { code, reason: code === 400 ? 'BadRequest' : 'InternalError', message } };
}

export function denied(uid: string, message: string, extras?: Extras & { code?: number }): AdmissionResponse {
  return withExtras({ uid, allowed: false, status: { code: extras?.code ?? 403, reason: 'Forbidden', message } }, extras);
}

/** Which kind of admission this is, for routing and metric labels. */
export type Handling =
  | { readonly kind: 'pod'; readonly operation: 'CREATE' | 'UPDATE'; readonly label: string }
  | { readonly kind: 'ignore'; readonly label: string; readonly reason: string };

export function classify(req: AdmissionRequest): Handling {
  const isPod = req.kind.group === '' && req.kind.kind === 'Pod' && req.resource.resource === 'pods';
  if (!isPod) return { kind: 'ignore', label: 'other', reason: `not a Pod (${req.kind.group || 'core'}/${req.kind.version} ${req.kind.kind})` };
  if (req.operation !== 'CREATE' && req.operation !== 'UPDATE') {
    return { kind: 'ignore', label: 'other', reason: `operation ${req.operation} needs no mutation` };
  }
  if (req.subResource !== '' && req.subResource !== 'ephemeralcontainers') {
    return { kind: 'ignore', label: 'other', reason: `subresource ${req.subResource} needs no mutation` };
  }
  const label = req.subResource === 'ephemeralcontainers' ? 'ephemeralcontainers' : req.operation.toLowerCase();
  return { kind: 'pod', operation: req.operation, label };
}

/**
 * The ServiceAccount whose annotations drive identity wiring for this request, or
 * undefined when no wiring applies (not a Pod CREATE, a static mirror pod).
 */
export function serviceAccountFor(req: AdmissionRequest): { namespace: string; name: string } | undefined {
  const h = classify(req);
  if (h.kind !== 'pod' || h.operation !== 'CREATE' || req.subResource !== '' || !isObject(req.object)) return undefined;
  const meta = req.object.metadata;
  if (isObject(meta) && isObject(meta.annotations) && meta.annotations[ANNOTATION_MIRROR_POD] !== undefined) return undefined;
  const spec = req.object.spec;
  const name = isObject(spec) ? (spec.serviceAccountName ?? spec.serviceAccount) : undefined;
  // The ServiceAccount admission plugin (which runs before webhooks) sets `default` when
  // none is named; fall back to it the same way.
  return { namespace: req.namespace, name: typeof name === 'string' && name !== '' ? name : 'default' };
}

export interface Evaluation {
  readonly response: AdmissionResponse;
  /** The plan, for Pod requests that were planned. */
  readonly plan: Plan | undefined;
  /** Why nothing was planned, when nothing was. */
  readonly reason: string | undefined;
  readonly label: string;
  /** 'error' when the request was malformed in a way only seen after decoding. */
  readonly error: string | undefined;
}

/**
 * Decide one admission: plan the pod and turn the plan into an answer. When the plan
 * needs registry answers (`toVerify`), the caller asks the registries and calls again
 * with `verify`.
 */
/** What the adapters know about the request's surroundings (namespace cache). */
export interface AdmissionContext {
  /** The namespace's labels; undefined when not known. */
  readonly namespaceLabels?: Readonly<Record<string, string>> | undefined;
  /** Platforms pods may run on (configured, or the cluster's nodes). */
  readonly platforms?: readonly Platform[] | undefined;
}

export function evaluate(req: AdmissionRequest, settings: Settings, mode: Mode, verify?: VerifyAnswers, identity?: IdentityInput, context?: AdmissionContext): Evaluation {
  const handling = classify(req);
  if (handling.kind === 'ignore') {
    return { response: allowed(req.uid), plan: undefined, reason: handling.reason, label: handling.label, error: undefined };
  }
  const pod = readPod(req.object, 'request.object');
  if (!pod.ok) return { response: allowed(req.uid), plan: undefined, reason: undefined, label: handling.label, error: pod.error };
  let oldPod;
  if (handling.operation === 'UPDATE') {
    const old = readPod(req.oldObject, 'request.oldObject');
    if (!old.ok) return { response: allowed(req.uid), plan: undefined, reason: undefined, label: handling.label, error: old.error };
    oldPod = old.pod;
  }
  const raw = isObject(req.object) ? req.object : undefined;
  const plan = planPod(
    { operation: handling.operation, subResource: req.subResource, pod: pod.pod, oldPod, mode, raw, identity, namespace: req.namespace, namespaceLabels: context?.namespaceLabels, platforms: context?.platforms },
    settings,
    verify,
  );
  const extras = { warnings: plan.warnings, auditAnnotations: plan.auditAnnotations };
  let response: AdmissionResponse;
  if (plan.denial !== undefined) response = denied(req.uid, plan.denial, extras);
  else response = patched(req.uid, plan.operations, extras);
  return { response, plan, reason: plan.skipped, label: handling.label, error: undefined };
}
