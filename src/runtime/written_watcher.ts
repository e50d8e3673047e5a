/**
 * {@linkcode WrittenWatcher}: tells the reducer when a page of offline
 * messages has left its connections' send buffers (effect `watch_written`,
 * event `offline_written`), so that it is marked delivered only once
 * written. Deno counts a send in `bufferedAmount` until its write
 * completes, so the sockets are looked at every
 * {@linkcode WRITTEN_POLL_MS} while a page waits. It sends nothing and
 * marks nothing itself.
 *
 * @module
 */
import type { ConnId, Event } from "../chat/reducer.ts";

/** A page of offline messages waiting to leave its connections' send buffers. */
export interface WrittenWatch {
  username: string;
  conns: readonly ConnId[];
  ids: string[];
}

/** How often the sockets of waiting pages are looked at, in milliseconds. */
export const WRITTEN_POLL_MS = 2;

/** What a {@linkcode WrittenWatcher} works with. */
export interface WrittenWatcherOptions {
  /** The open socket of a connection, if any. */
  socket: (conn: ConnId) => WebSocket | undefined;
  now: () => number;
  /** Queues an event for the reducer (without running it yet). */
  emit: (event: Event) => void;
  /** Runs the queued events. */
  drain: () => void;
}

/** Watches offline pages until they are written. */
export class WrittenWatcher {
  #options: WrittenWatcherOptions;
  #watches: WrittenWatch[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** A watcher with no page yet. */
  constructor(options: WrittenWatcherOptions) {
    this.#options = options;
  }

  /** Watches one more page. */
  watch(watch: WrittenWatch): void {
    this.#watches.push(watch);
    this.#timer ??= setTimeout(() => this.#check(), WRITTEN_POLL_MS);
  }

  /** Stops looking (pages still waiting get no answer). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Answers each page whose open connections have written all they were
   * sent (their send buffer is empty), or whose connections all closed
   * first; looks again shortly while any page is left.
   */
  #check(): void {
    this.#timer = undefined;
    const { socket: socketOf, now, emit, drain } = this.#options;
    const left: WrittenWatch[] = [];
    for (const watch of this.#watches) {
      let open = 0;
      let pending = false;
      for (const conn of watch.conns) {
        const socket = socketOf(conn);
        if (!socket || socket.readyState !== WebSocket.OPEN) continue;
        open++;
        if (socket.bufferedAmount > 0) pending = true;
      }
      if (pending) {
        left.push(watch);
        continue;
      }
      emit({
        type: "offline_written",
        now: now(),
        username: watch.username,
        ids: watch.ids,
        written: open > 0,
      });
    }
    this.#watches = left;
    drain();
    if (this.#watches.length > 0) {
      this.#timer ??= setTimeout(() => this.#check(), WRITTEN_POLL_MS);
    }
  }
}
