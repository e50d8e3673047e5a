/**
 * {@linkcode BatchWriter}: the runner's writes to storage. A storage that
 * answers at once (`Storage.writeNow`, memory) is written to on the spot;
 * otherwise the writes asked for in one turn of the event loop are committed
 * in one transaction, behind the storage calls queued before them. Each
 * result goes back to the reducer as a `persisted` event, and every outcome
 * to {@linkcode StorageHealth}. It decides nothing about what is written.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { Event, PersistRequest } from "../chat/reducer.ts";
import type { Storage, WriteResult } from "../chat/storage.ts";
import type { IoQueue } from "./io_queue.ts";
import { isFailure, type StorageHealth } from "./storage_health.ts";

/** What a {@linkcode BatchWriter} works with. */
export interface BatchWriterOptions {
  storage: Storage;
  queue: IoQueue;
  health: StorageHealth;
  now: () => number;
  /** Queues an event for the reducer (without running it yet). */
  emit: (event: Event) => void;
  /** Runs the queued events. */
  drain: () => void;
}

/** Writes the reducer's `persist` requests, batched per turn of the event loop. */
export class BatchWriter {
  #storage: Storage;
  #queue: IoQueue;
  #health: StorageHealth;
  #now: () => number;
  #emit: (event: Event) => void;
  #drain: () => void;
  #batch: PersistRequest[] = [];
  #flushScheduled = false;

  /** A writer to `options.storage`. */
  constructor(options: BatchWriterOptions) {
    this.#storage = options.storage;
    this.#queue = options.queue;
    this.#health = options.health;
    this.#now = options.now;
    this.#emit = options.emit;
    this.#drain = options.drain;
  }

  /**
   * Writes one request: at once (its `persisted` event is queued before
   * this returns) when the storage can, else in this turn's batch.
   */
  persist(request: PersistRequest): void {
    if (this.#storage.writeNow) {
      const [result = { ok: false, reason: "failed" } as const] = this
        .#storage.writeNow([request.op]);
      if (this.#health.failing || isFailure(result)) {
        this.#health.outcome([result]);
      }
      this.#emit({ type: "persisted", now: this.#now(), request, result });
      return;
    }
    this.#batch.push(request);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /**
   * Commits the writes gathered this turn of the event loop in one
   * transaction, queued behind earlier storage calls; the runner calls it
   * before a read, so that the read sees them.
   */
  flush(): void {
    this.#flushScheduled = false;
    if (this.#batch.length === 0) return;
    const batch = this.#batch;
    this.#batch = [];
    this.#queue.enqueue(async () => {
      const results = await this.#storage.write(
        batch.map((request) => request.op),
      )
        .catch((cause): WriteResult[] => {
          const error = cause instanceof Error ? cause.message : String(cause);
          return batch.map(() => ({ ok: false, reason: "failed", error }));
        });
      this.#health.outcome(results);
      const now = this.#now();
      batch.forEach((request, index) => {
        const result = results[index] ??
          { ok: false, reason: "failed" } as const;
        this.#emit({ type: "persisted", now, request, result });
      });
      this.#drain();
    });
  }

  /** Waits until every storage call issued so far has finished. */
  async settle(): Promise<void> {
    let seen: Promise<void>;
    do {
      // Answers may raise new writes (frames queued behind a write): repeat.
      this.flush();
      seen = this.#queue.tail;
      await seen;
    } while (seen !== this.#queue.tail || this.#batch.length > 0);
  }
}
