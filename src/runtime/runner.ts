/**
 * The effects runner: the only code that touches sockets, storage and
 * timers. It feeds events to the reducer one at a time, applies the effects
 * that come back, and turns the answers of asynchronous I/O into events.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import {
  type BusMessage,
  type ChatState,
  type ConnId,
  type Effect,
  type Event,
  type PersistRequest,
  reduce,
} from "../chat/reducer.ts";
import type { Storage, TokenGrant, WriteResult } from "../chat/storage.ts";
import type { RedisBus } from "../redis/bus.ts";

/** What the runner asks of the cluster bus (`src/redis/bus.ts`). */
export type ClusterPort = Pick<
  RedisBus,
  "join" | "part" | "claim" | "release" | "fillGap" | "revoked"
>;

/** What the runner needs besides the state. */
export interface RunnerOptions {
  storage: Storage;
  metrics: Metrics;
  log: Logger;
  /** Unsent bytes to one connection before it is closed as slow. */
  maxBufferedBytes: number;
  /** Milliseconds between `tick` events. */
  tickMs?: number;
  /** The clock; events get their time from it. */
  now?: () => number;
  /** The cluster bus, when this node is one of a cluster. */
  bus?: ClusterPort;
}

/** A token as the token API answers it. */
export interface IssuedToken {
  token: string;
  username: string;
  /** Milliseconds since the epoch. */
  expires_at: number;
}

/** What the transport knows about a new connection. */
export interface Attachment {
  /** A token valid at upgrade (`?token=`), with its grant. */
  token?: string;
  grant?: TokenGrant;
}

const encoder = new TextEncoder();

/** A page of offline messages waiting to leave its connections' send buffers. */
interface WrittenWatch {
  username: string;
  conns: ConnId[];
  ids: string[];
}

/**
 * How often sockets that carry a page of offline messages are looked at
 * until they have written it (Deno counts a send in `bufferedAmount` until
 * its write completes).
 */
const WRITTEN_POLL_MS = 2;

/** How often the runner looks for slow consumers and measures its lag. */
const SWEEP_MS = 100;

/**
 * Event-loop lag that means overload when it lasts {@linkcode LAGGING_SWEEPS}
 * sweeps in a row (one garbage collection is no overload), and the lag that
 * ends it.
 */
const OVERLOAD_LAG_MS = 50;
const LAGGING_SWEEPS = 3;
const RECOVERED_LAG_MS = 10;

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

/** Size in bytes of a text frame; exact only when it could pass `limit`. */
function frameSize(text: string, limit: number): number {
  // UTF-8 takes at most 3 bytes per UTF-16 unit, so short frames skip the count.
  if (text.length * 3 <= limit) return text.length;
  return encoder.encode(text).length;
}

/**
 * Whether a write failed in storage, or got no answer (not a refusal such as
 * `unknown_user`).
 */
function isFailure(
  result: WriteResult,
): result is Extract<WriteResult, { reason: "failed" | "unknown" }> {
  return !result.ok &&
    (result.reason === "failed" || result.reason === "unknown");
}

/** Runs the reducer against the world. */
export class Runner {
  #state: ChatState;
  #storage: Storage;
  #bus: ClusterPort | undefined;
  #metrics: Metrics;
  #log: Logger;
  #maxBufferedBytes: number;
  #now: () => number;
  #sockets = new Map<ConnId, WebSocket>();
  #open = new Set<WebSocket>();
  /** Connections over `MAX_BUFFERED_BYTES` at the last sweep. */
  #suspects = new Set<ConnId>();
  #sweeper: ReturnType<typeof setInterval>;
  #lastSweep = performance.now();
  #laggingSweeps = 0;
  #overloaded = false;
  #nextId = 1;
  #events: Event[] = [];
  #running = false;
  #batch: PersistRequest[] = [];
  #flushScheduled = false;
  #io: Promise<void> = Promise.resolve();
  #ticker: ReturnType<typeof setInterval>;
  /** One timer per token of a live connection (effect `token_timer`). */
  #tokenTimers = new Map<string, ReturnType<typeof setTimeout>>();
  #allClosed: (() => void) | null = null;
  #storageFault: StorageFault | undefined;
  /** When the last storage fault line was logged, and the counts then. */
  #faultReported = { at: 0, batches: 0, writes: 0 };
  /** When storage was last written to or probed, on the runner's clock. */
  #lastStorageTry = 0;
  #probing = false;
  /** Offline pages waiting to be written, and the timer that looks at them. */
  #watches: WrittenWatch[] = [];
  #watchTimer: ReturnType<typeof setTimeout> | undefined;

