/**
 * A small Kubernetes API server on loopback for tests: plain HTTP on 127.0.0.1, core/v1
 * `namespaces`, `nodes`, `serviceaccounts`, `secrets` and `configmaps`, and the cluster-scoped
 * `mutatingwebhookconfigurations` of `admissionregistration.k8s.io/v1`
 * (`/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations[/{name}]`), in the
 * API's own JSON. It is driven through the real @kubernetes/client-node code via
 * {@link kubeconfigFor}.
 *
 * What it speaks (paths as the real API server has them):
 * - `GET /api/v1/namespaces`, `GET /api/v1/{resource}` (all namespaces) and
 *   `GET /api/v1/namespaces/{ns}/{resource}`: list. The List carries
 *   `metadata.resourceVersion`; `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`),
 *   `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit` and `continue`.
 * - The same with `?watch=true` (or `1`): a chunked stream of JSON lines
 *   `{"type":"ADDED"|"MODIFIED"|"DELETED","object":{...}}`. Without `resourceVersion`
 *   (or with `0`) it starts with a synthetic ADDED per existing object, as the real one
 *   does; with a version it replays the events after it. A version older than the kept
 *   history (see {@link KubeApi.compact}) gets an ERROR event with a 410 `Expired` Status
 *   and the stream ends (or, with `tooOldAs: 'http'`, an HTTP 410). `timeoutSeconds`
 *   ends the stream after that long. With a selector, an object that starts matching
 *   is sent as ADDED and one that stops matching as DELETED, as the real watch cache does.
 * - `GET`, `POST` (409 AlreadyExists), `PUT` (409 Conflict when
 *   `metadata.resourceVersion` is set and stale), `PATCH` (merge-patch; strategic merge
 *   is treated as merge; JSON patch), `DELETE` (a Success Status) on single objects.
 *   Namespaced objects need their namespace to exist (404 otherwise), as for real.
 * - JSON patch (`application/json-patch+json`) honours `test`: a failed test answers 422
 *   `Invalid` ("the server rejected our request due to an error in our request", empty
 *   `details`), as kube-apiserver 1.34 does (test/real/cert-store.test.ts), and nothing is written.
 * - Secrets of type `kubernetes.io/tls` need `tls.crt` and `tls.key`, and a Secret's type
 *   cannot change on update (422 `Invalid`), as for real.
 * - Errors are `Status` objects (`kind: Status`, `reason`, `code`, `details`).
 *
 * Test controls: {@link KubeApi.dropWatches}, {@link KubeApi.stop}/{@link KubeApi.start}
 * (API down and up again on the same port), {@link KubeApi.requests} (request log),
 * {@link KubeApi.onNext} (fail the next matching request), {@link KubeApi.holdNext} (hold the
 * next matching request until the test releases it), direct store access
 * with {@link KubeApi.put}, {@link KubeApi.get}, {@link KubeApi.remove}.
 *
 * @example
 * const api = await startKubeApi();
 * t.teardown(() => api.close());
 * api.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team-a' } });
 * const kubeconfig = await kubeconfigFor(api);   // a file; removed by api.close()
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import fastJsonPatch from 'fast-json-patch';

/** The resources this API serves (core/v1, and admissionregistration.k8s.io/v1 webhook configurations). */
export type Resource = 'namespaces' | 'nodes' | 'serviceaccounts' | 'secrets' | 'configmaps' | 'mutatingwebhookconfigurations';

const KINDS: Record<Resource, string> = {
  namespaces: 'Namespace',
  nodes: 'Node',
  serviceaccounts: 'ServiceAccount',
  secrets: 'Secret',
  configmaps: 'ConfigMap',
  mutatingwebhookconfigurations: 'MutatingWebhookConfiguration',
};
const RESOURCES = Object.keys(KINDS) as Resource[];
const RESOURCE_OF_KIND = new Map(RESOURCES.map((r) => [KINDS[r], r]));
/** Resources outside the core group, by their group/version (served under `/apis/{group}/{version}`). */
const GROUP_VERSIONS: Partial<Record<Resource, string>> = { mutatingwebhookconfigurations: 'admissionregistration.k8s.io/v1' };
/** Resources without a namespace. */
const CLUSTER_SCOPED: ReadonlySet<Resource> = new Set<Resource>(['namespaces', 'nodes', 'mutatingwebhookconfigurations']);

