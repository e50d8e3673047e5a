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
import { createClient, createCluster, ErrorReply } from "@redis/client";
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

/** Callbacks of a {@linkcode RedisConnection.duplicate}. */
export type RedisConnectionHooks = Pick<
  RedisConnectionOptions,
  "onReady" | "onDown"
>;

/** What a pub/sub subscription hears: each message's payload. */
export type PayloadListener = (payload: string) => void;

/**
 * A Redis that reconnects by itself, standalone ({@linkcode connectRedis})
 * or a Redis Cluster ({@linkcode openRedis}).
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
   * Subscribes to a (classic) pub/sub channel; the client subscribes again
   * by itself after a reconnect.
   */
  subscribe(channel: string, listener: PayloadListener): Promise<void>;
  /**
   * A new connection to the same Redis with the same settings and the given
   * `name` (for a pub/sub subscriber); callbacks are not copied, pass them
   * in `hooks`.
   */
  duplicate(name: string, hooks?: RedisConnectionHooks): RedisConnection;
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
  /** A new standalone connection; see {@linkcode RedisConnection.duplicate}. */
  duplicate(name: string, hooks?: RedisConnectionHooks): StandaloneConnection;
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

  async subscribe(channel: string, listener: PayloadListener): Promise<void> {
    await this.client.subscribe(channel, listener);
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

  duplicate(
    name: string,
    hooks: RedisConnectionHooks = {},
  ): StandaloneConnection {
    return new KeptConnection(this.#url, {
      name,
      log: this.#options.log,
      ...hooks,
    });
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

/** The key a command is routed by on a Redis Cluster (none: any node). */
export function routingKey(args: readonly string[]): string | undefined {
  const name = args[0]?.toUpperCase();
  if (name === "EVAL" || name === "EVALSHA") {
    return Number(args[2]) > 0 ? args[3] : undefined;
  }
  if (name === "PUBLISH" || name === "PING") return undefined;
  return args[1];
}

/** How often at most a cluster connection asks for the topology again. */
const REDISCOVER_MS = 250;

/**
 * A connection to a Redis Cluster (node-redis `createCluster`): commands go
 * to the master of their key's slot. While a slot has no master, commands
 * for it fail (the other slots answer); each failure that is not an answer
 * from Redis asks for the topology again (at most every 250 ms), so a
 * replica promoted after a master's death is found without a restart.
 */
class ClusterConnection implements RedisConnection {
  #urls: readonly string[];
  #options: RedisConnectionOptions;
  #cluster: ReturnType<typeof createCluster>;
  #up = false;
  #closed = false;
  #downLogged = false;
  #connecting: Promise<void> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #lastRediscover = 0;
  #rediscovering = false;
  #subscriber: ClusterSubscriber | undefined;

  constructor(urls: readonly string[], options: RedisConnectionOptions) {
    this.#urls = urls;
    this.#options = options;
    const { log, name } = options;
    this.#cluster = createCluster({
      rootNodes: urls.map((url) => ({ url })),
      defaults: {
        name,
        disableOfflineQueue: true,
        socket: {
          reconnectStrategy: (retries: number) =>
            this.#closed ? false : reconnectDelay(retries),
        },
      },
    });
    this.#cluster.on("error", (error: unknown) => {
      if (this.#closed || this.#downLogged) return;
      this.#downLogged = true;
      log("warn", "redis down", { redis: name, error: String(error) });
    });
    // A node lost: its slots may move to a replica; ask where.
    this.#cluster.on("node-error", () => this.#rediscover());
    this.#connect(0);
  }

  #connect(attempt: number): void {
    if (this.#closed) return;
    this.#connecting = this.#cluster.connect().then(() => {
      this.#connecting = undefined;
      if (this.#closed) return;
      this.#up = true;
      this.#downLogged = false;
      this.#options.log("info", "redis up", {
        redis: this.#options.name,
        cluster: true,
      });
      this.#options.onReady?.();
    }, (error) => {
      this.#connecting = undefined;
      if (this.#closed) return;
      if (!this.#downLogged) {
        this.#downLogged = true;
        this.#options.log("warn", "redis down", {
          redis: this.#options.name,
          error: String(error),
        });
      }
      this.#retry = setTimeout(
        () => this.#connect(attempt + 1),
        reconnectDelay(attempt),
      );
    });
  }

  get up(): boolean {
    return this.#up && !this.#closed;
  }

  /** Asks the cluster for its topology again (throttled). */
  #rediscover(): void {
    if (!this.#up || this.#closed || this.#rediscovering) return;
    const now = performance.now();
    if (now - this.#lastRediscover < REDISCOVER_MS) {
      this.#rediscovering = true;
      setTimeout(() => {
        this.#rediscovering = false;
        this.#rediscover();
      }, REDISCOVER_MS);
      return;
    }
    this.#lastRediscover = now;
    const start = this.#cluster.masters.find((node) => node.client)?.client;
    if (!start) return;
    this.#rediscovering = true;
    this.#cluster._slots.rediscover(start as never).catch(() => {})
      .finally(() => this.#rediscovering = false);
  }

  command<T = unknown>(args: readonly string[], key?: string): Promise<T> {
    if (!this.up) return Promise.reject(new Error("redis is not available"));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.#rediscover();
        reject(new Error(`redis answered nothing in ${REPLY_TIMEOUT_MS} ms`));
      }, REPLY_TIMEOUT_MS);
    });
    const sent = this.#cluster.sendCommand<T>(
      key ?? routingKey(args),
      false,
      [...args],
    ).catch((error) => {
      if (
        !(error instanceof ErrorReply) ||
        /^(CLUSTERDOWN|TRYAGAIN|MOVED|ASK)/.test(error.message)
      ) {
        this.#rediscover();
      }
      throw error;
    });
    return Promise.race([sent, late]).finally(() => clearTimeout(timer));
  }

  /**
   * Subscribes through a {@linkcode ClusterSubscriber} on every node known
   * now (made on the first call; its losses are not reported: use
   * {@linkcode ClusterConnection.duplicate} for a subscriber that reports
   * them).
   */
  async subscribe(channel: string, listener: PayloadListener): Promise<void> {
    this.#subscriber ??= new ClusterSubscriber(() => this.#nodeUrls(), {
      name: this.#options.name,
      log: this.#options.log,
    });
    await until(() => this.#subscriber!.up || this.#closed, 5000);
    await this.#subscriber.subscribe(channel, listener);
  }

  /**
   * A subscriber: a connection to every node of the cluster (see
   * `ClusterSubscriber`). Not for commands routed by key.
   */
  duplicate(name: string, hooks: RedisConnectionHooks = {}): RedisConnection {
    return new ClusterSubscriber(() => this.#nodeUrls(), {
      name,
      log: this.#options.log,
      ...hooks,
    });
  }

  /** The seeds, then every node the cluster told of (with the first seed's credentials). */
  #nodeUrls(): string[] {
    const base = new URL(this.#urls[0]!);
    const known = [...this.#cluster.masters, ...this.#cluster.replicas].map(
      (node) => {
        const url = new URL(base);
        url.hostname = node.host;
        url.port = String(node.port);
        return url.href.replace(/\/$/, "");
      },
    );
    return [...new Set([...known, ...this.#urls])];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#up = false;
    clearTimeout(this.#retry);
    await this.#subscriber?.close();
    await this.#connecting?.catch(() => {});
    if (this.#cluster.isOpen) this.#cluster.destroy();
  }
}

/** How many recent payloads a cluster subscriber remembers, to drop copies. */
const SEEN_PAYLOADS = 10_000;

/**
 * A subscriber on a Redis Cluster: one connection to every node it knows,
 * each subscribed to every channel. A (classic) `PUBLISH` reaches the
 * subscribers on the node that ran it at once, in script order, and the
 * other nodes later through the cluster bus; so every payload comes once
 * per node, the first copy from the node that published it, and the later
 * copies are dropped (the last 10,000 payloads are remembered). Up while
 * one of its connections is; nodes that join the cluster later are not
 * subscribed to.
 */
class ClusterSubscriber implements RedisConnection {
  #urls: () => string[];
  #options: RedisConnectionOptions;
  #inner: StandaloneConnection[] = [];
  #subscriptions: [string, PayloadListener][] = [];
  #seen = new Set<string>();
  #order: string[] = [];
  #up = false;
  #closed = false;

  constructor(urls: () => string[], options: RedisConnectionOptions) {
    this.#urls = urls;
    this.#options = options;
    for (const url of urls()) {
      const inner: StandaloneConnection = new KeptConnection(url, {
        name: options.name,
        log: options.log,
        onReady: async () => {
          try {
            for (const [channel, listener] of this.#subscriptions) {
              await inner.subscribe(channel, this.#once(listener));
            }
          } catch {
            return;
          }
          if (this.#closed) return;
          this.#up = true;
          this.#options.onReady?.();
        },
        onDown: () => {
          if (this.#closed || this.#inner.some((other) => other.up)) return;
          const was = this.#up;
          this.#up = false;
          if (was) this.#options.onDown?.();
        },
      });
      this.#inner.push(inner);
    }
  }

  /** `listener`, but only for the first copy of each payload. */
  #once(listener: PayloadListener): PayloadListener {
    return (payload) => {
      if (this.#seen.has(payload)) return;
      this.#seen.add(payload);
      this.#order.push(payload);
      if (this.#order.length > SEEN_PAYLOADS) {
        this.#seen.delete(this.#order.shift()!);
      }
      listener(payload);
    };
  }

  get up(): boolean {
    return this.#up && this.#inner.some((inner) => inner.up);
  }

  command<T = unknown>(args: readonly string[]): Promise<T> {
    const inner = this.#inner.find((inner) => inner.up);
    if (!inner) return Promise.reject(new Error("redis is not available"));
    return inner.command<T>(args);
  }

  async subscribe(channel: string, listener: PayloadListener): Promise<void> {
    this.#subscriptions.push([channel, listener]);
    const once = this.#once(listener);
    const results = await Promise.allSettled(
      this.#inner.filter((inner) => inner.up).map((inner) =>
        inner.subscribe(channel, once)
      ),
    );
    if (!results.some((result) => result.status === "fulfilled")) {
      throw new Error("no node of the Redis Cluster took the subscription");
    }
  }

  duplicate(name: string, hooks: RedisConnectionHooks = {}): RedisConnection {
    return new ClusterSubscriber(this.#urls, {
      name,
      log: this.#options.log,
      ...hooks,
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#inner.map((inner) => inner.close()));
  }
}

/**
 * Opens a connection to the Redis of `url`, as {@linkcode connectRedis}
 * does, choosing the client: several comma-separated URLs are seed nodes of
 * a Redis Cluster; one URL is a standalone Redis unless its `INFO cluster`
 * says `cluster_enabled:1` (asked on its first connection; until then the
 * connection is not up).
 */
export function openRedis(
  url: string,
  options: RedisConnectionOptions,
): RedisConnection {
  const urls = url.split(",").map((part) => part.trim()).filter(Boolean);
  if (urls.length > 1) return new ClusterConnection(urls, options);
  return new DetectingConnection(url, options);
}

/**
 * A standalone connection that becomes a cluster connection when the
 * server says it is a Redis Cluster node.
 */
class DetectingConnection implements RedisConnection {
  #url: string;
  #options: RedisConnectionOptions;
  #inner: RedisConnection;
  /** Whether the server was asked and this is the connection to keep. */
  #decided = false;

  constructor(url: string, options: RedisConnectionOptions) {
    this.#url = url;
    this.#options = options;
    const standalone: StandaloneConnection = new KeptConnection(url, {
      ...options,
      onReady: () => {
        if (this.#decided) {
          options.onReady?.();
          return;
        }
        standalone.command<string>(["INFO", "cluster"]).then((info) => {
          if (this.#decided) return;
          this.#decided = true;
          if (!/cluster_enabled:1/.test(info)) {
            options.onReady?.();
            return;
          }
          this.#inner = new ClusterConnection([url], options);
          standalone.close();
        }, () => {
          // Lost again: the next ready asks again.
        });
      },
      onDown: () => {
        if (this.#decided) options.onDown?.();
      },
    });
    this.#inner = standalone;
  }

  get up(): boolean {
    return this.#decided && this.#inner.up;
  }

  command<T = unknown>(args: readonly string[], key?: string): Promise<T> {
    if (!this.up) return Promise.reject(new Error("redis is not available"));
    return this.#inner.command<T>(args, key);
  }

  subscribe(channel: string, listener: PayloadListener): Promise<void> {
    return this.#inner.subscribe(channel, listener);
  }

  duplicate(name: string, hooks: RedisConnectionHooks = {}): RedisConnection {
    return new DetectingConnection(this.#url, {
      name,
      log: this.#options.log,
      ...hooks,
    });
  }

  close(): Promise<void> {
    this.#decided = true;
    return this.#inner.close();
  }
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
async function until(done: () => boolean, ms: number): Promise<void> {
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
