#!/usr/bin/env node
/**
 * The mirrorgate command line: the only reader of argv and the environment.
 * Exit codes: 0 success, 1 runtime failure, 2 usage or config error.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostname } from 'node:os';
import { stringify as stringifyYaml } from 'yaml';
import { rotationPolicy, TLS_SECRET, type RotationPolicy } from './core/rotation.js';
import type { Report } from './report/rewrites.js';
import { closeLogger, createLogger } from './logger.js';
import { fetchReport } from './report/fetch.js';
import { copyCommands, formatTable, pendingImages, worklistCsv } from './report/format.js';
import type { ReportContext } from './report/worklist.js';
import { commandHelp, commandUsage, overview, parseCommand, UsageError, wantsHelp, type CommandSpec } from './cli-help.js';
import { loadConfigFile } from './config/watch.js';
import { decideRewrite } from './core/rules.js';
import { decideImage, ruleLabel } from './core/decide.js';
import { judgeRef } from './core/policy.js';
import { serve } from './serve.js';
import { BlobLocations, copyImage, parsePlatform, type CopyResult } from './copy/copier.js';
import { fetchMissing, missingFrom } from './copy/missing.js';
import { RegistryClient } from './registry/client.js';
import { endpointFor, loadEndpoints } from './verify/endpoints.js';
import { CloudSources } from './registry/cloud/sources.js';
import { formatScanJson, formatScanText, scanExitCode, scanPaths } from './scan/scan.js';
import { exitCodeOf, messageOf } from './errors.js';

interface Io {
  out(line: string): void;
  err(line: string): void;
  /** Where cloud identities are read from; the process environment when omitted. */
  env?: Readonly<Record<string, string | undefined>>;
}

const stdio: Io = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
};

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function port(v: string | boolean | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n > 65535) throw new UsageError(`--${name}: not a port number: ${String(v)}`);
  return n;
}

function duration(v: string | boolean | undefined, name: string, dfltMs: number): number {
  if (v === undefined) return dfltMs;
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(String(v));
  if (!m) throw new UsageError(`--${name}: not a duration (like 5s or 500ms): ${String(v)}`);
  return Number(m[1]) * (m[2] === 'ms' ? 1 : 1000);
}

function requireConfig(values: { config?: string | boolean | undefined }): string {
  const config = str(values.config);
  if (config === undefined) throw new UsageError('--config FILE is required');
  return config;
}

const KUBECONFIG_DEFAULT = 'in-cluster in a pod, else $KUBECONFIG or ~/.kube/config';

const SERVE: CommandSpec = {
  name: 'serve',
  summary: 'run the webhook (HTTPS) and its metrics and report port (HTTP)',
  synopsis: [
    '--config FILE [--port 8443] [--metrics-port 9090] [--host 0.0.0.0]',
    '[--metrics-host ADDR] [--tls-cert FILE --tls-key FILE | --manage-certs [--webhook-name mirrorgate]]',
    '[--certs-dir ./certs] [--kubeconfig FILE | --no-kube] [--shutdown-delay 5s]',
    '[--drain-timeout 15s]',
  ],
  description: [
    'Serve POST /mutate (AdmissionReview admission.k8s.io/v1), /healthz and /readyz on the webhook',
    'port, /metrics, /report and /report.html on the metrics port. The config file is reloaded when',
    'it changes; an invalid new version is refused and the last good one stays. SIGTERM or SIGINT:',
    'not ready at once, serve for --shutdown-delay, drain, write the report, exit 0.',
  ],
  flags: {
    config: { type: 'string', value: 'FILE', default: 'required', help: 'the config file (YAML or JSON; README, "Configuration")' },
    port: { type: 'string', value: 'N', default: '8443', help: 'webhook port (TLS 1.2+)' },
    'metrics-port': { type: 'string', value: 'N', default: '9090', help: 'metrics and report port (plain HTTP)' },
    host: { type: 'string', value: 'ADDR', default: '0.0.0.0', help: 'address both ports listen on' },
    'metrics-host': { type: 'string', value: 'ADDR', default: 'the --host address', help: 'address of the metrics port alone' },
    'tls-cert': { type: 'string', value: 'FILE', default: 'none: created in --certs-dir', help: 'serving certificate (PEM), reloaded when the file changes; with --tls-key' },
    'tls-key': { type: 'string', value: 'FILE', default: 'none', help: 'private key of --tls-cert (PEM)' },
    'certs-dir': { type: 'string', value: 'DIR', default: './certs', help: 'without --tls-cert: ca.crt, tls.crt and tls.key are created here once and reused' },
    'manage-certs': { type: 'boolean', default: 'off', help: 'keep Secret mirrorgate-tls and the caBundle of --webhook-name current through the API (create, renew, rotate the CA)' },
    'webhook-name': { type: 'string', value: 'NAME', default: 'mirrorgate', help: 'the MutatingWebhookConfiguration whose caBundle --manage-certs keeps' },
    kubeconfig: { type: 'string', value: 'FILE', default: KUBECONFIG_DEFAULT, help: 'Kubernetes access for the caches, the report and certificates' },
    'no-kube': { type: 'boolean', default: 'off', help: 'run without a cluster: no caches, no identity wiring, no report persistence' },
    'shutdown-delay': { type: 'string', value: 'DURATION', default: '5s', help: 'after SIGTERM/SIGINT, keep serving this long while endpoints update (0s locally)' },
    'drain-timeout': { type: 'string', value: 'DURATION', default: '15s', help: 'then wait at most this long for requests in flight before cutting them' },
  },
};

