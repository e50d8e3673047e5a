/**
 * Helpers for the cluster tests: a real `redis-server` on a free port with
 * several nodes on it (in this process, or `main.ts` as a subprocess that a
 * test can `kill -9`), `/healthz`, and frame collectors.
 *
 * `startLocalRedis` throws when `redis-server` is not installed: a cluster
 * test then fails, it never skips.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { keySlot } from "../../src/redis/slot.ts";
import type { Config } from "../../src/runtime/config.ts";
import { type LocalRedis, startLocalRedis } from "../../tools/local_redis.ts";
import {
  type LocalRedisCluster,
  redisCli,
  startLocalRedisCluster,
} from "../../tools/local_redis_cluster.ts";
import {
  type Body,
  childEnv,
  envelope,
  type Frame,
  serve,
  type TestClient,
  type TestServer,
  waitFor,
} from "./helpers.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../../deno.json", import.meta.url));

/** Longest a subprocess node may take to start. */
const START_MS = 20_000;

/**
 * What the nodes share: one standalone `redis-server`, or a local Redis
 * Cluster of 3 masters and 3 replicas.
 */
export type Backend = "standalone" | "redis-cluster";

/** Both backends, for tests that run once on each. */
export const BACKENDS: readonly Backend[] = ["standalone", "redis-cluster"];

/** A redis-server and the nodes started on it; disposing stops them all. */
export interface TestCluster extends AsyncDisposable {
  /**
   * The standalone redis-server every node uses; throws on the
   * `redis-cluster` backend (a test that needs it runs on standalone only).
   */
  redis: LocalRedis;
  /** The local Redis Cluster, on the `redis-cluster` backend. */
  redisCluster: LocalRedisCluster | undefined;
  /** What the nodes have as `REDIS_URL`. */
  redisUrl: string;
  /** The nodes, in start order (node 0 is "A", node 1 "B", ...). */
  nodes: TestServer[];
}

/**
 * Starts a `redis-server` on a free port (or, on the `redis-cluster`
 * backend, a local Redis Cluster) and `count` nodes on port 0 with
 * `overrides` (plus `redisUrl`), and waits until each node's bus is in sync.
 * Disposing shuts every node down (a node already shut down is skipped),
 * then stops Redis and removes its data.
 */
export async function startCluster(
  count: number,
  overrides: Partial<Config> = {},
  backend: Backend = "standalone",
): Promise<TestCluster> {
  const standalone = backend === "standalone"
    ? await startLocalRedis()
    : undefined;
  const redisCluster = backend === "redis-cluster"
    ? await startLocalRedisCluster()
    : undefined;
  const redisUrl = standalone?.url ?? redisCluster!.url;
  const nodes: TestServer[] = [];
  const dispose = async () => {
    // Newest first, as `await using` would.
    for (const node of nodes.toReversed()) await node[Symbol.asyncDispose]();
    await standalone?.stop();
    await redisCluster?.stop();
  };
  try {
    for (let i = 0; i < count; i++) {
      nodes.push(await serve({ ...overrides, redisUrl }));
    }
    for (const [i, node] of nodes.entries()) {
      await waitFor(
        () => node.server.bus?.up === true,
        `node ${i} in sync with the cluster`,
        10_000,
      );
    }
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    get redis(): LocalRedis {
      if (!standalone) throw new Error("this test needs a standalone Redis");
      return standalone;
    },
    redisCluster,
    redisUrl,
    nodes,
    [Symbol.asyncDispose]: dispose,
  };
}

