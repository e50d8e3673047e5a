/**
 * A connection to a Redis Cluster (node-redis `createCluster`), with the same
 * {@linkcode RedisConnection} contract as the standalone one: commands go to
 * the master of their key's slot (sharded subscriptions are
 * `sharded_subscriber.ts`'s, on the masters this connection names).
 * It does not choose between standalone and cluster (`open_redis.ts` does)
 * and runs no script of its own.
 *
 * @module
 */
import { createCluster, ErrorReply } from "@redis/client";
import {
  reconnectDelay,
  type RedisConnection,
  type RedisConnectionOptions,
  REPLY_TIMEOUT_MS,
} from "./connection.ts";
import { keySlot } from "./slot.ts";

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
export class ClusterConnection implements RedisConnection {
  #urls: readonly string[];
  /** Each node's URL by `host:port` (few: the cluster's nodes). */
  #urlByNode = new Map<string, string>();
  #options: RedisConnectionOptions;
  #cluster: ReturnType<typeof createCluster>;
  #up = false;
  #closed = false;
  #downLogged = false;
  #connecting: Promise<void> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #lastRediscover = -Infinity;
  #rediscovery: Promise<void> | undefined;

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
    this.refreshTopology();
  }

  /**
   * Asks the cluster for its topology again, at most every 250 ms (a call
   * meanwhile waits for the next one); never rejects.
   */
  refreshTopology(): Promise<void> {
    if (!this.#up || this.#closed) return Promise.resolve();
    this.#rediscovery ??= (async () => {
      const wait = this.#lastRediscover + REDISCOVER_MS - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      this.#lastRediscover = performance.now();
      if (this.#closed) return;
      // Any node that answers: a dead master's client would only fail.
      const start =
        this.#cluster.masters.find((node) => node.client?.isReady)?.client ??
          this.#cluster.replicas.find((node) => node.client?.isReady)?.client ??
          this.#cluster.masters.find((node) => node.client)?.client;
      if (!start) return;
      await this.#cluster._slots.rediscover(start as never).catch(() => {});
    })().finally(() => this.#rediscovery = undefined);
    return this.#rediscovery;
  }

  /** The URL of the master of `channel`'s slot, with the first seed's credentials. */
  shardUrl(channel: string): string | undefined {
    const master = this.#cluster.slots[keySlot(channel)]?.master;
    return master && this.#urlOf(master.host, master.port);
  }

  /** A node's URL, with the first seed's credentials. */
  #urlOf(host: string, port: number): string {
    const key = `${host}:${port}`;
    let known = this.#urlByNode.get(key);
    if (known === undefined) {
      const url = new URL(this.#urls[0]!);
      url.hostname = host;
      url.port = String(port);
      known = url.href.replace(/\/$/, "");
      this.#urlByNode.set(key, known);
    }
    return known;
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

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#up = false;
    clearTimeout(this.#retry);
    await this.#connecting?.catch(() => {});
    if (this.#cluster.isOpen) this.#cluster.destroy();
  }
}