const REWRITE: CommandSpec = {
  name: 'rewrite',
  summary: 'print what the rules and the policy decide for each image, without a request',
  synopsis: ['--config FILE [--output text|json] IMAGE...'],
  description: [
    'For each IMAGE: rewritten (with the rule that matched) or unchanged (with the reason:',
    'no-rule, on-target, excluded, target-invalid) or invalid, and the policy verdict on the',
    'final image. Scoped rules (namespaces, selectors) do not apply: there is no pod here.',
    'Exit 1 when an image is invalid or denied by the policy (e.g. an image no rule rewrites',
    'and that is not from an allowed registry), else 0.',
  ],
  flags: {
    config: { type: 'string', value: 'FILE', default: 'required', help: 'the config file' },
    output: { type: 'string', value: 'text|json', default: 'text', help: 'json: one object per image with decision, reason, detail, result, rule, policy' },
  },
};

const COPY: CommandSpec = {
  name: 'copy',
  summary: 'copy images digest-exact to their rewrite targets',
  synopsis: [
    '--config FILE [--missing [--url URL | --kubeconfig FILE [--namespace NS]]]',
    '[--platform os/arch[/variant]] IMAGE...',
  ],
  description: [
    'Copy each IMAGE (the whole multi-arch index unless --platform) to the target the config\'s',
    'rules give it, with the registries: settings for both sides. One line per image; exit 1',
    'naming each image that failed.',
  ],
  flags: {
    config: { type: 'string', value: 'FILE', default: 'required', help: 'the config file (rules and registries)' },
    missing: { type: 'boolean', default: 'off', help: 'also copy the report\'s images missing from the mirror' },
    url: { type: 'string', value: 'URL', default: 'http://127.0.0.1:9090', help: 'with --missing: a running instance\'s metrics port to read the report from' },
    kubeconfig: { type: 'string', value: 'FILE', default: 'none (use --url)', help: 'with --missing: read the report ConfigMap from the cluster instead' },
    namespace: { type: 'string', value: 'NS', default: '$POD_NAMESPACE, else mirrorgate', help: 'with --kubeconfig: mirrorgate\'s namespace' },
    platform: { type: 'string', value: 'os/arch[/variant]', default: 'all platforms', help: 'copy only this platform\'s manifest of an index (the target tag then names it)' },
  },
};

const SCAN: CommandSpec = {
  name: 'scan',
  summary: 'find (and rewrite) third-party images in Kubernetes YAML and Dockerfiles',
  synopsis: ['--config FILE [--write] [--check] [--output text|json] PATH...'],
  description: [
    'PATH: files or folders of Kubernetes YAML (every workload kind, multi-document files) and',
    'Dockerfiles. Lists third-party references by registry and what they become.',
    'Exit 1 with --check while third-party references remain (after --write: those it could not rewrite).',
  ],
  flags: {
    config: { type: 'string', value: 'FILE', default: 'required', help: 'the config file (rules and policy)' },
    write: { type: 'boolean', default: 'off', help: 'rewrite the files in place, comments and formatting kept' },
    check: { type: 'boolean', default: 'off', help: 'exit 1 while third-party references remain (for CI)' },
    output: { type: 'string', value: 'text|json', default: 'text', help: 'output format' },
  },
};

