/**
 * {@linkcode TokenTimers}: one timer per token of a live connection (the
 * reducer's `token_timer` effect), which raises `token_due` when the token
 * expires. It does not look tokens up or close connections; the reducer
 * does, on `token_due`.
 *
 * @module
 */

/** The expiry timers of live tokens. */
export class TokenTimers {
  #timers = new Map<string, ReturnType<typeof setTimeout>>();
  #due: (token: string) => void;
  #now: () => number;

  /** Timers that call `due` with the token when it is due by `now`. */
  constructor(due: (token: string) => void, now: () => number) {
    this.#due = due;
    this.#now = now;
  }

  /** Sets `token`'s timer for `at` (ms since the epoch); `null` cancels it. */
  set(token: string, at: number | null): void {
    clearTimeout(this.#timers.get(token));
    this.#timers.delete(token);
    if (at === null) return;
    this.#timers.set(
      token,
      setTimeout(() => {
        this.#timers.delete(token);
        this.#due(token);
      }, Math.max(0, at - this.#now())),
    );
  }

  /** Cancels every timer. */
  clear(): void {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }
}
