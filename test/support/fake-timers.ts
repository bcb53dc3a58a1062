/**
 * Timers and a clock that move only when a test says so: `advance(ms)` runs what falls
 * due, in order. Implements the `Timers` and `Clock` ports; no real time passes.
 */
import type { Clock, TimerHandle, Timers } from '../../src/ports.js';

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  every: number | undefined;
  cancelled: boolean;
}

export class FakeTimers implements Timers, Clock {
  #now = 0;
  #seq = 0;
  #pending: Pending[] = [];
  /** The delays asked of `after`, in order (what a backoff chose). */
  readonly delays: number[] = [];
  /** What `random()` returns (0.5: no jitter, as 0.8 + 0.5 × 0.4 = 1). */
  randomValue = 0.5;

  now(): number {
    return this.#now;
  }

  wall(): Date {
    return new Date(this.#now);
  }

  random(): number {
    return this.randomValue;
  }

  after(ms: number, fn: () => void): TimerHandle {
    this.delays.push(ms);
    return this.#add(ms, fn, undefined);
  }

  every(ms: number, fn: () => void): TimerHandle {
    return this.#add(ms, fn, ms);
  }

  /** Timers waiting to run. */
  get pending(): number {
    return this.#pending.filter((p) => !p.cancelled).length;
  }

  /** Move the clock by `ms`, running every timer that falls due (in due order). */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const next = this.#pending.filter((p) => !p.cancelled && p.at <= until).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (next === undefined) break;
      this.#now = next.at;
      if (next.every === undefined) next.cancelled = true;
      else next.at += next.every;
      next.fn();
    }
    this.#now = until;
    this.#pending = this.#pending.filter((p) => !p.cancelled);
  }

  #add(ms: number, fn: () => void, every: number | undefined): TimerHandle {
    const p: Pending = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, every, cancelled: false };
    this.#pending.push(p);
    return { cancel: () => void (p.cancelled = true) };
  }
}
