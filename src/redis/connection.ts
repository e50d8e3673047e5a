/**
 * One well-kept connection to Redis (node-redis `@redis/client`), and Lua
 * scripts sent by their SHA1.
 *
 * A connection never gives up: while Redis is down, commands fail at once
 * (no offline queue) and the client reconnects by itself, with exponential
 * backoff. A Redis that keeps the connection but answers nothing (frozen,
 * or a network that drops packets without a reset) is caught too: a
 * command through {@linkcode RedisConnection.command} that gets no reply
 * within {@linkcode REPLY_TIMEOUT_MS} fails, and the connection counts as
 * down until a `PING` is answered again. Every script declares all its
 * keys in `KEYS`, and all of them share one hash slot (see
 * `src/redis/keys.ts`).
 *
 * @module
 */
import { createClient, ErrorReply } from "@redis/client";
import type { Logger } from "../runtime/log.ts";

/** The node-redis client of a {@linkcode RedisConnection}. */
export type RedisClient = ReturnType<typeof createClient>;

/** The first reconnection delay; it doubles on each failed attempt. */
const RECONNECT_MIN_MS = 50;
/** The longest reconnection delay. */
const RECONNECT_MAX_MS = 2000;
/** Reconnection delays vary by this much either way. */
const RECONNECT_JITTER = 0.2;
/** How long {@linkcode RedisConnection.close} waits for pending replies. */
const CLOSE_TIMEOUT_MS = 1000;
/** A reply later than this means Redis is not answering. */
export const REPLY_TIMEOUT_MS = 3000;
/** How often a stalled connection asks Redis whether it answers again. */
const PROBE_MS = 500;

/** What {@linkcode connectRedis} needs besides the URL. */
export interface RedisConnectionOptions {
  /** Names the connection in logs and in Redis (`CLIENT SETNAME`, no spaces). */
  name: string;
  log: Logger;
  /** Called each time the connection is (again) ready for commands. */
  onReady?: () => void;
  /** Called each time a ready connection is lost. */
  onDown?: () => void;
}

/** What a pub/sub subscription hears: each message's payload. */
export type PayloadListener = (payload: string) => void;

/**
 * A Redis that reconnects by itself, standalone ({@linkcode connectRedis})
 * or a Redis Cluster (`openRedis` in `open_redis.ts`).
 */
export interface RedisConnection {
  /** Whether the connection is ready for commands (and Redis answers). */
  readonly up: boolean;
  /**
   * Sends one command; rejects at once while not {@linkcode up}, and after
   * {@linkcode REPLY_TIMEOUT_MS} without a reply (the command may still run).
   * On a Redis Cluster it goes to the master of the slot of `key`, by
   * default its first key (`KEYS[1]` of a script; any node for a command
   * without a key): give `key` for a command such as `WAIT` that must go
   * where a key's writes went.
   */
  command<T = unknown>(args: readonly string[], key?: string): Promise<T>;
  /**
   * The URL of the server that serves the hash slot of `channel` (a key or
   * sharded channel) now: the one server of a standalone Redis, the master
   * of the slot on a Redis Cluster; `undefined` while that is not known.
   * For `ShardedSubscriber` (`sharded_subscriber.ts`).
   */
  shardUrl(channel: string): string | undefined;
  /**
   * Asks a Redis Cluster for its topology again (throttled); does nothing
   * on a standalone Redis. Never rejects.
   */
  refreshTopology(): Promise<void>;
  /**
   * Closes the connection: waits a little for pending replies when Redis is
   * up, drops everything at once when it is down. Later calls do nothing.
   */
  close(): Promise<void>;
}

/** The delay before reconnection attempt `retries` (0 first), in ms. */
export function reconnectDelay(
  retries: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(
    RECONNECT_MIN_MS * 2 ** Math.min(retries, 16),
    RECONNECT_MAX_MS,
  );
  return Math.round(base * (1 + RECONNECT_JITTER * (2 * random() - 1)));
}

/** A connection to one standalone Redis, with its node-redis client. */
export interface StandaloneConnection extends RedisConnection {
  /** The client; its commands reject at once while {@linkcode up} is false. */
  readonly client: RedisClient;
}

class KeptConnection implements StandaloneConnection {
  readonly client: RedisClient;
  #url: string;
  #options: RedisConnectionOptions;
  #up = false;
  /** Whether "redis down" was logged since the last "redis up". */
  #downLogged = false;
  #closed = false;
  /** A command got no reply in time: down until a probe is answered. */
  #stalled = false;
  #probe: ReturnType<typeof setInterval> | undefined;
  /** A connection attempt runs: it ends with `ready` or `error`. */
  #connecting = true;
  /** The client waits before its next attempt; `reconnecting` ends that. */
  #sleeping = false;
  #events = new EventTarget();

