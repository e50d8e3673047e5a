/**
 * A subscriber to sharded pub/sub channels (`SSUBSCRIBE`, Redis 7): each
 * channel is subscribed on the master that serves its hash slot now, through
 * one connection per master, and follows its slot when the slot moves (a
 * replica promoted after its master died, a manual `CLUSTER FAILOVER`, a
 * resharding). On a standalone Redis every channel lives on the one server.
 *
 * node-redis resubscribes a connection's channels by itself after a
 * reconnect, but not when the master it was on is gone for good (its
 * cluster client drops those listeners when it rediscovers the topology),
 * so this class keeps the channels it wants itself: while one is lost it
 * asks for the topology again every {@linkcode CHECK_MS} and subscribes
 * the channel where its slot lives now. For {@linkcode SETTLE_MS} after a
 * loss it keeps asking, and moves a channel that sits anywhere but on its
 * slot's master: a replica accepts `SSUBSCRIBE` for its master's slots, so
 * a topology read from a node that has not heard of a promotion yet places
 * the channel on the demoted master, where it would stay (fed through
 * replication, not by the master). It reports the loss (`onDown`) and
 * the return (`onReady`) of channels it had, so that the bus can read back
 * what pub/sub dropped meanwhile (pub/sub is at most once); a channel that
 * is new (never subscribed yet) counts for neither.
 *
 * It knows no channel names or payloads (the bus does), and runs no
 * command but `SSUBSCRIBE`/`SUNSUBSCRIBE`.
 *
 * @module
 */
import {
  connectRedis,
  type PayloadListener,
  type RedisConnectionOptions,
  type StandaloneConnection,
  until,
} from "./connection.ts";

/** How often a subscriber with a lost channel looks again. */
export const CHECK_MS = 250;

/**
 * How long after a lost or moved channel the subscriber keeps reading the
 * topology and checking where each channel is.
 */
export const SETTLE_MS = 10_000;

/** How long a subscription waits for its master's connection. */
const PLACE_MS = 3000;

/** Where a sharded channel lives: the adapter's view of the topology. */
export interface ShardLocator {
  /**
   * The URL of the master that serves `channel`'s slot now, by the last
   * topology known; `undefined` when none is known.
   */
  shardUrl(channel: string): string | undefined;
  /** Asks for the topology again (throttled); never rejects. */
  refreshTopology(): Promise<void>;
}

/** One wanted (or formerly wanted) channel. */
interface Entry {
  listener: PayloadListener;
  /** The same function for the life of the entry, for node-redis. */
  relay: PayloadListener;
  /** The master URL it is subscribed on, if any. */
  on: string | null;
  wanted: boolean;
  /** It was subscribed once and was lost since. */
  lost: boolean;
  /** Subscribe and unsubscribe calls on this channel run in call order. */
  queue: Promise<void>;
}

/**
 * Sharded subscriptions, each on the master of its slot; see the module
 * documentation.
 */
export class ShardedSubscriber {
  #locator: ShardLocator;
  #options: RedisConnectionOptions;
  #connections = new Map<string, StandaloneConnection>();
  #channels = new Map<string, Entry>();
  #healthy = true;
  #checking = false;
  #closed = false;
  /** Until when (`performance.now()`) placements are checked after a loss. */
  #settleUntil = 0;
  #timer: ReturnType<typeof setInterval>;

  /** Subscribes through `locator`'s masters; `options.onReady`/`onDown` report lost channels. */
  constructor(locator: ShardLocator, options: RedisConnectionOptions) {
    this.#locator = locator;
    this.#options = options;
    this.#timer = setInterval(() => this.#check(), CHECK_MS);
  }

  /** No channel it had is lost now. */
  get up(): boolean {
    return !this.#closed && this.#allLive();
  }

  /** The channels subscribed now (for tests and metrics). */
  get channels(): string[] {
    return [...this.#channels].filter(([, entry]) =>
      entry.wanted && entry.on !== null
    ).map(([channel]) => channel);
  }

  /**
   * Subscribes to `channel` on the master of its slot; resolves once Redis
   * confirmed it, so that everything published after that reaches
   * `listener`: `true` when this call subscribed it, `false` when it was
   * subscribed already (then only its listener changes). Rejects when that
   * master cannot be reached; the channel stays wanted, and is subscribed
   * when the master is back, unless {@linkcode ShardedSubscriber.unsubscribe}
   * is called.
   */
  subscribe(channel: string, listener: PayloadListener): Promise<boolean> {
    let entry = this.#channels.get(channel);
    if (!entry) {
      const created: Entry = {
        listener,
        relay: (payload) => created.listener(payload),
        on: null,
        wanted: true,
        lost: false,
        queue: Promise.resolve(),
      };
      entry = created;
      this.#channels.set(channel, entry);
    }
    entry.listener = listener;
    entry.wanted = true;
    return this.#enqueue(channel, entry);
  }