/** A `/healthz` answer: its HTTP status and JSON body. */
export interface Health {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** Fetches `GET /healthz` of the server at `httpUrl`. */
export async function health(httpUrl: string): Promise<Health> {
  const response = await fetch(`${httpUrl}/healthz`);
  return { status: response.status, body: await response.json() };
}

/** Polls `/healthz` until its `status` field is `wanted`; returns that answer. */
export async function waitForHealth(
  httpUrl: string,
  wanted: string,
  ms: number,
): Promise<Health> {
  let last: Health | undefined;
  await waitFor(
    async () => (last = await health(httpUrl)).body.status === wanted,
    `/healthz of ${httpUrl} says "${wanted}" (last: ${JSON.stringify(last)})`,
    ms,
  );
  return last as Health;
}

/**
 * Takes frames, in order, until `counts[type]` frames of each named type
 * have arrived, each frame within `ms` of the one before. Frames of other
 * types are kept too.
 */
export async function collect(
  client: TestClient,
  counts: Record<string, number>,
  ms?: number,
): Promise<Frame[]> {
  const frames: Frame[] = [];
  const seen: Record<string, number> = {};
  const done = () =>
    Object.entries(counts).every(([type, count]) => (seen[type] ?? 0) >= count);
  while (!done()) {
    let frame: Frame;
    try {
      frame = await client.next(ms);
    } catch (error) {
      throw new Error(
        `wanted ${JSON.stringify(counts)}, got ${JSON.stringify(seen)}`,
        { cause: error },
      );
    }
    frames.push(frame);
    seen[frame.message_type] = (seen[frame.message_type] ?? 0) + 1;
  }
  return frames;
}

/** The bodies of the frames of `type`. */
// deno-lint-ignore no-explicit-any
export function bodiesOf(frames: readonly Frame[], type: string): any[] {
  return frames.filter((frame) => frame.message_type === type).map((frame) =>
    frame.message_body
  );
}

/**
 * Sends `message` with `id` and waits at most `ms` for its answer (the
 * `Ack` or `Error` whose `ref` is `id`); frames before it are returned too.
 */
export async function answerTo(
  client: TestClient,
  type: string,
  body: Body,
  id: string,
  ms: number,
): Promise<{ answer: Frame; before: Frame[] }> {
  client.send(envelope(type, body, id));
  return await answerOf(client, id, ms);
}

/**
 * Waits at most `ms` for the answer (`Ack` or `Error`) to a frame already
 * sent with `id`; frames before it are returned too.
 */
export async function answerOf(
  client: TestClient,
  id: string,
  ms: number,
): Promise<{ answer: Frame; before: Frame[] }> {
  const before: Frame[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    const frame = await client.next(Math.max(1, deadline - Date.now()));
    if (
      (frame.message_type === "Ack" || frame.message_type === "Error") &&
      frame.message_body.ref === id
    ) {
      return { answer: frame, before };
    }
    before.push(frame);
  }
}

/** A node run as `main.ts` in a subprocess; disposing kills it (`SIGKILL`). */
export interface NodeProcess extends AsyncDisposable {
  process: Deno.ChildProcess;
  /** The port its `listening` log line names. */
  port: number;
  /** `ws://127.0.0.1:PORT/ws` */
  wsUrl: string;
  /** `http://127.0.0.1:PORT` */
  httpUrl: string;
  /** Its log lines so far, parsed. */
  logs: Record<string, unknown>[];
}

/**
 * Starts `main.ts` as one node of the cluster on `redisUrl`, on a free port
 * and `:memory:`, with `args` after the file, and waits for its `listening`
 * line. The environment holds none of the server's settings.
 */
export async function spawnNode(
  redisUrl: string,
  args: string[] = [],
): Promise<NodeProcess> {
  const env = childEnv();
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      CONFIG,
      MAIN,
      "--redis",
      redisUrl,
      "--port",
      "0",
      "--database",
      ":memory:",
      ...args,
    ],
    clearEnv: true,
    env: { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const logs: Record<string, unknown>[] = [];
  const listening = Promise.withResolvers<number>();
  const pump = (async () => {
    let buffered = "";
    for await (
      const chunk of process.stderr.pipeThrough(new TextDecoderStream())
    ) {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const entry = JSON.parse(line);
          logs.push(entry);
          if (entry.msg === "listening") {
            listening.resolve(Number(new URL(entry.url).port));
          }
        } catch {
          logs.push({ msg: "not JSON", line });
        }
      }
    }
    listening.reject(
      new Error(`main.ts ended before listening:\n${JSON.stringify(logs)}`),
    );
  })();
  const kill = async () => {
    try {
      process.kill("SIGKILL");
    } catch {
      // already gone
    }
    await process.status;
    await pump;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`main.ts not listening within ${START_MS} ms`)),
      START_MS,
    );
  });
  let port: number;
  try {
    port = await Promise.race([listening.promise, late]);
  } catch (error) {
    await kill();
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return {
    process,
    port,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    logs,
    [Symbol.asyncDispose]: kill,
  };
}

/**
 * Sends one command to the Redis on 127.0.0.1:`port` on a connection of its
 * own, and returns the first line of the reply (e.g. `+OK`, `:2`).
 */
export async function redisCommand(
  port: number,
  ...args: string[]
): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const encoder = new TextEncoder();
    const request = `*${args.length}\r\n` +
      args.map((arg) => `$${encoder.encode(arg).length}\r\n${arg}\r\n`).join(
        "",
      );
    await conn.write(encoder.encode(request));
    const buffer = new Uint8Array(4096);
    let reply = "";
    while (!reply.includes("\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      reply += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return reply.slice(0, reply.indexOf("\r\n"));
  } finally {
    conn.close();
  }
}

/** The port of the redis-server that serves `channel`'s slot now. */
export async function portOf(
  cluster: TestCluster,
  channel: string,
): Promise<number> {
  if (!cluster.redisCluster) return cluster.redis.port;
  return (await cluster.redisCluster.masterOf(keySlot(channel))).port;
}

/** How many subscribers Redis counts on a sharded channel (`PUBSUB SHARDNUMSUB`). */
export async function subscribers(
  cluster: TestCluster,
  channel: string,
): Promise<number> {
  const reply = await redisCli(
    await portOf(cluster, channel),
    "PUBSUB",
    "SHARDNUMSUB",
    channel,
  );
  return Number(reply.trim().split("\n").at(-1));
}

/**
 * Waits until the server of `channel`'s slot counts `count` subscribers on
 * it (a master that does not answer yet, during a failover, is asked again).
 */
export async function waitForSubscribers(
  cluster: TestCluster,
  channel: string,
  count: number,
  ms = 5000,
): Promise<void> {
  let last = "";
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const now = await subscribers(cluster, channel);
      if (now === count) return;
      last = `${now} subscribers`;
    } catch (error) {
      last = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${channel}: ${last}, wanted ${count} subscribers`);
}