function apiVersionOf(resource: Resource): string {
  return GROUP_VERSIONS[resource] ?? 'v1';
}

/** A Kubernetes object as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One logged request. */
export interface LoggedRequest {
  readonly method: string;
  /** Path without the query. */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly watch: boolean;
}

/** Which requests a hook applies to ({@link KubeApi.onNext}, {@link KubeApi.holdNext}). */
export interface RequestMatch {
  /** HTTP method; any when omitted. */
  readonly method?: string;
  /** A substring of the path, or a pattern; any when omitted. */
  readonly path?: string | RegExp;
  /** Only watch (true) or only non-watch (false) requests; either when omitted. */
  readonly watch?: boolean;
  /** How many matching requests the hook applies to (default 1). */
  readonly times?: number;
}

/** What {@link KubeApi.onNext} matches and does to the next matching request. */
export interface RequestHook extends RequestMatch {
  /** Answer with this status and a Status body instead of handling it. */
  readonly status: number;
}

/**
 * Requests held by {@link KubeApi.holdNext}: they are logged and their bodies read, then
 * they wait, unanswered, until {@link HeldRequests.release} (or the API's close()).
 */
export interface HeldRequests {
  /** Resolves once the first matching request is being held. */
  readonly reached: Promise<void>;
  /** How many matching requests are being held now. */
  held(): number;
  /** Handle every held request now, and hold no further ones (the rest of `times` is dropped). Idempotent. */
  release(): void;
}

export interface KubeApiOptions {
  /** How a watch from a too-old resourceVersion is refused: ERROR event (default) or HTTP 410. */
  readonly tooOldAs?: 'event' | 'http';
}

/** A hook as kept: what it matches, how many more requests it takes, and what it does to them. */
interface Hook {
  readonly match: RequestMatch;
  left: number;
  /** Answer with this status instead of handling the request. */
  readonly status?: number;
  /** Wait on this before handling the request. */
  readonly hold?: () => Promise<void>;
}

interface Watcher {
  readonly res: ServerResponse;
  readonly resource: Resource;
  readonly namespace: string | undefined;
  readonly matches: (obj: KubeObject) => boolean;
  timer: NodeJS.Timeout | undefined;
}

interface HistoryEntry {
  readonly rv: number;
  readonly type: WatchEventType;
  readonly resource: Resource;
  readonly object: KubeObject;
  /** The object before a MODIFIED. */
  readonly previous: KubeObject | undefined;
}

/** The running fake API server. */
export interface KubeApi {
  /** `http://127.0.0.1:PORT`. Stays the same across stop()/start(). */
  readonly url: string;
  /** Every request received, in order. */
  readonly requests: LoggedRequest[];
  /** The current resourceVersion (the last change). */
  resourceVersion(): string;
  /** Store an object as a client create or update would, emitting a watch event. Returns the stored copy. */
  put(obj: KubeObject): KubeObject;
  /** The stored object, or undefined. Cluster-scoped ones: `get('namespaces', undefined, name)`, `get('mutatingwebhookconfigurations', undefined, name)`. */
  get(resource: Resource, namespace: string | undefined, name: string): KubeObject | undefined;
  /** Delete an object (emits DELETED). True when it existed. */
  remove(resource: Resource, namespace: string | undefined, name: string): boolean;
  /** End every open watch stream (clients see a clean end of stream and resume). */
  dropWatches(): void;
  /** Forget the event history: a watch from any resourceVersion before the current one gets 410 Expired. */
  compact(): void;
  /** Number of open watch streams. */
  openWatches(): number;
  /** Fail the next matching request(s). Hooks (these and {@link holdNext}'s) apply in the order added. */
  onNext(hook: RequestHook): void;
  /**
   * Hold the next request(s) with `method` (any when undefined) whose path matches `path`
   * (any when omitted) until the test releases them: wait for `reached`, act while the
   * request is in flight, then `release()`. No real time is involved.
   */
  holdNext(method: string | undefined, path?: string | RegExp, options?: Pick<RequestMatch, 'watch' | 'times'>): HeldRequests;
  /** Shorthand: fail the next GET matching `path` with `status` (a Status body). */
  failNextGet(status: number, path?: string | RegExp): void;
  /** API down: stop listening and cut every connection (watches included). Data is kept. */
  stop(): Promise<void>;
  /** API up again on the same port. */
  start(): Promise<void>;
  /** Stop for good and remove kubeconfig files written for it. */
  close(): Promise<void>;
  /** Files/directories to remove on close (used by {@link kubeconfigFor}). */
  readonly cleanup: string[];
}

