/**
 * {@linkcode LagWatch}: tells when the event loop falls behind. The runner
 * measures the lag of its sweep timer; a timer late by more than
 * {@linkcode OVERLOAD_LAG_MS} for {@linkcode LAGGING_SWEEPS} sweeps in a row
 * means more work arrives than the server can do (one garbage collection is
 * no overload), and a lag under {@linkcode RECOVERED_LAG_MS} ends it. It
 * only measures: the runner logs and tells the reducer.
 *
 * @module
 */

/** Event-loop lag that means overload when it lasts {@linkcode LAGGING_SWEEPS} sweeps. */
export const OVERLOAD_LAG_MS = 50;
/** Sweeps in a row over {@linkcode OVERLOAD_LAG_MS} that mean overload. */
export const LAGGING_SWEEPS = 3;
/** Lag under which an overload ends. */
export const RECOVERED_LAG_MS = 10;

/** A change of load: whether the server is now overloaded, and the lag seen. */
export interface LoadChange {
  overloaded: boolean;
  lagMs: number;
}

/** The lag of a timer meant to fire every `periodMs`. */
export class LagWatch {
  #periodMs: number;
  #overloadLagMs: number;
  #last = performance.now();
  #lagging = 0;
  #overloaded = false;

  /**
   * Watches a timer of period `periodMs`, started now; a lag over
   * `overloadLagMs` (default {@linkcode OVERLOAD_LAG_MS}) counts toward an
   * overload.
   */
  constructor(periodMs: number, overloadLagMs: number = OVERLOAD_LAG_MS) {
    this.#periodMs = periodMs;
    this.#overloadLagMs = overloadLagMs;
  }

  /** Whether the server is overloaded now. */
  get overloaded(): boolean {
    return this.#overloaded;
  }

  /** Called when the timer fires; returns the change of load, if any. */
  measure(): LoadChange | undefined {
    const now = performance.now();
    const lag = now - this.#last - this.#periodMs;
    this.#last = now;
    this.#lagging = lag > this.#overloadLagMs ? this.#lagging + 1 : 0;
    const overloaded = this.#overloaded
      ? lag > RECOVERED_LAG_MS
      : this.#lagging >= LAGGING_SWEEPS;
    if (overloaded === this.#overloaded) return undefined;
    this.#overloaded = overloaded;
    return { overloaded, lagMs: lag };
  }
}
