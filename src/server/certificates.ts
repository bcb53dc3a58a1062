/**
 * The serving certificate as a component: where it comes from, how it is kept current,
 * and what it exposes to the rest of `serve` (the first pair, swaps, expiry metrics,
 * readiness). Three sources:
 *
 * - **managed** (`--manage-certs`): a Secret and the webhook's caBundle, reconciled
 *   through the API. The first reconcile must succeed before there is anything to
 *   serve: it is retried with a doubling backoff (0.5 s × 2^attempt, at most 30 s) on the
 *   injected timers; then it runs every `intervalMs`, one at a time;
 * - **files** (`--tls-cert/--tls-key`): watched and reloaded when they change;
 * - **generated**: self-signed files made in `--certs-dir` (then watched like files).
 *
 * A pair the TLS stack refuses is logged and the current one stays in use.
 */
import { X509Certificate } from 'node:crypto';
import type { Metrics } from '../metrics.js';
import { sleepOn, systemTimers, type TimerHandle, type Timers } from '../ports.js';
import type { Component } from '../runtime.js';
import { readTlsFiles, watchTlsFiles, type TlsFiles, type TlsPair } from './tls.js';

/** The first reconcile's retry: 0.5 s doubling, at most 30 s. */
export const FIRST_RECONCILE_BACKOFF = { initialMs: 500, maxMs: 30_000 } as const;

export interface ManagedSource {
  readonly kind: 'managed';
  /** Bring the Secret and the caBundle to what the rotation policy wants. */
  reconcile(): Promise<unknown>;
  /** The pair in the Secret now, with the CA bundle; undefined when there is none yet. */
  read(): Promise<{ readonly pair: TlsPair; readonly ca: string } | undefined>;
  /** Record which certificate this replica serves (the rotation waits for every replica). */
  recordServed?: ((certPem: string) => Promise<void>) | undefined;
  readonly intervalMs: number;
  /** Where the pair lives, for logs (`Secret ns/mirrorgate-tls`). */
  readonly where: string;
}

export interface FileSource {
  readonly kind: 'files';
  readonly files: TlsFiles;
}

export interface GeneratedSource {
  readonly kind: 'generated';
  /** Make (or reuse) the files; `caCert` is the CA's PEM. */
  make(): Promise<{ readonly files: TlsFiles; readonly caFile: string; readonly caCert: string; readonly created: boolean }>;
  readonly certsDir: string;
}

export interface CertificatesLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface CertificatesDeps {
  readonly source: ManagedSource | FileSource | GeneratedSource;
  readonly metrics: Pick<Metrics, 'certificateExpiry'>;
  readonly log: CertificatesLog;
  /** Backoff and reconcile timers (the system's by default). */
  readonly timers?: Timers | undefined;
}

export class Certificates implements Component {
  readonly name = 'certificates';
  readonly #deps: CertificatesDeps;
  readonly #timers: Timers;
  #initial: TlsPair | undefined;
  #caFile: string | undefined;
  #apply: (pair: TlsPair) => void = () => undefined;
  #served: TlsPair | undefined;
  #lastError: string | undefined;
  #ticking = false;
  #timer: TimerHandle | undefined;
  #watch: { stop(): void } | undefined;
  readonly #stopping = new AbortController();

  constructor(deps: CertificatesDeps) {
    this.#deps = deps;
    this.#timers = deps.timers ?? systemTimers;
  }