const REPORT: CommandSpec = {
  name: 'report',
  summary: 'print the report: what was rewritten, would be, was denied, per source registry',
  synopsis: [
    '[--url URL | --kubeconfig FILE [--namespace mirrorgate]] [--output table|json]',
    '[--images [--output csv]] [--copy-commands gcrane|skopeo|crane [--config FILE]]',
  ],
  description: [
    'From a running instance (--url, its metrics port) or from the cluster\'s ConfigMap',
    'mirrorgate-report (merged over replicas).',
  ],
  flags: {
    url: { type: 'string', value: 'URL', default: 'none: read the ConfigMap', help: 'a running instance\'s metrics port, e.g. http://127.0.0.1:9090 after a port-forward' },
    kubeconfig: { type: 'string', value: 'FILE', default: KUBECONFIG_DEFAULT, help: 'the cluster to read the ConfigMap from' },
    namespace: { type: 'string', value: 'NS', default: '$POD_NAMESPACE, else mirrorgate', help: 'mirrorgate\'s namespace' },
    output: { type: 'string', value: 'table|json|csv', default: 'table', help: 'csv only with --images (the worklist)' },
    images: { type: 'boolean', default: 'off', help: 'the images still pulled from outside, with their targets' },
    'copy-commands': { type: 'string', value: 'gcrane|skopeo|crane', default: 'off', help: 'print a copy command per pending image for that tool' },
    config: { type: 'string', value: 'FILE', default: 'none', help: 'registries (plain HTTP, CA) and policy for the copy commands and the worklist' },
  },
};

const CERTS: CommandSpec = {
  name: 'certs',
  summary: 'create or renew the CA and serving certificate once (cluster or files)',
  synopsis: [
    '[--service mirrorgate] [--namespace mirrorgate] [--webhook-name mirrorgate]',
    '[--kubeconfig FILE | --out-dir DIR]',
  ],
  description: [
    'With the cluster: the reconcile serve --manage-certs runs, once (Secret mirrorgate-tls and',
    'the webhook\'s caBundle). With --out-dir: ca.crt, ca.key, tls.crt, tls.key and the Secret as',
    'secret.yaml (YAML, mode 0600) in DIR, and the caBundle to paste; the CA is reused on later runs.',
  ],
  flags: {
    service: { type: 'string', value: 'NAME', default: 'mirrorgate', help: 'the Service the certificate is for' },
    namespace: { type: 'string', value: 'NS', default: 'mirrorgate', help: 'its namespace (DNS names and the Secret\'s namespace)' },
    'webhook-name': { type: 'string', value: 'NAME', default: 'mirrorgate', help: 'the MutatingWebhookConfiguration whose caBundle is kept (cluster only)' },
    kubeconfig: { type: 'string', value: 'FILE', default: KUBECONFIG_DEFAULT, help: 'the cluster' },
    'out-dir': { type: 'string', value: 'DIR', default: 'none: use the cluster', help: 'write files instead of using the cluster' },
  },
};

