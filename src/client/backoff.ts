/**
 * Jittered exponential backoff for reconnecting clients.
 *
 * @module
 */

/** How long a client waits between reconnect attempts. */
export interface BackoffOptions {
  /** The delay before the first retry, in milliseconds. */
  initialMs: number;
  /** The longest delay, in milliseconds. */
  maxMs: number;
  /** How much the delay grows with each failed attempt. */
  factor: number;
  /**
   * The share of the delay that is random, from 0 (none) to 1: with `0.5`
   * the delay falls between half and all of the exponential value, so that
   * clients dropped at the same moment do not all come back at once.
   */
  jitter: number;
}

/** The defaults: 500 ms, doubling, up to 30 s, half of it random. */
export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = {
  initialMs: 500,
  maxMs: 30_000,
  factor: 2,
  jitter: 0.5,
};

/**
 * The delay before retry number `attempt` (0 for the first retry).
 *
 * @example
 * ```ts
 * import { backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";
 * backoffDelay(0, DEFAULT_BACKOFF, () => 0); // 500
 * backoffDelay(3, DEFAULT_BACKOFF, () => 1); // 2000: 4000 minus half of it
 * ```
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exponential = options.initialMs *
    options.factor ** Math.max(0, Math.min(attempt, 64));
  const capped = Math.min(options.maxMs, exponential);
  const jitter = Math.min(1, Math.max(0, options.jitter));
  return Math.round(capped * (1 - jitter * random()));
}
