/**
 * Request generator for the benchmark: Pod AdmissionReviews shaped like the ones the API
 * server sends for pods created by controllers (ownerReferences, projected service
 * account token volume, probes, resources, managedFields on the bigger ones).
 *
 * Everything is derived from a seeded PRNG, so two runs (and the two servers of one run)
 * see byte-identical bodies. Sizes are reached by adding env vars, the field that makes
 * real pods big, and found by bisection so each body lands just under its target.
 */

/** Size classes of the mix: ~4 KB, ~12 KB, ~30 KB. */
export type SizeClass = 'small' | 'medium' | 'large';

export interface GeneratedReview {
  /** The AdmissionReview as compact JSON (no newlines: one body per line in a file). */
  readonly body: string;
  readonly uid: string;
  readonly size: SizeClass | 'update';
  readonly operation: 'CREATE' | 'UPDATE';
  /** Images a mirror rule should rewrite (third-party, not yet mirrored). */
  readonly rewritable: number;
  /** All container images of the object. */
  readonly images: number;
}

export interface MixSummary {
  readonly count: number;
  readonly classes: Record<string, { readonly count: number; readonly avgBytes: number }>;
  /** Share of all images that a rule rewrites. */
  readonly rewritableImageShare: number;
  /** Share of reviews that need a patch. */
  readonly rewritableReviewShare: number;
}

/** mulberry32: small, fast, good enough to vary test data deterministically. */
export function createRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rng = () => number;