async function cmdServe(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommand(SERVE, args);
  if (positionals.length > 0) throw new UsageError(`serve takes no arguments (got ${positionals.join(' ')})`);
  const manageCerts = values['manage-certs'] === true;
  if (manageCerts && values['tls-cert'] !== undefined) throw new UsageError('--manage-certs and --tls-cert exclude each other');
  if (manageCerts && values['no-kube'] === true) throw new UsageError('--manage-certs needs the Kubernetes API (drop --no-kube)');
  const tlsCert = str(values['tls-cert']);
  const tlsKey = str(values['tls-key']);
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  if (values['no-kube'] === true && values.kubeconfig !== undefined) throw new UsageError('--kubeconfig and --no-kube exclude each other');
  const host = str(values.host) ?? '0.0.0.0';
  const running = await serve({
    configPath: requireConfig(values),
    host,
    port: port(values.port, 'port', 8443),
    metricsPort: port(values['metrics-port'], 'metrics-port', 9090),
    metricsHost: str(values['metrics-host']) ?? host,
    tlsCert,
    tlsKey,
    certsDir: str(values['certs-dir']) ?? './certs',
    serviceName: process.env.MIRRORGATE_SERVICE ?? 'mirrorgate',
    namespace: process.env.POD_NAMESPACE ?? 'mirrorgate',
    shutdownDelayMs: duration(values['shutdown-delay'], 'shutdown-delay', 5000),
    drainTimeoutMs: duration(values['drain-timeout'], 'drain-timeout', 15_000),
    noKube: values['no-kube'] === true,
    kubeconfig: str(values.kubeconfig),
    replica: process.env.POD_NAME ?? hostname(),
    env: process.env,
    manageCerts,
    webhookName: str(values['webhook-name']) ?? 'mirrorgate',
  });
  if (process.stdout.isTTY) {
    io.err(`mirrorgate: webhook on ${running.url}/mutate, metrics on ${running.metricsUrl}/metrics`);
    if (running.caFile) io.err(`try: curl --cacert ${running.caFile} -H 'Content-Type: application/json' --data @examples/admission-review.json ${running.url}/mutate`);
  }
  const stop = (signal: string): void => {
    running.shutdown(signal).then(
      () => closeLogger(running.log).then(() => process.exit(0)),
      (err: unknown) => {
        running.log.error({ err }, 'shutdown failed');
        void closeLogger(running.log).then(() => process.exit(1));
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  return new Promise<number>(() => undefined); // runs until a signal
}

async function cmdRewrite(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommand(REWRITE, args);
  const output = str(values.output) ?? 'text';
  if (output !== 'text' && output !== 'json') throw new UsageError(`--output: text or json (got ${output})`);
  if (positionals.length === 0) throw new UsageError('rewrite needs at least one IMAGE');
  const { config } = await loadConfigFile(requireConfig(values));
  let failed = false;
  const results = positionals.map((image) => {
    const { rewrite: d, final, verdict: judged } = decideImage(config, image);
    const verdict = judged ?? { allowed: true as const };
    if (d.kind === 'invalid' || !verdict.allowed) failed = true;
    // Each field one fact: decision and reason are codes, detail and policyMessage prose.
    return {
      image,
      decision: d.kind,
      reason: d.kind === 'unchanged' ? d.reason : d.kind === 'invalid' ? 'invalid-reference' : null,
      detail: d.kind === 'invalid' ? d.reason : d.kind === 'unchanged' ? (d.detail ?? null) : null,
      result: final,
      rule: d.kind === 'rewrite' ? ruleLabel(d.rule, { verify: true }) : null,
      policy: verdict.allowed ? (config.policy ? 'allowed' : 'none') : 'denied',
      policyMessage: verdict.allowed ? null : verdict.message,
    };
  });
  if (output === 'json') io.out(JSON.stringify(results, null, 2));
  else {
    for (const r of results) {
      const head = r.decision === 'rewrite' ? `${r.image} -> ${r.result}` : `${r.image}: ${r.decision}${r.decision === 'unchanged' ? ` (${r.reason ?? ''})` : ''}`;
      const policy = r.policy === 'denied' ? `denied: ${r.policyMessage ?? ''}` : r.policy === 'none' ? 'no policy' : r.policy;
      io.out([head, r.rule && `  rule: ${r.rule}`, r.detail && `  reason: ${r.detail}`, `  policy: ${policy}`].filter(Boolean).join('\n'));
    }
  }
  return failed ? 1 : 0;
}

/** Human-readable byte count for summary lines. */
function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i] ?? 'TiB'}`;
}

function copySummary(r: CopyResult): string {
  const narrowed = r.narrowed ? ` (${r.narrowed.platform} of index ${r.narrowed.indexDigest}: the target now names this platform's manifest, not the index)` : '';
  return `copied ${r.source} ${r.digest} -> ${r.target}: ${bytesText(r.bytesSent)} sent, ${r.blobsSent} blobs sent, ${r.blobsSkipped} skipped, ${r.blobsMounted} mounted${narrowed}`;
}

async function cmdCopy(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommand(COPY, args);
  const configPath = requireConfig(values);
  const url = str(values.url);
  const kubeconfig = str(values.kubeconfig);
  if ((url !== undefined || kubeconfig !== undefined) && values.missing !== true) throw new UsageError('--url and --kubeconfig go with --missing');
  if (url !== undefined && kubeconfig !== undefined) throw new UsageError('--url and --kubeconfig exclude each other');
  const platformArg = str(values.platform);
  const platform = platformArg === undefined ? undefined : parsePlatform(platformArg);
  if (platformArg !== undefined && platform === undefined) throw new UsageError(`--platform: os/arch[/variant], like linux/amd64 (got ${platformArg})`);
  if (positionals.length === 0 && values.missing !== true) throw new UsageError('copy needs at least one IMAGE, or --missing');
  const { config } = await loadConfigFile(configPath);

  const images = [...positionals];
  if (values.missing === true) {
    // From the cluster's report ConfigMap with --kubeconfig, else from a running instance.
    const missing =
      kubeconfig !== undefined
        ? missingFrom(await reportFromCluster(kubeconfig, dnsLabel(values.namespace, 'namespace', process.env.POD_NAMESPACE ?? 'mirrorgate')))
        : await fetchMissing(url ?? 'http://127.0.0.1:9090');
    for (const m of missing.images) if (!images.includes(m)) images.push(m);
    if (missing.overflow > 0) io.err(`mirrorgate: the report lists ${missing.images.length} missing images; ${missing.overflow} more were not listed (run copy --missing again later)`);
    if (images.length === 0) {
      io.out('nothing to copy: the report lists no image missing from the mirror');
      return 0;
    }
  }

  const warn = (obj: object, msg: string): void => io.err(`mirrorgate: ${(obj as { registry?: string }).registry ?? ''}: ${msg}`);
  const endpoints = await loadEndpoints(config.registries, {
    log: { warn },
    // Cloud identities as the webhook uses them: the copy runs with this shell's (or pod's) identity.
    cloud: new CloudSources({ env: io.env ?? process.env, now: Date.now, log: { warn, debug: () => undefined } }),
  });
  const client = new RegistryClient();
  const locations = new BlobLocations();
  // A progress line, rewritten in place, only for a person watching a terminal.
  const tty = io === stdio && process.stderr.isTTY === true;
  const failed: string[] = [];
  try {
    for (const image of images) {
      const d = decideRewrite(config.ruleSet, image);
      if (d.kind !== 'rewrite') {
        const why = d.kind === 'invalid' ? d.reason : d.reason === 'no-rule' ? 'no rule matches it' : d.reason === 'on-target' ? 'it is already on a mirror' : (d.detail ?? d.reason);
        io.err(`mirrorgate: copy failed: ${image}: ${why}`);
        failed.push(image);
        continue;
      }
      try {
        const result = await copyImage(d.ref, d.rewrittenRef, {
          client,
          endpoint: (host) => endpointFor(endpoints, host),
          platform,
          locations,
          onProgress: tty
            ? (p) => process.stderr.write(`\r\x1b[Kcopying ${p.source}: ${p.blobsDone}/${p.blobsTotal} blobs, ${bytesText(p.bytesSent)} sent`)
            : undefined,
        });
        if (tty) process.stderr.write('\r\x1b[K');
        io.out(copySummary(result));
      } catch (err) {
        if (tty) process.stderr.write('\r\x1b[K');
        io.err(`mirrorgate: copy failed: ${image} -> ${d.rewritten}: ${messageOf(err)}`);
        failed.push(image);
      }
    }
  } finally {
    client.close();
  }
  if (failed.length > 0) {
    io.err(`mirrorgate: ${failed.length} of ${images.length} images failed: ${failed.join(', ')}`);
    return 1;
  }
  return 0;
}

async function cmdScan(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommand(SCAN, args);
  const output = str(values.output) ?? 'text';
  if (output !== 'text' && output !== 'json') throw new UsageError(`--output: text or json (got ${output})`);
  if (positionals.length === 0) throw new UsageError('scan needs at least one PATH (a file or folder)');
  const { config } = await loadConfigFile(requireConfig(values));
  const opts = { write: values.write === true };
  const result = await scanPaths(positionals, { ruleSet: config.ruleSet, policy: config.policy }, opts);
  for (const p of result.problems) io.err(`mirrorgate: ${p.file}: ${p.message}`);
  if (output === 'json') io.out(formatScanJson(result));
  else for (const line of formatScanText(result, opts)) io.out(line);
  return scanExitCode(result, values.check === true);
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** The merged report from the cluster's ConfigMap (client-node loads only for this). */
async function reportFromCluster(kubeconfig: string | undefined, namespace: string): Promise<Report> {
  const [{ loadKubeClient }, { configMapStore, readMergedReport }] = await Promise.all([import('./kube/client.js'), import('./kube/report-store.js')]);
  return readMergedReport(configMapStore(loadKubeClient({ file: kubeconfig }).config, namespace), new Date());
}

function dnsLabel(v: string | boolean | undefined, flag: string, dflt: string): string {
  const s = str(v) ?? dflt;
  if (!NAME.test(s) || s.length > 63) throw new UsageError(`--${flag}: not a Kubernetes name: ${s}`);
  return s;
}

function isHttpUrl(s: string): boolean {
  try {
    return /^https?:$/.test(new URL(s).protocol);
  } catch {
    return false;
  }
}

async function cmdReport(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommand(REPORT, args);
  if (positionals.length > 0) throw new UsageError(`report takes no arguments (got ${positionals.join(' ')})`);
  if (values.url !== undefined && values.kubeconfig !== undefined) throw new UsageError('--url and --kubeconfig exclude each other');
  const output = str(values.output) ?? 'table';
  if (output !== 'table' && output !== 'json' && output !== 'csv') throw new UsageError(`--output: table, json or csv (got ${output})`);
  if (output === 'csv' && values.images !== true) throw new UsageError('--output csv is the worklist: use it with --images');
  const tool = str(values['copy-commands']);
  if (tool !== undefined && tool !== 'gcrane' && tool !== 'skopeo' && tool !== 'crane') throw new UsageError(`--copy-commands: gcrane, skopeo or crane (got ${tool})`);
  const namespace = dnsLabel(values.namespace, 'namespace', process.env.POD_NAMESPACE ?? 'mirrorgate');
  const url = str(values.url);
  if (url !== undefined && !isHttpUrl(url)) throw new UsageError(`--url: not an http or https URL (like http://127.0.0.1:9090): ${url}`);
  // A running instance (--url) answers with the merged view; otherwise read the ConfigMap.
  const report =
    url !== undefined
      ? await fetchReport(url)
      : await reportFromCluster(str(values.kubeconfig), namespace);
  // --config gives each registry's settings (plain HTTP, CA) and the policy to the commands.
  const configPath = str(values.config);
  const config = configPath !== undefined ? (await loadConfigFile(configPath)).config : undefined;
  const policy = config?.policy;
  const ctx: ReportContext = {
    registries: config?.registries,
    allowed: policy === undefined ? undefined : (registry) => judgeRef(policy, { registry, repository: '', tag: undefined, digest: undefined, suffix: '' }, registry).allowed,
    ...(tool !== undefined ? { tool } : {}),
  };
  if (tool !== undefined) {
    const lines = copyCommands(report, tool, config?.registries ?? {});
    for (const l of lines) io.out(l);
    if (lines.length === 0) io.err('mirrorgate: nothing left to copy');
    return 0;
  }
  if (values.images === true) {
    if (output === 'csv') {
      io.out(worklistCsv(report, ctx).replace(/\r\n$/, ''));
      return 0;
    }
    const pending = pendingImages(report);
    if (output === 'json') io.out(JSON.stringify(pending, null, 2));
    else for (const p of pending) io.out(`${p.source} -> ${p.target}${p.inMirror === true ? '  (in the mirror: no copy needed)' : ''}`);
    return 0;
  }
  io.out(output === 'json' ? JSON.stringify(report, null, 2) : formatTable(report));
  return 0;
}

async function cmdCerts(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommand(CERTS, args);
  if (positionals.length > 0) throw new UsageError(`certs takes no arguments (got ${positionals.join(' ')})`);
  if (values['out-dir'] !== undefined && values.kubeconfig !== undefined) throw new UsageError('--out-dir and --kubeconfig exclude each other');
  const { defaultServingNames, ensureCertificates } = await import('./certs.js');
  const service = dnsLabel(values.service, 'service', 'mirrorgate');
  const namespace = dnsLabel(values.namespace, 'namespace', 'mirrorgate');
  const names = defaultServingNames(service, namespace);
  const outDir = str(values['out-dir']);
  if (outDir !== undefined) {
    // Offline: files for a Secret made elsewhere (GitOps), and the caBundle to paste.
    const made = await ensureCertificates(outDir, names);
    // ca.key stays here (never in the Secret): a later run signs the renewed serving
    // certificate with the same CA, so the caBundle already deployed keeps working.
    io.out(`${made.created ? 'wrote' : 'kept'} ${made.caFile}, ${join(outDir, 'ca.key')}, ${made.certFile}, ${made.keyFile} for ${names.dnsNames.join(', ')}`);
    io.out(`caBundle: ${Buffer.from(made.caCert).toString('base64')}`);
    // The same pair as the Secret serve mounts (--tls-cert/--tls-key), ready to apply or commit
    // to a secret store: `kubectl apply -f DIR/secret.yaml`.
    const b64 = (pem: string): string => Buffer.from(pem).toString('base64');
    const secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/tls',
      metadata: { name: 'mirrorgate-tls', namespace, labels: { 'app.kubernetes.io/name': 'mirrorgate' } },
      data: { 'ca.crt': b64(made.caCert), 'tls.crt': b64(made.cert), 'tls.key': b64(made.key) },
    };
    const secretFile = join(outDir, 'secret.yaml');
    await writeFile(secretFile, stringifyYaml(secret), { mode: 0o600 });
    await chmod(secretFile, 0o600);
    io.out(`wrote ${secretFile} (Secret ${namespace}/mirrorgate-tls)`);
    return 0;
  }
  // A webhook configuration's name is a DNS subdomain: dots are common (`mirrorgate.example.com`).
  const webhook = str(values['webhook-name']) ?? 'mirrorgate';
  if (webhook.length > 253 || !webhook.split('.').every((label) => NAME.test(label))) throw new UsageError(`--webhook-name: not a Kubernetes name: ${webhook}`);
  const [{ loadKubeClient }, { kubeCertStore, reconcile }] = await Promise.all([import('./kube/client.js'), import('./kube/cert-rotation.js')]);
  const kc = loadKubeClient({ file: str(values.kubeconfig) }).config;
  const store = kubeCertStore(kc, { namespace, webhook });
  const policy = (): RotationPolicy => rotationPolicy(new Date(), names);
  const silent = createLogger({ level: 'warn', destination: process.stderr });
  const result = await reconcile(store, policy, silent);
  io.out(result.steps.length === 0 ? `Secret ${namespace}/${TLS_SECRET} and the caBundle of ${webhook} are current` : `applied: ${result.steps.join(', ')}`);
  io.out(`serving certificate valid until ${result.certExpiry?.toISOString() ?? '?'}, CA until ${result.caExpiry?.toISOString() ?? '?'}`);
  return 0;
}

type Command = { readonly spec: CommandSpec; readonly run: (args: string[], io: Io) => Promise<number> };

/** Every subcommand, in the order help lists them: a command exists only with its help. */
export const COMMANDS: readonly Command[] = [
  { spec: SERVE, run: cmdServe },
  { spec: REWRITE, run: cmdRewrite },
  { spec: SCAN, run: cmdScan },
  { spec: COPY, run: cmdCopy },
  { spec: REPORT, run: cmdReport },
  { spec: CERTS, run: cmdCerts },
];

/** The overview `mirrorgate --help` prints. */
export const USAGE = overview(COMMANDS.map((c) => c.spec));

/** Run the CLI; resolves to the exit code. */
export async function main(argv: string[], io: Io = stdio): Promise<number> {
  const [command, ...rest] = argv;
  const found = COMMANDS.find((c) => c.spec.name === command);
  try {
    if (found !== undefined) {
      if (wantsHelp(rest)) {
        io.out(commandHelp(found.spec));
        return 0;
      }
      return await found.run(rest, io);
    }
    switch (command) {
      case 'version':
      case '--version':
        io.out(version());
        return 0;
      case 'help':
      case '--help':
      case '-h': {
        const topic = rest[0];
        if (command === 'help' && topic !== undefined) {
          const about = COMMANDS.find((c) => c.spec.name === topic);
          if (about === undefined) throw new UsageError(`help: unknown command "${topic}"`);
          io.out(commandHelp(about.spec));
          return 0;
        }
        io.out(USAGE);
        return 0;
      }
      case undefined:
        io.err(USAGE);
        return 2;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      const spec = err.command ?? found?.spec;
      io.err(`mirrorgate: ${err.message}\n\n${spec ? commandUsage(spec) : USAGE}`);
      return 2;
    }
    // The error table says which are the caller's to fix (exit 2) and which are failures (1).
    io.err(`mirrorgate: ${messageOf(err)}`);
    return exitCodeOf(err);
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    // npm's bin link is a symlink to this file.
    return realpathSync(script) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

// Run when executed directly (not when imported by tests).
if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`mirrorgate: ${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
