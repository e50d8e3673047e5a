/**
 * {@linkcode FrameBatcher}: batched delivery for connections that opted in
 * (`?batch=1`). Room frames bound for such a connection are gathered and go
 * out as one `Batch` frame per connection per flush, in order, each message
 * the very string the reducer encoded once: a `Batch` is spliced from those
 * strings, never re-encoded, and connections that were sent the same
 * messages in a flush share one `Batch` string.
 *
 * The flush adapts per room: the first message of a quiet room goes out at
 * the end of the current turn of the event loop; the room's later messages
 * within `windowMs` of it are gathered and go out together when the window
 * ends, and the window goes on while they keep coming. A `Batch` never
 * exceeds `maxBytes` (a message that alone is larger goes out alone), and a
 * flush of one message sends the plain frame, byte for byte as today.
 *
 * It decides nothing about who gets what (the reducer does) nor which
 * frames are batched (the runner does), and touches no socket: it calls
 * `send`.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { ConnId } from "../chat/types.ts";

/** What comes before the messages of a `Batch` frame. */
export const BATCH_HEAD = '{"message_type":"Batch","message_body":{"frames":[';
/** What comes after them. */
export const BATCH_TAIL = "]}}";
const ENVELOPE_BYTES = BATCH_HEAD.length + BATCH_TAIL.length;

/** One message to gather: its encoded frame, made once for every recipient. */
export interface BatchEntry {
  readonly id: number;
  readonly data: string;
  /** UTF-8 length of `data`. */
  readonly bytes: number;
}

/**
 * What a connection has been handed since its last flush: a path in a tree
 * shared by every connection, so that connections handed the same messages
 * stand on the same node and share its frame.
 */
interface Node {
  readonly parent: Node | null;
  readonly data: string;
  readonly count: number;
  /** UTF-8 length of the messages and the commas between them. */
  readonly bytes: number;
  children: Map<number, Node> | null;
  frame: string | null;
}

/** How the batcher waits; tests pass their own. */
export interface BatchScheduler {
  /** Runs `job` at the end of this turn of the event loop; returns a cancel. */
  soon(job: () => void): () => void;
  /** Runs `job` after `ms` milliseconds; returns a cancel. */
  after(job: () => void, ms: number): () => void;
  now(): number;
}

/** The event loop's scheduler: `setImmediate`, `setTimeout`, `Date.now`. */
export const loopScheduler: BatchScheduler = {
  soon(job) {
    const handle = setImmediate(job);
    return () => clearImmediate(handle);
  },
  after(job, ms) {
    const handle = setTimeout(job, ms);
    return () => clearTimeout(handle);
  },
  now: () => Date.now(),
};

/** What a {@linkcode FrameBatcher} works with. */
export interface FrameBatcherOptions {
  /** Sends one text frame to a connection. */
  send: (conn: ConnId, data: string) => void;
  /** How long a busy room's messages are gathered (`BATCH_WINDOW_MS`). */
  windowMs: number;
  /** Largest `Batch` frame in UTF-8 bytes (`MAX_MESSAGE_BYTES`). */
  maxBytes: number;
  scheduler?: BatchScheduler;
}

/** A room's flush clock: until when its messages are gathered. */
interface RoomClock {
  until: number;
  /** A message came within the window: it waits for the window's end. */
  gathering: boolean;
}

/** UTF-8 length of a string, without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      // A surrogate pair: two units, four bytes.
      bytes += 2;
      i++;
    } else bytes += 2;
  }
  return bytes;
}

function root(): Node {
  return {
    parent: null,
    data: "",
    count: 0,
    bytes: 0,
    children: null,
    frame: null,
  };
}

/** The frame a node stands for: a plain frame for one message, else a `Batch`. */
function frameOf(node: Node): string {
  if (node.frame !== null) return node.frame;
  if (node.count === 1) return node.frame = node.data;
  const parts: string[] = new Array(node.count);
  let at: Node | null = node;
  for (let i = node.count - 1; i >= 0 && at; i--, at = at.parent) {
    parts[i] = at.data;
  }
  return node.frame = BATCH_HEAD + parts.join(",") + BATCH_TAIL;
}