  /** The pair to listen with (after start). */
  get initial(): TlsPair {
    if (this.#initial === undefined) throw new Error('certificates not started');
    return this.#initial;
  }

  /** The CA file made here (generated source only), for clients. */
  get caFile(): string | undefined {
    return this.#caFile;
  }

  /** How to swap the listener's TLS context; throws when the pair is refused. */
  attach(apply: (pair: TlsPair) => void): void {
    this.#apply = apply;
  }

  async start(): Promise<void> {
    const source = this.#deps.source;
    if (source.kind === 'managed') return this.#startManaged(source);
    let files: TlsFiles;
    if (source.kind === 'generated') {
      const made = await source.make();
      files = made.files;
      this.#caFile = made.caFile;
      this.#setExpiry(made.caCert, 'ca');
      this.#deps.log.info({ certsDir: source.certsDir, created: made.created }, made.created ? 'created self-signed certificates' : 'reusing certificates');
    } else files = source.files;
    const pair = await readTlsFiles(files);
    this.#setExpiry(pair.cert, 'serving');
    this.#initial = pair;
    this.#watch = watchTlsFiles(
      files,
      {
        onReload: (next) => this.#swap(next, files.certFile),
        onError: (err) => this.#deps.log.error({ error: err.message }, 'serving certificate files invalid; keeping the current one'),
      },
      { initial: pair },
    );
  }

  degraded(): string[] {
    return this.#lastError ? [`certificates not reconciled: ${this.#lastError}`] : [];
  }

  stop(): void {
    this.#stopping.abort();
    this.#timer?.cancel();
    this.#watch?.stop();
  }

  async #startManaged(source: ManagedSource): Promise<void> {
    let first: { pair: TlsPair; ca: string } | undefined;
    for (let attempt = 1; first === undefined; attempt++) {
      if (this.#stopping.signal.aborted) throw new Error('stopped before the first certificate was reconciled');
      try {
        await source.reconcile();
        first = await source.read();
        // Every write lost a race (bounded steps): not an error, but nothing to serve yet either.
        if (first === undefined) throw new Error(`no serving certificate in ${source.where} yet`);
      } catch (err) {
        const delay = Math.min(FIRST_RECONCILE_BACKOFF.maxMs, FIRST_RECONCILE_BACKOFF.initialMs * 2 ** attempt);
        this.#deps.log.warn({ error: (err as Error).message, retryInMs: delay }, 'certificates: cannot reach the Secret or the webhook configuration yet');
        await sleepOn(this.#timers, delay, this.#stopping.signal);
      }
    }
    this.#served = first.pair;
    this.#initial = first.pair;
    this.#setExpiry(first.pair.cert, 'serving');
    this.#setExpiry(first.ca, 'ca');
    this.#timer = this.#timers.every(source.intervalMs, () => void this.#tick(source));
    await source.recordServed?.(first.pair.cert).catch(() => undefined);
  }

  async #tick(source: ManagedSource): Promise<void> {
    // A slow API must not stack reconciles on top of each other.
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      await source.reconcile();
      const current = await source.read();
      // What is recorded as served must be what the listener really uses.
      if (current && current.pair.cert !== this.#served?.cert && this.#swap(current.pair, source.where)) this.#served = current.pair;
      if (current) this.#setExpiry(current.ca, 'ca');
      if (this.#served) await source.recordServed?.(this.#served.cert);
      this.#lastError = undefined;
    } catch (err) {
      this.#lastError = (err as Error).message;
      this.#deps.log.warn({ error: this.#lastError }, 'certificates: reconcile failed; will retry');
    } finally {
      this.#ticking = false;
    }
  }

  /** Swap the TLS context; false (and the current one kept) when the pair is refused. */
  #swap(pair: TlsPair, what: string): boolean {
    try {
      this.#apply(pair);
      this.#setExpiry(pair.cert, 'serving');
      this.#deps.log.info({ source: what }, 'serving certificate reloaded');
      return true;
    } catch (err) {
      this.#deps.log.error({ err }, 'serving certificate reload failed; keeping the current one');
      return false;
    }
  }

  #setExpiry(pem: string, which: 'serving' | 'ca'): void {
    try {
      this.#deps.metrics.certificateExpiry.set({ certificate: which }, Date.parse(new X509Certificate(pem).validTo) / 1000);
    } catch {
      // Unreadable: the TLS loader reports it.
    }
  }
}