  constructor(url: string, options: RedisConnectionOptions) {
    this.#url = url;
    this.#options = options;
    const { log, name } = options;
    const client = this.client = createClient({
      url,
      name,
      disableOfflineQueue: true,
      socket: {
        reconnectStrategy: (retries) => {
          // Closing: stop at once rather than wait and try again.
          if (this.#closed) return false;
          this.#sleeping = true;
          return reconnectDelay(retries);
        },
      },
    });
    // Without an 'error' listener the client dies silently under Deno and
    // never reconnects; every failed attempt comes here.
    client.on("error", (error: unknown) => {
      this.#connecting = false;
      this.#signal();
      if (this.#closed) return;
      const message = error instanceof Error ? error.message : String(error);
      // Not an outage (a reply it could not parse): the socket stays.
      if (client.isReady) {
        log("warn", "redis error", { redis: name, error: message });
        return;
      }
      const wasUp = this.#up;
      this.#up = false;
      if (!this.#downLogged) {
        this.#downLogged = true;
        log("warn", "redis down", { redis: name, error: message });
      }
      if (wasUp) options.onDown?.();
    });
    client.on("reconnecting", () => {
      this.#sleeping = false;
      this.#connecting = true;
      this.#signal();
    });
    client.on("ready", () => {
      this.#sleeping = false;
      this.#connecting = false;
      this.#signal();
      if (this.#closed) return;
      this.#up = true;
      this.#downLogged = false;
      log("info", "redis up", { redis: name });
      options.onReady?.();
    });
    // Resolves once ready; rejects only when closed before that.
    client.connect().catch(() => {});
  }

  get up(): boolean {
    return this.#up && !this.#stalled;
  }

  command<T = unknown>(args: readonly string[]): Promise<T> {
    if (!this.up) return Promise.reject(new Error("redis is not available"));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.#stall();
        reject(new Error(`redis answered nothing in ${REPLY_TIMEOUT_MS} ms`));
      }, REPLY_TIMEOUT_MS);
    });
    return Promise.race([this.client.sendCommand<T>([...args]), late])
      .finally(() => clearTimeout(timer));
  }

  shardUrl(): string {
    return this.#url;
  }

  refreshTopology(): Promise<void> {
    return Promise.resolve();
  }

  /** Redis keeps the connection but does not answer: count it as down. */
  #stall(): void {
    if (this.#stalled || this.#closed) return;
    this.#stalled = true;
    const { log, name } = this.#options;
    log("warn", "redis not answering", { redis: name });
    this.#options.onDown?.();
    let probing = false;
    this.#probe = setInterval(() => {
      // One probe at a time: a frozen Redis must not collect them.
      if (probing || !this.#up) return;
      probing = true;
      this.client.sendCommand(["PING"]).then(() => {
        if (!this.#stalled || this.#closed) return;
        this.#stalled = false;
        clearInterval(this.#probe);
        log("info", "redis up", { redis: name });
        this.#options.onReady?.();
      }, () => {}).finally(() => probing = false);
    }, PROBE_MS);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#up = false;
    clearInterval(this.#probe);
    const client = this.client;
    // An attempt in flight would hand a fresh socket to a destroyed client:
    // let it end first (at once on a refused connection).
    if (this.#connecting) {
      await this.#until(() => !this.#connecting, 5000);
    }
    if (client.isReady) {
      // Replies come in order: once this PING is answered, so is every
      // command issued before it. (node-redis's own close() cannot be cut
      // short when Redis stops answering.)
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        client.sendCommand(["PING"]).catch(() => {}),
        new Promise((resolve) => {
          timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
    }
    if (client.isOpen) client.destroy();
    // A pending backoff timer ends with 'reconnecting'; the client then
    // sees that it is closed and stops.
    if (this.#sleeping) {
      await this.#until(() => !this.#sleeping, RECONNECT_MAX_MS * 2);
    }
  }

  #signal(): void {
    this.#events.dispatchEvent(new Event("change"));
  }

  /** Waits until `done()` or `ms` pass. */
  #until(done: () => boolean, ms: number): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => {
      const finish = () => {
        if (!done() && !timedOut) return;
        clearTimeout(timer);
        this.#events.removeEventListener("change", finish);
        resolve();
      };
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        finish();
      }, ms);
      this.#events.addEventListener("change", finish);
    });
  }
}

/**
 * Opens a connection to the Redis at `url` (`redis://host:port`) that is
 * never given up: it starts connecting at once, does not throw when Redis is
 * down (the node starts, degraded), logs `redis down` once per outage and
 * `redis up` each time it is ready again.
 */
export function connectRedis(
  url: string,
  options: RedisConnectionOptions,
): StandaloneConnection {
  return new KeptConnection(url, options);
}

/**
 * A Lua script run with `EVALSHA`, falling back to `EVAL` when Redis does
 * not know it (`NOSCRIPT`: after a restart or `SCRIPT FLUSH`). Every script
 * of ours is given every key it touches in `KEYS`, all in one hash slot, as
 * Redis Cluster requires.
 */
export class RedisScript {
  /** The Lua source. */
  readonly source: string;
  #sha: string | undefined;
  /** Resolves when the SHA1 is known. */
  readonly ready: Promise<string>;

  /** Starts computing the SHA1 of `source`. */
  constructor(source: string) {
    this.source = source;
    this.ready = sha1(source).then((sha) => this.#sha = sha);
  }

  /** The SHA1 of the source, hex, once computed. */
  get sha(): string | undefined {
    return this.#sha;
  }

  /**
   * Runs the script with `keys` as `KEYS` and `args` as `ARGV` (numbers
   * sent as strings). The
   * command is issued before this returns, so calls made in one turn are
   * pipelined in order. Before the SHA1 is known, sends `EVAL`.
   */
  async run(
    connection: Pick<RedisConnection, "command">,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    const argv = [String(keys.length), ...keys, ...args.map(String)];
    const sha = this.#sha;
    if (sha === undefined) {
      return await connection.command(["EVAL", this.source, ...argv]);
    }
    try {
      return await connection.command(["EVALSHA", sha, ...argv]);
    } catch (error) {
      if (
        !(error instanceof ErrorReply && error.message.startsWith("NOSCRIPT"))
      ) {
        throw error;
      }
      return await connection.command(["EVAL", this.source, ...argv]);
    }
  }
}

/** Waits until `done()` or `ms` pass, checking every 10 ms. */
/** Waits until `done()` holds, at most `ms`. */
export async function until(
  done: () => boolean,
  ms: number,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!done() && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}
