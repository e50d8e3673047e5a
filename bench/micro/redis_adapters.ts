/**
 * The Redis clients that `deno task bench:redis` compares, behind one
 * {@linkcode Client} shape: node-redis (`@redis/client`, as the cluster mode
 * uses it) and ioredis (default, auto-pipelining, `pipeline()` per batch),
 * and the script the `EVALSHA` measure runs. It measures nothing
 * (`redis_measures.ts` does).
 *
 * @module
 */
import { createClient } from "@redis/client";
import { Redis } from "ioredis";

/** Like our `GROUP` script: keys from `ARGV`, none in `KEYS`. */
export const SCRIPT = `
local room, before, after = ARGV[1], ARGV[2], ARGV[3]
local keep = tonumber(ARGV[4])
local hist = 'bench:hist:' .. room
local seq = redis.call('INCR', 'bench:seq:' .. room)
local json = before .. string.format('%d', seq) .. after
redis.call('ZADD', hist, seq, json)
redis.call('ZREMRANGEBYRANK', hist, 0, -(keep + 1))
redis.call('PUBLISH', 'bench:chan:' .. room, json)
return seq
`;
/** `ARGV` of every `EVALSHA`: a 100-character message, 100 kept. */
export const SCRIPT_ARGV: readonly string[] = [
  "r1",
  '{"type":"message","room":"r1","sender_username":"alice","seq":',
  ',"text":"hello, world"}',
  "100",
];

/** A node-redis client. */
export type NodeRedisClient = ReturnType<typeof createClient>;

/** A client under test, behind the few operations the bench needs. */
export interface Client {
  /** Issues `n` `INCR key` in one turn; resolves to how many failed. */
  incrBatch(key: string, n: number): Promise<number>;
  /** Issues one `EVALSHA` per `ARGV` in one turn; resolves to failures. */
  evalshaBatch(sha: string, n: number): Promise<number>;
  /** Publishes `messages` in one turn; resolves to how many failed. */
  publishBatch(channel: string, messages: readonly string[]): Promise<number>;
  /** One `INCR key`, resolving to the new value. */
  incr(key: string): Promise<number>;
  /** Subscribes (the client is then a subscriber only). */
  subscribe(
    channel: string,
    onMessage: (message: string) => void,
  ): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** Called when a ready connection is lost (in the client's own event). */
  onLost: (() => void) | null;
  /** Called each time the connection is ready again. */
  onReady: (() => void) | null;
  /** 'error' events so far, and the last one's message. */
  errors: number;
  lastError: string;
  close(): void;
}

/** How to open one kind of client. */
export interface Variant {
  /** As the tables name it. */
  name: string;
  open(url: string): Promise<Client>;
}

/** Opens a node-redis client (an 'error' listener attached) and waits. */
export async function openNodeRedis(
  url: string,
  options: { disableOfflineQueue?: boolean } = {},
): Promise<Client> {
  const client: NodeRedisClient = createClient({
    url,
    disableOfflineQueue: options.disableOfflineQueue ?? false,
  });
  let ready = false;
  const handlers = new Map<string, (message: string) => void>();
  const result: Client & { raw: NodeRedisClient } = {
    raw: client,
    async incrBatch(key, n) {
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) replies[i] = client.incr(key);
      return failures(await Promise.allSettled(replies));
    },
    async evalshaBatch(sha, n) {
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) {
        replies[i] = client.sendCommand(["EVALSHA", sha, "0", ...SCRIPT_ARGV]);
      }
      return failures(await Promise.allSettled(replies));
    },
    async publishBatch(channel, messages) {
      const replies = messages.map((m) => client.publish(channel, m));
      return failures(await Promise.allSettled(replies));
    },
    incr: (key) => client.incr(key),
    async subscribe(channel, onMessage) {
      handlers.set(channel, onMessage);
      await client.subscribe(channel, (message) => onMessage(message));
    },
    async unsubscribe(channel) {
      handlers.delete(channel);
      await client.unsubscribe(channel);
    },
    onLost: null,
    onReady: null,
    errors: 0,
    lastError: "",
    close() {
      if (client.isOpen) client.destroy();
    },
  };
  // Without an 'error' listener the client dies silently under Deno.
  client.on("error", (error: unknown) => {
    result.errors++;
    result.lastError = error instanceof Error ? error.message : String(error);
    if (ready) {
      ready = false;
      result.onLost?.();
    }
  });
  client.on("ready", () => {
    ready = true;
    result.onReady?.();
  });
  await client.connect();
  return result;
}

