/**
 * The effects runner: the only code that touches sockets, storage and
 * timers. It feeds events to the reducer one at a time, applies the effects
 * that come back, and turns the answers of asynchronous I/O into events.
 *
 * This file wires the parts and owns the sockets and the event queue; each
 * other job has a file of its own under `src/runtime/`: batched writes
 * (`batch_writer.ts`), the storage call queue (`io_queue.ts`), storage
 * health and probes (`storage_health.ts`), offline pages waiting to be
 * written (`written_watcher.ts`), token expiry timers (`token_timers.ts`),
 * cluster effects (`cluster_effects.ts`), event-loop lag (`lag_watch.ts`) and
 * batched delivery to `?batch=1` connections (`frame_batcher.ts`).
 * It decides no chat rule.
 *
 * Why this file is long: what is left is the `Runner` class, whose methods
 * share its sockets, event queue and reducer state, with `#apply`, the one
 * switch over the effects; moving methods out would mean exposing those
 * fields.
 *
 * @module
 */
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import {
  type AdminAction,
  type AdminAnswer,
  type AdminRequest,
  type BusMessage,
  type ChatState,
  type ConnId,
  type Effect,
  type Event,
  reduce,
} from "../chat/reducer.ts";
import type { Storage, TokenGrant } from "../chat/storage.ts";
import type { ClusterPort } from "../chat/cluster_port.ts";
import { BatchWriter } from "./batch_writer.ts";
import { FrameBatcher } from "./frame_batcher.ts";
import type { ServerType } from "../wire/server_frames.ts";
import {
  applyClusterEffect,
  type ClusterEffectContext,
} from "./cluster_effects.ts";
import { IoQueue } from "./io_queue.ts";
import { LagWatch } from "./lag_watch.ts";
import { type StorageFault, StorageHealth } from "./storage_health.ts";
import { TokenTimers } from "./token_timers.ts";
import { WrittenWatcher } from "./written_watcher.ts";

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
  /**
   * Event-loop lag that counts toward an overload (default
   * `OVERLOAD_LAG_MS`, 50 ms). Tests that share a loaded machine raise it.
   */
  overloadLagMs?: number;
  /**
   * How long a busy room's messages are gathered for connections that
   * asked for batches (`BATCH_WINDOW_MS`; default 20).
   */
  batchWindowMs?: number;
}

/** What the transport knows about a new connection. */
export interface Attachment {
  /** A token valid at upgrade (`?token=`), with its grant. */
  token?: string;
  grant?: TokenGrant;
  /** The client asked for batched delivery (`?batch=1`). */
  batch?: boolean;
}

/**
 * The frames a `?batch=1` connection gets gathered into `Batch` frames: room
 * traffic. Everything else (answers, `Error`, `Presence`, `History`,
 * `PrivateChat`) goes out at once, after what was gathered for it.
 */
export const BATCHED_KINDS: ReadonlySet<ServerType> = new Set<ServerType>([
  "GroupChat",
  "Enter",
  "Leave",
]);

const encoder = new TextEncoder();

/**
 * How often the runner reads the bans from storage: a ban made on the
 * database by the admin command (or on a node whose bus message was lost)
 * holds here within this time.
 */
export const BAN_RELOAD_MS = 5_000;

/** How often the runner looks for slow consumers and measures its lag. */
const SWEEP_MS = 100;

