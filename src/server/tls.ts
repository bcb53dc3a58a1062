/**
 * The webhook's serving certificate: loading it, the TLS options, and reloading it when
 * the files change without dropping connections. A reload only replaces the context
 * for new handshakes (`server.setSecureContext`); open keep-alive connections, which the
 * API server reuses, keep going.
 *
 * Kubernetes updates a Secret volume by writing a new timestamped directory and swapping
 * the `..data` symlink that `tls.crt` and `tls.key` point through, so watching the files
 * alone misses it: the directory is watched too, and the files are polled as a backstop
 * (some filesystems deliver no events at all).
 */
import { unwatchFile, watch, watchFile, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ServerOptions } from 'node:https';
import { dirname } from 'node:path';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { asError } from '../errors.js';
import { systemTimers, type TimerHandle, type Timers } from '../ports.js';

/** Where the serving certificate and its key live (PEM). */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/** A certificate (chain) and its private key, PEM. */
export interface TlsPair {
  cert: string;
  key: string;
}

/**
 * Read the certificate and key. Throws an Error naming the file that cannot be read or
 * holds no PEM block of the expected kind, or both files when they do not form a pair
 * Node's TLS accepts.
 */
export async function readTlsFiles(files: TlsFiles): Promise<TlsPair> {
  const [cert, key] = await Promise.all([
    readPem(files.certFile, 'certificate', /-----BEGIN CERTIFICATE-----/),
    readPem(files.keyFile, 'key', /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/),
  ]);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(
      `TLS certificate ${files.certFile} and key ${files.keyFile} are not a usable pair: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { cert, key };
}

/**
 * Options for `tls.createSecureContext` and `server.setSecureContext`: the pair and
 * TLS 1.2 as the minimum. A reload must pass these, not just `{cert, key}`:
 * `setSecureContext` resets every option it is not given (minVersion included) to
 * Node's defaults.
 */
export function tlsSecureContextOptions(pair: TlsPair): SecureContextOptions {
  return { cert: pair.cert, key: pair.key, minVersion: 'TLSv1.2' };
}

/**
 * Node https server options: TLS 1.2 or newer, and HTTP/1.1 in ALPN (the API server
 * offers only `http/1.1`).
 */
export function tlsServerOptions(pair: TlsPair): ServerOptions {
  return { ...tlsSecureContextOptions(pair), ALPNProtocols: ['http/1.1'] };
}

/** What {@link watchTlsFiles} reports. */
export interface TlsWatchHandlers {
  /** A new, valid pair: apply it, e.g. `server.setSecureContext(tlsSecureContextOptions(pair))`. */
  onReload(pair: TlsPair): void;
  /** The files changed but cannot be used; the previous pair stays in force. */
  onError(err: Error): void;
}

/** Options of {@link watchTlsFiles}. */
export interface TlsWatchOptions {
  /** Polling interval of `fs.watchFile`. Default 2000 ms. */
  intervalMs?: number;
  /** Quiet time after the last change event before the files are read. Default 100 ms. */
  debounceMs?: number;
  /** The debounce timer (the system's by default). */
  timers?: Timers;
  /**
   * The pair being served now. Without it, the files as first read become the baseline
   * (no onReload for them).
   */
  initial?: TlsPair;
}

/**
 * Watch the certificate and key (polling with `fs.watchFile` and `fs.watch` on their
 * directories) and, when their content changes, debounced: call `onReload` with the new
 * pair when `tls.createSecureContext` accepts it, else `onError`, keeping the old one.
 * The same content is reported once. Never throws from a watcher callback; `stop()`
 * releases every watcher and silences pending checks.
 */
export function watchTlsFiles(
  files: TlsFiles,
  handlers: TlsWatchHandlers,
  opts: TlsWatchOptions = {},
): { stop(): void } {
  const interval = opts.intervalMs ?? 2000;
  const debounceMs = opts.debounceMs ?? 100;
  const timers = opts.timers ?? systemTimers;
  let served: string | undefined = opts.initial ? fingerprint(opts.initial) : undefined;
  // The last content seen, valid or not, so an invalid pair is reported once, not per event.
  let seen: string | undefined = served;
  let stopped = false;
  let timer: TimerHandle | undefined;
  let checking = false;
  let again = false;
  const watchers: FSWatcher[] = [];

  const report = (err: unknown): void => {
    if (stopped) return;
    try {
      handlers.onError(asError(err));
    } catch {
      // A throwing handler must not take the process down from a timer.
    }
  };

  const checkOnce = async (): Promise<void> => {
    let pair: TlsPair;
    try {
      const [cert, key] = await Promise.all([readFile(files.certFile, 'utf8'), readFile(files.keyFile, 'utf8')]);
      pair = { cert, key };
    } catch (err) {
      // Mid-replacement a file can be missing for a moment; the write that follows
      // brings another event. Anything else is worth reporting.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        seen = undefined;
        return;
      }
      report(new Error(`cannot read TLS files ${files.certFile}, ${files.keyFile}: ${(err as Error).message}`, { cause: err }));
      return;
    }
    const print = fingerprint(pair);
    if (stopped || print === seen) return;
    seen = print;
    if (served === undefined) {
      served = print; // the baseline
      return;
    }
    if (print === served) return;
    try {
      createSecureContext(tlsSecureContextOptions(pair));
    } catch (err) {
      report(new Error(
        `new TLS certificate ${files.certFile} and key ${files.keyFile} rejected, keeping the previous one: ${(err as Error).message}`,
        { cause: err },
      ));
      return;
    }
    served = print;
    if (stopped) return;
    try {
      handlers.onReload(pair);
    } catch (err) {
      report(err);
    }
  };

  const check = async (): Promise<void> => {
    if (checking) {
      again = true;
      return;
    }
    checking = true;
    try {
      do {
        again = false;
        await checkOnce();
      } while (again && !stopped);
    } finally {
      checking = false;
    }
  };

  const run = (): void => {
    check().catch(report);
  };

  const schedule = (): void => {
    if (stopped) return;
    timer?.cancel();
    timer = timers.after(debounceMs, run);
  };

  const polled = [...new Set([files.certFile, files.keyFile])];
  for (const file of polled) watchFile(file, { interval, persistent: false }, schedule);
  for (const dir of new Set([dirname(files.certFile), dirname(files.keyFile)])) {
    try {
      const watcher = watch(dir, { persistent: false }, schedule);
      watcher.on('error', () => undefined); // e.g. the directory was removed; polling goes on
      watchers.push(watcher);
    } catch {
      // Polling alone still works (no inotify, too many watches).
    }
  }
  // Establish the baseline (or catch a change made before the watchers were in place).
  run();

  return {
    stop(): void {
      stopped = true;
      timer?.cancel();
      for (const file of polled) unwatchFile(file, schedule);
      for (const watcher of watchers) watcher.close();
    },
  };
}

function fingerprint(pair: TlsPair): string {
  return `${pair.cert}\u0000${pair.key}`;
}

async function readPem(path: string, what: string, marker: RegExp): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read TLS ${what} file ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!marker.test(text)) throw new Error(`TLS ${what} file ${path} holds no PEM ${what}`);
  return text;
}