  /** Starts the tick timer; {@linkcode Runner.shutdown} stops it. */
  constructor(state: ChatState, options: RunnerOptions) {
    this.#state = state;
    this.#storage = options.storage;
    this.#bus = options.bus;
    this.#metrics = options.metrics;
    this.#log = options.log;
    this.#maxBufferedBytes = options.maxBufferedBytes;
    this.#now = options.now ?? Date.now;
    this.#ticker = setInterval(() => {
      this.dispatch({ type: "tick", now: this.#now() });
      this.#probeStorage();
    }, options.tickMs ?? 1000);
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
  }

  /** The reducer's state, for gauges and health. */
  get state(): ChatState {
    return this.#state;
  }

  /** Storage writes failing now, or `undefined` while they work. */
  get storageFault(): StorageFault | undefined {
    return this.#storageFault && { ...this.#storageFault };
  }

  /** Open sockets, closing ones included: what `MAX_CONNECTIONS` counts. */
  get openSockets(): number {
    return this.#open.size;
  }

  /** Takes over a socket fresh from the upgrade; returns its connection id. */
  attach(socket: WebSocket, attachment: Attachment = {}): ConnId {
    const conn = this.#nextId++;
    socket.binaryType = "arraybuffer";
    this.#open.add(socket);
    socket.onopen = () => {
      this.#sockets.set(conn, socket);
      this.dispatch({
        type: "open",
        conn,
        now: this.#now(),
        publicId: crypto.randomUUID(),
        ...attachment,
      });
    };
    socket.onmessage = (message: MessageEvent) => {
      const data = message.data;
      if (typeof data === "string") {
        this.dispatch({
          type: "frame",
          conn,
          now: this.#now(),
          text: data,
          size: frameSize(data, this.#state.settings.maxMessageBytes),
          id: crypto.randomUUID(),
        });
      } else {
        const size = data instanceof ArrayBuffer ? data.byteLength : 0;
        this.dispatch({ type: "binary", conn, now: this.#now(), size });
      }
    };
    socket.onclose = (close: CloseEvent) => {
      this.#open.delete(socket);
      if (this.#sockets.get(conn) === socket) {
        this.#sockets.delete(conn);
        this.dispatch({
          type: "closed",
          conn,
          now: this.#now(),
          // A peer gone without a close frame: 1006 (abnormal closure).
          code: close.code || 1006,
        });
      }
      if (this.#open.size === 0) this.#allClosed?.();
    };
    // An error is followed by close; nothing to do but not to throw.
    socket.onerror = () => {};
    return conn;
  }

  /** A message from another node of the cluster. */
  hear(message: BusMessage): void {
    this.dispatch({ type: "bus", now: this.#now(), message });
  }

  /** The cluster bus is connected and in sync again (after a reconnect). */
  synced(): void {
    this.dispatch({ type: "bus_synced", now: this.#now() });
  }

  /** Feeds one event to the reducer; events raised meanwhile wait their turn. */
  dispatch(event: Event): void {
    this.#events.push(event);
    this.#drain();
  }

  #drain(): void {
    if (this.#running) return;
    this.#running = true;
    try {
      for (let next = this.#events.shift(); next; next = this.#events.shift()) {
        const [state, effects] = reduce(this.#state, next);
        this.#state = state;
        for (const effect of effects) this.#apply(effect);
      }
    } finally {
      this.#running = false;
    }
  }

  #apply(effect: Effect): void {
    switch (effect.type) {
      case "send":
        this.#send(effect.conn, effect.data);
        this.#metrics.framesOut.add(effect.kind);
        break;
      case "broadcast":
        for (const conn of effect.conns) {
          if (conn !== effect.except) this.#send(conn, effect.data);
        }
        this.#metrics.framesOut.add(effect.kind, effect.count);
        break;
      case "close": {
        const socket = this.#sockets.get(effect.conn);
        this.#sockets.delete(effect.conn);
        try {
          socket?.close(effect.code, effect.reason);
        } catch {
          // Already closing: the close event will come by itself.
        }
        break;
      }
      case "persist":
        if (this.#storage.writeNow) {
          const [result = { ok: false, reason: "failed" } as const] = this
            .#storage.writeNow([effect.request.op]);
          if (this.#storageFault || isFailure(result)) {
            this.#storageOutcome([result]);
          }
          this.#events.push({
            type: "persisted",
            now: this.#now(),
            request: effect.request,
            result,
          });
          break;
        }
        this.#batch.push(effect.request);
        if (!this.#flushScheduled) {
          this.#flushScheduled = true;
          setImmediate(() => this.#flush());
        }
        break;
      case "load_history": {
        const { request } = effect;
        this.#flush();
        this.#enqueue(async () => {
          const page = await this.#storage.history(request.room, request.query)
            .catch((error) => this.#failed("history read", error));
          this.dispatch({
            type: "history_loaded",
            now: this.#now(),
            request,
            page,
          });
        });
        break;
      }
      case "check_token": {
        const { token } = effect;
        this.#enqueue(async () => {
          const grant = await this.#storage.checkToken(token, this.#now())
            .catch((error) => this.#failed("token check", error) ?? undefined);
          this.dispatch({
            type: "token_checked",
            now: this.#now(),
            token,
            grant,
          });
        });
        break;
      }
      case "token_timer": {
        const { token, at } = effect;
        clearTimeout(this.#tokenTimers.get(token));
        this.#tokenTimers.delete(token);
        if (at === null) break;
        this.#tokenTimers.set(
          token,
          setTimeout(() => {
            this.#tokenTimers.delete(token);
            this.dispatch({ type: "token_due", now: this.#now(), token });
          }, Math.max(0, at - this.#now())),
        );
        break;
      }
      case "load_offline": {
        const { username, limit } = effect;
        // After the writes asked for so far: a page marked delivered.
        this.#flush();
        this.#enqueue(async () => {
          const messages = await this.#storage.offline(username, limit).catch(
            (error) => {
              this.#failed("offline read", error);
              return [];
            },
          );
          this.dispatch({
            type: "offline_loaded",
            now: this.#now(),
            username,
            messages,
          });
        });
        break;
      }
      case "watch_written":
        this.#watches.push(effect);
        this.#watchTimer ??= setTimeout(
          () => this.#checkWatches(),
          WRITTEN_POLL_MS,
        );
        break;
      case "log":
        this.#log(effect.level, effect.msg, effect.fields);
        break;
      case "count":
        this.#metrics.count(effect.metric, effect.label);
        break;
      default:
        this.#applyCluster(effect);
    }
  }

  /** The cluster's effects: each answer comes back as an event. */
  #applyCluster(
    effect: Extract<
      Effect,
      { type: "join" | "part" | "claim" | "release" | "fill_gap" }
    >,
  ): void {
    const bus = this.#bus;
    if (!bus) {
      this.#log("error", "cluster effect without a bus", { type: effect.type });
      return;
    }
    switch (effect.type) {
      case "join": {
        const { request } = effect;
        this.#answer(bus.join(request), "cluster join", (result, now) => ({
          type: "joined",
          now,
          request,
          result,
        }));
        break;
      }
      case "part": {
        const { room, username, reason, timestamp, empty } = effect;
        this.#answer(
          bus.part(room, username, reason, timestamp, empty),
          "cluster part",
          (gone, now) => ({
            type: "parted",
            now,
            room,
            username,
            reason,
            timestamp,
            gone,
          }),
        );
        break;
      }
      case "claim":
        // A failure is mended by the resync after Redis returns.
        bus.claim(effect.username).catch((error) =>
          this.#failed("cluster claim", error)
        );
        break;
      case "release":
        bus.release(effect.username).catch((error) =>
          this.#failed("cluster release", error)
        );
        break;
      case "fill_gap": {
        const { room, after, before, bound } = effect;
        this.#answer(
          bus.fillGap(room, after, before),
          "cluster history read",
          (messages, now) => ({
            type: "gap_filled",
            now,
            room,
            messages,
            bound,
          }),
        );
        break;
      }
    }
  }

  /** Feeds the answer of a cluster call back as an event; `null` when it failed. */
  #answer<T>(
    call: Promise<T>,
    what: string,
    event: (result: T | null, now: number) => Event,
  ): void {
    call.then((result) => result, (error) => this.#failed(what, error))
      .then((result) => this.dispatch(event(result, this.#now())));
  }

  /**
   * Answers each offline page whose open connections have written all they
   * were sent (their send buffer is empty), or whose connections all closed
   * first; looks again shortly while any page is left.
   */
  #checkWatches(): void {
    this.#watchTimer = undefined;
    const left: WrittenWatch[] = [];
    for (const watch of this.#watches) {
      let open = 0;
      let pending = false;
      for (const conn of watch.conns) {
        const socket = this.#sockets.get(conn);
        if (!socket || socket.readyState !== WebSocket.OPEN) continue;
        open++;
        if (socket.bufferedAmount > 0) pending = true;
      }
      if (pending) {
        left.push(watch);
        continue;
      }
      this.#events.push({
        type: "offline_written",
        now: this.#now(),
        username: watch.username,
        ids: watch.ids,
        written: open > 0,
      });
    }
    this.#watches = left;
    this.#drain();
    if (this.#watches.length > 0) {
      this.#watchTimer ??= setTimeout(
        () => this.#checkWatches(),
        WRITTEN_POLL_MS,
      );
    }
  }

  #send(conn: ConnId, data: string): void {
    // A socket is in #sockets from its open event on, and `send` on a
    // closing or closed one does nothing: no need to read `readyState`.
    this.#sockets.get(conn)?.send(data);
  }

  /**
   * Tells the reducer when the event loop falls behind: a timer late by more
   * than {@linkcode OVERLOAD_LAG_MS} means more work arrives than the server
   * can do, and queueing it would only make every answer later.
   */
  #watchLag(): void {
    const now = performance.now();
    const lag = now - this.#lastSweep - SWEEP_MS;
    this.#lastSweep = now;
    this.#laggingSweeps = lag > OVERLOAD_LAG_MS ? this.#laggingSweeps + 1 : 0;
    const overloaded = this.#overloaded
      ? lag > RECOVERED_LAG_MS
      : this.#laggingSweeps >= LAGGING_SWEEPS;
    if (overloaded === this.#overloaded) return;
    this.#overloaded = overloaded;
    this.#log(
      overloaded ? "warn" : "info",
      overloaded ? "overloaded" : "load normal",
      {
        lag_ms: Math.round(lag),
      },
    );
    this.#events.push({ type: "load", now: this.#now(), overloaded });
  }

  /** Whether the server sheds load; upgrades are refused meanwhile. */
  get overloaded(): boolean {
    return this.#overloaded;
  }

  /**
   * Finds slow consumers off the hot path. Deno counts a send as buffered
   * until its write completes on a later turn, so one look cannot tell a
   * burst from a backlog: a socket over `MAX_BUFFERED_BYTES` at two sweeps in
   * a row is a slow consumer. The reducer hears of it: the connection leaves
   * its rooms at once, gets the answers it is owed, and is closed with 1008.
   */
  #sweep(): void {
    this.#watchLag();
    const over = new Set<ConnId>();
    for (const [conn, socket] of this.#sockets) {
      if (socket.bufferedAmount <= this.#maxBufferedBytes) continue;
      if (!this.#suspects.has(conn)) {
        over.add(conn);
        continue;
      }
      this.#events.push({ type: "overflow", conn, now: this.#now() });
    }
    this.#suspects = over;
    this.#drain();
  }

  #failed(what: string, error: unknown): null {
    this.#log("error", `${what} failed`, { error: String(error) });
    return null;
  }

  /** Runs storage calls one after another, so reads see earlier writes. */
  #enqueue(job: () => Promise<void>): void {
    this.#io = this.#io.then(job).catch((error) => {
      this.#log("error", "storage job failed", { error: String(error) });
    });
  }

  /** Commits the writes gathered this turn of the event loop in one transaction. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#batch.length === 0) return;
    const batch = this.#batch;
    this.#batch = [];
    this.#enqueue(async () => {
      const results = await this.#storage.write(
        batch.map((request) => request.op),
      )
        .catch((cause): WriteResult[] => {
          const error = cause instanceof Error ? cause.message : String(cause);
          return batch.map(() => ({ ok: false, reason: "failed", error }));
        });
      this.#storageOutcome(results);
      const now = this.#now();
      batch.forEach((request, index) => {
        const result = results[index] ??
          { ok: false, reason: "failed" } as const;
        this.#events.push({ type: "persisted", now, request, result });
      });
      this.#drain();
    });
  }

  /**
   * Counts a batch's outcome, and tells the operator when storage starts
   * failing, how often it goes on failing (one line per
   * {@linkcode STORAGE_REPORT_MS} at most), and when it works again.
   */
  #storageOutcome(results: readonly WriteResult[]): void {
    this.#lastStorageTry = this.#now();
    const failures = results.filter(isFailure);
    const failed = failures.length;
    this.#metrics.countBatch(failed === 0, results.length - failed, failed);
    const fault = this.#storageFault;
    const now = this.#now();
    if (failed === 0) {
      this.#recovered();
      return;
    }
    const error = failures.find((result) => result.error)?.error ??
      "unknown";
    if (!fault) {
      this.#storageFault = {
        since: now,
        error,
        failedBatches: 1,
        failedWrites: failed,
      };
      this.#faultReported = { at: now, batches: 1, writes: failed };
      this.#log("error", "storage writes failing", {
        error,
        failed_writes: failed,
      });
      return;
    }
    fault.error = error;
    fault.failedBatches++;
    fault.failedWrites += failed;
    const reported = this.#faultReported;
    if (now - reported.at < STORAGE_REPORT_MS) return;
    this.#log("error", "storage writes still failing", {
      error,
      failing_ms: now - fault.since,
      failed_batches: fault.failedBatches - reported.batches,
      failed_writes: fault.failedWrites - reported.writes,
    });
    this.#faultReported = {
      at: now,
      batches: fault.failedBatches,
      writes: fault.failedWrites,
    };
  }

  /**
   * While storage fails and nothing has been written for a second, tries a
   * probe write (see `Storage.probe`), so that the fault's end shows in the
   * log and `/healthz` without waiting for a client's message.
   */
  #probeStorage(): void {
    const probe = this.#storage.probe?.bind(this.#storage);
    if (!probe || !this.#storageFault || this.#probing) return;
    if (this.#now() - this.#lastStorageTry < STORAGE_PROBE_MS) return;
    this.#probing = true;
    this.#enqueue(async () => {
      try {
        await probe();
        this.#lastStorageTry = this.#now();
        this.#recovered();
      } catch (cause) {
        this.#lastStorageTry = this.#now();
        const fault = this.#storageFault;
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
    const fault = this.#storageFault;
    if (!fault) return;
    this.#storageFault = undefined;
    this.#log("error", "storage writes work again", {
      failing_ms: this.#now() - fault.since,
      failed_batches: fault.failedBatches,
      failed_writes: fault.failedWrites,
      last_error: fault.error,
    });
  }

  /** Looks a token up, for the transport's `?token=` check at upgrade. */
  checkToken(token: string): Promise<TokenGrant | null> {
    return this.#storage.checkToken(token, this.#now());
  }

  /** Issues a token: a UUID v4, stored hashed. */
  async createToken(
    username: string,
    ttlSeconds: number,
  ): Promise<IssuedToken> {
    const token = crypto.randomUUID();
    const now = this.#now();
    const expiresAt = now + ttlSeconds * 1000;
    await this.#storage.createToken(token, { username, expiresAt }, now);
    return { token, username, expires_at: expiresAt };
  }

  /** Revokes a token; connections using it are closed at once. `false` if unknown. */
  async revokeToken(token: string): Promise<boolean> {
    const normalized = token.toLowerCase();
    const revoked = await this.#storage.revokeToken(normalized);
    if (revoked) {
      this.dispatch({
        type: "token_revoked",
        now: this.#now(),
        token: normalized,
      });
      await this.#bus?.revoked(normalized).catch((error) =>
        this.#failed("cluster revocation", error)
      );
    }
    return revoked;
  }

  /** Waits until every storage call issued so far has finished. */
  async settle(): Promise<void> {
    let seen: Promise<void>;
    do {
      // Answers may raise new writes (frames queued behind a write): repeat.
      this.#flush();
      seen = this.#io;
      await seen;
    } while (seen !== this.#io || this.#batch.length > 0);
  }

  /**
   * Stops the chat: finishes pending writes, closes every connection with
   * 1001 after what was queued for it, and waits for the sockets to close
   * or for `graceMs`.
   */
  async shutdown(graceMs: number): Promise<void> {
    clearInterval(this.#ticker);
    clearInterval(this.#sweeper);
    this.#clearTokenTimers();
    await this.settle();
    this.dispatch({ type: "shutdown", now: this.#now() });
    if (this.#open.size > 0) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#allClosed = resolve;
      const timer = setTimeout(resolve, graceMs);
      await promise;
      clearTimeout(timer);
      // The grace is over: close what still waits for an I/O answer.
      this.dispatch({ type: "shutdown", now: this.#now() });
    }
    await this.settle();
    clearTimeout(this.#watchTimer);
    this.#watchTimer = undefined;
    this.#clearTokenTimers();
  }

  #clearTokenTimers(): void {
    for (const timer of this.#tokenTimers.values()) clearTimeout(timer);
    this.#tokenTimers.clear();
  }
}