function pick<T>(rng: Rng, items: readonly T[]): T {
  const item = items[Math.floor(rng() * items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

function int(rng: Rng, min: number, max: number): number {
  return min + Math.floor(rng() * (max - min + 1));
}

function hex(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += '0123456789abcdef'[Math.floor(rng() * 16)];
  return s;
}

function alnum(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += 'bcdfghjklmnpqrstvwxz2456789'[Math.floor(rng() * 27)];
  return s;
}

function uuid(rng: Rng): string {
  return `${hex(rng, 8)}-${hex(rng, 4)}-4${hex(rng, 3)}-a${hex(rng, 3)}-${hex(rng, 12)}`;
}

/**
 * Images as workloads really name them: mostly third-party (Docker Hub short names,
 * quay.io, ghcr.io, gcr.io, some by digest), a few already on the mirror or on
 * registry.k8s.io, which the bench config leaves alone. `true` = a rule rewrites it.
 */
const THIRD_PARTY = [
  'nginx:1.25',
  'nginx:1.25.3-alpine',
  'redis:7.2-alpine',
  'postgres:16.1',
  'busybox:1.36',
  'memcached:1.6.22',
  'python:3.12-slim',
  'node:20-bookworm-slim',
  'bitnami/kafka:3.6.1',
  'grafana/grafana:10.2.3',
  'envoyproxy/envoy:v1.28.0',
  'docker.io/library/alpine:3.19',
  'docker.io/fluent/fluent-bit:2.2.1',
  'quay.io/prometheus/node-exporter:v1.7.0',
  'quay.io/prometheus/prometheus:v2.48.1',
  'quay.io/jetstack/cert-manager-controller:v1.13.3',
  'quay.io/argoproj/argocd:v2.9.3',
  'ghcr.io/acme/api:2.4.1',
  'ghcr.io/fluxcd/source-controller:v1.2.3',
  'ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.91.0',
  'gcr.io/google-samples/hello-app:2.0',
  'gcr.io/distroless/static:nonroot',
  'gcr.io/kaniko-project/executor:v1.19.2',
] as const;

const NOT_REWRITTEN = [
  'registry.k8s.io/pause:3.9',
  'registry.k8s.io/ingress-nginx/controller:v1.9.5',
  'mirror.example.com/dockerhub/library/nginx:1.25',
  'mirror.example.com/quay/prometheus/node-exporter:v1.7.0',
] as const;

/** 88% third-party; a fifth of those pinned by digest, as careful teams do. */
function image(rng: Rng): { ref: string; rewritable: boolean } {
  if (rng() >= 0.88) return { ref: pick(rng, NOT_REWRITTEN), rewritable: false };
  const ref = pick(rng, THIRD_PARTY);
  return { ref: rng() < 0.2 ? `${ref.split(':')[0] ?? ref}@sha256:${hex(rng, 64)}` : ref, rewritable: true };
}

const TEAMS = ['payments', 'search', 'checkout', 'platform', 'data', 'ml-serving', 'identity', 'growth'];
const APPS = ['api', 'worker', 'web', 'gateway', 'indexer', 'scheduler', 'ingest', 'frontend', 'reporter'];
const SIDECARS = ['envoy', 'log-shipper', 'metrics', 'cache', 'auth-proxy', 'otel-agent', 'config-reloader'];
const INITS = ['migrate', 'wait-for-db', 'fetch-config', 'init-perms'];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

interface ContainerShape {
  name: string;
  image: string;
  rewritable: boolean;
  baseEnv: number;
  ports: number;
  probes: boolean;
}

interface PodShape {
  namespace: string;
  app: string;
  hash: string;
  suffix: string;
  podUid: string;
  rsUid: string;
  tokenVolume: string;
  init: ContainerShape[];
  containers: ContainerShape[];
  managedFields: boolean;
  configMaps: number;
}

function containerShape(rng: Rng, name: string, main: boolean): ContainerShape {
  const img = image(rng);
  return { name, image: img.ref, rewritable: img.rewritable, baseEnv: int(rng, main ? 3 : 1, main ? 6 : 3), ports: main ? int(rng, 1, 2) : int(rng, 0, 1), probes: main || rng() < 0.5 };
}

function podShape(rng: Rng, size: SizeClass | 'update'): PodShape {
  const app = pick(rng, APPS);
  const [nContainers, nInit] =
    size === 'small' ? [int(rng, 1, 2), 0] : size === 'medium' ? [int(rng, 3, 4), int(rng, 1, 2)] : size === 'large' ? [int(rng, 5, 7), 2] : [40, 4];
  const used = new Set<string>([app]);
  const uniqueName = (pool: readonly string[]): string => {
    let n = pick(rng, pool);
    for (let i = 2; used.has(n); i++) n = `${pick(rng, pool)}-${i}`;
    used.add(n);
    return n;
  };
  const containers = [containerShape(rng, app, true)];
  for (let i = 1; i < nContainers; i++) containers.push(containerShape(rng, uniqueName(SIDECARS), false));
  const init: ContainerShape[] = [];
  for (let i = 0; i < nInit; i++) init.push(containerShape(rng, uniqueName(INITS), false));
  return {
    namespace: `team-${pick(rng, TEAMS)}`,
    app,
    hash: alnum(rng, 10),
    suffix: alnum(rng, 5),
    podUid: uuid(rng),
    rsUid: uuid(rng),
    tokenVolume: `kube-api-access-${alnum(rng, 5)}`,
    init,
    containers,
    managedFields: size !== 'small',
    configMaps: size === 'small' ? 1 : int(rng, 2, 3),
  };
}

/** Deterministic filler derived from an index: values look like real config, not noise. */
function envVar(containerName: string, i: number): Obj {
  const kinds = [
    () => ({ name: `FEATURE_${containerName.toUpperCase().replace(/-/g, '_')}_${i}`, value: i % 2 === 0 ? 'true' : 'false' }),
    () => ({ name: `UPSTREAM_${i}_URL`, value: `http://svc-${i}.backend.svc.cluster.local:${8000 + (i % 100)}/api/v${1 + (i % 3)}` }),
    () => ({ name: `POOL_SIZE_${i}`, value: String(4 + (i % 60)) }),
    () => ({ name: `POD_IP_${i}`, valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'status.podIP' } } }),
    () => ({ name: `DB_PASSWORD_${i}`, valueFrom: { secretKeyRef: { name: `db-credentials-${i % 7}`, key: 'password' } } }),
    () => ({ name: `JAVA_TOOL_OPTIONS_${i}`, value: `-XX:MaxRAMPercentage=75.0 -XX:+UseG1GC -Dotel.service.name=${containerName} -Dotel.exporter.otlp.endpoint=http://otel-collector.observability:4317 -Dfile.encoding=UTF-8` }),
  ];
  const make = kinds[i % kinds.length];
  if (!make) throw new Error('unreachable');
  return make();
}

function container(shape: PodShape, c: ContainerShape, extraEnv: number, imageOverride?: string): Obj {
  const env: Json[] = [];
  for (let i = 0; i < c.baseEnv + extraEnv; i++) env.push(envVar(c.name, i));
  const ports: Json[] = [];
  for (let i = 0; i < c.ports; i++) ports.push({ name: i === 0 ? 'http' : 'metrics', containerPort: i === 0 ? 8080 : 9090, protocol: 'TCP' });
  const probe = (path: string): Obj => ({ httpGet: { path, port: 8080, scheme: 'HTTP' }, timeoutSeconds: 1, periodSeconds: 10, successThreshold: 1, failureThreshold: 3 });
  const out: Obj = {
    name: c.name,
    image: imageOverride ?? c.image,
    ...(ports.length > 0 ? { ports } : {}),
    env,
    resources: { limits: { cpu: '500m', memory: '512Mi' }, requests: { cpu: '100m', memory: '128Mi' } },
    volumeMounts: [
      { name: 'config', mountPath: '/etc/app', readOnly: true },
      { name: shape.tokenVolume, readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' },
    ],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
    securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
  };
  if (c.probes) {
    out.livenessProbe = probe('/healthz');
    out.readinessProbe = probe('/readyz');
  }
  return out;
}

/** managedFields as kube-controller-manager writes them for a ReplicaSet's pod. */
function managedFields(shape: PodShape, containers: Obj[], init: Obj[]): Json[] {
  const fieldsOf = (c: Obj): Obj => {
    const env: Obj = { '.': {} };
    for (const e of (c.env as Obj[] | undefined) ?? []) env[`k:{"name":"${e.name as string}"}`] = { '.': {}, 'f:name': {}, [e.valueFrom ? 'f:valueFrom' : 'f:value']: {} };
    const f: Obj = {
      '.': {},
      'f:env': env,
      'f:image': {},
      'f:imagePullPolicy': {},
      'f:name': {},
      'f:resources': { '.': {}, 'f:limits': { '.': {}, 'f:cpu': {}, 'f:memory': {} }, 'f:requests': { '.': {}, 'f:cpu': {}, 'f:memory': {} } },
      'f:securityContext': { '.': {}, 'f:allowPrivilegeEscalation': {}, 'f:readOnlyRootFilesystem': {}, 'f:runAsNonRoot': {} },
      'f:terminationMessagePath': {},
      'f:terminationMessagePolicy': {},
      'f:volumeMounts': { '.': {}, 'k:{"mountPath":"/etc/app"}': { '.': {}, 'f:mountPath': {}, 'f:name': {}, 'f:readOnly': {} } },
    };
    if (c.livenessProbe) f['f:livenessProbe'] = { '.': {}, 'f:httpGet': { '.': {}, 'f:path': {}, 'f:port': {}, 'f:scheme': {} } };
    return f;
  };
  const byName = (list: Obj[]): Obj => Object.fromEntries(list.map((c) => [`k:{"name":"${c.name as string}"}`, fieldsOf(c)]));
  return [
    {
      manager: 'kube-controller-manager',
      operation: 'Update',
      apiVersion: 'v1',
      time: '2026-11-22T10:00:00Z',
      fieldsType: 'FieldsV1',
      fieldsV1: {
        'f:metadata': {
          'f:generateName': {},
          'f:labels': { '.': {}, 'f:app': {}, 'f:pod-template-hash': {} },
          'f:ownerReferences': { '.': {}, [`k:{"uid":"${shape.rsUid}"}`]: {} },
        },
        'f:spec': {
          'f:containers': byName(containers),
          ...(init.length > 0 ? { 'f:initContainers': byName(init) } : {}),
          'f:dnsPolicy': {},
          'f:enableServiceLinks': {},
          'f:restartPolicy': {},
          'f:schedulerName': {},
          'f:securityContext': {},
          'f:terminationGracePeriodSeconds': {},
          'f:volumes': { '.': {}, 'k:{"name":"config"}': { '.': {}, 'f:configMap': { '.': {}, 'f:defaultMode': {}, 'f:name': {} }, 'f:name': {} } },
        },
      },
    },
  ];
}

function pod(shape: PodShape, extraEnv: number, opts: { name?: string; images?: Map<string, string>; resourceVersion?: string } = {}): Obj {
  // Extra env goes round-robin to the containers, main container first.
  const all = [...shape.containers, ...shape.init];
  const extraFor = (i: number): number => Math.floor(extraEnv / all.length) + (i < extraEnv % all.length ? 1 : 0);
  const containers = shape.containers.map((c, i) => container(shape, c, extraFor(i), opts.images?.get(c.name)));
  const init = shape.init.map((c, i) => container(shape, c, extraFor(shape.containers.length + i), opts.images?.get(c.name)));
  const volumes: Json[] = [];
  for (let i = 0; i < shape.configMaps; i++) volumes.push({ name: i === 0 ? 'config' : `config-${i}`, configMap: { name: `${shape.app}-config-${i}`, defaultMode: 420 } });
  volumes.push({
    name: shape.tokenVolume,
    projected: {
      sources: [
        { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
      ],
      defaultMode: 420,
    },
  });
  const rsName = `${shape.app}-${shape.hash}`;
  const metadata: Obj = {
    ...(opts.name !== undefined ? { name: opts.name } : { generateName: `${rsName}-` }),
    namespace: shape.namespace,
    uid: shape.podUid,
    ...(opts.resourceVersion !== undefined ? { resourceVersion: opts.resourceVersion } : {}),
    creationTimestamp: '2026-11-22T10:00:00Z',
    labels: { app: shape.app, 'pod-template-hash': shape.hash, 'app.kubernetes.io/part-of': shape.namespace.slice(5), 'app.kubernetes.io/version': '2.4.1' },
    annotations: { 'kubectl.kubernetes.io/restartedAt': '2026-11-20T08:15:00Z', 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9090' },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rsName, uid: shape.rsUid, controller: true, blockOwnerDeletion: true }],
  };
  if (shape.managedFields) metadata.managedFields = managedFields(shape, containers, init);
  return {
    kind: 'Pod',
    apiVersion: 'v1',
    metadata,
    spec: {
      volumes,
      ...(init.length > 0 ? { initContainers: init } : {}),
      containers,
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: shape.app,
      serviceAccount: shape.app,
      securityContext: { runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
      schedulerName: 'default-scheduler',
      tolerations: [
        { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
        { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      ],
      priority: 0,
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
    },
    status: { phase: 'Pending', qosClass: 'Burstable' },
  };
}

function review(uid: string, shape: PodShape, operation: 'CREATE' | 'UPDATE', object: Obj, oldObject: Obj | null, name: string): Obj {
  const gvk = { group: '', version: 'v1', kind: 'Pod' };
  const gvr = { group: '', version: 'v1', resource: 'pods' };
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid,
      kind: gvk,
      resource: gvr,
      requestKind: gvk,
      requestResource: gvr,
      name,
      namespace: shape.namespace,
      operation,
      userInfo:
        operation === 'CREATE'
          ? { username: 'system:serviceaccount:kube-system:replicaset-controller', uid: '4b1e3ad1-6f0c-4a8e-9f3b-2d8c5e7a1b90', groups: ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'] }
          : { username: 'alice@example.com', groups: ['platform-admins', 'system:authenticated'] },
      object,
      oldObject,
      dryRun: false,
      options: { kind: operation === 'CREATE' ? 'CreateOptions' : 'UpdateOptions', apiVersion: 'meta.k8s.io/v1', ...(operation === 'UPDATE' ? { fieldManager: 'kubectl-set' } : {}) },
    },
  };
}

/** The largest `n` in [0, max] with `size(n) <= target` (size grows with n); 0 if none. */
function largestFitting(size: (n: number) => number, target: number, max: number): number {
  let lo = 0;
  let hi = max;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (size(mid) <= target) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

const TARGET_BYTES: Record<SizeClass, readonly [number, number]> = {
  small: [3300, 4300],
  medium: [11_000, 13_000],
  large: [28_000, 32_000],
};

/** One Pod CREATE review of the given size class, drawn from `rng`. */
export function podCreateReview(rng: Rng, size: SizeClass): GeneratedReview {
  const shape = podShape(rng, size);
  const uid = uuid(rng);
  const [lo, hi] = TARGET_BYTES[size];
  const target = int(rng, lo, hi);
  const render = (n: number): string => JSON.stringify(review(uid, shape, 'CREATE', pod(shape, n), null, ''));
  const n = largestFitting((k) => Buffer.byteLength(render(k)), target, 400);
  const all = [...shape.containers, ...shape.init];
  return { body: render(n), uid, size, operation: 'CREATE', rewritable: all.filter((c) => c.rewritable).length, images: all.length };
}

/** Fisher-Yates with the given rng. */
function shuffle<T>(rng: Rng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const a = items[i] as T;
    items[i] = items[j] as T;
    items[j] = a;
  }
  return items;
}

/**
 * The request mix: exactly 70% small, 25% medium, 5% large per `count` reviews
 * (`count` a multiple of 20 keeps it exact), in a shuffled but fixed order.
 */
export function reviewMix(count = 200, seed = 1): GeneratedReview[] {
  const rng = createRng(seed);
  const nMedium = Math.round(count * 0.25);
  const nLarge = Math.round(count * 0.05);
  const sizes: SizeClass[] = [];
  for (let i = 0; i < count; i++) sizes.push(i < nLarge ? 'large' : i < nLarge + nMedium ? 'medium' : 'small');
  return shuffle(rng, sizes).map((s) => podCreateReview(rng, s));
}

/** Only ~30 KB reviews: the memory point (many large bodies in flight at once). */
export function largeOnly(count = 40, seed = 2): GeneratedReview[] {
  const rng = createRng(seed);
  return Array.from({ length: count }, () => podCreateReview(rng, 'large'));
}

/** The API server's cap on request bodies, and so about the largest review one sees. */
export const THREE_MIB = 3 * 1024 * 1024;

/**
 * One Pod UPDATE review of about `targetBytes` (default just under 3 MiB): a pod with
 * many containers and long env lists, `oldObject` included, as `kubectl set image`
 * sends it. The old pod runs mirrored images; the update sets third-party ones, so a
 * mirror rule has work to do on every container.
 */
export function largeUpdateReview(targetBytes = THREE_MIB, seed = 3): GeneratedReview {
  const rng = createRng(seed);
  const shape = podShape(rng, 'update');
  for (const c of [...shape.containers, ...shape.init]) {
    // Every container gets a third-party image in the new object.
    if (!c.rewritable) {
      c.image = pick(rng, THIRD_PARTY);
      c.rewritable = true;
    }
  }
  const uid = uuid(rng);
  const name = `${shape.app}-${shape.hash}-${shape.suffix}`;
  const oldImages = new Map([...shape.containers, ...shape.init].map((c) => [c.name, mirrored(c.image)]));
  const render = (n: number): string =>
    JSON.stringify(
      review(uid, shape, 'UPDATE', pod(shape, n, { name, resourceVersion: '48213377' }), pod(shape, n, { name, images: oldImages, resourceVersion: '48213376' }), name),
    );
  const n = largestFitting((k) => Buffer.byteLength(render(k)), targetBytes, 200_000);
  const all = [...shape.containers, ...shape.init];
  return { body: render(n), uid, size: 'update', operation: 'UPDATE', rewritable: all.length, images: all.length };
}

/** Where the bench config's rules would have put an image (for the old pod). */
function mirrored(ref: string): string {
  const first = ref.split('/')[0] ?? '';
  const hasHost = ref.includes('/') && (first.includes('.') || first.includes(':'));
  if (!hasHost) return `mirror.example.com/dockerhub/${ref.includes('/') ? ref : `library/${ref}`}`;
  const prefix: Record<string, string> = { 'docker.io': 'dockerhub', 'quay.io': 'quay', 'ghcr.io': 'ghcr', 'gcr.io': 'gcr' };
  const p = prefix[first];
  if (p === undefined) return ref;
  let rest = ref.slice(first.length + 1);
  if (first === 'docker.io' && !rest.includes('/')) rest = `library/${rest}`;
  return `mirror.example.com/${p}/${rest}`;
}

/** Counts and average sizes per class, and how much of the mix a mirror rule rewrites. */
export function summarize(reviews: readonly GeneratedReview[]): MixSummary {
  const classes: Record<string, { count: number; bytes: number }> = {};
  let images = 0;
  let rewritable = 0;
  let patched = 0;
  for (const r of reviews) {
    const c = (classes[r.size] ??= { count: 0, bytes: 0 });
    c.count++;
    c.bytes += Buffer.byteLength(r.body);
    images += r.images;
    rewritable += r.rewritable;
    if (r.rewritable > 0) patched++;
  }
  return {
    count: reviews.length,
    classes: Object.fromEntries(Object.entries(classes).map(([k, v]) => [k, { count: v.count, avgBytes: Math.round(v.bytes / v.count) }])),
    rewritableImageShare: images === 0 ? 0 : rewritable / images,
    rewritableReviewShare: reviews.length === 0 ? 0 : patched / reviews.length,
  };
}
