/**
 * {@linkcode StorageHealth}: whether storage writes work, as the runner sees
 * the outcome of each batch. It counts every batch in the metrics, tells the
 * operator when writes start failing, how often they go on failing (one log
 * line per {@linkcode STORAGE_REPORT_MS} at most) and when they work again,
 * and probes an idle failing storage so that its recovery shows without a
 * client's message. `/healthz` reads the fault from it. It writes no
 * message and tells the reducer nothing: write results reach the reducer as
 * `persisted` events from the writer.
 *
 * @module
 */
import type { Storage, WriteResult } from "../chat/storage.ts";
import type { IoQueue } from "./io_queue.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

/**
 * While storage writes fail, at most one log line per this many
 * milliseconds between the line that says so and the one that says they
 * work again.
 */
export const STORAGE_REPORT_MS = 10_000;

/** How long storage must have been idle while failing before a probe write. */
export const STORAGE_PROBE_MS = 1000;

/** Storage writes failing: since when, why, and how many so far. */
export interface StorageFault {
  /** Milliseconds since the epoch of the first failed batch. */
  since: number;
  /** The last failure's cause. */
  error: string;
  /** Failed batches (transactions) and writes since `since`. */
  failedBatches: number;
  failedWrites: number;
}

/**
 * Whether a write failed in storage, or got no answer (not a refusal such as
 * `unknown_user`).
 */
export function isFailure(
  result: WriteResult,
): result is Extract<WriteResult, { reason: "failed" | "unknown" }> {
  return !result.ok &&
    (result.reason === "failed" || result.reason === "unknown");
}

/** What a {@linkcode StorageHealth} works with. */
export interface StorageHealthOptions {
  storage: Storage;
  metrics: Metrics;
  log: Logger;
  now: () => number;
  /** The runner's storage queue, where a probe waits its turn. */
  queue: IoQueue;
}

/** The health of storage writes. */
export class StorageHealth {
  #storage: Storage;
  #metrics: Metrics;
  #log: Logger;
  #now: () => number;
  #queue: IoQueue;
  #fault: StorageFault | undefined;
  /** When the last storage fault line was logged, and the counts then. */
  #reported = { at: 0, batches: 0, writes: 0 };
  /** When storage was last written to or probed, on the runner's clock. */
  #lastTry = 0;
  #probing = false;

  /** Healthy until a batch fails. */
  constructor(options: StorageHealthOptions) {
    this.#storage = options.storage;
    this.#metrics = options.metrics;
    this.#log = options.log;
    this.#now = options.now;
    this.#queue = options.queue;
  }

  /** Whether writes are failing now (cheap: read on every write). */
  get failing(): boolean {
    return this.#fault !== undefined;
  }

  /** Storage writes failing now (a copy), or `undefined` while they work. */
  get fault(): StorageFault | undefined {
    return this.#fault && { ...this.#fault };
  }

  /** Counts a batch's outcome and logs a fault's start, course and end. */
  outcome(results: readonly WriteResult[]): void {
    this.#lastTry = this.#now();
    const failures = results.filter(isFailure);
    const failed = failures.length;
    this.#metrics.countBatch(failed === 0, results.length - failed, failed);
    const fault = this.#fault;
    const now = this.#now();
    if (failed === 0) {
      this.#recovered();
      return;
    }
    const error = failures.find((result) => result.error)?.error ??
      "unknown";
    if (!fault) {
      this.#fault = {
        since: now,
        error,
        failedBatches: 1,
        failedWrites: failed,
      };
      this.#reported = { at: now, batches: 1, writes: failed };
      this.#log("error", "storage writes failing", {
        error,
        failed_writes: failed,
      });
      return;
    }
    fault.error = error;
    fault.failedBatches++;
    fault.failedWrites += failed;
    const reported = this.#reported;
    if (now - reported.at < STORAGE_REPORT_MS) return;
    this.#log("error", "storage writes still failing", {
      error,
      failing_ms: now - fault.since,
      failed_batches: fault.failedBatches - reported.batches,
      failed_writes: fault.failedWrites - reported.writes,
    });
    this.#reported = {
      at: now,
      batches: fault.failedBatches,
      writes: fault.failedWrites,
    };
  }

  /**
   * While storage fails and nothing has been written for
   * {@linkcode STORAGE_PROBE_MS}, tries a probe write (see `Storage.probe`),
   * so that the fault's end shows in the log and `/healthz` without waiting
   * for a client's message. The runner calls it at every tick.
   */
  probe(): void {
    const probe = this.#storage.probe?.bind(this.#storage);
    if (!probe || !this.#fault || this.#probing) return;
    if (this.#now() - this.#lastTry < STORAGE_PROBE_MS) return;
    this.#probing = true;
    this.#queue.enqueue(async () => {
      try {
        await probe();
        this.#lastTry = this.#now();
        this.#recovered();
      } catch (cause) {
        this.#lastTry = this.#now();
        const fault = this.#fault;
        if (fault) {
          fault.error = cause instanceof Error ? cause.message : String(cause);
        }
      } finally {
        this.#probing = false;
      }
    });
  }

  /** Ends a storage fault: one log line, and `/healthz` is `ok` again. */
  #recovered(): void {
    const fault = this.#fault;
    if (!fault) return;
    this.#fault = undefined;
    this.#log("error", "storage writes work again", {
      failing_ms: this.#now() - fault.since,
      failed_batches: fault.failedBatches,
      failed_writes: fault.failedWrites,
      last_error: fault.error,
    });
  }
}
