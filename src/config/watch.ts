/**
 * Loading the config file and keeping it current. A ConfigMap mounted as a volume is
 * updated by swapping a `..data` symlink, which `fs.watch` on the file alone misses,
 * so the directory is watched as well and the file is also polled.
 * An invalid new version is rejected and the last good config stays in force.
 */
import { readFile } from 'node:fs/promises';
import { watch, watchFile, unwatchFile, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { compileOffThread } from './compile.js';
import { ConfigError, parseConfig, type Config } from './schema.js';
import { messageOf, asError } from '../errors.js';
import { systemTimers, type TimerHandle, type Timers } from '../ports.js';

/** Read and validate a config file. Throws ConfigError (unreadable files included). */
export async function loadConfigFile(path: string): Promise<{ config: Config; text: string }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const reason = messageOf(err);
    throw new ConfigError(path, [{ path: '(file)', message: `cannot read: ${reason}` }]);
  }
  return { config: parseConfig(text, path), text };
}

/** The current config, read on every admission (a reload swaps it atomically). */
export interface ConfigSource {
  current(): Config;
}

export interface ConfigWatcherEvents {
  onReload(config: Config): void;
  onReject(error: Error): void;
}

/**
 * Holds the last good config and reloads it when the file changes. Never throws from
 * a watcher callback; stop() releases every watcher.
 */
export class ConfigWatcher implements ConfigSource {
  #config: Config;
  #text: string;
  #watcher: FSWatcher | undefined;
  #timer: TimerHandle | undefined;
  #checking = false;
  #again = false;
  #stopped = false;
  /** Stops a compile still running when the watcher stops. */
  readonly #abort = new AbortController();

  constructor(
    private readonly path: string,
    initial: { config: Config; text: string },
    private readonly events: ConfigWatcherEvents,
    private readonly opts: {
      intervalMs?: number;
      debounceMs?: number;
      /** The debounce timer (the system's, unref'd, by default); tests pass fake ones. */
      timers?: Timers;
      /** Parses, validates and compiles a new version; off the main thread by default (see compile.ts). */
      compile?: (text: string, source: string, signal: AbortSignal) => Promise<Config>;
    } = {},
  ) {
    this.#config = initial.config;
    this.#text = initial.text;
  }

  current(): Config {
    return this.#config;
  }

  start(): this {
    const interval = this.opts.intervalMs ?? 2000;
    watchFile(this.path, { interval, persistent: false }, () => this.#schedule());
    try {
      this.#watcher = watch(dirname(this.path), { persistent: false }, () => this.#schedule());
      this.#watcher.on('error', () => undefined);
    } catch {
      // Polling alone still works (e.g. a filesystem without inotify).
    }
    return this;
  }

  stop(): void {
    this.#stopped = true;
    this.#abort.abort();
    unwatchFile(this.path);
    this.#watcher?.close();
    this.#timer?.cancel();
  }

  /** Re-read now; resolves when done. Also used by tests. */
  async check(): Promise<void> {
    if (this.#checking) {
      this.#again = true;
      return;
    }
    this.#checking = true;
    try {
      do {
        this.#again = false;
        await this.#checkOnce();
      } while (this.#again && !this.#stopped);
    } finally {
      this.#checking = false;
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer?.cancel();
    this.#timer = (this.opts.timers ?? systemTimers).after(this.opts.debounceMs ?? 100, () => {
      this.check().catch((err: unknown) => this.events.onReject(asError(err)));
    });
  }

  async #checkOnce(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      // Mid-swap a ConfigMap volume can briefly lack the file; the next event retries.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.events.onReject(new ConfigError(this.path, [{ path: '(file)', message: `cannot read: ${(err as Error).message}` }]));
      return;
    }
    if (text === this.#text) return;
    this.#text = text;
    let config: Config;
    try {
      // Never on the thread that answers admissions: a large config takes seconds.
      const compile = this.opts.compile ?? ((t: string, source: string, signal: AbortSignal) => compileOffThread(t, source, { signal }));
      config = await compile(text, this.path, this.#abort.signal);
    } catch (err) {
      if (!this.#stopped) this.events.onReject(asError(err));
      return;
    }
    if (this.#stopped) return;
    this.#config = config;
    this.events.onReload(config);
  }
}
