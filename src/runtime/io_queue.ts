/**
 * {@linkcode IoQueue}: runs the runner's storage calls one after another, so
 * that a read sees every write asked for before it. It knows nothing of
 * what the calls do; a call that throws is logged and the queue goes on.
 *
 * @module
 */
import type { Logger } from "./log.ts";

/** A queue of storage calls, run one at a time in order. */
export class IoQueue {
  #tail: Promise<void> = Promise.resolve();
  #log: Logger;

  /** A queue that logs the calls that throw to `log`. */
  constructor(log: Logger) {
    this.#log = log;
  }

  /** The promise of the last call queued: settled when all so far are done. */
  get tail(): Promise<void> {
    return this.#tail;
  }

  /** Runs `job` after every call queued before it. */
  enqueue(job: () => Promise<void>): void {
    this.#tail = this.#tail.then(job).catch((error) => {
      this.#log("error", "storage job failed", { error: String(error) });
    });
  }
}