/** Size in bytes of a text frame; exact only when it could pass `limit`. */
function frameSize(text: string, limit: number): number {
  // UTF-8 takes at most 3 bytes per UTF-16 unit, so short frames skip the count.
  if (text.length * 3 <= limit) return text.length;
  return encoder.encode(text).length;
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
  #lag: LagWatch;
  #nextId = 1;
  #nextAdmin = 1;
  /** Admin requests waiting for the reducer's `admin_reply`, by id. */
  #adminWaiters = new Map<number, (answer: AdminAnswer) => void>();
  #events: Event[] = [];
  #running = false;
  #ticker: ReturnType<typeof setInterval>;
  #banReloader: ReturnType<typeof setInterval>;
  #allClosed: (() => void) | null = null;
  #queue: IoQueue;
  #health: StorageHealth;
  #writer: BatchWriter;
  #tokenTimers: TokenTimers;
  #watcher: WrittenWatcher;
  /** Connections that asked for batched delivery. */
  #batched = new Set<ConnId>();
  #batcher: FrameBatcher;
  #clusterContext: ClusterEffectContext = {
    dispatch: (event) => this.dispatch(event),
    now: () => this.#now(),
    failed: (what, error) => this.#failed(what, error),
  };

  /** Starts the tick timer; {@linkcode Runner.shutdown} stops it. */
  constructor(state: ChatState, options: RunnerOptions) {
    this.#state = state;
    this.#storage = options.storage;
    this.#bus = options.bus;
    this.#metrics = options.metrics;
    this.#log = options.log;
    this.#maxBufferedBytes = options.maxBufferedBytes;
    this.#lag = new LagWatch(SWEEP_MS, options.overloadLagMs);
    const now = this.#now = options.now ?? Date.now;
    const emit = (event: Event) => {
      this.#events.push(event);
    };
    const drain = () => this.#drain();
    this.#queue = new IoQueue(this.#log);
    this.#health = new StorageHealth({
      storage: this.#storage,
      metrics: this.#metrics,
      log: this.#log,
      now,
      queue: this.#queue,
    });
    this.#writer = new BatchWriter({
      storage: this.#storage,
      queue: this.#queue,
      health: this.#health,
      now,
      emit,
      drain,
    });
    this.#tokenTimers = new TokenTimers(
      (token) => this.dispatch({ type: "token_due", now: now(), token }),
      now,
    );
    this.#watcher = new WrittenWatcher({
      socket: (conn) => this.#sockets.get(conn),
      now,
      emit,
      drain,
    });
    this.#ticker = setInterval(() => {
      this.dispatch({ type: "tick", now: this.#now() });
      this.#health.probe();
    }, options.tickMs ?? 1000);
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
    this.#batcher = new FrameBatcher({
      send: (conn, data) => this.#sockets.get(conn)?.send(data),
      windowMs: options.batchWindowMs ?? 20,
      maxBytes: state.settings.maxMessageBytes,
    });
    this.#banReloader = setInterval(() => {
      this.#queue.enqueue(() => this.reloadBans());
    }, BAN_RELOAD_MS);
  }

  /** The reducer's state, for gauges and health. */
  get state(): ChatState {
    return this.#state;
  }

  /** Storage writes failing now, or `undefined` while they work. */
  get storageFault(): StorageFault | undefined {
    return this.#health.fault;
  }

  /** Open sockets, closing ones included: what `MAX_CONNECTIONS` counts. */
  get openSockets(): number {
    return this.#open.size;
  }

  /** Whether the server sheds load; upgrades are refused meanwhile. */
  get overloaded(): boolean {
    return this.#lag.overloaded;
  }

  /** Takes over a socket fresh from the upgrade; returns its connection id. */
  attach(socket: WebSocket, attachment: Attachment = {}): ConnId {
    const conn = this.#nextId++;
    socket.binaryType = "arraybuffer";
    this.#open.add(socket);
    const { batch, ...opened } = attachment;
    socket.onopen = () => {
      this.#sockets.set(conn, socket);
      if (batch) this.#batched.add(conn);
      this.dispatch({
        type: "open",
        conn,
        now: this.#now(),
        publicId: crypto.randomUUID(),
        ...opened,
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
      if (this.#batched.delete(conn)) this.#batcher.forget(conn);
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
    // Bans made while this node was away from Redis (or before it started).
    this.#queue.enqueue(() => this.reloadBans());
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
        if (
          this.#batched.size > 0 && effect.room !== undefined &&
          BATCHED_KINDS.has(effect.kind)
        ) this.#gather(effect.room, effect);
        else {
          for (const conn of effect.conns) {
            if (conn !== effect.except) this.#send(conn, effect.data);
          }
        }
        this.#metrics.framesOut.add(effect.kind, effect.count);
        break;
      case "close": {
        if (this.#batched.has(effect.conn)) this.#batcher.release(effect.conn);
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
        this.#writer.persist(effect.request);
        break;
      case "load_history": {
        const { request } = effect;
        this.#writer.flush();
        this.#queue.enqueue(async () => {
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
      case "load_seq": {
        const { room } = effect;
        this.#writer.flush();
        this.#queue.enqueue(async () => {
          const seq = await this.#storage.roomSeq(room)
            .catch((error) => this.#failed("room seq read", error));
          this.dispatch({ type: "seq_loaded", now: this.#now(), room, seq });
        });
        break;
      }
      case "check_token": {
        const { token } = effect;
        this.#queue.enqueue(async () => {
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
      case "token_timer":
        this.#tokenTimers.set(effect.token, effect.at);
        break;
      case "load_offline": {
        const { username, limit } = effect;
        // After the writes asked for so far: a page marked delivered.
        this.#writer.flush();
        this.#queue.enqueue(async () => {
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
        this.#watcher.watch(effect);
        break;
      case "log":
        this.#log(effect.level, effect.msg, effect.fields);
        break;
      case "count":
        this.#metrics.count(effect.metric, effect.label);
        break;
      case "admin_reply": {
        const resolve = this.#adminWaiters.get(effect.id);
        this.#adminWaiters.delete(effect.id);
        resolve?.(effect.answer);
        break;
      }
      default:
        if (!this.#bus) {
          this.#log("error", "cluster effect without a bus", {
            type: effect.type,
          });
          break;
        }
        applyClusterEffect(effect, this.#bus, this.#clusterContext);
    }
  }

  #send(conn: ConnId, data: string): void {
    // What was gathered for a batched connection goes before, in order.
    if (this.#batched.size > 0 && this.#batched.has(conn)) {
      this.#batcher.release(conn);
    }
    // A socket is in #sockets from its open event on, and `send` on a
    // closing or closed one does nothing: no need to read `readyState`.
    this.#sockets.get(conn)?.send(data);
  }

  /**
   * A room frame: batched connections get it gathered (the same string,
   * encoded once), the others at once as before.
   */
  #gather(
    room: string,
    effect: Extract<Effect, { type: "broadcast" }>,
  ): void {
    const { data, except } = effect;
    let entry;
    for (const conn of effect.conns) {
      if (conn === except) continue;
      if (this.#batched.has(conn)) {
        entry ??= this.#batcher.entry(room, data);
        this.#batcher.add(conn, entry);
      } else this.#sockets.get(conn)?.send(data);
    }
  }

  /**
   * Finds slow consumers off the hot path, and tells the reducer when the
   * event loop falls behind ({@linkcode LagWatch}). Deno counts a send as
   * buffered until its write completes on a later turn, so one look cannot
   * tell a burst from a backlog: a socket over `MAX_BUFFERED_BYTES` at two
   * sweeps in a row is a slow consumer. The reducer hears of it: the
   * connection leaves its rooms at once, gets the answers it is owed, and
   * is closed with 1008.
   */
  #sweep(): void {
    const change = this.#lag.measure();
    if (change) {
      const { overloaded } = change;
      this.#log(
        overloaded ? "warn" : "info",
        overloaded ? "overloaded" : "load normal",
        { lag_ms: Math.round(change.lagMs) },
      );
      this.#events.push({ type: "load", now: this.#now(), overloaded });
    }
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

  /**
   * A token was revoked (see `TokenService`): its connections here are
   * closed at once, and the other nodes of a cluster are told.
   */
  async tokenRevoked(token: string): Promise<void> {
    this.dispatch({ type: "token_revoked", now: this.#now(), token });
    await this.#bus?.revoked(token).catch((error) =>
      this.#failed("cluster revocation", error)
    );
  }

  /**
   * Hands an administrator's request to the reducer and resolves with its
   * answer (a read of this node's state, or an action's outcome). A kick,
   * ban, unban or deletion is told to the other nodes of a cluster too,
   * and to this runner's storage-held ban list first by the caller.
   */
  admin(request: AdminRequest): Promise<AdminAnswer> {
    const id = this.#nextAdmin++;
    const { promise, resolve } = Promise.withResolvers<AdminAnswer>();
    this.#adminWaiters.set(id, resolve);
    this.dispatch({ type: "admin", now: this.#now(), id, request });
    return promise;
  }

  /** Tells the other nodes of a cluster of an admin action; `false` if that failed. */
  async tellCluster(action: AdminAction): Promise<boolean> {
    if (!this.#bus) return true;
    try {
      await this.#bus.admin(action);
      return true;
    } catch (error) {
      this.#failed("cluster admin action", error);
      return false;
    }
  }

  /**
   * Reads the bans storage holds and hands them to the reducer, which
   * ends the connections of a name banned elsewhere (the admin command on
   * the database, another node). Called at start and every few seconds.
   */
  async reloadBans(): Promise<void> {
    const rows = await this.#storage.bans(this.#now()).catch((error) =>
      this.#failed("ban list read", error)
    );
    if (rows === null) return;
    this.dispatch({
      type: "admin",
      now: this.#now(),
      id: null,
      request: {
        kind: "bans",
        bans: rows.map((row) => [row.username, row.until] as const),
      },
    });
  }

  /** Waits until every storage call issued so far has finished. */
  settle(): Promise<void> {
    return this.#writer.settle();
  }

  /**
   * Stops the chat: finishes pending writes, closes every connection with
   * 1001 after what was queued for it, and waits for the sockets to close
   * or for `graceMs`.
   */
  async shutdown(graceMs: number): Promise<void> {
    clearInterval(this.#ticker);
    clearInterval(this.#sweeper);
    clearInterval(this.#banReloader);
    this.#tokenTimers.clear();
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
    this.#batcher.flush();
    this.#batcher.stop();
    this.#watcher.stop();
    this.#tokenTimers.clear();
  }
}
