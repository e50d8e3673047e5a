/**
 * The client's event listeners, by event type or `"*"` for all. A
 * listener that throws does not stop the others nor break the connection:
 * its error is thrown again in a microtask, so that it is still seen.
 *
 * Registration and dispatch only: which events exist is in
 * `client_types.ts`, and `chat_client.ts` decides when to emit them.
 *
 * @module
 */
import type { ChatEvent } from "./client_types.ts";

/** Listeners by event type (`"*"`: every event). */
export class Listeners {
  #listeners = new Map<string, Set<(event: ChatEvent) => void>>();

  /** Adds a listener; returns a function that removes it. */
  add(type: string, listener: (event: ChatEvent) => void): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Calls the listeners of `event.type`, then those of `"*"`. */
  emit(event: ChatEvent): void {
    for (const key of [event.type, "*"]) {
      const set = this.#listeners.get(key);
      if (!set) continue;
      for (const listener of [...set]) {
        try {
          listener(event);
        } catch (error) {
          // A listener's bug must not break the connection; surface it.
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }
}