/** Start the fake API on 127.0.0.1, on a free port. */
export async function startKubeApi(options: KubeApiOptions = {}): Promise<KubeApi> {
  const store = new Map<string, { resource: Resource; object: KubeObject }>();
  const history: HistoryEntry[] = [];
  let rv = 1;
  let compactedAt = 0;
  const watchers = new Set<Watcher>();
  const hooks: Hook[] = [];
  const holds = new Set<HeldRequests>();
  const requests: LoggedRequest[] = [];
  const cleanup: string[] = [];

  const keyOf = (resource: Resource, namespace: string | undefined, name: string): string =>
    `${resource}/${CLUSTER_SCOPED.has(resource) ? '' : (namespace ?? '')}/${name}`;

  function record(type: WatchEventType, resource: Resource, object: KubeObject, previous?: KubeObject): void {
    const entry: HistoryEntry = { rv, type, resource, object: clone(object), previous: previous ? clone(previous) : undefined };
    history.push(entry);
    for (const w of watchers) if (w.resource === resource) sendEvent(w, entry);
  }

  /**
   * Send an event as a selector-filtered watch sees it: an object that starts matching
   * is ADDED, one that stops matching is DELETED, as the real watch cache does.
   */
  function sendEvent(w: Watcher, e: HistoryEntry): void {
    const now = inScope(w, e.object);
    const before = e.previous !== undefined && inScope(w, e.previous);
    if (e.type === 'MODIFIED' && now && !before) send(w, 'ADDED', e.object);
    else if (e.type === 'MODIFIED' && !now && before) send(w, 'DELETED', e.object);
    else if (now) send(w, e.type, e.object);
  }

  function inScope(w: Watcher, obj: KubeObject): boolean {
    if (w.namespace !== undefined && obj.metadata.namespace !== w.namespace) return false;
    return w.matches(obj);
  }

  function send(w: Watcher, type: string, object: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  function endWatch(w: Watcher): void {
    if (w.timer) clearTimeout(w.timer);
    watchers.delete(w);
    if (!w.res.writableEnded) w.res.end();
  }

  function put(input: KubeObject): KubeObject {
    const resource = resourceOfObject(input);
    const name = input.metadata.name ?? '';
    const ns = CLUSTER_SCOPED.has(resource) ? undefined : input.metadata.namespace;
    const key = keyOf(resource, ns, name);
    const existing = store.get(key);
    rv += 1;
    const obj = clone(input);
    obj.apiVersion = apiVersionOf(resource);
    obj.kind = KINDS[resource];
    if (ns === undefined) delete obj.metadata.namespace;
    obj.metadata = {
      ...obj.metadata,
      name,
      ...(ns !== undefined ? { namespace: ns } : {}),
      uid: existing?.object.metadata.uid ?? randomUUID(),
      creationTimestamp: existing?.object.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      resourceVersion: String(rv),
    };
    if (resource === 'namespaces') {
      obj.metadata.labels = { ...obj.metadata.labels, 'kubernetes.io/metadata.name': name };
      obj.spec ??= { finalizers: ['kubernetes'] };
      obj.status ??= { phase: 'Active' };
    }
    if (resource === 'secrets') obj.type ??= 'Opaque';
    store.set(key, { resource, object: obj });
    record(existing ? 'MODIFIED' : 'ADDED', resource, obj, existing?.object);
    return clone(obj);
  }

  function remove(resource: Resource, namespace: string | undefined, name: string): boolean {
    const key = keyOf(resource, namespace, name);
    const existing = store.get(key);
    if (!existing) return false;
    store.delete(key);
    rv += 1;
    const obj = clone(existing.object);
    obj.metadata.resourceVersion = String(rv);
    record('DELETED', resource, obj);
    return true;
  }

  function get(resource: Resource, namespace: string | undefined, name: string): KubeObject | undefined {
    const e = store.get(keyOf(resource, namespace, name));
    return e ? clone(e.object) : undefined;
  }

  function list(resource: Resource, namespace: string | undefined, matches: (o: KubeObject) => boolean): KubeObject[] {
    const out: KubeObject[] = [];
    for (const e of store.values()) {
      if (e.resource !== resource) continue;
      if (namespace !== undefined && e.object.metadata.namespace !== namespace) continue;
      if (matches(e.object)) out.push(e.object);
    }
    return out.sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name ?? ''}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name ?? ''}`));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    const isWatch = u.searchParams.get('watch') === 'true' || u.searchParams.get('watch') === '1';
    requests.push({ method, path: u.pathname, query: u.searchParams, watch: isWatch });
    const body = await readBody(req);

    const hook = takeHook(method, u.pathname, isWatch);
    if (hook?.hold !== undefined) {
      await hook.hold();
      // The client gave up (or stop() cut it) while it was held: nobody to answer.
      if (req.socket.destroyed || res.destroyed) return;
    }
    if (hook?.status !== undefined) {
      status(res, hook.status, reasonFor(hook.status), `injected failure (${hook.status})`);
      return;
    }

    const route = parsePath(u.pathname);
    if (!route) {
      status(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    const { resource, namespace, name } = route;
    try {
      if (name === undefined) {
        if (method === 'GET' && isWatch) return startWatch(req, res, resource, namespace, u.searchParams);
        if (method === 'GET') return sendList(res, resource, namespace, u.searchParams);
        if (method === 'POST') return create(res, resource, namespace, body);
        status(res, 405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
        return;
      }
      const current = get(resource, namespace, name);
      const notFound = (): void => status(res, 404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
      switch (method) {
        case 'GET':
          if (!current) return notFound();
          return json(res, 200, current);
        case 'PUT': {
          if (!current) return notFound();
          const obj = parseObject(body);
          if (!obj) return status(res, 400, 'BadRequest', 'the body of the request was not a JSON object');
          if (obj.metadata.name !== undefined && obj.metadata.name !== name) {
            return status(res, 400, 'BadRequest', `the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
          }
          const sent = obj.metadata.resourceVersion;
          if (sent !== undefined && sent !== '' && sent !== current.metadata.resourceVersion) return conflict(res, resource, name);
          obj.metadata = { ...obj.metadata, name, ...(namespace !== undefined ? { namespace } : {}) };
          obj.kind = KINDS[resource];
          const problem = invalidity(resource, obj, current);
          if (problem !== undefined) return status(res, 422, 'Invalid', `${KINDS[resource]} "${name}" is invalid: ${problem}`, { name, kind: KINDS[resource] });
          return json(res, 200, put(obj));
        }
        case 'PATCH': {
          if (!current) return notFound();
          const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
          let patched: KubeObject;
          try {
            patched = applyPatch(current, type, body);
          } catch (err) {
            const code = err instanceof HttpError ? err.code : 422;
            const details = err instanceof HttpError ? err.details : undefined;
            return status(res, code, code === 415 ? 'UnsupportedMediaType' : 'Invalid', err instanceof Error ? err.message : String(err), details);
          }
          const sent = patched.metadata.resourceVersion;
          if (sent !== undefined && sent !== current.metadata.resourceVersion) return conflict(res, resource, name);
          patched.metadata = { ...patched.metadata, name, ...(namespace !== undefined ? { namespace } : {}) };
          const problem = invalidity(resource, patched, current);
          if (problem !== undefined) return status(res, 422, 'Invalid', `${KINDS[resource]} "${name}" is invalid: ${problem}`, { name, kind: KINDS[resource] });
          return json(res, 200, put(patched));
        }
        case 'DELETE':
          if (!current) return notFound();
          remove(resource, namespace, name);
          return json(res, 200, {
            kind: 'Status',
            apiVersion: 'v1',
            metadata: {},
            status: 'Success',
            details: { name, kind: resource, uid: current.metadata.uid },
          });
        default:
          return status(res, 405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      }
    } catch (err) {
      status(res, 500, 'InternalError', err instanceof Error ? err.message : String(err));
    }
  }

  function create(res: ServerResponse, resource: Resource, namespace: string | undefined, body: string): void {
    const obj = parseObject(body);
    if (!obj) return status(res, 400, 'BadRequest', 'the body of the request was not a JSON object');
    const name = obj.metadata.name;
    if (name === undefined || name === '') {
      return status(res, 422, 'Invalid', `${KINDS[resource]} "" is invalid: metadata.name: Required value: name or generateName is required`, { kind: KINDS[resource] });
    }
    if (obj.kind !== undefined && RESOURCE_OF_KIND.get(obj.kind) !== resource) {
      return status(res, 400, 'BadRequest', `the API version in the data (${obj.apiVersion ?? ''}) does not match the expected API version (${apiVersionOf(resource)})`);
    }
    if (namespace !== undefined) {
      if (obj.metadata.namespace !== undefined && obj.metadata.namespace !== namespace) {
        return status(res, 400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      }
      if (!store.has(keyOf('namespaces', undefined, namespace))) {
        return status(res, 404, 'NotFound', `namespaces "${namespace}" not found`, { name: namespace, kind: 'namespaces' });
      }
    }
    if (store.has(keyOf(resource, namespace, name))) {
      return status(res, 409, 'AlreadyExists', `${resource} "${name}" already exists`, { name, kind: resource });
    }
    obj.kind = KINDS[resource];
    if (namespace !== undefined) obj.metadata.namespace = namespace;
    delete obj.metadata.resourceVersion;
    const problem = invalidity(resource, obj, undefined);
    if (problem !== undefined) return status(res, 422, 'Invalid', `${KINDS[resource]} "${name}" is invalid: ${problem}`, { name, kind: KINDS[resource] });
    json(res, 201, put(obj));
  }

  function sendList(res: ServerResponse, resource: Resource, namespace: string | undefined, q: URLSearchParams): void {
    const matches = selectorOf(q);
    if (typeof matches === 'string') return status(res, 400, 'BadRequest', matches);
    let items = list(resource, namespace, matches);
    let listRv = String(rv);
    let start = 0;
    const token = q.get('continue');
    if (token) {
      try {
        const parsed = JSON.parse(Buffer.from(token, 'base64').toString('utf8')) as { rv: string; start: number };
        if (Number(parsed.rv) < compactedAt) {
          return status(res, 410, 'Expired', 'The provided continue parameter is too old to display a consistent list result.');
        }
        // A real server lists the snapshot at rv; this one lists the present (good enough for tests).
        listRv = parsed.rv;
        start = parsed.start;
      } catch {
        return status(res, 400, 'BadRequest', 'continue key is not valid');
      }
    }
    const limit = Number(q.get('limit') ?? '0');
    let next: string | undefined;
    if (limit > 0 && start + limit < items.length) {
      next = Buffer.from(JSON.stringify({ rv: listRv, start: start + limit })).toString('base64');
    }
    items = limit > 0 ? items.slice(start, start + limit) : items.slice(start);
    json(res, 200, {
      kind: `${KINDS[resource]}List`,
      apiVersion: apiVersionOf(resource),
      metadata: { resourceVersion: listRv, ...(next !== undefined ? { continue: next } : {}) },
      items,
    });
  }

  function startWatch(req: IncomingMessage, res: ServerResponse, resource: Resource, namespace: string | undefined, q: URLSearchParams): void {
    const matches = selectorOf(q);
    if (typeof matches === 'string') return status(res, 400, 'BadRequest', matches);
    const from = q.get('resourceVersion') ?? '';
    const fromRv = Number(from);
    if (from !== '' && from !== '0' && (!Number.isInteger(fromRv) || fromRv < compactedAt)) {
      const message = `too old resource version: ${from} (${compactedAt})`;
      if (options.tooOldAs === 'http') return status(res, 410, 'Expired', message);
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.end(`${JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', message) })}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res, resource, namespace, matches, timer: undefined };
    if (from === '' || from === '0') {
      for (const obj of list(resource, namespace, matches)) send(w, 'ADDED', obj);
    } else {
      for (const e of history) if (e.rv > fromRv && e.resource === resource) sendEvent(w, e);
    }
    watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    // unref: a test API must never keep the test process alive.
    if (timeout > 0) w.timer = setTimeout(() => endWatch(w), timeout * 1000).unref();
    req.on('close', () => endWatch(w));
    // The client may already be gone (connections closed by stop() while this request
    // was being handled): then 'close' has fired before we listened for it.
    if (req.socket.destroyed || res.destroyed || !running) endWatch(w);
  }

  function takeHook(method: string, path: string, watch: boolean): Hook | undefined {
    for (let i = 0; i < hooks.length; i++) {
      const h = hooks[i];
      if (!h) continue;
      const hook = h.match;
      if (hook.method !== undefined && hook.method.toUpperCase() !== method) continue;
      if (hook.watch !== undefined && hook.watch !== watch) continue;
      if (hook.path !== undefined && !(typeof hook.path === 'string' ? path.includes(hook.path) : hook.path.test(path))) continue;
      h.left -= 1;
      if (h.left <= 0) hooks.splice(i, 1);
      return h;
    }
    return undefined;
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) status(res, 500, 'InternalError', err instanceof Error ? err.message : String(err));
    });
  });
  server.keepAliveTimeout = 5000;
  await listen(server, 0);
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  let running = true;

  async function stop(): Promise<void> {
    if (!running) return;
    running = false;
    for (const w of [...watchers]) endWatch(w);
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeAllConnections();
    await closed;
  }

  return {
    url,
    requests,
    cleanup,
    resourceVersion: () => String(rv),
    put,
    get,
    remove,
    dropWatches: () => {
      for (const w of [...watchers]) endWatch(w);
    },
    compact: () => {
      compactedAt = rv;
      history.length = 0;
    },
    openWatches: () => watchers.size,
    onNext: (hook) => hooks.push({ match: hook, left: hook.times ?? 1, status: hook.status }),
    holdNext: (method, path, options = {}) => {
      let reached!: () => void;
      let released = false;
      let held = 0;
      const waiting: (() => void)[] = [];
      const entry: Hook = {
        match: { ...(method !== undefined ? { method } : {}), ...(path !== undefined ? { path } : {}), ...options },
        left: options.times ?? 1,
        hold: () => {
          if (released) return Promise.resolve();
          held += 1;
          reached();
          return new Promise<void>((r) => waiting.push(r));
        },
      };
      const handle: HeldRequests = {
        reached: new Promise<void>((r) => (reached = r)),
        held: () => held,
        release: () => {
          released = true;
          holds.delete(handle);
          const i = hooks.indexOf(entry);
          if (i >= 0) hooks.splice(i, 1);
          held = 0;
          for (const go of waiting.splice(0)) go();
        },
      };
      hooks.push(entry);
      holds.add(handle);
      return handle;
    },
    failNextGet: (code, path) => hooks.push({ match: { method: 'GET', watch: false, ...(path !== undefined ? { path } : {}) }, left: 1, status: code }),
    stop,
    start: async () => {
      if (running) return;
      await listen(server, port);
      running = true;
    },
    close: async () => {
      await stop();
      // Requests still held end now (their connections are gone): nothing is left pending.
      for (const h of [...holds]) h.release();
      await Promise.all(cleanup.map((p) => rm(p, { recursive: true, force: true })));
    },
  };
}

/**
 * Write a kubeconfig for `api` into a new temporary directory and return its path.
 * The cluster sets `insecure-skip-tls-verify: true`: client-node refuses a plain
 * `http://` server without it. The directory is removed by `api.close()`.
 */
export async function kubeconfigFor(api: Pick<KubeApi, 'url' | 'cleanup'>, opts: { namespace?: string } = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mg-kubeconfig-'));
  api.cleanup.push(dir);
  const file = join(dir, 'kubeconfig');
  const text = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: loopback',
    '  cluster:',
    `    server: ${api.url}`,
    '    insecure-skip-tls-verify: true',
    'users:',
    '- name: tester',
    '  user:',
    '    token: test-token',
    'contexts:',
    '- name: loopback',
    '  context:',
    '    cluster: loopback',
    '    user: tester',
    `    namespace: ${opts.namespace ?? 'default'}`,
    'current-context: loopback',
    '',
  ].join('\n');
  await writeFile(file, text);
  return file;
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** What the real API's validation would refuse in a create or update (the few rules tests meet), or undefined. */
function invalidity(resource: Resource, obj: KubeObject, current: KubeObject | undefined): string | undefined {
  if (resource !== 'secrets') return undefined;
  const type = typeof obj.type === 'string' ? obj.type : 'Opaque';
  const currentType = current === undefined ? undefined : typeof current.type === 'string' ? current.type : 'Opaque';
  if (currentType !== undefined && type !== currentType) return `type: Invalid value: "${type}": field is immutable`;
  if (type === 'kubernetes.io/tls') {
    const data = isRecord(obj.data) ? obj.data : {};
    const missing = ['tls.crt', 'tls.key'].filter((k) => typeof data[k] !== 'string');
    if (missing.length > 0) return `[${missing.map((k) => `data[${k}]: Required value`).join(', ')}]`;
  }
  return undefined;
}

function applyPatch(current: KubeObject, contentType: string, body: string): KubeObject {
  let patch: unknown;
  try {
    patch = JSON.parse(body);
  } catch {
    throw new HttpError(400, 'the body of the request was not valid JSON');
  }
  switch (contentType) {
    case 'application/merge-patch+json':
    case 'application/strategic-merge-patch+json': {
      // Strategic merge is merge patch for these kinds: none of their lists has a patch strategy we model.
      const out = mergePatch(current, patch);
      if (!isRecord(out) || !isRecord(out.metadata)) throw new HttpError(422, 'patch removed metadata');
      return out as KubeObject;
    }
    case 'application/json-patch+json': {
      if (!Array.isArray(patch)) throw new HttpError(400, 'a JSON patch must be an array of operations');
      try {
        const result = fastJsonPatch.applyPatch(clone(current), patch as fastJsonPatch.Operation[], true, false).newDocument;
        return result;
      } catch (err) {
        if (err instanceof fastJsonPatch.JsonPatchError && err.name === 'TEST_OPERATION_FAILED') {
          // As kube-apiserver 1.34 answers: no cause in the details (test/real/cert-store.test.ts).
          throw new HttpError(422, 'the server rejected our request due to an error in our request', {});
        }
        throw new HttpError(422, `the JSON patch could not be applied: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    default:
      throw new HttpError(415, `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
  }
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return clone(patch);
  const out: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function parsePath(path: string): { resource: Resource; namespace: string | undefined; name: string | undefined } | undefined {
  const parts = path.split('/').filter((p) => p !== '').map(decodeURIComponent);
  // /apis/{group}/{version}/{resource}[/{name}]: the cluster-scoped group resources.
  if (parts[0] === 'apis') {
    const gv = `${parts[1] ?? ''}/${parts[2] ?? ''}`;
    const resource = RESOURCES.find((r) => GROUP_VERSIONS[r] === gv && r === parts[3]);
    if (resource === undefined || parts.length > 5) return undefined;
    return { resource, namespace: undefined, name: parts[4] };
  }
  if (parts[0] !== 'api' || parts[1] !== 'v1') return undefined;
  const rest = parts.slice(2);
  const isResource = (s: string | undefined): s is Resource => s !== undefined && (RESOURCES as string[]).includes(s) && GROUP_VERSIONS[s as Resource] === undefined;
  // /api/v1/namespaces/{ns}/{resource}[/{name}]
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    if (!isResource(rest[2]) || rest[2] === 'namespaces' || rest.length > 4) return undefined;
    return { resource: rest[2], namespace: rest[1], name: rest[3] };
  }
  // /api/v1/{resource}[/{name} for namespaces]
  if (!isResource(rest[0]) || rest.length > 2) return undefined;
  if (rest.length === 2 && rest[0] !== 'namespaces') return undefined;
  return { resource: rest[0], namespace: undefined, name: rest[1] };
}

/** A predicate for labelSelector and fieldSelector, or an error message. */
function selectorOf(q: URLSearchParams): ((o: KubeObject) => boolean) | string {
  const tests: ((o: KubeObject) => boolean)[] = [];
  for (const term of splitTerms(q.get('labelSelector'))) {
    const m = /^(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*))?$/.exec(term);
    if (!m) return `unable to parse requirement: ${term}`;
    const [, not, key = '', op, value] = m;
    const labels = (o: KubeObject): Record<string, string> => o.metadata.labels ?? {};
    if (op === undefined) tests.push(not ? (o) => !(key in labels(o)) : (o) => key in labels(o));
    else if (op === '!=') tests.push((o) => labels(o)[key] !== value);
    else tests.push((o) => labels(o)[key] === value);
  }
  for (const term of splitTerms(q.get('fieldSelector'))) {
    const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) return `invalid selector: '${term}'`;
    const [, field, op, value] = m;
    const get = field === 'metadata.name' ? (o: KubeObject) => o.metadata.name : field === 'metadata.namespace' ? (o: KubeObject) => o.metadata.namespace : undefined;
    if (!get) return `field label not supported: ${field ?? ''}`;
    tests.push(op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value);
  }
  return (o) => tests.every((t) => t(o));
}

function splitTerms(s: string | null): string[] {
  return (s ?? '').split(',').map((t) => t.trim()).filter((t) => t !== '');
}

function resourceOfObject(obj: KubeObject): Resource {
  const r = obj.kind !== undefined ? RESOURCE_OF_KIND.get(obj.kind) : undefined;
  if (!r) throw new Error(`kube-api: unsupported kind ${String(obj.kind)}`);
  return r;
}

function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

function status(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, unknown>): void {
  json(res, code, statusBody(code, reason, message, details));
}

function conflict(res: ServerResponse, resource: Resource, name: string): void {
  status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: resource });
}

function reasonFor(code: number): string {
  const reasons: Record<number, string> = { 400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict', 410: 'Expired', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout' };
  return reasons[code] ?? 'Unknown';
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function parseObject(body: string): KubeObject | undefined {
  try {
    const v: unknown = JSON.parse(body);
    if (!isRecord(v)) return undefined;
    if (!isRecord(v.metadata)) v.metadata = {};
    return v as KubeObject;
  } catch {
    return undefined;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}