  /** Whether `channel` is wanted but has never been subscribed: retried. */
  #pending(entry: Entry): boolean {
    return entry.wanted && entry.on === null && !entry.lost;
  }

  /** Unsubscribes from `channel`; never rejects (a lost connection forgets it anyway). */
  unsubscribe(channel: string): Promise<void> {
    const entry = this.#channels.get(channel);
    if (!entry) return Promise.resolve();
    entry.wanted = false;
    return this.#enqueue(channel, entry).then(() => {}, () => {});
  }

  /** Runs `#settle` for `channel` after the calls before it. */
  #enqueue(channel: string, entry: Entry): Promise<boolean> {
    const run = entry.queue.catch(() => {}).then(() =>
      this.#settle(channel, entry)
    );
    entry.queue = run.then(() => {}, () => {});
    return run;
  }

  /**
   * Brings `channel` to what is wanted of it now; `true` when it subscribed
   * it (anew).
   */
  async #settle(channel: string, entry: Entry): Promise<boolean> {
    if (this.#closed) return false;
    if (!entry.wanted) {
      if (entry.on !== null) await this.#drop(channel, entry);
      if (!entry.wanted && this.#channels.get(channel) === entry) {
        this.#channels.delete(channel);
      }
      return false;
    }
    const url = this.#locator.shardUrl(channel);
    if (url === undefined) {
      throw new Error(`no master known for the slot of ${channel}`);
    }
    if (entry.on === url) {
      // Still there: node-redis subscribes it again after a reconnect.
      return false;
    }
    if (entry.on !== null) await this.#drop(channel, entry);
    const connection = this.#connection(url);
    await until(() => connection.up || this.#closed, PLACE_MS);
    if (this.#closed) return false;
    if (!connection.up) throw new Error("redis is not available");
    // A listener left on this connection by an unsubscribe while it was
    // down would hear every payload a second time: take it off first.
    if (connection.client.getPubSubListeners("SHARDED").has(channel)) {
      await connection.client.sUnsubscribe(channel);
    }
    await connection.client.sSubscribe(channel, entry.relay);
    entry.on = url;
    entry.lost = false;
    return true;
  }

  /** Unsubscribes `channel` where it is; closes that connection once it serves none. */
  async #drop(channel: string, entry: Entry): Promise<void> {
    const url = entry.on!;
    entry.on = null;
    const connection = this.#connections.get(url);
    if (!connection) return;
    if (connection.up) {
      await connection.client.sUnsubscribe(channel, entry.relay).catch(
        () => {},
      );
    }
    this.#closeIfIdle(url);
  }

  /** Closes the connection to `url` when no channel is on it. */
  #closeIfIdle(url: string): void {
    for (const entry of this.#channels.values()) {
      if (entry.on === url) return;
    }
    const connection = this.#connections.get(url);
    if (!connection) return;
    this.#connections.delete(url);
    connection.close().catch(() => {});
  }

  /** The connection to the master at `url`, opened on first use. */
  #connection(url: string): StandaloneConnection {
    const known = this.#connections.get(url);
    if (known) return known;
    const connection = connectRedis(url, {
      name: this.#options.name,
      log: this.#options.log,
      onReady: () => this.#check(),
      onDown: () => this.#check(),
    });
    // The server moved a channel's slot away (`SUNSUBSCRIBE` pushed by
    // Redis): node-redis dropped its listener.
    connection.client.on("sharded-channel-moved", (channel: string) => {
      const entry = this.#channels.get(channel);
      if (entry && entry.on === url) {
        entry.on = null;
        this.#lose(entry);
      }
      this.#check();
    });
    // A resubscription after a reconnect was answered MOVED (the master came
    // back as a replica): node-redis dropped every listener of it.
    connection.client.on("__MOVED", () => {
      for (const entry of this.#channels.values()) {
        if (entry.on === url) {
          entry.on = null;
          this.#lose(entry);
        }
      }
      this.#check();
    });
    this.#connections.set(url, connection);
    return connection;
  }

  /** Whether every wanted channel that was subscribed is subscribed now. */
  #allLive(): boolean {
    for (const entry of this.#channels.values()) {
      if (!entry.wanted) continue;
      if (entry.lost) return false;
      if (entry.on !== null && !this.#connections.get(entry.on)?.up) {
        return false;
      }
    }
    return true;
  }

  /** Marks `entry` lost, and checks placements for a while. */
  #lose(entry: Entry): void {
    entry.lost = true;
    this.#settleUntil = performance.now() + SETTLE_MS;
  }

  /**
   * Looks for lost channels: marks them, asks for the topology, subscribes
   * each where its slot lives now, and reports the change. For a while
   * after a loss it also moves a live channel that is not on its slot's
   * master (see the module documentation), as a loss: the bus reads back
   * what the move may have dropped.
   */
  async #check(): Promise<void> {
    if (this.#checking || this.#closed) return;
    this.#checking = true;
    try {
      for (const entry of this.#channels.values()) {
        if (
          entry.wanted && entry.on !== null &&
          !this.#connections.get(entry.on)?.up
        ) {
          this.#lose(entry);
        }
      }
      const settling = performance.now() < this.#settleUntil;
      const pending = [...this.#channels.values()].some((entry) =>
        this.#pending(entry)
      );
      if (!this.#allLive() || pending || settling) {
        if (!this.#allLive()) this.#report(false);
        await this.#locator.refreshTopology();
        const moves: Promise<unknown>[] = [];
        for (const [channel, entry] of this.#channels) {
          if (!entry.wanted) continue;
          const url = this.#locator.shardUrl(channel);
          const live = entry.on !== null &&
            this.#connections.get(entry.on)?.up === true;
          if (live && (url === undefined || url === entry.on)) {
            entry.lost = false;
            continue;
          }
          if (live) {
            this.#lose(entry);
            this.#report(false);
          }
          // Its master's connection is down but still serves the slot:
          // node-redis subscribes it again when it comes back.
          if (url === undefined || url === entry.on) continue;
          moves.push(this.#enqueue(channel, entry).catch(() => {}));
        }
        await Promise.all(moves);
      }
      this.#report(this.#allLive());
    } finally {
      this.#checking = false;
    }
  }

  /** Calls `onDown`/`onReady` when health changes. */
  #report(healthy: boolean): void {
    if (this.#closed || healthy === this.#healthy) return;
    this.#healthy = healthy;
    if (healthy) this.#options.onReady?.();
    else this.#options.onDown?.();
  }

  /** Closes every connection; later calls do nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    const connections = [...this.#connections.values()];
    this.#connections.clear();
    await Promise.all(connections.map((connection) => connection.close()));
  }
}