/** The node-redis client behind a {@linkcode Client} of `openNodeRedis`. */
export function nodeRedisOf(client: Client): NodeRedisClient {
  return (client as Client & { raw: NodeRedisClient }).raw;
}

/**
 * Opens an ioredis client (an 'error' listener attached) and waits until it
 * is ready: `default` writes each command at once, `auto` sets
 * `enableAutoPipelining`, `pipeline` sends each batch as one `pipeline()`.
 */
export async function openIoredis(
  url: string,
  mode: "default" | "auto" | "pipeline",
): Promise<Client> {
  const redis = new Redis(url, { enableAutoPipelining: mode === "auto" });
  let ready = false;
  const handlers = new Map<string, (message: string) => void>();
  const result: Client = {
    async incrBatch(key, n) {
      if (mode === "pipeline") {
        const pipeline = redis.pipeline();
        for (let i = 0; i < n; i++) pipeline.incr(key);
        return pipelineFailures(await pipeline.exec(), n);
      }
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) replies[i] = redis.incr(key);
      return failures(await Promise.allSettled(replies));
    },
    async evalshaBatch(sha, n) {
      if (mode === "pipeline") {
        const pipeline = redis.pipeline();
        for (let i = 0; i < n; i++) pipeline.evalsha(sha, 0, ...SCRIPT_ARGV);
        return pipelineFailures(await pipeline.exec(), n);
      }
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) {
        replies[i] = redis.evalsha(sha, 0, ...SCRIPT_ARGV);
      }
      return failures(await Promise.allSettled(replies));
    },
    async publishBatch(channel, messages) {
      if (mode === "pipeline") {
        const pipeline = redis.pipeline();
        for (const m of messages) pipeline.publish(channel, m);
        return pipelineFailures(await pipeline.exec(), messages.length);
      }
      const replies = messages.map((m) => redis.publish(channel, m));
      return failures(await Promise.allSettled(replies));
    },
    incr: (key) => redis.incr(key),
    async subscribe(channel, onMessage) {
      handlers.set(channel, onMessage);
      await redis.subscribe(channel);
    },
    async unsubscribe(channel) {
      handlers.delete(channel);
      await redis.unsubscribe(channel);
    },
    onLost: null,
    onReady: null,
    errors: 0,
    lastError: "",
    close() {
      redis.disconnect();
    },
  };
  redis.on("error", (error: Error) => {
    result.errors++;
    result.lastError = error.message;
  });
  redis.on("close", () => {
    if (ready) {
      ready = false;
      result.onLost?.();
    }
  });
  redis.on("ready", () => {
    ready = true;
    result.onReady?.();
  });
  redis.on("message", (channel: string, message: string) => {
    handlers.get(channel)?.(message);
  });
  if (redis.status !== "ready") {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("ioredis not ready within 10 s")),
        10_000,
      );
      redis.once("ready", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return result;
}

/** How many of `results` were rejected. */
function failures(results: PromiseSettledResult<unknown>[]): number {
  let failed = 0;
  for (const r of results) if (r.status === "rejected") failed++;
  return failed;
}

/** How many commands of an ioredis `pipeline().exec()` failed. */
function pipelineFailures(
  results: [error: Error | null, result: unknown][] | null,
  n: number,
): number {
  if (results === null) return n;
  let failed = 0;
  for (const [error] of results) if (error) failed++;
  return failed;
}