/** Gathers room frames per connection and sends them as `Batch` frames. */
export class FrameBatcher {
  #send: (conn: ConnId, data: string) => void;
  #windowMs: number;
  #maxBytes: number;
  #scheduler: BatchScheduler;
  #root = root();
  #pending = new Map<ConnId, Node>();
  #nextId = 1;
  #rooms = new Map<string, RoomClock>();
  #cancelSoon: (() => void) | null = null;
  #cancelTimer: (() => void) | null = null;
  #timerAt = Infinity;

  /** A batcher that sends through `options.send`. */
  constructor(options: FrameBatcherOptions) {
    this.#send = options.send;
    this.#windowMs = options.windowMs;
    this.#maxBytes = options.maxBytes;
    this.#scheduler = options.scheduler ?? loopScheduler;
  }

  /** Connections with messages waiting. */
  get waiting(): number {
    return this.#pending.size;
  }

  /**
   * A message of `room` about to be handed to connections; arms the room's
   * flush: at the end of this turn if the room was quiet, else at the end
   * of its window.
   */
  entry(room: string, data: string): BatchEntry {
    const now = this.#scheduler.now();
    const clock = this.#rooms.get(room);
    if (!clock || now >= clock.until) {
      this.#rooms.set(room, { until: now + this.#windowMs, gathering: false });
      this.#cancelSoon ??= this.#scheduler.soon(() => {
        this.#cancelSoon = null;
        this.#tick();
      });
    } else {
      clock.gathering = true;
      this.#arm(clock.until, now);
    }
    return { id: this.#nextId++, data, bytes: utf8Length(data) };
  }

  /** Hands a message to a connection; it goes out at the next flush. */
  add(conn: ConnId, entry: BatchEntry): void {
    let node = this.#pending.get(conn) ?? this.#root;
    if (
      node.count > 0 &&
      ENVELOPE_BYTES + node.bytes + 1 + entry.bytes > this.#maxBytes
    ) {
      // Full: what it holds goes now, the message starts the next batch.
      this.#send(conn, frameOf(node));
      node = this.#root;
    }
    let child = node.children?.get(entry.id);
    if (!child) {
      child = {
        parent: node,
        data: entry.data,
        count: node.count + 1,
        bytes: node.count === 0 ? entry.bytes : node.bytes + 1 + entry.bytes,
        children: null,
        frame: null,
      };
      (node.children ??= new Map()).set(entry.id, child);
    }
    this.#pending.set(conn, child);
  }

  /**
   * Sends what waits for `conn` now: before any other frame to it (an
   * `Ack`, an `Error`, a close), so that it keeps its order.
   */
  release(conn: ConnId): void {
    const node = this.#pending.get(conn);
    if (!node) return;
    this.#pending.delete(conn);
    this.#send(conn, frameOf(node));
  }

  /** The connection is gone: what waited for it is dropped. */
  forget(conn: ConnId): void {
    this.#pending.delete(conn);
  }

  /** Sends everything that waits, one frame per connection. */
  flush(): void {
    if (this.#pending.size > 0) {
      const pending = this.#pending;
      this.#pending = new Map();
      this.#root = root();
      for (const [conn, node] of pending) this.#send(conn, frameOf(node));
    } else this.#root = root();
  }

  /** Cancels the timers; what still waits is dropped (flush first to keep it). */
  stop(): void {
    this.#cancelSoon?.();
    this.#cancelSoon = null;
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    this.#timerAt = Infinity;
    this.#pending.clear();
    this.#rooms.clear();
  }

  /** Makes sure a flush runs at `at` at the latest. */
  #arm(at: number, now: number): void {
    if (this.#cancelTimer && this.#timerAt <= at) return;
    this.#cancelTimer?.();
    this.#timerAt = at;
    this.#cancelTimer = this.#scheduler.after(() => {
      this.#cancelTimer = null;
      this.#timerAt = Infinity;
      this.#tick();
    }, Math.max(0, at - now));
  }

  /**
   * A flush is due: everything waiting goes out. A room whose window ended
   * opens a new one if it gathered messages in it (it is busy), else it is
   * quiet again and forgotten.
   */
  #tick(): void {
    this.flush();
    const now = this.#scheduler.now();
    let next = Infinity;
    for (const [room, clock] of this.#rooms) {
      if (clock.until > now) {
        if (clock.gathering) next = Math.min(next, clock.until);
        continue;
      }
      if (clock.gathering) {
        clock.until = now + this.#windowMs;
        clock.gathering = false;
      } else this.#rooms.delete(room);
    }
    if (next !== Infinity) this.#arm(next, now);
  }
}
