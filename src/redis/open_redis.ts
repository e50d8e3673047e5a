/**
 * Opens the Redis of `REDIS_URL`: a standalone connection, or a Redis
 * Cluster's when the URL lists several seed nodes or the server says it is
 * a cluster node. It only chooses; the connections live in `connection.ts`
 * and `cluster_connection.ts`.
 *
 * @module
 */
import { ClusterConnection } from "./cluster_connection.ts";
import {
  connectRedis,
  type RedisConnection,
  type RedisConnectionOptions,
  type StandaloneConnection,
} from "./connection.ts";
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
    const standalone: StandaloneConnection = connectRedis(url, {
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

  shardUrl(channel: string): string | undefined {
    return this.#decided ? this.#inner.shardUrl(channel) : undefined;
  }

  refreshTopology(): Promise<void> {
    return this.#decided ? this.#inner.refreshTopology() : Promise.resolve();
  }

  close(): Promise<void> {
    this.#decided = true;
    return this.#inner.close();
  }
}
